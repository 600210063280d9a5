"""The DC-AE's part in loading (docs/model.md §2, §7.3): the mit-han-lab key map, the config read off the tensors,
and ``load_dcae``."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from .. import speed
from ..dcae import DCAE, FP16_MESSAGE, check_dtype
from ..dcae_blocks import DCAEConfig
from ..errors import SanaError
from ..layers import Operations
from .families import Family, wrong_family
from .files import read_json
from .steps import Component, build, read_checkpoint
from .tensors import dominant_dtype

log = logging.getLogger(__name__)


def convert_original_dcae(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mit-han-lab ``model.safetensors`` keys → diffusers keys (docs/model.md §7.3), substitutions applied in order
    to every key."""
    subs = [("main.", ""), ("op_list.", ""), ("context_module", "attn"), ("local_module", "conv_out"),
            ("depth_conv.conv", "conv_depth"), ("inverted_conv.conv", "conv_inverted"),
            ("point_conv.conv", "conv_point"), ("point_conv.norm", "norm"), ("conv.conv.", "conv."),
            ("conv1.conv", "conv1"), ("conv2.conv", "conv2"), ("conv2.norm", "norm"), ("proj.norm", "norm_out"),
            ("encoder.project_in.conv", "encoder.conv_in"), ("encoder.project_out.0.conv", "encoder.conv_out"),
            ("encoder.stages", "encoder.down_blocks"), ("decoder.project_in.conv", "decoder.conv_in"),
            ("decoder.project_out.0", "decoder.norm_out"), ("decoder.project_out.2.conv", "decoder.conv_out"),
            ("decoder.stages", "decoder.up_blocks")]
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        k = key
        for old, new in subs[:4]:
            k = k.replace(old, new)
        # aggreg.{s}.0 / .1 → to_qkv_multiscale.{s}.proj_in / proj_out (diffusers spells out s = 0 only)
        k = re.sub(r"aggreg\.(\d+)\.0", r"to_qkv_multiscale.\1.proj_in", k)
        k = re.sub(r"aggreg\.(\d+)\.1", r"to_qkv_multiscale.\1.proj_out", k)
        for old, new in subs[4:]:
            k = k.replace(old, new)
        if k.endswith(".qkv.conv.weight"):  # (3D, C, 1, 1) fused 1×1 conv → three (D, C) linears
            parent = k[: -len(".qkv.conv.weight")]
            for name, part in zip(("to_q", "to_k", "to_v"), torch.chunk(t, 3, dim=0)):
                out[f"{parent}.{name}.weight"] = part.reshape(part.shape[0], part.shape[1])
        elif k.endswith(".proj.conv.weight"):  # (C, 2D, 1, 1) → (C, 2D)
            out[k[: -len(".proj.conv.weight")] + ".to_out.weight"] = t.reshape(t.shape[0], t.shape[1])
        else:
            out[k] = t
    return out


