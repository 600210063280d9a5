"""The SANA-Video transformer's part in loading: the config and ``load_video_transformer``.

Layouts: a whole diffusers repo (``transformer/``), a transformer folder (``config.json`` +
``diffusion_pytorch_model[.bf16|.fp16|.fp32].safetensors`` or a sharded index), a single file in diffusers keys, or
NVlabs' ``.pth`` (``video_nvlabs.py``). The tensors give the depth, widths, channels, patch and flags; the attention
heads (how the hidden size splits into heads, which sets the rotary embedding) only ``config.json`` gives: the
folder's, else one beside a single file, else the caller's ``config``; without any, the published models' head width.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch

from .. import speed
from ..errors import SanaError
from ..layers import Operations
from ..video_transformer import SanaVideoConfig, SanaVideoTransformer
from .families import Family, sniff, wrong_family
from .files import locate, read_json
from .steps import Component, build, parse_dtype, read_checkpoint
from .tensors import dominant_dtype, read_weights, strip_prefix
from .transformer import CONFIG_FIELDS, TRANSFORMER, read_scheduler_shift
from .video_nvlabs import nvlabs_video_to_diffusers

log = logging.getLogger(__name__)

CLASS_NAME = "SanaVideoTransformer3DModel"

# diffusers' config.json field → ours: the image model's (but its patch and positional embedding) and the video's own
_CONFIG_FIELDS = {**{k: v for k, v in CONFIG_FIELDS.items()
                     if k not in ("patch_size", "interpolation_scale", "timestep_scale")},
                  "attention_bias": "attention_bias", "rope_max_seq_len": "rope_max_seq_len"}
# diffusers' SanaVideoTransformer3DModel defaults, for fields a config.json leaves out
DIFFUSERS_DEFAULTS = dict(num_layers=20, num_heads=20, head_dim=112, cross_heads=20, cross_head_dim=112,
                          caption_channels=2304, in_channels=16, out_channels=16, mlp_ratio=2.5, patch_size=(1, 2, 2),
                          attention_bias=False, guidance_embeds=False, norm_eps=1e-6, rope_max_seq_len=1024,
                          sample_size=30, guidance_embeds_scale=0.1)


def _from_config(config: dict, source: str) -> SanaVideoConfig:
    """Our config from a diffusers config dict; a SanaError for what the model does not implement."""
    if config.get("norm_elementwise_affine"):
        raise SanaError(f"{source}: norm_elementwise_affine=true is not supported (published SANA-Video models "
                        "have no affine norms)")
    qk_norm = config.get("qk_norm", "rms_norm_across_heads")
    if qk_norm not in (None, "rms_norm_across_heads"):
        raise SanaError(f"{source}: qk_norm {qk_norm!r} is not supported (expected 'rms_norm_across_heads' or none)")
    kw = {**DIFFUSERS_DEFAULTS,
          **{ours: config[theirs] for theirs, ours in _CONFIG_FIELDS.items() if config.get(theirs) is not None}}
    kw["out_channels"] = config.get("out_channels") or kw["in_channels"]
    if "patch_size" in config:
        kw["patch_size"] = tuple(config["patch_size"])
    cfg = SanaVideoConfig(**kw, qk_norm=qk_norm is not None)
    cross = config.get("cross_attention_dim", cfg.dim)
    if cross != cfg.dim or cfg.cross_heads * cfg.cross_head_dim != cfg.dim:
        raise SanaError(f"{source}: cross-attention width {cfg.cross_heads}×{cfg.cross_head_dim} (input {cross}) "
                        f"differs from the hidden size {cfg.dim} ({cfg.num_heads}×{cfg.head_dim}); not supported")
    return cfg


def detect_config(sd: dict[str, torch.Tensor], config: dict | None, source: str) -> SanaVideoConfig:
    """The config from ``config`` (diffusers' config.json), checked against what the tensors (diffusers names)
    say; without ``config`` a SanaError naming what only it can give."""
    try:
        w = sd["patch_embedding.weight"]  # (D, C_in, pt, ph, pw)
        caption = sd["caption_projection.linear_1.weight"].shape[1]
        proj = sd["proj_out.weight"].shape[0]
        hidden = sd["transformer_blocks.0.ff.conv_point.weight"].shape[1]
    except KeyError as e:
        raise SanaError(f"{source}: a SANA-Video transformer needs tensor {e.args[0]!r}, which is missing") from None
    if w.ndim != 5:
        raise SanaError(f"{source}: 'patch_embedding.weight' has shape {tuple(w.shape)}; a SANA-Video transformer's "
                        "is 5-D (hidden, channels, frames, height, width)")
    dim, in_ch, patch = w.shape[0], w.shape[1], tuple(w.shape[2:])
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer_blocks\.(\d+)\.", k)))
    found = dict(num_layers=layers, in_channels=in_ch, out_channels=proj // math.prod(patch), patch_size=patch,
                 caption_channels=caption, mlp_hidden=hidden, dim=dim,
                 qk_norm="transformer_blocks.0.attn1.norm_q.weight" in sd,
                 attention_bias="transformer_blocks.0.attn1.to_q.bias" in sd,
                 guidance_embeds="time_embed.guidance_embedder.linear_1.weight" in sd)
    if config is None and dim % PUBLISHED_HEAD_DIM == 0:
        config = published_config(found, source)
        log.info("%s: no config.json; heads of %d channels as in every published SANA-Video model, %dp bins",
                 source, PUBLISHED_HEAD_DIM, 720 if config["sample_size"] == 22 else 480)
    if config is None:
        raise SanaError(f"{source}: no config.json for this SANA-Video transformer (hidden size {dim}, {layers} "
                        f"layers, patch {patch}): its attention heads (num_attention_heads, attention_head_dim, "
                        "num_cross_attention_heads, cross_attention_head_dim) cannot be read off the weights; load "
                        "its diffusers folder, or put its config.json beside the file")
    cfg = _from_config(config, source)
    mismatch = {k: (getattr(cfg, k), v) for k, v in found.items() if getattr(cfg, k) != v}
    if mismatch:
        raise SanaError(f"{source}: config.json disagrees with the weights: "
                        + ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in mismatch.items()))
    return cfg


PUBLISHED_HEAD_DIM = 112  # the attention head width of every published SANA-Video model


def published_config(found: dict, source: str) -> dict:
    """A config.json for weights that come without one (an NVlabs .pth): the sizes the tensors give, heads of
    ``PUBLISHED_HEAD_DIM`` channels, and the 720p bin table when the file name says 720p (else 480p)."""
    heads = found["dim"] // PUBLISHED_HEAD_DIM
    return {"num_layers": found["num_layers"], "num_attention_heads": heads, "attention_head_dim": PUBLISHED_HEAD_DIM,
            "num_cross_attention_heads": heads, "cross_attention_head_dim": PUBLISHED_HEAD_DIM,
            "in_channels": found["in_channels"], "out_channels": found["out_channels"],
            "patch_size": list(found["patch_size"]), "caption_channels": found["caption_channels"],
            "mlp_ratio": found["mlp_hidden"] / found["dim"], "attention_bias": found["attention_bias"],
            "qk_norm": "rms_norm_across_heads" if found["qk_norm"] else None,
            "guidance_embeds": found["guidance_embeds"], "sample_size": 22 if "720" in Path(source).name else 30}


VIDEO_TRANSFORMER = Component(
    name="SANA-Video transformer", folder=TRANSFORMER.folder, stems=TRANSFORMER.stems, prefixes=TRANSFORMER.prefixes,
    layouts={Family.SANA_VIDEO: None, Family.SANA_VIDEO_NVLABS: nvlabs_video_to_diffusers},
    wrong_family=lambda source, sd, family: wrong_family(
        source, sd, family, "a SANA-Video transformer",
        "SANA-Video keys such as 'patch_embedding.weight' and 'transformer_blocks.0.ff.conv_temp.weight' (diffusers)"))


def _config_beside(weights: Path) -> dict | None:
    """A single file's neighbouring config.json when it describes a SANA-Video transformer (or names no class)."""
    f = weights.parent / "config.json"
    if not f.is_file():
        return None
    cfg = read_json(f)
    return cfg if cfg.get("_class_name", CLASS_NAME) == CLASS_NAME else None


def is_video_transformer(path: str | Path) -> bool:
    """Whether the transformer at ``path`` (any layout the two loaders take) is a SANA-Video one, from its key names
    (the weights are memory-mapped, not read)."""
    where = locate(path, TRANSFORMER.folder)
    sd = strip_prefix(read_weights(where.weights(TRANSFORMER.stems, TRANSFORMER.name)), TRANSFORMER.prefixes)
    return sniff(sd) in (Family.SANA_VIDEO, Family.SANA_VIDEO_NVLABS)


def _config(ckpt, config: dict | None, flow_shift: float | None) -> SanaVideoConfig:
    where = ckpt.where
    file_config = read_json(where.config) if where.config else (_config_beside(where.path) if where.is_file else None)
    cfg = detect_config(ckpt.state_dict, config or file_config, ckpt.source)
    shift = flow_shift or read_scheduler_shift(where.repo)
    return cfg.replace(flow_shift=float(shift)) if shift else cfg


def peek_video_config(path: str | Path) -> SanaVideoConfig:
    """The config ``load_video_transformer(path)`` builds, from config.json and the tensors' names and shapes only."""
    return _config(read_checkpoint(VIDEO_TRANSFORMER, path), None, None)


def load_video_transformer(path: str | Path, dtype: torch.dtype | str | None = None,
                           device: str | torch.device = "cpu", *, config: dict | None = None,
                           flow_shift: float | None = None, storage: str | None = None,
                           operations=None) -> SanaVideoTransformer:
    """Load a SANA-Video transformer: a diffusers repo, its ``transformer/`` folder, or a single safetensors file in
    diffusers keys. ``dtype`` None/"auto" keeps the file's own. ``config``: a diffusers-style config dict for a
    single file with no config.json beside it. ``flow_shift`` overrides a repo's scheduler's. ``storage`` ("int8",
    "fp8_e4m3fn", "fp8_e5m2") keeps the large weights in 8 bits (``quant.py``). ``operations``: the layer classes
    (``layers.py``; None: the reference)."""
    dtype = parse_dtype(dtype)
    ckpt = read_checkpoint(VIDEO_TRANSFORMER, path)
    cfg = _config(ckpt, config, flow_shift)
    dtype = dtype or dominant_dtype(ckpt.state_dict)
    operations = operations or Operations
    model, n = build(lambda: SanaVideoTransformer(cfg, dtype=dtype, operations=operations), ckpt, dtype, device,
                     storage=storage, operations=operations)
    model.source = ckpt.source
    log.info("SANA-Video transformer: %d layers · hidden %d · %s%s · %.0fM params · %s", cfg.num_layers, cfg.dim,
             str(dtype).removeprefix("torch."), f" ({storage} storage)" if storage else "", n / 1e6, ckpt.source)
    return speed.apply(model)


def video_variant_name(cfg: SanaVideoConfig) -> str:
    """'SANA-Video 2B 480p' for the published sizes; else its depth and width."""
    size = "2B" if (cfg.num_layers, cfg.dim) == (20, 2240) else f"{cfg.num_layers}×{cfg.dim}"
    return f"SANA-Video {size}" + (f" {cfg.resolution}p" if cfg.resolution else "")
