"""Registry readiness: comfy-cli's `node validate` passes offline and `node pack` holds only what belongs."""

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from support import ROOT

COMFY = Path(os.environ.get("SANA_ENV", ROOT / ".sana-env")) / "cli" / "bin" / "comfy"
pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not COMFY.exists(), reason="comfy-cli not installed: run scripts/setup_env.sh")]


def _comfy(cwd, *args):
    env = {**os.environ, "HOME": str(cwd.parent)}  # keep comfy-cli's config out of the real home
    return subprocess.run([str(COMFY), "--skip-prompt", "--no-enable-telemetry", "node", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_validate_and_pack(tmp_path):
    repo = tmp_path / "pkg"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)  # the committed tree, as published
    out = _comfy(repo, "validate")
    assert out.returncode == 0 and "passed" in out.stdout + out.stderr, out.stdout + out.stderr
    out = _comfy(repo, "pack")
    assert out.returncode == 0, out.stdout + out.stderr
    names = set(zipfile.ZipFile(repo / "node.zip").namelist())
    for need in ("__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "nodes/sana_nodes.py",
                 "nodes/host/__init__.py", "nodes/host/comfy_classes.py",
                 "sana_core/transformer.py", "web/sana.js", "example_workflows/Sana text to image.json"):
        assert need in names, need
    stray = sorted(n for n in names if n.startswith(("tests/", "bench/", ".ci/", "scripts/", ".sana-env")))
    assert not stray, stray


def test_pyproject_has_what_the_registry_reads_and_no_placeholders():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=0.3.")
    assert all(v not in ("", None) for v in comfy.values()), comfy  # an empty Icon or URL is rejected
    assert meta["project"]["name"] and meta["project"]["version"] and meta["project"]["description"]
    assert all(u.startswith("https://") for u in meta["project"]["urls"].values())
