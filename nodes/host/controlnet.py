"""A Sana ControlNet as the host's own CONTROL_NET, for ComfyUI's Apply ControlNet nodes."""

from __future__ import annotations

import comfy.model_management as mm
import torch

from .comfy_classes import SanaControlModel, SanaControlNetPatch, SanaLatentFormat


def control_net(module: torch.nn.Module) -> SanaControlNetPatch:
    """The host's generic ControlNet wrapper around a ``SanaControlNet``: the control image resized to the latent's
    size ×32, DC-AE-encoded through the apply node's VAE, then scaled as a Sana latent; strength, range, chaining."""
    return SanaControlNetPatch(SanaControlModel(module), compression_ratio=1, latent_format=SanaLatentFormat(),
                               load_device=mm.get_torch_device(), manual_cast_dtype=None,
                               extra_conds=["attention_mask"])
