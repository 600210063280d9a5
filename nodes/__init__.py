from . import host
from .native_nodes import NATIVE_DISPLAY_NAMES, NATIVE_NODES
from .sana_nodes import NODE_CLASS_MAPPINGS as _CORE
from .sana_nodes import NODE_DISPLAY_NAME_MAPPINGS as _CORE_NAMES

NODE_CLASS_MAPPINGS = {**_CORE, **NATIVE_NODES}
NODE_DISPLAY_NAME_MAPPINGS = {**_CORE_NAMES, **NATIVE_DISPLAY_NAMES}
host.extend_host()  # inside ComfyUI: KSampler's sana_flow_dpm_solver and the /sana/ routes; nothing outside

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
