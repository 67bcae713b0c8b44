"""swd-comfyui: Scale-wise Distillation (SwD) sampling for ComfyUI."""
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

WEB_DIRECTORY = "./web"
MODELS = Path(__file__).resolve().parent / "models"


class SwDExtension(ComfyExtension):
    async def on_load(self) -> None:
        """The shipped tiny family appears in UNETLoader's and SwD LoRA Loader's lists, with no copying."""
        import folder_paths
        for folder in ("diffusion_models", "loras"):
            folder_paths.add_model_folder_path(folder, str(MODELS / folder))

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SwDExtension:
    return SwDExtension()
