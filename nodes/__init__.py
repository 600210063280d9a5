from . import host
from .native_nodes import NATIVE_DISPLAY_NAMES, NATIVE_NODES
from .sana_nodes import NODE_CLASS_MAPPINGS as _CORE
from .sana_nodes import NODE_DISPLAY_NAME_MAPPINGS as _CORE_NAMES

NODE_CLASS_MAPPINGS = {**_CORE, **NATIVE_NODES}
NODE_DISPLAY_NAME_MAPPINGS = {**_CORE_NAMES, **NATIVE_DISPLAY_NAMES}
host.register_native()  # inside ComfyUI: the Flow-DPM-Solver joins KSampler's sampler list

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
