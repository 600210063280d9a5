"""Tiny random LoRA files for the tiny Sana models (docs/sana-spec.md §8, "LoRA" and "Sana LoRA files in the wild").

One PEFT LoRA (``peft_lora``) is written in every published key layout (``save_layout``), all encoding the same weight
delta; ``diffusers_lora_image`` / ``diffusers_lora_transformer`` are the diffusers references on the same file.
LyCORIS files (LoHa, LoKr, DoRA) come with their dense deltas, computed from the formulas ComfyUI 0.3.75 applies
(comfy/weight_adapter/{loha,lokr,lora,base}.py), and ``dense_lora`` writes a plain LoRA with the same deltas. Also:
Gemma text-encoder LoRAs, LoRAs of other model families, and a LoRA for a wider Sana. Nothing here imports ComfyUI.

Delta convention (PEFT, kohya and ComfyUI alike): ``W += strength · alpha / rank · B @ A`` with A = lora_A =
lora_down (rank, in[, 1, 1]) and B = lora_B = lora_up (out, rank[, 1, 1]); alpha defaults to the rank.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models import TINY

# The LoRA'd modules in each ``transformer_blocks.N``. ff.conv_* are 1×1 Conv2d: lora_A (r, in, 1, 1), lora_B
# (out, r, 1, 1). PEFT wraps them and diffusers loads and fuses them (checked by the fixture's own tests).
TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.conv_inverted", "ff.conv_point")
LINEAR_TARGETS = tuple(t for t in TARGETS if not t.startswith("ff.conv_"))

LAYOUTS = ("peft", "peft_base_model", "onetrainer", "onetrainer_old", "kohya", "comfyui")
FOREIGN_KINDS = ("sdxl", "sd15", "flux", "flux_bfl")

# diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY: the safetensors metadata entry holding the LoraConfig as
# JSON, its keys prefixed with the component ("transformer.r", "transformer.lora_alpha", ...).
METADATA_KEY = "lora_adapter_metadata"

# The diffusers reference call, as tests/test_pipeline.py builds it; every entry can be overridden.
REFERENCE_CALL = dict(prompt="a small red house by a lake, watercolor", negative_prompt="", seed=0,
                      num_inference_steps=3, guidance_scale=4.5, height=256, width=256, use_resolution_binning=False)


# --- the PEFT LoRA and its delta ---------------------------------------------------------------------------------


def _module_paths(transformer, targets, blocks) -> list[str]:
    """``transformer_blocks.N.<target>`` for the chosen blocks (all by default), in block order."""
    blocks = range(len(transformer.transformer_blocks)) if blocks is None else blocks
    return [f"transformer_blocks.{i}.{t}" for i in blocks for t in targets]


def _weight(model: torch.nn.Module, path: str) -> torch.Tensor:
    return model.get_submodule(path).weight


def _randn(shape, g: torch.Generator, std: float) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float32) * std


def peft_lora(transformer, rank: int = 4, alpha: float | None = None, seed: int = 0, std: float = 0.05,
              targets=TARGETS, blocks=None) -> dict[str, torch.Tensor]:
    """A random PEFT LoRA for a diffusers SanaTransformer2DModel (only its shapes are read).

    Keys ``transformer.transformer_blocks.N.<target>.lora_A.weight`` / ``.lora_B.weight``, fp32, both non-zero. The
    layout has no alpha key: ``alpha`` (None = rank) is only checked here; pass it to ``save_layout`` and
    ``peft_deltas``, which put it in the metadata / the scale.
    """
    assert rank > 0 and (alpha is None or alpha > 0), f"rank {rank} and alpha {alpha} must be positive"
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for path in _module_paths(transformer, targets, blocks):
        w = _weight(transformer, path)  # Linear (out, in) or 1×1 Conv2d (out, in, 1, 1)
        assert w.ndim == 2 or tuple(w.shape[2:]) == (1, 1), f"{path}: only Linear and 1x1 Conv2d, got {tuple(w.shape)}"
        tail = tuple(w.shape[2:])
        sd[f"transformer.{path}.lora_A.weight"] = _randn((rank, w.shape[1], *tail), g, std)
        sd[f"transformer.{path}.lora_B.weight"] = _randn((w.shape[0], rank, *tail), g, std)
    return sd


def _peft_modules(sd: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module path without ``transformer.``: (A, B)} of a PEFT dict from ``peft_lora``."""
    out = {}
    for k, a in sd.items():
        if k.endswith(".lora_A.weight"):
            assert k.startswith("transformer."), f"expected a transformer PEFT key, got {k}"
            path = k[len("transformer."):-len(".lora_A.weight")]
            out[path] = (a, sd[f"transformer.{path}.lora_B.weight"])
    assert len(out) * 2 == len(sd), f"{len(sd)} keys are not lora_A/lora_B pairs"
    return out


