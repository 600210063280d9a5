"""The one adapter between the nodes and the host: the interface the nodes call. It picks one implementation at
import: ``comfyui`` when ComfyUI's modules are importable, else ``standalone`` (unit tests, scripts: models from
$SANA_MODELS_DIR, the CPU, logged progress). Past the probe below, only ``comfyui`` imports ComfyUI, and only it
imports ``comfy_classes``, the pack's ComfyUI subclasses. ``extend_host`` holds every change to ComfyUI's global
state."""

from __future__ import annotations

from pathlib import Path

from . import folders as _folders
from .constants import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, PAG_KEY, SAMPLER_NAME
from .folders import WEIGHT_EXT

try:  # the host is importable only inside a running ComfyUI
    import comfy.model_management  # noqa: F401
    import comfy.model_patcher  # noqa: F401
    import comfy.utils  # noqa: F401
    import folder_paths  # noqa: F401
    IN_COMFY = True
except ImportError:
    IN_COMFY = False

if IN_COMFY:
    from . import comfyui as impl
else:
    from . import standalone as impl


def list_models(key: str, folders: bool = True, files: bool = True) -> list[str]:
    """Weight files and diffusers model folders under the ``key`` model folders, as relative names."""
    return _folders.list_models(impl.model_roots(key), folders, files)


def model_folders(key: str) -> list[str]:
    """The ``key`` model folders, as paths."""
    return [str(p) for p in impl.model_roots(key)]


def resolve_model(key: str, name: str) -> Path:
    """The path of ``name`` inside the ``key`` model folders; names that escape them are refused."""
    return _folders.resolve_model(impl.model_roots(key), key, name)


wrap = impl.wrap  # wrap(module, kind) → a handle the host can evict; kind: 'diffusion' | 'text_encoder' | 'vae'
unwrap = impl.unwrap  # the module behind a handle, wherever it is
load = impl.load  # load(handle, memory_required=0) → the module on its compute device (evicting others if needed)
operations = impl.operations  # the layer classes loaders build models from (sana_core/layers.py); None: reference
release = impl.release  # move a handle's module off the compute device now
control_net = impl.control_net  # control_net(SanaControlNet) → the host's CONTROL_NET (outside: the module)
add_lora = impl.add_lora  # add_lora(handle, sd, part, strength, source) → a new handle with the LoRA, sharing weights
intermediate_device = impl.intermediate_device  # where node outputs live
Progress = impl.Progress  # Progress(total).step(done, x0): one update per step, each an interruption point
# Native ComfyUI citizens (inside ComfyUI only; the stand-in raises SanaError)
native_model = impl.native_model  # native_model(handle, shift) → a MODEL sharing the SANA_MODEL's patcher
vae_adapter = impl.vae_adapter  # vae_adapter(handle) → a VAE over a SANA_VAE's patcher
sampler_object = impl.sampler_object  # the Flow-DPM-Solver as a SAMPLER
pag_model = impl.pag_model  # pag_model(model, scale, adaptive, blocks) → a MODEL clone with PAG after CFG
native_sampling = impl.native_sampling  # native_sampling(cfg) → whether SanaSample rides the host's sampling
sample_native = impl.sample_native  # sample_native(handle, positive, negative, latent, seed, opts, progress)
extend_host = impl.extend_host  # every change to ComfyUI's global state; nodes/__init__.py calls it once

__all__ = [
    "IN_COMFY", "LATENT_RGB_BIAS", "LATENT_RGB_FACTORS", "PAG_KEY", "SAMPLER_NAME", "WEIGHT_EXT", "Progress",
    "add_lora", "control_net", "extend_host", "intermediate_device", "list_models", "load", "native_model",
    "model_folders", "operations", "pag_model", "release", "resolve_model", "sampler_object", "unwrap",
    "vae_adapter", "wrap", "native_sampling", "sample_native",
]
