"""The shape of sana_core, read from its source: no import cycle anywhere (every import counts, lazy ones too); the
model files import neither the speed layer nor the loaders; no ImportError is swallowed; no host import."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CORE = Path(__file__).resolve().parents[1] / "sana_core"
MODEL_FILES = ("transformer", "controlnet", "dcae", "dcae_blocks", "text_encoder", "taesana", "video_transformer")


def _name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in CORE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The sana_core modules ``module`` imports, at any depth of its code: each named module, and a name taken from
    a package when it is a submodule; the packages above each one (Python imports them first), except the
    importer's own."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    found = {m for m in found if m in MODULES}
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    return (found | {p for p in parents if p in MODULES}) - own


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_walk_sees_the_imports():
    assert "sana_core.load.steps" in GRAPH["sana_core.load.transformer"]
    assert "sana_core.transformer" in GRAPH["sana_core.load.transformer"]
    assert "sana_core.speed.text_encoder" in GRAPH["sana_core.speed"]  # a lazy import counts


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(n):] + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("model", MODEL_FILES)
def test_model_files_import_neither_speed_nor_loaders(model):
    def reaches(m: str, seen: set[str]) -> set[str]:
        for n in GRAPH[m] - seen:
            seen.add(n)
            reaches(n, seen)
        return seen

    bad = {m for m in reaches(f"sana_core.{model}", set()) if m.startswith(("sana_core.speed", "sana_core.load"))}
    assert not bad, f"sana_core/{model}.py reaches {sorted(bad)}"


def test_no_import_error_is_swallowed_and_no_host_import():
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and "ImportError" in ast.unparse(node.type or ast.Name("")):
                assert any(isinstance(n, ast.Raise) for n in ast.walk(node)), f"{module}: swallows an ImportError"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("comfy", "folder_paths", "comfy_api", "nodes") for n in names), \
                    f"{module} imports the host: {names}"


def test_every_test_is_of_exactly_one_kind(request):
    """Each collected test carries exactly one of the kinds in pytest.ini (unit, parity, host, browser), so that
    ``-m`` selects every test by what it needs; ``gpu`` comes on top where a test needs CUDA."""
    from support.kinds import WRONG_KIND

    wrong = request.config.stash[WRONG_KIND]
    assert not wrong, "mark each with one of unit, parity, host, browser:\n" + "\n".join(wrong)