def _product(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """up (out, r[, 1, 1]) @ down (r, in[, 1, 1]) → (out, in[, 1, 1]), in fp32."""
    d = up.flatten(1).float() @ down.flatten(1).float()
    return d.reshape(up.shape[0], down.shape[1], *down.shape[2:])


def peft_deltas(sd: dict[str, torch.Tensor], alpha: float | None = None,
                strength: float = 1.0) -> dict[str, torch.Tensor]:
    """{diffusers weight key: strength · alpha / rank · B @ A} of a PEFT dict from ``peft_lora``."""
    out = {}
    for path, (a, b) in _peft_modules(sd).items():
        rank = a.shape[0]
        out[f"{path}.weight"] = _product(b, a) * (strength * (rank if alpha is None else alpha) / rank)
    return out


# --- the published layouts ---------------------------------------------------------------------------------------


def _lora_config(modules: dict, rank: int, alpha: float) -> dict:
    """The LoraConfig dict diffusers' training scripts pass as ``transformer_lora_adapter_metadata``
    (``peft_config["default"].to_dict()``)."""
    from peft import LoraConfig

    targets = sorted({p.split(".", 2)[2] for p in modules})  # "attn1.to_q", ...: what trainers put in the config
    alpha = int(alpha) if float(alpha).is_integer() else alpha  # trainers pass --lora_alpha as an int
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets).to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def _file_metadata(config: dict) -> dict[str, str]:
    """The safetensors metadata ``SanaPipeline.save_lora_weights`` writes for ``config`` (lora_base.py)."""
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, _pack_dict_with_prefix

    assert LORA_ADAPTER_METADATA_KEY == METADATA_KEY
    return {"format": "pt",
            METADATA_KEY: json.dumps(_pack_dict_with_prefix(config, "transformer"), indent=2, sort_keys=True)}


