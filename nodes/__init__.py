"""The pack's nodes on ComfyUI's public node API (``comfy_api.latest``), and the extension that registers them.

``comfy_api.latest`` is the API ComfyUI's own nodes are written on, so it is the one each release keeps working;
fields newer hosts add (search aliases) are given only where the host's schema has them (``widgets.schema``)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import host, lora_nodes, native_nodes, sana_nodes, video_nodes

NODES: dict[str, type[io.ComfyNode]] = {c.__name__: c for c in (*sana_nodes.NODES, *lora_nodes.NODES,
                                                                 *native_nodes.NODES, *video_nodes.NODES)}


class SanaExtension(ComfyExtension):
    async def on_load(self) -> None:
        host.extend_host()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        host.extend_host()  # hosts that do not call on_load (0.3.x) ask for the node list only; it runs once
        return list(NODES.values())


async def comfy_entrypoint() -> SanaExtension:
    return SanaExtension()
