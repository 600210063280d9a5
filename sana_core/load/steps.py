"""The steps every component's loader takes, in order:

1. find the files (``files.locate``: a weight file, the component's folder, or a repo holding it);
2. read the weights (``tensors.read_weights``: memory-mapped, nothing is copied yet);
3. recognise the family from the key names (``families.sniff``);
4. convert the layout to diffusers' key names (the component's key map);
5. detect the config (the component's own: from config.json and the tensors' shapes);
6. build the model on the meta device and load the weights into it (``build``);
7. keep the large weights in 8 bits when asked (``build``'s ``storage``);
8. install the speed layer (``speed.apply``, the loader's last line).

A component states what is its own in a ``Component``: where its folder sits in a repo, its weight-file stems and
wrapper prefixes, the families it takes with each one's key map, and its error for any other family. Steps 1–4 are
``read_checkpoint``; step 5 is the component's loader; steps 6–7 are ``build``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SanaError
from ..quant import STORAGE, quantize
from .families import Family, sniff
from .files import Located, locate
from .tensors import load_into, read_weights, strip_prefix

KeyMap = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A dtype given as a ``torch.dtype`` or by name (``DTYPES``); None for "auto" (the file's own)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise SanaError(f"weight dtype {dtype!r} is not one of {list(DTYPES)}")
        return DTYPES[dtype]
    return dtype


@dataclass(frozen=True)
class Component:
    """What one kind of model contributes to loading."""

    name: str  # as errors name its weights: "Sana transformer"
    folder: str  # its folder in a diffusers repo: "transformer"
    stems: tuple[str, ...]  # weight-file stems in a folder, in order of preference
    prefixes: tuple[str, ...]  # wrapper prefixes stripped when every key carries one
    layouts: Mapping[Family, KeyMap | None]  # the families it takes, each with its key map (None: diffusers names)
    wrong_family: Callable[[str, dict, Family], SanaError]  # (source, state dict, family) → the error
    drop: tuple[str, ...] = ()  # key prefixes dropped before anything else (parts the model does not hold)


@dataclass(frozen=True)
class Checkpoint:
    """A component's weights as read: where they are, the file, the family, and the tensors in diffusers names."""

    where: Located
    source: str  # the weight file, as messages name it
    family: Family
    state_dict: dict[str, torch.Tensor]  # diffusers names
    original: dict[str, torch.Tensor]  # as in the file (wrapper prefixes stripped)


def read_checkpoint(component: Component, path: str | Path | Located) -> Checkpoint:
    """Steps 1–4: locate, read, recognise and convert; a file of another family raises the component's error."""
    where = path if isinstance(path, Located) else locate(path, component.folder)
    weights = where.weights(component.stems, component.name)
    sd = read_weights(weights)
    if component.drop:
        sd = {k: v for k, v in sd.items() if not k.startswith(component.drop)}
    sd = strip_prefix(sd, component.prefixes)
    family = sniff(sd)
    if family not in component.layouts:
        raise component.wrong_family(str(weights), sd, family)
    key_map = component.layouts[family]
    return Checkpoint(where, str(weights), family, key_map(sd) if key_map else sd, sd)


def build(make: Callable[[], torch.nn.Module], ckpt: Checkpoint, dtype: torch.dtype, device: str | torch.device,
          *, storage: str | None = None, operations=None,
          after_load: Callable[[torch.nn.Module], None] | None = None) -> tuple[torch.nn.Module, int]:
    """Steps 6–7: ``make()`` on the meta device, the weights loaded in ``dtype`` (strictly), ``after_load`` (buffers
    the file does not hold), 8-bit ``storage`` if asked, then on ``device`` in eval mode without gradients.
    Returns (the model, its parameter count before 8-bit storage)."""
    with torch.device("meta"):
        model = make()
    load_into(model, ckpt.state_dict, dtype, ckpt.source)
    if after_load is not None:
        after_load(model)
    params = sum(p.numel() for p in model.parameters())
    if storage:
        if storage not in STORAGE:
            raise SanaError(f"weight storage {storage!r} is not one of {list(STORAGE)}")
        quantize(model, dtype, storage, operations=operations)
    return model.to(device).eval().requires_grad_(False), params
