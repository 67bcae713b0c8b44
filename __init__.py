"""swd-comfyui: Scale-wise Distillation (SwD) sampling for ComfyUI."""
from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

WEB_DIRECTORY = "./web"


class SwDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SwDExtension:
    return SwDExtension()
