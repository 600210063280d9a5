"""pytest set-up: the repo root is the ComfyUI package; tests import it under one stable name, `sana_comfy`,
whatever the checkout folder is called (ComfyUI itself imports it under a path-derived name)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if "sana_comfy" not in sys.modules:
    spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sana_comfy"] = module
    spec.loader.exec_module(module)



@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """One tiny Sana pipeline saved by diffusers (read-only for every test that uses it)."""
    from fixtures_pipeline import build_tiny_repo

    return build_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def models_dir(tiny_repo, tmp_path_factory):
    """A ComfyUI-style models folder holding the tiny pipeline under the example workflows' names, published to
    the stand-in host as $SANA_MODELS_DIR."""
    from fixtures_pipeline import install_model_folders

    root = tmp_path_factory.mktemp("models")
    install_model_folders(tiny_repo, root)
    mp = pytest.MonkeyPatch()
    mp.setenv("SANA_MODELS_DIR", str(root))
    yield root
    mp.undo()
