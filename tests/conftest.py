"""pytest set-up. ComfyUI's own modules (the real 0.3.75 of the project environment) are imported in-process, as
ComfyUI's own unit tests import ``comfy.*``, on the CPU; the repo root is the ComfyUI package, imported under one
stable name, ``sana_comfy``, whatever the checkout folder is called (ComfyUI itself imports it under a path-derived
name). Tests that need a server start one (``comfy_server.py``)."""

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from comfy_server import comfy_dir  # noqa: E402

MODEL_KEYS = ("diffusers", "diffusion_models", "text_encoders", "vae", "loras", "controlnet")

if (comfy_dir() / "main.py").exists() and str(comfy_dir()) not in sys.path:
    sys.path.append(str(comfy_dir()))
    from comfy.cli_args import args

    args.cpu = True

if "sana_comfy" not in sys.modules:
    spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sana_comfy"] = module
    spec.loader.exec_module(module)
    if hasattr(module, "comfy_entrypoint"):
        module.nodes.host.extend_host()  # what the extension does when ComfyUI loads it


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


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """One tiny Sana pipeline saved by diffusers (read-only for every test that uses it)."""
    from fixtures_pipeline import build_tiny_repo

    return build_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def models_dir(tiny_repo, tmp_path_factory):
    """A ComfyUI-style models folder holding the tiny pipeline under the example workflows' names, as ComfyUI's
    model folders for the session."""
    from fixtures_pipeline import install_model_folders

    root = tmp_path_factory.mktemp("models")
    install_model_folders(tiny_repo, root)
    with models_at(root):
        yield root
