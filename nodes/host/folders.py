"""The host's model folders (``folder_paths``): listing weight files and diffusers model folders, and resolving a
widget's name to a path inside them."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ...sana_core.errors import SanaError
from ...sana_core.load.tensors import WEIGHT_SUFFIXES

_MARKERS = ("config.json", "model_index.json", "transformer", "vae", "text_encoder")


def _is_model_folder(p: Path) -> bool:
    return any((p / m).exists() for m in _MARKERS)


def roots(key: str) -> list[Path]:
    """The folders the host lists for ``key`` (``diffusion_models``, ``vae``, …); none for a key it does not know."""
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(key)]
    except KeyError:
        return []


def list_models(key: str, folders: bool = True, files: bool = True) -> list[str]:
    """Weight files and diffusers model folders in the ``key`` model folders, as relative names."""
    out: set[str] = set()
    for root in roots(key):
        if not root.is_dir():
            continue
        model_dirs = [d for d in root.rglob("*") if d.is_dir() and _is_model_folder(d)
                      and not any(_is_model_folder(a) for a in d.parents if root in a.parents)]
        if folders:
            out.update(d.relative_to(root).as_posix() for d in model_dirs)
        if files:
            for f in root.rglob("*"):
                if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES) and not any(d in f.parents for d in model_dirs):
                    out.add(f.relative_to(root).as_posix())
    return sorted(out)


def resolve_model(key: str, name: str) -> Path:
    """The path of ``name`` inside the ``key`` model folders; names that escape them are refused."""
    if not name or "\x00" in name:
        raise SanaError(f"no model selected for {key!r}")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise SanaError(f"model name {name!r} must be relative to the {key} model folder and stay inside it")
    found = roots(key)
    for root in found:
        p = (root / name)
        if p.exists():
            real, base = p.resolve(), root.resolve()
            if base != real and base not in real.parents and not p.is_symlink():
                raise SanaError(f"model name {name!r} resolves outside the {key} folder {root}")
            return p
    where = ", ".join(str(r) for r in found) or f"(ComfyUI has no {key} folder)"
    raise SanaError(f"{name!r} not found in the {key} model folder(s): {where}")
