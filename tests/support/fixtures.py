"""The set-ups many test modules share, as pytest fixtures (a plugin that tests/conftest.py loads)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .comfy_server import comfy_dir
from .inprocess import models_at
from .pipeline import build_tiny_repo, install_model_folders
from .text import TinyGemma, build_tiny_gemma, build_tokenizer

PIPELINE = "Sana_600M_1024px_diffusers"  # the tiny pipeline's name in the model folders (the examples' name)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """One tiny Sana pipeline saved by diffusers (read-only for every test that uses it)."""
    return build_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def video_repo(tmp_path_factory) -> Path:
    """One tiny SANA-Video pipeline saved by diffusers (read-only)."""
    from .video import build_tiny_video_repo

    return build_tiny_video_repo(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="session")
def sprint_repo(tmp_path_factory) -> Path:
    """One tiny Sana-Sprint pipeline saved by diffusers (qk-norm, guidance embedding, SCM scheduler; read-only)."""
    return build_tiny_repo(tmp_path_factory.mktemp("sprint"), sprint=True)


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> TinyGemma:
    """A tiny random Gemma-2 with the tiny tokenizer, as a plain Gemma folder and a Sana repo (read-only)."""
    root = tmp_path_factory.mktemp("text")
    return build_tiny_gemma(root / "gemma", build_tokenizer(root / "tokenizer"))


@pytest.fixture(scope="session")
def models_dir(tiny_repo, tmp_path_factory):
    """A ComfyUI-style models folder holding the tiny pipeline under the example workflows' names, as ComfyUI's
    model folders for the session."""
    root = tmp_path_factory.mktemp("models")
    install_model_folders(tiny_repo, root)
    with models_at(root):
        yield root


@pytest.fixture(scope="module")
def pipeline_nodes(models_dir):
    """(model, text encoder, DC-AE) of the tiny pipeline as SanaLoadPipeline gives them in fp32, one per module."""
    from sana_comfy.nodes import NODES

    return NODES["SanaLoadPipeline"].execute(PIPELINE, "fp32").result[:3]


@pytest.fixture(scope="session")
def host_base(tiny_repo, video_repo, tmp_path_factory) -> Callable[..., Path]:
    """``host_base(name, inputs=False)``: a fresh base directory for a ComfyUI server, the tiny image and video
    pipelines in its models/ under the example workflows' names; with ``inputs``, its input/ holds what a fresh
    ComfyUI ships there (example.png) and nothing else."""
    def make(name: str, inputs: bool = False) -> Path:
        base = tmp_path_factory.mktemp(name)
        install_model_folders(tiny_repo, base / "models", video=video_repo)
        if inputs:
            (base / "input").mkdir()
            for f in (comfy_dir() / "input").iterdir():
                if f.is_file():
                    shutil.copy(f, base / "input" / f.name)
        return base

    return make


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's) driven by Playwright, one per module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
