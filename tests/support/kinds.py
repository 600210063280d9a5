"""Test kinds, a pytest plugin. Every test is exactly one of ``unit``, ``parity``, ``host`` and ``browser``, plus
``gpu`` where it needs CUDA (pytest.ini describes each). A test whose kind needs what this machine lacks (a CUDA GPU,
the project environment's ComfyUI, Chromium) is skipped with the reason. The tests without exactly one kind are
kept in the session's stash under ``WRONG_KIND`` (tests/test_structure.py fails on them)."""

from __future__ import annotations

import shutil

import pytest

from .comfy_server import comfy_dir

KINDS = ("unit", "parity", "host", "browser")
WRONG_KIND = pytest.StashKey[list]()


def _lacks(item: pytest.Item) -> str | None:
    """Why ``item`` cannot run here, or None."""
    marks = {m.name for m in item.iter_markers()}
    if "gpu" in marks:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU"
    if marks & {"host", "browser"} and not (comfy_dir() / "main.py").exists():
        return "ComfyUI not installed: run scripts/setup_env.sh"
    if "browser" in marks and shutil.which("chromium") is None:
        return "chromium not installed: apt-get install chromium"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the check sees every collected test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        kinds = [m.name for m in item.iter_markers() if m.name in KINDS]
        if len(kinds) != 1:
            wrong.append(f"{item.nodeid}: {kinds or 'no kind'}")
        reason = _lacks(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    config.stash[WRONG_KIND] = wrong
