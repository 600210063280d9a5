"""Patchers and memory: the pack's modules as handles the host's model management loads, evicts and patches, the
layer classes they are built from, and the devices node outputs live on."""

from __future__ import annotations

import comfy.model_management as mm
import torch

from ...sana_core.video_transformer import SanaVideoTransformer
from . import comfy_layers
from .comfy_classes import SanaBaseModel, SanaVideoBaseModel, new_patcher

Handle = object  # a ModelPatcher (or the host's subclass of it) around one of the pack's modules


def devices(kind: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for 'diffusion' | 'text_encoder' | 'vae'."""
    if kind == "text_encoder":
        return mm.text_encoder_device(), mm.text_encoder_offload_device()
    if kind == "vae":
        return mm.vae_device(), mm.vae_offload_device()
    return mm.get_torch_device(), mm.unet_offload_device()


class _Holder(torch.nn.Module):
    """What a patcher manages: it sets ``.device`` on its model, which the pack's modules expose read-only."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


class SanaTextEncoderModel(_Holder):
    """Gemma-2 as the host's model management holds it (the name its log shows)."""


class SanaDCAEModel(_Holder):
    """The DC-AE as the host's model management holds it (the name its log shows)."""


_HOLDERS = {"text_encoder": SanaTextEncoderModel, "vae": SanaDCAEModel}


def wrap(module: torch.nn.Module, kind: str) -> Handle:
    """A patcher the host can evict, for ``kind`` 'diffusion' | 'text_encoder' | 'vae'. A Sana or SANA-Video
    transformer is a native ComfyUI model from the start, so SANA_MODEL and MODEL share one patcher and one copy of
    the weights."""
    load_device, offload = devices(kind)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    if kind == "diffusion":
        model_class = SanaVideoBaseModel if isinstance(module, SanaVideoTransformer) else SanaBaseModel
        inner = model_class(module, offload)
    else:
        inner = _HOLDERS[kind](module, offload)
    return new_patcher(inner, load_device, offload, size)


def unwrap(handle: Handle) -> torch.nn.Module:
    """The pack's module behind a handle, wherever its weights are."""
    return handle.model.inner


def operations() -> type:
    """The layer classes the loaders build from: the host's ``comfy.ops`` and their like (``comfy_layers.py``)."""
    return comfy_layers.Operations


def load(handle: Handle, memory_required: int = 0) -> torch.nn.Module:
    """The module on its compute device, loaded by the host (evicting others, partly if memory is short);
    ``memory_required``: bytes the call will need besides the weights."""
    return comfy_layers.load(handle, memory_required)


def release(handle: Handle) -> None:
    """Move a handle's module off the compute device now (Gemma-2 after encoding)."""
    if handle.load_device == handle.offload_device:
        return
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is handle:
            mm.current_loaded_models.pop(i).model_unload()


def intermediate_device() -> torch.device:
    """Where node outputs live."""
    return mm.intermediate_device()