def _shape(sd: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in sd:
        raise SanaError(f"{source}: DC-AE tensor {key!r} is missing")
    return sd[key].shape


def _side_layout(sd: dict[str, torch.Tensor], side: str, n: int, source: str) -> tuple[dict, dict, set[int]]:
    """One side's per-stage widths, block types, depths and multiscale kernels; its resampling type; head dims."""
    pre = "encoder.down_blocks" if side == "encoder" else "decoder.up_blocks"
    stages: dict[int, dict[int, set[str]]] = {}  # {stage: {index: {param names}}}
    for k in sd:
        if m := re.fullmatch(rf"{pre}\.(\d+)\.(\d+)\.(.+)", k):
            stages.setdefault(int(m[1]), {}).setdefault(int(m[2]), set()).add(m[3])
    if sorted(stages) != list(range(n)):
        raise SanaError(f"{source}: {pre} has stages {sorted(stages)}; expected 0..{n - 1} like the encoder, every "
                        "stage populated")
    widths, types, layers, scales, head_dims, resampling = [], [], [], [], set(), {}
    for i in range(n):
        idx = sorted(stages[i])
        resample = None if i == n - 1 else (idx[-1] if side == "encoder" else idx[0])  # Down last / Up first
        blocks = [j for j in idx if j != resample]
        kinds = {"ResBlock" if "conv1.weight" in stages[i][j] else
                 "EfficientViTBlock" if "attn.to_q.weight" in stages[i][j] else "?" for j in blocks}
        if len(kinds) != 1 or "?" in kinds or (resample is not None and "conv.weight" not in stages[i][resample]):
            raise SanaError(f"{source}: {pre}.{i} holds {len(idx)} modules of kinds {sorted(kinds)}; expected "
                            "ResBlocks or EfficientViT blocks plus one resampling conv")
        p = f"{pre}.{i}.{blocks[0]}."
        if "ResBlock" in kinds:
            widths.append(_shape(sd, p + "conv1.weight", source)[0])
            ks: tuple[int, ...] = ()
        else:
            widths.append(_shape(sd, p + "attn.to_q.weight", source)[1])
            ms = sorted(int(m[1]) for name in stages[i][blocks[0]]
                        if (m := re.fullmatch(r"attn\.to_qkv_multiscale\.(\d+)\.proj_in\.weight", name)))
            ks = tuple(_shape(sd, p + f"attn.to_qkv_multiscale.{s}.proj_in.weight", source)[-1] for s in ms)
            # proj_out groups = 3·heads, so its weight is (3D, D/heads = head_dim, 1, 1)
            head_dims |= {_shape(sd, p + f"attn.to_qkv_multiscale.{s}.proj_out.weight", source)[1] for s in ms}
        types.append(kinds.pop())
        layers.append(len(blocks))
        scales.append(ks)
    for i in range(n - 1):
        j = max(stages[i]) if side == "encoder" else 0
        c = _shape(sd, f"{pre}.{i}.{j}.conv.weight", source)[0]
        if side == "encoder":  # strided conv keeps C_out; pixel_unshuffle's conv makes C_out/4
            resampling["downsample_block_type"] = "Conv" if c == widths[i + 1] else "pixel_unshuffle"
        else:  # interpolate's conv makes C_out; pixel_shuffle's 4·C_out
            resampling["upsample_block_type"] = "interpolate" if c == widths[i] else "pixel_shuffle"
    fields_ = {f"{side}_block_out_channels": tuple(widths), f"{side}_block_types": tuple(types),
               f"{side}_layers_per_block": tuple(layers), f"{side}_qkv_multiscales": tuple(scales)}
    return fields_, resampling, head_dims


def detect_dcae_config(sd: dict[str, torch.Tensor], source: str = "weights") -> DCAEConfig:
    """Read a DC-AE config off diffusers-named tensors: widths from conv shapes, depths from block indices, stage
    types from key names. Fields without weights (shortcuts, activations, scaling factor) take the Sana preset's."""
    n = 1 + max((int(m[1]) for k in sd if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))), default=-1)
    if n < 1:
        raise SanaError(f"{source}: no encoder.down_blocks.* tensors; expected a DC-AE")
    enc, enc_resample, enc_heads = _side_layout(sd, "encoder", n, source)
    dec, dec_resample, dec_heads = _side_layout(sd, "decoder", n, source)
    head_dims = enc_heads | dec_heads
    if len(head_dims) > 1:
        raise SanaError(f"{source}: attention head dims {sorted(head_dims)} differ between stages; expected one")
    in_ch, lat = _shape(sd, "encoder.conv_in.weight", source)[1], _shape(sd, "encoder.conv_out.weight", source)[0]
    out_ch = _shape(sd, "decoder.conv_out.weight", source)[0]
    if out_ch != in_ch:
        raise SanaError(f"{source}: the encoder takes {in_ch} image channels but the decoder makes {out_ch}")
    cfg = DCAEConfig(in_channels=in_ch, latent_channels=lat, attention_head_dim=head_dims.pop() if head_dims else 32,
                     decoder_norm_types=("rms_norm",) * n, decoder_act_fns=("silu",) * n, **enc, **dec,
                     **enc_resample, **dec_resample)
    return cfg.validate(source)


DCAE_COMPONENT = Component(
    name="DC-AE", folder="vae", stems=("diffusion_pytorch_model", "model"),  # diffusers' name, then mit-han-lab's
    prefixes=("vae.", "first_stage_model."),
    layouts={Family.DCAE_DIFFUSERS: None, Family.DCAE_ORIGINAL: convert_original_dcae},
    wrong_family=lambda source, sd, family: wrong_family(
        source, sd, family, "a DC-AE", "DC-AE keys 'encoder.conv_in.weight', 'decoder.conv_in.weight' (diffusers) "
        "or 'encoder.project_in.conv.bias' (original mit-han-lab)"))


def load_dcae(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
              operations=None) -> DCAE:
    """Load a DC-AE from a Sana repo folder, a vae folder, a diffusers or mit-han-lab single file, or a ``.pth``.

    dtype None keeps the file's dominant dtype, except fp16 files, which load as fp32 (DC-AE overflows in fp16).
    ``operations``: the layer classes (``layers.py``; None: the reference).
    """
    path = Path(path)
    if dtype is not None:
        check_dtype(dtype, str(path))
    ckpt = read_checkpoint(DCAE_COMPONENT, path)
    cfg_path = ckpt.where.config
    if ckpt.where.is_file and path.name.startswith(DCAE_COMPONENT.stems[0]) and (path.parent / "config.json").is_file():
        cfg_path = path.parent / "config.json"  # a diffusers-named file keeps its folder's config
    cfg_dict = read_json(cfg_path) if cfg_path is not None else None
    if cfg_dict is not None and "_class_name" not in cfg_dict and "encoder_block_out_channels" not in cfg_dict:
        cfg_dict = None  # not a diffusers config (e.g. mit-han-lab's own): detect from the tensors
    config = (DCAEConfig.from_diffusers(cfg_dict, str(cfg_path)) if cfg_dict
              else detect_dcae_config(ckpt.state_dict, ckpt.source))
    file_dtype = dominant_dtype(ckpt.state_dict)
    if dtype is None:
        dtype = file_dtype if file_dtype in (torch.bfloat16, torch.float32) else torch.float32
        if file_dtype == torch.float16:
            log.warning("%s: fp16 weights; loading them as fp32 because %s", ckpt.source, FP16_MESSAGE)
    model, n_params = build(lambda: DCAE(config, operations or Operations), ckpt, dtype, device)
    log.info("DC-AE from %s (%s layout, config %s): widths %s, f%dc%d, %.1fM params, %s on %s", ckpt.source,
             ckpt.family.layout, "config.json" if cfg_dict else "detected", list(config.encoder_block_out_channels),
             config.spatial_compression, config.latent_channels, n_params / 1e6, str(dtype).removeprefix("torch."),
             device)
    return speed.apply(model)
