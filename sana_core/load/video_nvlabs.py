"""SANA-Video checkpoints in NVlabs' key layout (``SanaMSVideo``, the ``.pth`` NVlabs publishes, tensors under
``state_dict``) renamed to diffusers' ``SanaVideoTransformer3DModel`` names.

The trunk (timestep and caption embedders, attention, cross-attention, Mix-FFN convs, final layer) has the image
model's names on both sides, so the image key map renames it. What the video adds: the 3-D patch embed, which
diffusers calls ``patch_embedding``, and the temporal conv of each Mix-FFN (``t_conv`` → ``conv_temp``). Both keep
their shapes: Conv3d (D, C, pt, ph, pw), and Conv2d (D, D, 3, 1) over (frames, tokens of a frame).
"""

from __future__ import annotations

import re

import torch

from ..errors import SanaError
from .transformer import original_to_diffusers

_T_CONV = re.compile(r"blocks\.(\d+)\.mlp\.t_conv\.weight")


def nvlabs_video_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs SANA-Video names → diffusers names; fused qkv / kv are split (views), nothing else changes shape.

    Dropped, as by the image map: ``pos_embed`` (the image base class's sin-cos buffer; the video model uses a
    rotary embedding computed on the fly), ``y_embedder.y_embedding`` (the training-time null caption) and
    ``logvar_linear.*`` (a training head). Any other key raises a SanaError naming it.
    """
    video: dict[str, torch.Tensor] = {}
    trunk: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("x_embedder.proj."):
            video["patch_embedding." + k.removeprefix("x_embedder.proj.")] = v
        elif m := _T_CONV.fullmatch(k):
            video[f"transformer_blocks.{m.group(1)}.ff.conv_temp.weight"] = v
        else:
            trunk[k] = v
    out = original_to_diffusers(trunk)
    # the image map passes a name it does not know through unchanged; no NVlabs name is also a diffusers name
    unknown = sorted(k for k in out if k in trunk)
    if unknown:
        raise SanaError(f"NVlabs SANA-Video checkpoint: {len(unknown)} tensors have no diffusers counterpart: "
                        f"{unknown[:8]}{' …' if len(unknown) > 8 else ''}")
    return {**out, **video}
