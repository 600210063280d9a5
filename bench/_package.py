"""Script-only set-up for the benchmarks that use the nodes or the test fixtures: the package is registered under
the tests' stable name ``sana_comfy`` whatever the checkout folder is called (as tests/conftest.py does), and the
fixtures (the tokenizer builder) become importable."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
if "sana_comfy" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                   submodule_search_locations=[str(ROOT)])
    sys.modules["sana_comfy"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["sana_comfy"])
