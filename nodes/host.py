"""The one adapter between the nodes and the host. Inside ComfyUI it uses folder_paths, model_management,
ModelPatcher, ProgressBar and the interrupt flag; outside (unit tests, scripts) plain stand-ins: the models root is
$SANA_MODELS_DIR with the same subfolders, everything runs on the CPU, progress is logged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..sana_core.errors import SanaError

log = logging.getLogger(__name__)

try:  # the host is present only inside a running ComfyUI
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths
    IN_COMFY = True
except ImportError:
    mm = folder_paths = None
    IN_COMFY = False

FOLDER_KEYS = ("text_encoders", "diffusion_models", "vae", "diffusers")
WEIGHT_EXT = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")
_MARKERS = ("config.json", "model_index.json", "transformer", "vae", "text_encoder")


# --- model folders ---------------------------------------------------------------------------------------------------

def model_roots(key: str) -> list[Path]:
    if IN_COMFY:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(key)]
        except KeyError:
            return []
    root = os.environ.get("SANA_MODELS_DIR")
    return [Path(root) / key] if root else []


def _is_model_folder(p: Path) -> bool:
    return any((p / m).exists() for m in _MARKERS)


def list_models(key: str, folders: bool = True, files: bool = True) -> list[str]:
    """Weight files and diffusers model folders under the ``key`` model folders, as relative names."""
    out: set[str] = set()
    for root in model_roots(key):
        if not root.is_dir():
            continue
        model_dirs = [d for d in root.rglob("*") if d.is_dir() and _is_model_folder(d)
                      and not any(_is_model_folder(a) for a in d.parents if root in a.parents)]
        if folders:
            out.update(d.relative_to(root).as_posix() for d in model_dirs)
        if files:
            for f in root.rglob("*"):
                if f.is_file() and f.name.endswith(WEIGHT_EXT) and not any(d in f.parents for d in model_dirs):
                    out.add(f.relative_to(root).as_posix())
    return sorted(out)


def resolve_model(key: str, name: str) -> Path:
    """The path of ``name`` inside the ``key`` model folders; names that escape them are refused."""
    if not name or "\x00" in name:
        raise SanaError(f"no model selected for {key!r}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise SanaError(f"model name {name!r} must be relative to the {key} model folder and stay inside it")
    roots = model_roots(key)
    for root in roots:
        p = (root / name)
        if p.exists():
            real, base = p.resolve(), root.resolve()
            if base != real and base not in real.parents and not p.is_symlink():
                raise SanaError(f"model name {name!r} resolves outside the {key} folder {root}")
            return p
    where = ", ".join(str(r) for r in roots) or "(no folder configured: set SANA_MODELS_DIR)"
    raise SanaError(f"{name!r} not found in the {key} model folder(s): {where}")


# --- devices and memory ------------------------------------------------------------------------------------------------

def devices(kind: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for 'diffusion' | 'text_encoder' | 'vae'."""
    if not IN_COMFY:
        return torch.device("cpu"), torch.device("cpu")
    if kind == "text_encoder":
        return mm.text_encoder_device(), mm.text_encoder_offload_device()
    if kind == "vae":
        return mm.vae_device(), mm.vae_offload_device()
    return mm.get_torch_device(), mm.unet_offload_device()


class _Holder(torch.nn.Module):
    """What ModelPatcher manages: it sets ``.device`` on its model, which our modules expose read-only."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


def wrap(module: torch.nn.Module, kind: str):
    """A handle the host can evict: a ModelPatcher in ComfyUI, the module itself outside."""
    if not IN_COMFY:
        return module
    load, offload = devices(kind)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    return comfy.model_patcher.ModelPatcher(_Holder(module, offload), load_device=load, offload_device=offload,
                                            size=size)


def unwrap(handle) -> torch.nn.Module:
    return handle.model.inner if IN_COMFY else handle


def load(handle) -> torch.nn.Module:
    """Make sure the module is on its compute device (evicting others if needed); return it."""
    if IN_COMFY:
        mm.load_models_gpu([handle], force_full_load=True)
    return unwrap(handle)


def release(handle) -> None:
    """Move a module off the compute device now (used for the text encoder after encoding)."""
    if not IN_COMFY or handle.load_device == handle.offload_device:
        return
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is handle:
            mm.current_loaded_models.pop(i).model_unload()


def intermediate_device() -> torch.device:
    return mm.intermediate_device() if IN_COMFY else torch.device("cpu")


# --- progress and interrupt --------------------------------------------------------------------------------------------

class Progress:
    """One update per step; each update is also an interruption point (ComfyUI's hook checks the flag)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total) if IN_COMFY else None

    def step(self, done: int, preview=None) -> None:
        if IN_COMFY:
            mm.throw_exception_if_processing_interrupted()
            self.bar.update_absolute(done, self.total, preview)
        else:
            log.debug("step %d/%d", done, self.total)
