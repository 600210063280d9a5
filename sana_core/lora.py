"""LoRA files for Sana (docs/model.md §8): every published key layout mapped onto the model's layers, checked, and
applied in plain PyTorch outside ComfyUI. Inside ComfyUI the host's own weight adapters apply them (LoRA, LoHa, LoKr,
DoRA, …) through the same key map and the same checks.

A LoRA file names each layer by a prefix and an adapter suffix, ``<prefix>.lora_A.weight``. The prefixes differ by
trainer: ``transformer.transformer_blocks.0.attn1.to_q`` (diffusers/PEFT, OneTrainer), ``base_model.model.…``,
``diffusion_model.…`` (ComfyUI), ``lora_unet_transformer_blocks_0_attn1_to_q`` (kohya), ``lora_transformer_…`` (old
OneTrainer); Gemma layers ``text_encoder.…`` or ``lora_te_…``. A LoRA layer adds
``strength · alpha / rank · up @ down`` to the layer's weight; alpha is the rank when the file gives none.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .caches import without_caches
from .errors import SanaError
from .load.tensors import read_weights
from .quant import QuantWeight

log = logging.getLogger("sana")

# per model part: dotted prefixes put before a layer's path, and prefixes put before its path with "." → "_"
PREFIXES = {
    "transformer": (("transformer.", "base_model.model.transformer.", "base_model.model.", "diffusion_model.", ""),
                    ("lora_unet_", "lora_transformer_", "lycoris_")),
    "text_encoder": (("text_encoder.", "base_model.model.text_encoder."), ("lora_te_",)),
}
# what follows a layer's prefix in a file: plain LoRA pairs (up, down), then every other adapter's tensors
LORA_PAIRS = ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight"),
              (".lora.up.weight", ".lora.down.weight"), (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))
_ADAPTER = re.compile(r"\.(lora_(up|down|A|B|mid)\.(weight|bias)|lora\.(up|down)\.weight|lora_linear_layer\.(up|down)"
                      r"\.weight|alpha|dora_scale|hada_\w+|lokr_\w+|diff|diff_b|set_weight|oft_\w+|boft_\w+)$")
_FAMILIES = (  # (what the keys hold, how it reads): for a file that names no Sana layer
    (("double_blocks", "single_blocks", "single_transformer_blocks", "add_q_proj", "img_attn", "txt_attn"), "Flux"),
    (("joint_blocks", "context_block"), "Stable Diffusion 3"),
    (("lora_te1_", "lora_te2_", "conditioner.embedders", "add_embedding", "label_emb", "input_blocks",
      "output_blocks", "middle_block"), "SDXL"),
    (("down_blocks", "up_blocks", "mid_block", "lora_te_text_model", "text_model.encoder"),
     "Stable Diffusion 1.x/2.x"),
)


def layers(module: nn.Module) -> dict[str, nn.Module]:
    """The layers a LoRA can patch: every Linear and Conv2d (plain or 8-bit), by path."""
    return {name: m for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, QuantWeight))}


def key_map(paths, part: str) -> dict[str, str]:
    """Every prefix a published LoRA layout uses for each layer path of ``part`` ("transformer", "text_encoder")
    → that layer's weight key (``<path>.weight``)."""
    dotted, flat = PREFIXES[part]
    out = {}
    for path in paths:
        for p in dotted:
            out[p + path] = f"{path}.weight"
        for p in flat:
            out[p + path.replace(".", "_")] = f"{path}.weight"
    return out


