"""ComfyUI's own modules (the real 0.3.75 of the project environment) imported in this process, on the CPU, as
ComfyUI's own unit tests import ``comfy.*``; the repo root imported as a package under one stable name,
``sana_comfy``, whatever the checkout folder is called (ComfyUI itself imports it under a path-derived name); and
ComfyUI's model folders pointed at a test's own."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from . import ROOT
from .comfy_server import comfy_dir

MODEL_KEYS = ("diffusers", "diffusion_models", "text_encoders", "vae", "loras", "controlnet")


def register_package() -> ModuleType:
    """The repo root imported as ``sana_comfy``; imported again when it was first imported before ComfyUI was
    importable, so that it exposes the nodes now. Safe to call again."""
    module = sys.modules.get("sana_comfy")
    if module is None:
        spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sana_comfy"] = module
        spec.loader.exec_module(module)
    elif not hasattr(module, "comfy_entrypoint") and importlib.util.find_spec("comfy_api") is not None:
        module.__spec__.loader.exec_module(module)
    return module


def setup() -> None:
    """ComfyUI's folder on ``sys.path`` after the path's own entries (CPU only; ``--cpu`` is read when
    ``comfy.model_management`` is first imported) where it is installed, and the package imported as ``sana_comfy``
    with the host extended, as the extension does when ComfyUI loads it. Safe to call again."""
    if (comfy_dir() / "main.py").exists() and str(comfy_dir()) not in sys.path:
        sys.path.append(str(comfy_dir()))
        from comfy.cli_args import args

        args.cpu = True
    module = register_package()
    if hasattr(module, "comfy_entrypoint"):
        module.nodes.host.extend_host()


@contextlib.contextmanager
def models_at(root: Path):
    """ComfyUI's model folders (``folder_paths``) pointed at ``root``/<key> for the block, then restored."""
    import folder_paths

    kept = {k: folder_paths.folder_names_and_paths.get(k) for k in MODEL_KEYS}
    for key in MODEL_KEYS:
        folder_paths.folder_names_and_paths[key] = ([str(root / key)], set(folder_paths.supported_pt_extensions))
    try:
        yield root
    finally:
        for key, value in kept.items():
            if value is None:
                folder_paths.folder_names_and_paths.pop(key, None)
            else:
                folder_paths.folder_names_and_paths[key] = value


def point_models(monkeypatch, root: Path) -> None:
    """ComfyUI's model folders pointed at ``root``/<key> until the test ends."""
    import folder_paths

    for key in MODEL_KEYS:
        monkeypatch.setitem(folder_paths.folder_names_and_paths, key,
                            ([str(root / key)], set(folder_paths.supported_pt_extensions)))
