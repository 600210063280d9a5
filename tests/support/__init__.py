"""What the tests share: tiny random models in the published layouts (``models``, ``pipeline``, ``text``, ``vae``,
``lora``, ``controlnet``), ComfyUI's modules in this process (``inprocess``), a real ComfyUI server
(``comfy_server``), the pytest fixtures (``fixtures``) and the test kinds (``kinds``). Scripts import it too, with
tests/ on their path."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (the ComfyUI package)