def read(path) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors (safetensors; a pickle only through the safe reader, as every loader), with the alpha
    a PEFT file keeps in its metadata written as ``<prefix>.alpha`` tensors."""
    path = Path(path)
    sd = read_weights(path)
    return with_peft_alpha(sd, _metadata(path))


def _metadata(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def with_peft_alpha(sd: dict[str, torch.Tensor], metadata: dict) -> dict[str, torch.Tensor]:
    """PEFT/diffusers files keep alpha in the metadata (``lora_adapter_metadata``: ``lora_alpha``, ``alpha_pattern``,
    ``use_rslora``, each maybe under ``transformer.``); write it as the ``.alpha`` keys every other layout uses."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return sd
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("LoRA metadata 'lora_adapter_metadata' is not JSON; alpha = rank")
        return sd
    out = dict(sd)
    for key, down in sd.items():
        if not key.endswith((".lora_A.weight", ".lora_down.weight")):
            continue
        prefix = key.rsplit(".", 2)[0]
        if prefix + ".alpha" in sd:
            continue
        part = "text_encoder." if prefix.startswith("text_encoder.") else "transformer."
        get = lambda name, default=None: meta.get(part + name, meta.get(name, default))  # noqa: E731
        alpha = get("lora_alpha")
        for pattern, a in (get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?{pattern}", prefix):
                alpha = a
        if alpha is None:
            continue
        rank = down.shape[0]
        if get("use_rslora", False):
            alpha = alpha * math.sqrt(rank)  # PEFT's rsLoRA scales by alpha/√rank
        out[prefix + ".alpha"] = torch.tensor(float(alpha))
    return out


@dataclass
class Match:
    """Which keys of a LoRA file name which layers: ``targets`` maps a file prefix → a weight key."""
    targets: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # file keys naming no layer of the model


def prefix_of(key: str) -> str | None:
    m = _ADAPTER.search(key)
    return key[:m.start()] if m else None


def match(sd: dict[str, torch.Tensor], kmap: dict[str, str]) -> Match:
    out = Match()
    for key in sd:
        p = prefix_of(key)
        if p is not None and p in kmap:
            out.targets[p] = kmap[p]
        else:
            out.unmatched.append(key)
    return out


def looks_like(keys) -> str:
    """What a file whose keys name no Sana layer most likely is."""
    keys = list(keys)
    for marks, family in _FAMILIES:
        if any(m in k for k in keys for m in marks):
            return f"a {family} LoRA"
    return "not a Sana LoRA (its first keys: " + ", ".join(keys[:3]) + ")"


def check(sd: dict[str, torch.Tensor], found: Match, shapes: dict[str, torch.Size], source: str,
          parts: str = "this Sana model") -> None:
    """One clear error for a file that fits nothing or fits another size of Sana; a warning for a partial match.
    ``shapes``: each weight key's shape."""
    if not found.targets:
        raise SanaError(f"LoRA {source}: 0 of its {len(sd)} keys name a layer of {parts}; it looks like "
                        f"{looks_like(sd)}")
    for prefix, key in found.targets.items():
        want = tuple(shapes[key])
        got = _adapter_shape(sd, prefix, len(want))
        if got is not None and got != want:
            raise SanaError(f"LoRA {source} does not fit {parts}: {prefix} is for a {got} weight, the model's "
                            f"{key} is {want} (a LoRA trained for another Sana size?)")
    if found.unmatched:
        log.warning("LoRA %s: %d of its %d keys name no layer of %s and were skipped (first: %s)", source,
                    len(found.unmatched), len(sd), parts, found.unmatched[0])


def _adapter_shape(sd, prefix: str, ndim: int) -> tuple | None:
    """The weight shape a layer's adapter tensors produce, where it can be read from them (LoRA, LoHa, diff)."""
    for up, down in LORA_PAIRS:
        if prefix + up in sd and prefix + down in sd:
            u, d = sd[prefix + up], sd[prefix + down]
            return (u.shape[0], d.shape[1], *d.shape[2:]) if ndim > 2 else (u.shape[0], d.shape[1])
    if prefix + ".hada_w1_a" in sd and prefix + ".hada_w1_b" in sd:
        a, b = sd[prefix + ".hada_w1_a"], sd[prefix + ".hada_w1_b"]
        return (a.shape[0], *b.shape[1:]) if ndim == 2 else None
    if prefix + ".diff" in sd:
        return tuple(sd[prefix + ".diff"].shape)
    return None


# --- applying a LoRA in plain PyTorch (outside ComfyUI) ---------------------------------------------------------------

def merged(sd: dict[str, torch.Tensor], prefix: str, weight: torch.Tensor, strength: float,
           source: str) -> torch.Tensor:
    """One layer's weight with the LoRA at ``strength``: weight + strength · alpha/rank · up @ down, summed in fp32
    into a copy of the weight (one layer-sized tensor; a k×k conv's ``down`` flattens to (rank, in·k·k))."""
    for up_key, down_key in LORA_PAIRS:
        if prefix + up_key in sd and prefix + down_key in sd:
            up, down = sd[prefix + up_key].float(), sd[prefix + down_key].float()
            rank = down.shape[0]
            alpha = float(sd[prefix + ".alpha"]) if prefix + ".alpha" in sd else rank
            if prefix + ".lora_mid.weight" in sd:
                raise SanaError(f"LoRA {source}: {prefix} is a LoCon with a mid weight; load it inside ComfyUI")
            out = weight.float().clone()
            out.view(out.shape[0], -1).addmm_(up.flatten(1).to(out.device), down.flatten(1).to(out.device),
                                              alpha=strength * alpha / rank)
            return out
    kinds = sorted({k[len(prefix) + 1:].split(".")[0] for k in sd if k.startswith(prefix + ".")})
    raise SanaError(f"LoRA {source}: {prefix} holds {kinds}, an adapter the pack applies only inside ComfyUI (its "
                    "weight adapters: LoHa, LoKr, DoRA, …); outside ComfyUI plain LoRA is supported")


def apply(module: nn.Module, sd: dict[str, torch.Tensor], part: str, strength: float, source: str) -> nn.Module:
    """A copy of ``module`` with the LoRA merged at ``strength``: patched layers get new weights, every other tensor
    is shared with ``module``, which is never changed."""
    found = prepare(module, sd, part, source)
    out = share_copy(module)
    if strength == 0:
        return out
    patched = layers(out)
    for prefix, key in found.targets.items():
        layer = patched[key.removesuffix(".weight")]
        base = layer.dequantize() if isinstance(layer, QuantWeight) else layer.weight
        new = merged(sd, prefix, base, strength, source).to(base.dtype)
        if isinstance(layer, QuantWeight):
            layer.set_weight(new)
        else:
            layer.weight = nn.Parameter(new, requires_grad=False)
    return out


def prepare(module: nn.Module, sd: dict[str, torch.Tensor], part: str, source: str) -> Match:
    """Match a LoRA file to ``module``'s layers and check it (``check``, then ``check_finite``)."""
    by_path = layers(module)
    found = match(sd, key_map(by_path, part))
    shapes = {f"{p}.weight": m.weight.shape for p, m in by_path.items()}
    check(sd, found, shapes, source, "this Sana model" if part == "transformer" else "the Gemma-2 text encoder")
    check_finite(sd, found, source)
    return found


def check_finite(sd: dict[str, torch.Tensor], found: Match, source: str) -> None:
    """One error naming the file and its first tensors holding NaN/Inf, among the tensors ``found`` uses: merged into
    a layer they would only show as NaN/Inf at the first sampling step. One isfinite per tensor."""
    bad = [k for k in sd if prefix_of(k) in found.targets and not _finite(sd[k])]
    if not bad:
        return
    first = "; ".join(f"{k}: {_non_finite(sd[k])}" for k in bad[:3])
    more = f" (and {len(bad) - 3} more tensors)" if len(bad) > 3 else ""
    raise SanaError(f"LoRA {source} holds NaN/Inf where finite numbers are expected — {first}{more}. The file is "
                    "damaged (a diverged training run or a broken conversion): re-download or re-export it")


def _finite(t: torch.Tensor) -> bool:
    if not t.is_floating_point():
        return True
    if t.element_size() == 1:  # 8-bit floats have no isfinite kernel
        t = t.float()
    return bool(torch.isfinite(t).all())


def _non_finite(t: torch.Tensor) -> str:
    """What a tensor holds instead of finite numbers: "3 NaN and 1 Inf of its 512 values"."""
    t = t.float()
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    found = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
    return f"{found} of its {t.numel()} values"


def share_copy(module: nn.Module) -> nn.Module:
    """A structural copy of a module tree whose parameters and buffers are the original's tensors; its caches
    (``caches``) are not carried over."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = without_caches(module.__dict__)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._modules = {k: None if c is None else share_copy(c) for k, c in module._modules.items()}
    return new
