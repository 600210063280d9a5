"""The Sana transformer's part in loading (docs/model.md §1.2, §1.4, §7): the NVlabs key map, the variant, and
``load_transformer``.

Layouts: a whole diffusers repo (``transformer/`` + ``scheduler/``), a transformer folder (``config.json`` +
``diffusion_pytorch_model[.bf16|.fp16|.fp32].safetensors`` or a sharded index), a single file in diffusers keys or in
the original NVlabs keys (safetensors or ``.pth``), found as ``files.locate`` says. The variant is read off the
tensors; what they cannot tell comes from ``config.json``, else from the caller's options, else from the file name,
else from documented defaults.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from .. import speed
from ..errors import SanaError
from ..latent import SANA
from ..layers import Operations
from ..transformer import DEFAULT_FLOW_SHIFT, INTERPOLATION_SCALE, PRESETS, SanaConfig, SanaTransformer
from .families import Family, key_summary
from .files import Located, locate, read_json
from .steps import Checkpoint, Component, build, parse_dtype, read_checkpoint
from .tensors import WEIGHT_SUFFIXES, dominant_dtype

log = logging.getLogger(__name__)


def read_scheduler_shift(repo: Path | None) -> float | None:
    """A whole repo's ``scheduler/scheduler_config.json`` flow shift (``flow_shift``, else ``shift``), or None."""
    if repo is None:
        return None
    f = repo / "scheduler" / "scheduler_config.json"
    if not f.is_file():
        return None
    cfg = read_json(f)
    return float(cfg["flow_shift"]) if cfg.get("flow_shift") is not None else (
        float(cfg["shift"]) if cfg.get("shift") is not None else None)


# --- the key map ---------------------------------------------------------------------------------------------------

