"""The host outside ComfyUI (unit tests, scripts, benchmarks): the models root is $SANA_MODELS_DIR with ComfyUI's
subfolders, a handle is the module itself, everything runs on the CPU, progress is logged."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ...sana_core import lora
from ...sana_core.errors import SanaError

log = logging.getLogger(__name__)


def model_roots(key: str) -> list[Path]:
    root = os.environ.get("SANA_MODELS_DIR")
    return [Path(root) / key] if root else []


def wrap(module: torch.nn.Module, kind: str) -> torch.nn.Module:
    return module


def unwrap(handle: torch.nn.Module) -> torch.nn.Module:
    return handle


def operations():
    """Outside ComfyUI the reference layers."""
    return None


def load(handle: torch.nn.Module, memory_required: int = 0) -> torch.nn.Module:
    return handle


def release(handle: torch.nn.Module) -> None:
    return None


def intermediate_device() -> torch.device:
    return torch.device("cpu")


class Progress:
    def __init__(self, total: int):
        self.total = total

    def step(self, done: int, x0: torch.Tensor | None = None) -> None:
        log.debug("step %d/%d", done, self.total)


def add_lora(handle: torch.nn.Module, sd: dict, part: str, strength: float, source: str) -> torch.nn.Module:
    """A copy of the module with the LoRA merged; it shares every unpatched tensor with ``handle``."""
    return lora.apply(handle, sd, part, strength, source)


def control_net(module: torch.nn.Module) -> torch.nn.Module:
    """Outside ComfyUI the ControlNet module itself (``sana_core.controlnet.Control`` applies it)."""
    return module


def _needs_comfy(what: str):
    def missing(*args, **kwargs):
        raise SanaError(f"{what} exists only inside a running ComfyUI")

    return missing


def native_sampling(cfg) -> bool:
    """Outside ComfyUI SanaSample always takes the pack's own sampler."""
    return False


native_model = _needs_comfy("a Sana MODEL (Sana to MODEL)")
sample_native = _needs_comfy("ComfyUI's sampling")
vae_adapter = _needs_comfy("a Sana VAE (Sana to VAE)")
sampler_object = _needs_comfy("the Flow-DPM-Solver SAMPLER")
pag_model = _needs_comfy("PAG as a model patch (Sana PAG)")


def extend_host() -> None:
    """Outside ComfyUI there is no host state to change."""