def save_layout(sd: dict[str, torch.Tensor], path, layout: str, alpha: float | None = None,
                rank: int | None = None) -> Path:
    """Write the PEFT dict ``sd`` (from ``peft_lora``) with that ``alpha`` as a safetensors file in ``layout``.

    Every layout encodes the same delta. "peft" is written by diffusers' ``SanaPipeline.save_lora_weights``, with the
    LoraConfig in the metadata when alpha ≠ rank; "peft_base_model" has PEFT's own key prefix and the same metadata;
    the others carry a 0-d fp32 ``.alpha`` per module. ``rank`` defaults to the A matrices' first dim.
    """
    assert layout in LAYOUTS, f"unknown layout {layout!r}; expected one of {LAYOUTS}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modules = _peft_modules(sd)
    ranks = {a.shape[0] for a, _ in modules.values()}
    if rank is None:
        assert len(ranks) == 1, f"mixed ranks {sorted(ranks)}: pass rank="
        rank = ranks.pop()
    alpha = float(rank if alpha is None else alpha)

    if layout in ("peft", "peft_base_model"):
        config = _lora_config(modules, rank, alpha) if alpha != rank else None
        layers = {k.removeprefix("transformer."): v.contiguous() for k, v in sd.items()}
        if layout == "peft":
            from diffusers import SanaPipeline

            SanaPipeline.save_lora_weights(path.parent, transformer_lora_layers=layers, weight_name=path.name,
                                           transformer_lora_adapter_metadata=config)
        else:
            save_file({f"base_model.model.{k}": v for k, v in layers.items()}, path,
                      metadata=_file_metadata(config) if config else {"format": "pt"})
        return path

    prefix = {"onetrainer": lambda p: f"transformer.{p}",
              "onetrainer_old": lambda p: "lora_transformer_" + p.replace(".", "_"),
              "kohya": lambda p: "lora_unet_" + p.replace(".", "_"),
              "comfyui": lambda p: f"diffusion_model.{p}"}[layout]
    out = {}
    for p, (a, b) in modules.items():
        # These layouts scale by alpha / (a's own rank): keep alpha / rank as the PEFT file states it.
        out[f"{prefix(p)}.lora_down.weight"] = a.contiguous()
        out[f"{prefix(p)}.lora_up.weight"] = b.contiguous()
        out[f"{prefix(p)}.alpha"] = torch.tensor(alpha * a.shape[0] / rank, dtype=torch.float32)
    save_file(out, path)
    return path


def save_lora(sd: dict[str, torch.Tensor], path) -> Path:
    """Write any dict from this module (LoHa, LoKr, DoRA, Gemma, foreign) as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


# --- diffusers references ----------------------------------------------------------------------------------------


def diffusers_lora_image(repo: Path, lora_file: Path, strength: float, **call) -> torch.Tensor:
    """diffusers' image with the LoRA fused at ``strength``: (B, H, W, 3) float in [0, 1].

    fp32 on CPU, ``load_lora_weights`` + ``fuse_lora(lora_scale=strength)``, then the pipeline call of
    tests/test_pipeline.py (``REFERENCE_CALL`` overridden by ``call``; ``seed`` seeds a CPU generator). The file must
    be one diffusers reads: the "peft" layout.
    """
    import diffusers
    import numpy as np

    pipe = diffusers.SanaPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    lora_file = Path(lora_file)
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    pipe.fuse_lora(lora_scale=strength)
    kw = {**REFERENCE_CALL, **call}
    generator = torch.Generator("cpu").manual_seed(kw.pop("seed"))
    out = pipe(generator=generator, output_type="np", **kw)
    return torch.from_numpy(np.asarray(out.images))


def diffusers_lora_transformer(transformer, lora_file: Path, strength: float):
    """A copy of a diffusers SanaTransformer2DModel with the ("peft" layout) LoRA fused at ``strength`` and the PEFT
    wrappers removed, so its state dict has the plain key names. The input is not touched."""
    model = copy.deepcopy(transformer)
    lora_file = Path(lora_file)
    model.load_lora_adapter(str(lora_file.parent), weight_name=lora_file.name, prefix="transformer")
    model.fuse_lora(lora_scale=strength)
    model.unload_lora()
    return model.eval()


# --- LyCORIS (kohya naming) with ComfyUI's dense deltas ----------------------------------------------------------


def _kohya(path: str) -> str:
    return "lora_unet_" + path.replace(".", "_")


def _linear_paths(transformer) -> list[str]:
    return _module_paths(transformer, LINEAR_TARGETS, None)


def loha_lora(transformer, rank: int = 4, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LoHa on the Linear targets: ``hada_w{1,2}_{a,b}`` + alpha = rank / 2, and the deltas at strength 1.

    ComfyUI (loha.py): delta = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / w1_b.shape[0].
    """
    g = torch.Generator().manual_seed(seed)
    alpha = rank / 2
    sd, deltas = {}, {}
    for path in _linear_paths(transformer):
        out_f, in_f = _weight(transformer, path).shape
        # std 0.2: each element of the Hadamard product is ~ (√r · 0.04)², a few % of the base weights
        w1a, w1b = _randn((out_f, rank), g, 0.2), _randn((rank, in_f), g, 0.2)
        w2a, w2b = _randn((out_f, rank), g, 0.2), _randn((rank, in_f), g, 0.2)
        k = _kohya(path)
        sd.update({f"{k}.hada_w1_a": w1a, f"{k}.hada_w1_b": w1b, f"{k}.hada_w2_a": w2a, f"{k}.hada_w2_b": w2b,
                   f"{k}.alpha": torch.tensor(alpha)})
        deltas[f"{path}.weight"] = (w1a @ w1b) * (w2a @ w2b) * (alpha / rank)
    return sd, deltas


