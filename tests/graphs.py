"""Small API-format prompt builders shared by the integration tests."""
from __future__ import annotations

from tiny_models import COND, UNET_FILE


def model_nodes(family: str, call_log: str | None = None) -> tuple[dict, list]:
    """Nodes that load the tiny model of `family`; returns (nodes, [node_id, slot] of the MODEL)."""
    if family == "sdxl":
        nodes = {"model": {"class_type": "SwDTestTinyUNet", "inputs": {"family": "sdxl", "tag": ""}}}
    else:
        nodes = {"model": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_FILE[family],
                                                                    "weight_dtype": "default"}}}
    ref = ["model", 0]
    if call_log:
        nodes["calllog"] = {"class_type": "SwDTestCallLog", "inputs": {"model": ref, "filename": call_log}}
        ref = ["calllog", 0]
    return nodes, ref


def cond_nodes(family: str, guidance: float | None = None) -> dict:
    ctx, pooled = COND["sd3" if family == "sd35" else family]
    nodes = {
        "pos": {"class_type": "SwDTestConditioning", "inputs": {"context_dim": ctx, "pooled_dim": pooled, "tokens": 8, "seed": 1}},
        "neg": {"class_type": "SwDTestConditioning", "inputs": {"context_dim": ctx, "pooled_dim": pooled, "tokens": 8, "seed": 2}},
    }
    if family == "flux":
        nodes["posg"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": guidance or 4.5}}
    return nodes


def positive_ref(family: str) -> list:
    return ["posg", 0] if family == "flux" else ["pos", 0]


def empty_latent(family: str, width: int, height: int, batch: int = 1) -> dict:
    cls = "EmptyLatentImage" if family == "sdxl" else "EmptySD3LatentImage"
    return {"class_type": cls, "inputs": {"width": width, "height": height, "batch_size": batch}}


def save_latent(source: list, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": source, "filename_prefix": prefix}}
