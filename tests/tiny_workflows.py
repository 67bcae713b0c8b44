"""Runs the shipped workflows on tiny seeded stand-ins (tests/test_workflows.py and `make demo`).

The loaders of the real files become the test-only nodes of tests/comfy_test_nodes (the same outputs, tiny
models); the LoRA loader stays the pack's own and reads tiny PEFT LoRAs written under the workflows' file names.
The tiny demo workflows need no stand-ins: they load the tiny family that the pack ships in its models/ folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lora_files import lora_pairs, write_peft
from workflow_to_api import FRONTEND_ONLY

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
STAND_INS = {"CheckpointLoaderSimple": "SwDTestTinyCheckpoint", "UNETLoader": "SwDTestTinyUNet",
             "TripleCLIPLoader": "SwDTestTinyCLIP", "DualCLIPLoader": "SwDTestTinyCLIP",
             "CLIPLoader": "SwDTestTinyCLIP", "VAELoader": "SwDTestTinyVAE"}
SIZED = {"EmptySD3LatentImage", "EmptyLatentImage", "SwDLatentUpscaleRenoise", "ImageScale"}
INPUT_IMAGE = "example.png"  # what the img2img and inpainting workflows load (ComfyUI ships one in input/)
PACK_MODELS = REPO / "models"  # the tiny family, registered with ComfyUI's folder_paths by the pack's on_load
TINY_NODES = {"SwDTinyTextEncode", "SwDTinyDecode", "SwDTinyEncode"}


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def ships_its_models(workflow: dict) -> bool:
    """Whether a workflow is one of the tiny demos, which run as shipped on the pack's own models."""
    return any(n["type"] in TINY_NODES for n in workflow["nodes"])


def family(workflow: dict) -> str:
    """"flux", "sdxl" or "sd3": the model family a workflow is built for, read from its presets and latents."""
    types = {n["type"] for n in workflow["nodes"]}
    words = " ".join(str(v) for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY
                     for v in n.get("widgets_values") or [])
    if "FluxGuidance" in types or "FLUX" in words:
        return "flux"
    if "EmptyLatentImage" in types or "SDXL" in words:
        return "sdxl"
    return "sd3"


def with_tiny_models(prompt: dict, family_: str, tag: str, shrink: int = 4) -> dict:
    """A copy of an API prompt with every loader replaced by its tiny stand-in (tagged so that ComfyUI's cache never
    reuses another run's models) and every pixel size divided by `shrink`, kept a multiple of 16."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        kind = node["class_type"]
        if kind in STAND_INS:
            node["class_type"] = STAND_INS[kind]
            node["inputs"] = {"family": family_, "tag": tag}
        elif kind in SIZED:
            for key in ("width", "height"):
                if isinstance(node["inputs"].get(key), int) and node["inputs"][key] > 0:
                    node["inputs"][key] = max(16, round(node["inputs"][key] / shrink / 16) * 16)
    return out


def loras_used(workflow: dict) -> list[str]:
    return sorted({n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "SwDLoraLoader"})


def write_tiny_lora(path: Path, family_: str) -> Path:
    """A small seeded PEFT LoRA (the released adapters' key names) for the tiny model of `family_`."""
    return write_peft(path, lora_pairs(family_))


def write_input_image(input_dir: Path) -> Path:
    """A seeded 512 x 512 RGBA picture under the name the workflows load; its left half is transparent, which
    LoadImage turns into a mask of 1 there (the part to inpaint)."""
    rgba = np.random.default_rng(0).integers(0, 256, (512, 512, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :256, 3] = 0
    input_dir.mkdir(parents=True, exist_ok=True)
    path = input_dir / INPUT_IMAGE
    Image.fromarray(rgba, "RGBA").save(path)
    return path