def lokr_lora(transformer, factor: int = 2, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LoKr on the Linear targets, and the deltas at strength 1: w1 = ``lokr_w1`` (factor, factor) always full.

    attn1 modules: w2 = ``lokr_w2_a`` (out/f, 4) @ ``lokr_w2_b`` (4, in/f), alpha 2 → scale alpha / 4 = 0.5.
    attn2 modules: w2 = ``lokr_w2`` full (out/f, in/f); ComfyUI then ignores the alpha key (scale 1), as LyCORIS does.
    ComfyUI (lokr.py): delta = kron(w1, w2) * scale.
    """
    g = torch.Generator().manual_seed(seed)
    rank, alpha = 4, 2.0
    sd, deltas = {}, {}
    for path in _linear_paths(transformer):
        out_f, in_f = _weight(transformer, path).shape
        assert out_f % factor == 0 and in_f % factor == 0, f"{path}: {out_f}x{in_f} not divisible by {factor}"
        k = _kohya(path)
        w1 = _randn((factor, factor), g, 0.5)
        sd[f"{k}.lokr_w1"] = w1
        if ".attn1." in path:
            w2a, w2b = _randn((out_f // factor, rank), g, 0.1), _randn((rank, in_f // factor), g, 0.1)
            sd.update({f"{k}.lokr_w2_a": w2a, f"{k}.lokr_w2_b": w2b, f"{k}.alpha": torch.tensor(alpha)})
            w2, scale = w2a @ w2b, alpha / rank
        else:
            w2 = _randn((out_f // factor, in_f // factor), g, 0.05)
            sd.update({f"{k}.lokr_w2": w2, f"{k}.alpha": torch.tensor(float(rank))})
            scale = 1.0
        deltas[f"{path}.weight"] = torch.kron(w1, w2) * scale  # (out, in)
    return sd, deltas


def _dora_delta(w: torch.Tensor, diff: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """ComfyUI's ``weight_decompose`` at strength 1, minus the base weight.

    W' = W + diff, then W' · dora_scale / (‖·‖ + eps). The norm is per input column of W' when dora_scale is
    (1, in) (OneTrainer), but per output row of the *base* W, not of W', when it is (out, 1) (ComfyUI's choice;
    LyCORIS normalises W' on both axes).
    """
    w = w.detach().float()
    merged = w + diff
    if dora_scale.shape[0] == w.shape[0]:
        norm = w.reshape(w.shape[0], -1).norm(dim=1, keepdim=True)  # (out, 1)
    else:
        norm = merged.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1, keepdim=True).transpose(0, 1)  # (1, in)
    return merged * (dora_scale / (norm + torch.finfo(w.dtype).eps)) - w


def _dora_lora(transformer, rank: int, seed: int, output_axis: bool):
    g = torch.Generator().manual_seed(seed)
    alpha = rank / 2
    sd, deltas = {}, {}
    for path in _linear_paths(transformer):
        w = _weight(transformer, path).detach().float()  # (out, in)
        down, up = _randn((rank, w.shape[1]), g, 0.1), _randn((w.shape[0], rank), g, 0.1)
        # the magnitude starts as the base weight's norm; training moves it
        norm = w.norm(dim=1, keepdim=True) if output_axis else w.norm(dim=0, keepdim=True)  # (out, 1) / (1, in)
        dora_scale = norm * (1 + _randn(norm.shape, g, 0.1))
        k = _kohya(path)
        sd.update({f"{k}.lora_down.weight": down, f"{k}.lora_up.weight": up, f"{k}.alpha": torch.tensor(alpha),
                   f"{k}.dora_scale": dora_scale})
        deltas[f"{path}.weight"] = _dora_delta(w, (up @ down) * (alpha / rank), dora_scale)
    return sd, deltas


def dora_lora(transformer, rank: int = 4, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """DoRA on the Linear targets: ``lora_up`` / ``lora_down`` / alpha = rank / 2 / ``dora_scale`` (1, in) as
    OneTrainer writes it, and the deltas at strength 1. The deltas depend on the base weights: they are read from
    ``transformer``, so apply the file to a model with the same weights. (``_dora_lora(..., output_axis=True)`` gives
    the (out, 1) kohya/LyCORIS variant.)"""
    return _dora_lora(transformer, rank, seed, output_axis=False)


def dense_lora(deltas: dict[str, torch.Tensor], path) -> Path:
    """A plain kohya-named LoRA encoding ``deltas`` exactly: lora_up = delta (out, in[, 1, 1]), lora_down = identity
    (in, in[, 1, 1]), alpha = in (scale 1)."""
    sd = {}
    for key, d in deltas.items():
        assert key.endswith(".weight") and (d.ndim == 2 or tuple(d.shape[2:]) == (1, 1)), f"{key}: {tuple(d.shape)}"
        k = _kohya(key[:-len(".weight")])
        n = d.shape[1]
        sd[f"{k}.lora_up.weight"] = d.float()
        sd[f"{k}.lora_down.weight"] = torch.eye(n).reshape(n, n, *d.shape[2:])
        sd[f"{k}.alpha"] = torch.tensor(float(n))
    return save_lora(sd, path)


# --- text encoder, foreign families, wrong shapes ----------------------------------------------------------------


def gemma_lora(gemma_model, rank: int = 4, seed: int = 0, layout: str = "peft") -> dict[str, torch.Tensor]:
    """A random LoRA on q/k/v/o_proj of every layer of a transformers Gemma2Model (alpha = rank).

    "peft": ``text_encoder.layers.N.self_attn.q_proj.lora_A.weight`` / ``lora_B.weight``; "kohya":
    ``lora_te_layers_N_self_attn_q_proj.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.
    """
    assert layout in ("peft", "kohya"), f"unknown Gemma LoRA layout {layout!r}; expected 'peft' or 'kohya'"
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, layer in enumerate(gemma_model.layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out_f, in_f = getattr(layer.self_attn, proj).weight.shape
            a, b = _randn((rank, in_f), g, 0.05), _randn((out_f, rank), g, 0.05)
            path = f"layers.{i}.self_attn.{proj}"
            if layout == "peft":
                sd[f"text_encoder.{path}.lora_A.weight"], sd[f"text_encoder.{path}.lora_B.weight"] = a, b
            else:
                k = "lora_te_" + path.replace(".", "_")
                sd.update({f"{k}.lora_down.weight": a, f"{k}.lora_up.weight": b,
                           f"{k}.alpha": torch.tensor(float(rank))})
    return sd


def _kohya_pair(sd: dict, name: str, out_f: int, in_f: int, g: torch.Generator, rank: int = 2) -> None:
    sd[f"{name}.lora_down.weight"] = _randn((rank, in_f), g, 0.05)
    sd[f"{name}.lora_up.weight"] = _randn((out_f, rank), g, 0.05)
    sd[f"{name}.alpha"] = torch.tensor(float(rank))


def _peft_pair(sd: dict, name: str, out_f: int, in_f: int, g: torch.Generator, rank: int = 2) -> None:
    sd[f"{name}.lora_A.weight"] = _randn((rank, in_f), g, 0.05)
    sd[f"{name}.lora_B.weight"] = _randn((out_f, rank), g, 0.05)


# kohya names of SDXL and SD 1.5: (self-attention, width), (cross-attention, width, text width), text encoders
_KOHYA_FOREIGN = {
    "sdxl": (("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1", 640),
             ("lora_unet_middle_block_1_transformer_blocks_0_attn2", 1280, 2048),
             (("lora_te1", 768), ("lora_te2", 1280))),
    "sd15": (("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1", 320),
             ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2", 320, 768),
             (("lora_te", 768),)),
}


def foreign_lora(kind: str) -> dict[str, torch.Tensor]:
    """A small random LoRA under the real key names (and widths) of another model family, none of which name a Sana
    module: "sdxl" and "sd15" (kohya), "flux" (diffusers: single_transformer_blocks, attn.add_*_proj, ff_context),
    "flux_bfl" (ComfyUI-style ``diffusion_model.double_blocks`` / ``single_blocks``)."""
    assert kind in FOREIGN_KINDS, f"unknown family {kind!r}; expected one of {FOREIGN_KINDS}"
    g = torch.Generator().manual_seed(FOREIGN_KINDS.index(kind))
    sd: dict[str, torch.Tensor] = {}
    if kind in _KOHYA_FOREIGN:
        (self_attn, width), (cross_attn, cross_width, text_width), te_prefixes = _KOHYA_FOREIGN[kind]
        for c in ("q", "k", "v"):
            _kohya_pair(sd, f"{self_attn}_to_{c}", width, width, g)
            _kohya_pair(sd, f"{cross_attn}_to_{c}", cross_width, cross_width if c == "q" else text_width, g)
            for te, te_width in te_prefixes:
                _kohya_pair(sd, f"{te}_text_model_encoder_layers_0_self_attn_{c}_proj", te_width, te_width, g)
        _kohya_pair(sd, f"{self_attn}_to_out_0", width, width, g)
    elif kind == "flux":
        for c in ("q", "k", "v"):
            _peft_pair(sd, f"transformer.single_transformer_blocks.0.attn.to_{c}", 3072, 3072, g)
            _peft_pair(sd, f"transformer.transformer_blocks.0.attn.add_{c}_proj", 3072, 3072, g)
        _peft_pair(sd, "transformer.single_transformer_blocks.0.proj_mlp", 12288, 3072, g)
        _peft_pair(sd, "transformer.transformer_blocks.0.attn.to_add_out", 3072, 3072, g)
        _peft_pair(sd, "transformer.transformer_blocks.0.ff_context.net.0.proj", 12288, 3072, g)
    else:
        _peft_pair(sd, "diffusion_model.double_blocks.0.img_attn.qkv", 9216, 3072, g)
        _peft_pair(sd, "diffusion_model.double_blocks.0.txt_attn.qkv", 9216, 3072, g)
        _peft_pair(sd, "diffusion_model.double_blocks.0.img_attn.proj", 3072, 3072, g)
        _peft_pair(sd, "diffusion_model.single_blocks.0.linear1", 21504, 3072, g)
    return sd


def mismatched_lora(rank: int = 4) -> dict[str, torch.Tensor]:
    """A PEFT LoRA with the key names of a 3-block tiny Sana (so of TINY and of the 10-block TINY_TRANSFORMER) but
    the shapes of a Sana twice as wide (hidden 32, not 16): applying it to either must fail on shapes."""
    from diffusers import SanaTransformer2DModel

    wide = dict(TINY, attention_head_dim=16, cross_attention_head_dim=16, cross_attention_dim=32, num_layers=3)
    with torch.device("meta"):
        transformer = SanaTransformer2DModel(**wide)
    return peft_lora(transformer, rank=rank, seed=123)