def original_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one key map from NVlabs names to diffusers names (docs/model.md §7.2). Fused qkv / kv are split (views)."""
    out: dict[str, torch.Tensor] = {}
    sprint = any(k.startswith("cfg_embedder.") for k in sd)
    t_prefix = "time_embed.timestep_embedder" if sprint else "time_embed.emb.timestep_embedder"
    top = {
        "x_embedder.proj.": "patch_embed.proj.",
        "t_embedder.mlp.0.": f"{t_prefix}.linear_1.", "t_embedder.mlp.2.": f"{t_prefix}.linear_2.",
        "cfg_embedder.mlp.0.": "time_embed.guidance_embedder.linear_1.",
        "cfg_embedder.mlp.2.": "time_embed.guidance_embedder.linear_2.",
        "t_block.1.": "time_embed.linear.",
        "y_embedder.y_proj.fc1.": "caption_projection.linear_1.", "y_embedder.y_proj.fc2.": "caption_projection.linear_2.",
        "attention_y_norm.": "caption_norm.",
        "final_layer.linear.": "proj_out.",
    }
    block = {
        "attn.proj.": "attn1.to_out.0.", "attn.q_norm.": "attn1.norm_q.", "attn.k_norm.": "attn1.norm_k.",
        "cross_attn.q_linear.": "attn2.to_q.", "cross_attn.proj.": "attn2.to_out.0.",
        "cross_attn.q_norm.": "attn2.norm_q.", "cross_attn.k_norm.": "attn2.norm_k.",
        "mlp.inverted_conv.conv.": "ff.conv_inverted.", "mlp.depth_conv.conv.": "ff.conv_depth.",
        "mlp.point_conv.conv.": "ff.conv_point.", "scale_shift_table": "scale_shift_table",
    }
    for k, v in sd.items():
        if k in ("pos_embed", "y_embedder.y_embedding") or k.startswith("logvar_linear."):
            continue  # recomputed PE, training-only null caption and Sprint's training head
        if k == "final_layer.scale_shift_table":
            out["scale_shift_table"] = v
            continue
        m = re.match(r"blocks\.(\d+)\.(.+)", k)
        if m:
            p, rest = f"transformer_blocks.{m.group(1)}.", m.group(2)
            if rest == "attn.qkv.weight":  # (3D, D) → q, k, v
                q, kk, vv = v.chunk(3, dim=0)
                out[p + "attn1.to_q.weight"], out[p + "attn1.to_k.weight"], out[p + "attn1.to_v.weight"] = q, kk, vv
                continue
            if rest.startswith("cross_attn.kv_linear."):  # (2D, …) → k, v
                kk, vv = v.chunk(2, dim=0)
                suffix = rest.rsplit(".", 1)[1]
                out[p + f"attn2.to_k.{suffix}"], out[p + f"attn2.to_v.{suffix}"] = kk, vv
                continue
            for a, b in block.items():
                if rest.startswith(a):
                    out[p + b + rest[len(a):]] = v
                    break
            else:
                out[k] = v  # unknown: left as is, so the strict load names it
            continue
        for a, b in top.items():
            if k.startswith(a):
                out[b + k[len(a):]] = v
                break
        else:
            out[k] = v
    return out


# --- the variant ---------------------------------------------------------------------------------------------------

CONFIG_FIELDS = {  # diffusers' config.json field → ours
    "num_layers": "num_layers", "num_attention_heads": "num_heads", "attention_head_dim": "head_dim",
    "num_cross_attention_heads": "cross_heads", "cross_attention_head_dim": "cross_head_dim",
    "caption_channels": "caption_channels", "in_channels": "in_channels", "out_channels": "out_channels",
    "mlp_ratio": "mlp_ratio", "patch_size": "patch_size", "sample_size": "sample_size",
    "interpolation_scale": "interpolation_scale", "guidance_embeds": "guidance_embeds", "norm_eps": "norm_eps",
    "guidance_embeds_scale": "guidance_embeds_scale", "timestep_scale": "timestep_scale",
}


def _resolution_from_name(name: str) -> int | None:
    m = re.search(r"(?<![0-9])(512|1024|2048|4096|2k|4k)(?:px)?(?![0-9])", name.lower())
    if not m:
        return None
    return {"2k": 2048, "4k": 4096}.get(m.group(1)) or int(m.group(1))


def detect_config(sd: dict[str, torch.Tensor], config: dict | None, source: str, *, sample_size: int | None = None,
                  pos_embed: torch.Tensor | None = None) -> SanaConfig:
    """Read the variant off the tensors (diffusers names); fill the rest from config.json or documented defaults."""
    try:
        w = sd["patch_embed.proj.weight"]  # (D, C_in, p, p)
        dim, in_ch, p = w.shape[0], w.shape[1], w.shape[2]
        caption = sd["caption_projection.linear_1.weight"].shape[1]
        out_ch = sd["proj_out.weight"].shape[0] // (p * p) if "proj_out.weight" in sd else in_ch  # (a ControlNet)
        hidden = sd["transformer_blocks.0.ff.conv_point.weight"].shape[1]
    except KeyError as e:
        raise SanaError(f"{source}: a Sana transformer needs tensor {e.args[0]!r}, which is missing") from None
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer_blocks\.(\d+)\.", k)))
    qk_norm = "transformer_blocks.0.attn1.norm_q.weight" in sd
    guidance = "time_embed.guidance_embedder.linear_1.weight" in sd
    found = dict(num_layers=layers, in_channels=in_ch, out_channels=out_ch, patch_size=p, caption_channels=caption,
                 mlp_ratio=hidden / dim, qk_norm=qk_norm, guidance_embeds=guidance)

    if config is not None:
        kw = {ours: config[theirs] for theirs, ours in CONFIG_FIELDS.items() if theirs in config}
        if kw.get("out_channels") is None:
            kw["out_channels"] = kw.get("in_channels", in_ch)
        kw["qk_norm"] = config.get("qk_norm") is not None
        cfg = SanaConfig(**kw)
        cfg = cfg.replace(flow_shift=DEFAULT_FLOW_SHIFT.get(cfg.sample_size, 3.0))
        if cfg.dim != dim:
            raise SanaError(f"{source}: config.json gives hidden size {cfg.dim} "
                            f"({cfg.num_heads}×{cfg.head_dim}), the weights have {dim}")
        mismatch = {k: (getattr(cfg, k), v) for k, v in found.items()
                    if (abs(getattr(cfg, k) - v) > 1e-6 if isinstance(v, float) else getattr(cfg, k) != v)}
        if mismatch:
            raise SanaError(f"{source}: config.json disagrees with the weights: "
                            + ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in mismatch.items()))
        return cfg

    # No config: the family comes from the hidden size; the depth and flags from the keys.
    family = {c.dim: c for c in PRESETS.values()}
    if dim not in family or caption != 2304 or in_ch != 32 or p != 1 or abs(hidden / dim - 2.5) > 1e-6:
        raise SanaError(f"{source}: this Sana-like checkpoint matches no published variant: hidden size {dim}, "
                        f"{layers} layers, caption width {caption}, latent channels {in_ch}, patch {p}, mlp hidden "
                        f"{hidden}; expected hidden 1152 (0.6B) or 2240 (1.6B/4.8B) with caption width 2304 and 32 "
                        "latent channels (or give a diffusers folder with its config.json)")
    base = family[dim]
    if pos_embed is not None:  # original checkpoints keep their training PE: (1, S·S, D)
        sample_size = sample_size or int(round(pos_embed.shape[-2] ** 0.5))
    if sample_size is None:
        res = _resolution_from_name(source)
        sample_size = SANA.cells(res or 1024)
        log.info("%s: no config.json; training resolution %d px %s", source, sample_size * SANA.compression,
                 "from the file name" if res else "assumed (the default)")
    if sample_size * SANA.compression not in (512, 1024, 2048, 4096):
        raise SanaError(f"{source}: sample_size {sample_size} ({sample_size * SANA.compression} px) is not a published Sana "
                        "resolution (512, 1024, 2048, 4096)")
    return base.replace(num_layers=layers, qk_norm=qk_norm, guidance_embeds=guidance, sample_size=sample_size,
                        interpolation_scale=INTERPOLATION_SCALE[sample_size],
                        flow_shift=DEFAULT_FLOW_SHIFT.get(sample_size, 3.0))


def variant_name(cfg: SanaConfig) -> str:
    """Human label: 'Sana 1.6B', 'Sana 1.5 4.8B', 'Sana Sprint 0.6B', or the sizes of a custom model."""
    base = {c.replace(flow_shift=cfg.flow_shift, timestep_scale=cfg.timestep_scale,
                      guidance_embeds_scale=cfg.guidance_embeds_scale, sample_size=cfg.sample_size,
                      interpolation_scale=cfg.interpolation_scale): n for n, c in PRESETS.items()}
    if cfg not in base:
        return f"Sana (custom: {cfg.num_layers} layers, hidden {cfg.dim})"
    size = {1152: "0.6B", 2240: "1.6B"}[cfg.dim] if cfg.num_layers != 60 else "4.8B"
    family = "Sana Sprint" if cfg.guidance_embeds else ("Sana 1.5" if cfg.qk_norm else "Sana")
    return f"{family} {size}"


def _wrong_family(source: str, sd: dict, family: Family) -> SanaError:  # the README's troubleshooting wording
    return SanaError(f"{source}: not a Sana transformer checkpoint: this is {family.describe()}. Found "
                     f"{key_summary(sd)}; expected Sana keys such as 'transformer_blocks.0.attn1.to_q.weight' "
                     "(diffusers) or 'blocks.0.attn.qkv.weight' (NVlabs)")


TRANSFORMER = Component(
    name="Sana transformer", folder="transformer", stems=("diffusion_pytorch_model",),
    prefixes=("model.diffusion_model.", "transformer.", "model.", "module.", "net."),
    layouts={Family.SANA_DIFFUSERS: None, Family.SANA_NVLABS: original_to_diffusers}, wrong_family=_wrong_family)


def _read(path: str | Path) -> tuple[Checkpoint, dict | None, torch.Tensor | None]:
    """(the checkpoint, its folder's config.json, an NVlabs file's pos_embed); a folder needs a config.json."""
    where: Located = locate(path, TRANSFORMER.folder)
    if not where.is_file and where.config is None:
        weights = sorted(p.name for p in where.path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
        raise SanaError(f"{where.path}: a model folder needs a config.json (found {weights or 'no weight files'}); "
                        "pass a weight file directly, or a diffusers folder with config.json"
                        + (" or a repo with a transformer/ folder" if where.repo is None else ""))
    file_config = read_json(where.config) if where.config else None
    ckpt = read_checkpoint(TRANSFORMER, where)
    pos_embed = ckpt.original.get("pos_embed") if ckpt.family is Family.SANA_NVLABS else None
    return ckpt, file_config, pos_embed


def peek_config(path: str | Path) -> SanaConfig:
    """The config ``load_transformer(path)`` builds, from config.json and the tensors' names and shapes only (what a
    frontend shows before anything loads)."""
    ckpt, file_config, pos_embed = _read(path)
    cfg = detect_config(ckpt.state_dict, file_config, ckpt.source, pos_embed=pos_embed)
    shift = read_scheduler_shift(ckpt.where.repo)
    return cfg.replace(flow_shift=float(shift)) if shift else cfg


# --- loading -------------------------------------------------------------------------------------------------------

def load_transformer(path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu",
                     *, sample_size: int | None = None, flow_shift: float | None = None,
                     config: dict | None = None, int8: bool = False, storage: str | None = None,
                     operations=None) -> SanaTransformer:
    """Load a Sana transformer from any published layout. ``dtype`` None/"auto" keeps the file's own.
    ``storage`` ("int8", "fp8_e4m3fn", "fp8_e5m2"; ``int8`` is "int8") keeps the large weights in 8 bits with
    per-row scales, computing in ``dtype`` (``quant.py``).

    ``sample_size`` (training resolution / 32) and ``flow_shift`` override what the files say; ``config`` is a
    diffusers-style config dict for a single file whose variant the tensors cannot tell. ``operations``: the layer
    classes (``layers.py``; None: the reference), which a host passes to manage the layers itself.
    """
    dtype = parse_dtype(dtype)
    ckpt, file_config, pos_embed = _read(path)
    cfg = detect_config(ckpt.state_dict, config or file_config, ckpt.source, sample_size=sample_size,
                        pos_embed=pos_embed)
    if sample_size is not None and sample_size != cfg.sample_size:
        cfg = cfg.replace(sample_size=sample_size, interpolation_scale=INTERPOLATION_SCALE.get(
            sample_size, cfg.interpolation_scale))
    shift = flow_shift or read_scheduler_shift(ckpt.where.repo)
    if shift:
        cfg = cfg.replace(flow_shift=float(shift))
    dtype = dtype or dominant_dtype(ckpt.state_dict)
    operations = operations or Operations
    storage = storage or ("int8" if int8 else None)
    model, n = build(lambda: SanaTransformer(cfg, dtype=dtype, operations=operations), ckpt, dtype, device,
                     storage=storage, operations=operations)
    model.source = ckpt.source
    log.info("Sana transformer: %s · %d px · %s%s · %.0fM params · %s", variant_name(cfg), cfg.resolution,
             str(dtype).removeprefix("torch."), f" ({storage} storage)" if storage else "", n / 1e6, ckpt.source)
    return speed.apply(model)
