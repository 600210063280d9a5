"""Tiny random DC-AEs built with diffusers' AutoencoderDC (the reference) and saved in the published layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models import perturb

_TYPES = ("ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock")
# 4 stages → spatial compression 8; head dim 8 so 2×2 maps (16 px images) take diffusers' quadratic branch.
# Encoder and decoder depths differ so a swapped or mis-detected layout cannot load.
TINY_DCAE = {"in_channels": 3, "latent_channels": 32, "attention_head_dim": 8, "encoder_block_types": _TYPES,
             "decoder_block_types": _TYPES, "encoder_block_out_channels": (8, 16, 32, 64),
             "decoder_block_out_channels": (8, 16, 32, 64), "encoder_layers_per_block": (1, 1, 2, 1),
             "decoder_layers_per_block": (1, 2, 1, 1), "encoder_qkv_multiscales": ((), (), (5,), (5,)),
             "decoder_qkv_multiscales": ((), (), (5,), (5,)), "upsample_block_type": "interpolate",
             "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
             "scaling_factor": 0.41407}
# The published f32c32 Sana config (hub dc-ae-f32c32-sana-1.0-diffusers, docs/model.md §2.1).
FULL_DCAE = {"in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
             "encoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
             "decoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
             "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
             "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
             "encoder_layers_per_block": (2, 2, 2, 3, 3, 3), "decoder_layers_per_block": (3, 3, 3, 3, 3, 3),
             "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
             "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)), "upsample_block_type": "interpolate",
             "downsample_block_type": "Conv", "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
             "scaling_factor": 0.41407}


def tiny_diffusers_dcae(seed: int = 0, **overrides):
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    return perturb(AutoencoderDC(**{**TINY_DCAE, **overrides}).eval(), seed, std=0.05)


def full_diffusers_dcae_meta():
    """The published config built on the meta device (no memory, no init)."""
    from diffusers import AutoencoderDC

    with torch.device("meta"):
        return AutoencoderDC(**FULL_DCAE)


def diffusers_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of docs/model.md §7.3, written independently: diffusers keys → mit-han-lab ``model.safetensors`` keys
    (efficientvit's ResidualBlock ``main`` / OpSequential ``op_list`` wrappers, fused 1×1-conv qkv and proj)."""
    top = {"encoder.conv_in.": "encoder.project_in.conv.", "encoder.conv_out.": "encoder.project_out.main.0.conv.",
           "decoder.conv_in.": "decoder.project_in.main.conv.", "decoder.norm_out.": "decoder.project_out.op_list.0.",
           "decoder.conv_out.": "decoder.project_out.op_list.2.conv."}
    inner = {"conv1.": "main.conv1.conv.", "conv2.": "main.conv2.conv.", "norm.": "main.conv2.norm.",
             "attn.norm_out.": "context_module.main.proj.norm.",
             "conv_out.conv_inverted.": "local_module.main.inverted_conv.conv.",
             "conv_out.conv_depth.": "local_module.main.depth_conv.conv.",
             "conv_out.conv_point.": "local_module.main.point_conv.conv.",
             "conv_out.norm.": "local_module.main.point_conv.norm."}
    out: dict[str, torch.Tensor] = {}
    for k, t in sd.items():
        pre = next((p for p in top if k.startswith(p)), None)
        if pre is not None:
            out[top[pre] + k[len(pre):]] = t
            continue
        side, kind, i, j, rest = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(\d+)\.(.+)$", k).groups()
        base = f"{side}.stages.{i}.op_list.{j}."
        if rest in ("attn.to_k.weight", "attn.to_v.weight"):
            continue  # fused with to_q below
        if rest == "attn.to_q.weight":
            p = k[: -len("to_q.weight")]
            qkv = torch.cat([sd[p + "to_q.weight"], sd[p + "to_k.weight"], sd[p + "to_v.weight"]])
            out[base + "context_module.main.qkv.conv.weight"] = qkv[:, :, None, None]
        elif rest == "attn.to_out.weight":
            out[base + "context_module.main.proj.conv.weight"] = t[:, :, None, None]
        elif m := re.match(r"attn\.to_qkv_multiscale\.(\d+)\.proj_(in|out)\.weight$", rest):
            out[base + f"context_module.main.aggreg.{m[1]}.{0 if m[2] == 'in' else 1}.weight"] = t
        elif rest.startswith("conv."):  # resampling block: strided conv (down) / interpolate + ConvLayer (up)
            out[base + ("main.conv." if kind == "down" else "main.conv.conv.") + rest[len("conv."):]] = t
        else:
            pre = next(p for p in inner if rest.startswith(p))
            out[base + inner[pre] + rest[len(pre):]] = t
    return out


def _contig(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in sd.items()}


def make_tiny_dcae(root: Path, seed: int = 0, **overrides) -> dict:
    """Save one tiny random DC-AE in every published layout under ``root``.

    Returns the diffusers model (``"model"``, fp32) and paths: ``vae_dir`` (save_pretrained), ``repo_dir``
    (repo/vae/...), ``sharded_dir`` (index + shards), ``bf16_dir`` / ``fp16_dir`` (variant files),
    ``single_file`` (diffusers keys), ``original_file`` / ``original_dir`` (mit-han-lab keys), ``pth``.
    """
    root = Path(root)
    model = tiny_diffusers_dcae(seed, **overrides)
    sd = _contig(model.state_dict())
    paths: dict = {"model": model, "state_dict": sd}

    paths["vae_dir"] = root / "vae_folder"
    model.save_pretrained(paths["vae_dir"])
    paths["repo_dir"] = root / "repo"
    model.save_pretrained(paths["repo_dir"] / "vae")
    (paths["repo_dir"] / "model_index.json").write_text(json.dumps(
        {"_class_name": "SanaPipeline", "vae": ["diffusers", "AutoencoderDC"],
         "transformer": ["diffusers", "SanaTransformer2DModel"]}))
    paths["sharded_dir"] = root / "vae_sharded"
    model.save_pretrained(paths["sharded_dir"], max_shard_size="100KB")
    from diffusers import AutoencoderDC

    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        paths[f"{name}_dir"] = root / f"vae_{name}"
        AutoencoderDC.from_pretrained(paths["vae_dir"], torch_dtype=dt).save_pretrained(paths[f"{name}_dir"],
                                                                                         variant=name)

    paths["single_file"] = root / "dcae_diffusers.safetensors"
    save_file(sd, paths["single_file"])
    paths["original_dir"] = root / "dc-ae-f32c32-sana-1.0"
    paths["original_dir"].mkdir()
    paths["original_file"] = paths["original_dir"] / "model.safetensors"
    save_file(_contig(diffusers_to_original(sd)), paths["original_file"])
    paths["pth"] = root / "dcae.pth"
    torch.save({"state_dict": sd}, paths["pth"])
    return paths
