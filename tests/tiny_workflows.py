"""Runs the shipped workflows on tiny seeded stand-ins (tests/test_workflows.py and `make demo`).

The loaders of the real files become the test-only nodes of tests/comfy_test_nodes (the same outputs, tiny
models); the LoRA loader stays the pack's own and reads tiny PEFT LoRAs written under the workflows' file names.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from workflow_to_api import FRONTEND_ONLY

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
STAND_INS = {"CheckpointLoaderSimple": "SwDTestTinyCheckpoint", "UNETLoader": "SwDTestTinyUNet",
             "TripleCLIPLoader": "SwDTestTinyCLIP", "DualCLIPLoader": "SwDTestTinyCLIP",
             "CLIPLoader": "SwDTestTinyCLIP", "VAELoader": "SwDTestTinyVAE"}
SIZED = {"EmptySD3LatentImage", "EmptyLatentImage", "SwDLatentUpscaleRenoise"}


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


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


# Tiny PEFT LoRAs ----------------------------------------------------------------------------------------------
# (diffusers layer name, out features, in features) of layers the tiny models of tests/tiny_models.py and
# tests/comfy_test_nodes have, in the naming of the released SwD adapters (base_model.model.<layer>.lora_A/B).

def _sd3_layers(blocks: int = 2, hidden: int = 128):
    for i in range(blocks):
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            yield f"transformer_blocks.{i}.attn.{proj}", hidden, hidden
        yield f"transformer_blocks.{i}.ff.net.0.proj", 4 * hidden, hidden
        yield f"transformer_blocks.{i}.ff.net.2", hidden, 4 * hidden


def _flux_layers(hidden: int = 128):
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        yield f"transformer_blocks.0.attn.{proj}", hidden, hidden
    yield "transformer_blocks.0.ff.net.0.proj", 4 * hidden, hidden
    yield "transformer_blocks.0.ff.net.2", hidden, 4 * hidden
    for proj in ("to_q", "to_k", "to_v"):
        yield f"single_transformer_blocks.0.attn.{proj}", hidden, hidden


def _sdxl_layers(channels: int = 64, context: int = 64):
    block = "mid_block.attentions.0.transformer_blocks.0"
    for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        yield f"{block}.attn1.{proj}", channels, channels
    yield f"{block}.attn2.to_q", channels, channels
    yield f"{block}.attn2.to_k", channels, context
    yield f"{block}.attn2.to_v", channels, context


TINY_LAYERS = {"sd3": _sd3_layers, "flux": _flux_layers, "sdxl": _sdxl_layers}


def write_tiny_lora(path: Path, family_: str, rank: int = 4, seed: int = 0) -> Path:
    """A small, seeded PEFT LoRA for the tiny model of `family_` (lora_B is not zero, so it changes the model)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer, out_features, in_features in TINY_LAYERS[family_]():
        sd[f"base_model.model.{layer}.lora_A.weight"] = torch.randn((rank, in_features), generator=g) * 0.01
        sd[f"base_model.model.{layer}.lora_B.weight"] = torch.randn((out_features, rank), generator=g) * 0.01
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
