"""The host side: everything the nodes ask of ComfyUI, one module per concern. The nodes import only this
interface; each function's contract is its signature and docstring.

- ``folders``: the model folders (list, resolve a widget's name);
- ``memory``: patcher handles around the pack's modules, loading through the host's model management, the layer
  classes the loaders build from;
- ``sampling``: progress and previews, Sana as a MODEL, SanaSample on KSampler's path, the Flow-DPM-Solver
  SAMPLER, PAG as a model patch;
- ``video``: SANA-Video's VAE, decode and image fitting on the host's Wan machinery;
- ``lora``, ``controlnet``: LoRA as the host's weight patches, a ControlNet as the host's CONTROL_NET;
- ``routes``: the frontend's HTTP routes;
- ``comfy_classes``, ``comfy_layers``: the pack's subclasses of the host's model, VAE, ControlNet and layer classes.

``extend_host`` makes every change this pack makes to ComfyUI's global state.
"""

from __future__ import annotations

from . import routes
from .comfy_classes import SanaVAEAdapter
from .constants import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, PAG_KEY, SAMPLER_NAME, START_KEY
from .controlnet import control_net
from .folders import list_models, resolve_model, roots
from .lora import add_lora, extend_key_map
from .memory import Handle, intermediate_device, load, operations, release, unwrap, wrap
from .sampling import (
    Progress,
    native_model,
    native_sampling,
    pag_model,
    register_sampler,
    sample_native,
    sampler_object,
)
from .video import decode_video, fit_image, wan_vae


def model_folders(key: str) -> list[str]:
    """The ``key`` model folders, as paths (for messages)."""
    return [str(p) for p in roots(key)]


def vae_adapter(handle: Handle) -> SanaVAEAdapter:
    """A ComfyUI VAE over a SANA_VAE's patcher (the same weights), for VAEDecode, VAEEncode and the tiled nodes."""
    return SanaVAEAdapter(handle)


_extended = False


def extend_host() -> None:
    """Every change this pack makes to ComfyUI's global state (README: "Changes to ComfyUI's global state"); once
    per process, whoever calls it first (the extension's ``on_load``, or its node list on hosts without it):
    1. the Flow-DPM-Solver becomes KSampler's ``sana_flow_dpm_solver`` (``sampling.register_sampler``);
    2. ComfyUI's LoRA key map also names a Sana model's layers as every published Sana LoRA layout does
       (``lora.extend_key_map``), so the host's own LoRA loaders patch Sana; other models are unchanged;
    3. the server answers GET /sana/bin, /sana/aspect and /sana/model (``routes.register``)."""
    global _extended
    if _extended:
        return
    register_sampler()
    extend_key_map()
    routes.register()
    _extended = True


__all__ = [
    "LATENT_RGB_BIAS", "LATENT_RGB_FACTORS", "PAG_KEY", "SAMPLER_NAME", "START_KEY", "Handle", "Progress", "add_lora",
    "control_net", "decode_video", "extend_host", "fit_image", "intermediate_device", "list_models", "load",
    "model_folders", "native_model", "native_sampling", "operations", "pag_model", "release", "resolve_model",
    "sample_native", "sampler_object", "unwrap", "vae_adapter", "wan_vae", "wrap",
]
