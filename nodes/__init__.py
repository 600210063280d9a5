from . import host
from .lora_nodes import LORA_DISPLAY_NAMES, LORA_NODES
from .native_nodes import NATIVE_DISPLAY_NAMES, NATIVE_NODES
from .sana_nodes import NODE_CLASS_MAPPINGS as _CORE
from .sana_nodes import NODE_DISPLAY_NAME_MAPPINGS as _CORE_NAMES

NODE_CLASS_MAPPINGS = {**_CORE, **LORA_NODES, **NATIVE_NODES}
NODE_DISPLAY_NAME_MAPPINGS = {**_CORE_NAMES, **LORA_DISPLAY_NAMES, **NATIVE_DISPLAY_NAMES}
host.extend_host()  # inside ComfyUI: KSampler's sana_flow_dpm_solver and the /sana/ routes; nothing outside

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
