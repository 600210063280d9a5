"""Sana for ComfyUI. Inside ComfyUI this exports ``comfy_entrypoint``, the extension with the nodes on ComfyUI's
public node API; elsewhere (scripts, benchmarks) importing it gives ``sana_core`` without the host."""

from importlib.util import find_spec

WEB_DIRECTORY = "./web"

if find_spec("comfy_api") is not None:  # inside ComfyUI: import errors then show in its custom-node table
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
else:
    __all__ = ["WEB_DIRECTORY"]
