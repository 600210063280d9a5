"""pytest set-up: the repo root is the ComfyUI package; tests import it under one stable name, `sana_comfy`,
whatever the checkout folder is called (ComfyUI itself imports it under a path-derived name)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if "sana_comfy" not in sys.modules:
    spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sana_comfy"] = module
    spec.loader.exec_module(module)
