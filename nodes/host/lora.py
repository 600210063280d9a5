"""LoRA on the host's machinery: a Sana LoRA becomes the host's own weight patches on a patcher clone, and the
host's LoRA key map also names a Sana model's layers, so ComfyUI's own LoRA loaders reach Sana."""

from __future__ import annotations

import comfy.lora

from ...sana_core import lora
from .comfy_classes import SanaBaseModel
from .memory import Handle, unwrap

PATCH_ROOT = {"transformer": "diffusion_model.net.", "text_encoder": "inner."}  # where a part sits in its patcher


def add_lora(handle: Handle, sd: dict, part: str, strength: float, source: str) -> Handle:
    """A clone of the patcher with the LoRA (``part`` 'transformer' | 'text_encoder') as the host's own weight
    patches (LoRA, LoHa, LoKr, DoRA … through its adapters), applied when the host loads the model and undone when
    it unloads; the file is checked first (``lora.prepare``: family, size, coverage, finite values)."""
    found = lora.prepare(unwrap(handle), sd, part, source)
    m = handle.clone()
    if strength != 0:
        patches = comfy.lora.load_lora(sd, {p: PATCH_ROOT[part] + k for p, k in found.targets.items()},
                                       log_missing=False)
        m.add_patches(patches, strength)
    return m


def extend_key_map() -> None:
    """ComfyUI's LoRA key map (``comfy.lora.model_lora_keys_unet``), plus every published Sana layout's names for a
    Sana model (``lora.key_map``); other models get exactly the original's map."""
    original = comfy.lora.model_lora_keys_unet
    if getattr(original, "sana", False):
        return

    def model_lora_keys_unet(model, key_map=None):
        key_map = original(model, {} if key_map is None else key_map)
        if isinstance(model, SanaBaseModel):
            for prefix, key in lora.key_map(lora.layers(model.inner), "transformer").items():
                key_map.setdefault(prefix, PATCH_ROOT["transformer"] + key)
        return key_map

    model_lora_keys_unet.sana = True
    comfy.lora.model_lora_keys_unet = model_lora_keys_unet
