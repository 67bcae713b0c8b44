"""Tiny LoRA files shaped like the released SwD adapters, for the tiny test models, and the weights they must give.

LAYERS is written by hand from the model definitions (independent of ComfyUI's key maps): every diffusers module an
SwD LoRA targets in the tiny model, with the ComfyUI weight it patches, the first row of its slice in that weight
(SD3/FLUX fuse q, k, v into one qkv weight of 3 * hidden rows; FLUX's single blocks fuse q, k, v and the MLP input
into linear1) and its (out, in). PEFT's target modules to_q, to_k, to_v, to_out.0, net.0.proj, net.2 match these
names by suffix; FLUX adds context_embedder, proj_out and the single blocks.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

H = 128  # hidden size of the tiny SD3 and FLUX models


def _sd3_layers():
    layers = {}
    for i in range(2):
        layers |= {f"transformer_blocks.{i}.attn.to_q": (f"joint_blocks.{i}.x_block.attn.qkv.weight", 0, H, H),
                   f"transformer_blocks.{i}.attn.to_k": (f"joint_blocks.{i}.x_block.attn.qkv.weight", H, H, H),
                   f"transformer_blocks.{i}.attn.to_v": (f"joint_blocks.{i}.x_block.attn.qkv.weight", 2 * H, H, H),
                   f"transformer_blocks.{i}.attn.to_out.0": (f"joint_blocks.{i}.x_block.attn.proj.weight", 0, H, H),
                   f"transformer_blocks.{i}.ff.net.0.proj": (f"joint_blocks.{i}.x_block.mlp.fc1.weight", 0, 4 * H, H),
                   f"transformer_blocks.{i}.ff.net.2": (f"joint_blocks.{i}.x_block.mlp.fc2.weight", 0, H, 4 * H)}
    # the last block is context_pre_only: its text stream has no MLP
    context = "joint_blocks.0.context_block.mlp"
    layers |= {"transformer_blocks.0.ff_context.net.0.proj": (f"{context}.fc1.weight", 0, 4 * H, H),
               "transformer_blocks.0.ff_context.net.2": (f"{context}.fc2.weight", 0, H, 4 * H)}
    return layers


def _flux_layers():
    return {
        "transformer_blocks.0.attn.to_q": ("double_blocks.0.img_attn.qkv.weight", 0, H, H),
        "transformer_blocks.0.attn.to_k": ("double_blocks.0.img_attn.qkv.weight", H, H, H),
        "transformer_blocks.0.attn.to_v": ("double_blocks.0.img_attn.qkv.weight", 2 * H, H, H),
        "transformer_blocks.0.attn.to_out.0": ("double_blocks.0.img_attn.proj.weight", 0, H, H),
        "transformer_blocks.0.ff.net.0.proj": ("double_blocks.0.img_mlp.0.weight", 0, 4 * H, H),
        "transformer_blocks.0.ff.net.2": ("double_blocks.0.img_mlp.2.weight", 0, H, 4 * H),
        "transformer_blocks.0.ff_context.net.0.proj": ("double_blocks.0.txt_mlp.0.weight", 0, 4 * H, H),
        "transformer_blocks.0.ff_context.net.2": ("double_blocks.0.txt_mlp.2.weight", 0, H, 4 * H),
        "single_transformer_blocks.0.attn.to_q": ("single_blocks.0.linear1.weight", 0, H, H),
        "single_transformer_blocks.0.attn.to_k": ("single_blocks.0.linear1.weight", H, H, H),
        "single_transformer_blocks.0.attn.to_v": ("single_blocks.0.linear1.weight", 2 * H, H, H),
        "single_transformer_blocks.0.proj_out": ("single_blocks.0.linear2.weight", 0, H, H + 4 * H),
        "context_embedder": ("txt_in.weight", 0, H, 64),
        "proj_out": ("final_layer.linear.weight", 0, 64, H),
    }


def _sdxl_layers():
    c = 64  # channels of the tiny UNet's attention blocks; its text context is also 64 wide
    blocks = {"down_blocks.1.attentions.0": "input_blocks.3.1", "mid_block.attentions.0": "middle_block.1",
              "up_blocks.0.attentions.0": "output_blocks.0.1", "up_blocks.0.attentions.1": "output_blocks.1.1"}
    layers = {}
    for diffusers, comfy in blocks.items():
        projections = [(f"{attn}.{proj}", c, c) for attn in ("attn1", "attn2")
                       for proj in ("to_q", "to_k", "to_v", "to_out.0")]
        for sub, out, inp in (*projections, ("ff.net.0.proj", 8 * c, c), ("ff.net.2", c, 4 * c)):
            native = f"{comfy}.transformer_blocks.0.{sub}.weight"
            layers[f"{diffusers}.transformer_blocks.0.{sub}"] = (native, 0, out, inp)
    return layers


LAYERS = {"sd3": _sd3_layers(), "flux": _flux_layers(), "sdxl": _sdxl_layers()}
DIFFUSERS_PREFIX = {"sd3": "transformer.", "flux": "transformer.", "sdxl": "unet."}
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"]


def lora_pairs(family: str, rank: int = 4, seed: int = 0, layers=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A (r, in), B (out, r))}, seeded; B is not zero (a trained LoRA)."""
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(rank, inp, generator=g) * 0.1, torch.randn(out, rank, generator=g) * 0.1)
            for m, (_, _, out, inp) in (layers or LAYERS[family]).items()}


def write_peft(path: Path, pairs, lora_alpha: float | None = None, metadata: dict | None = None) -> Path:
    """base_model.model.<module>.lora_A/B.weight, plus adapter_config.json beside it when lora_alpha is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for m, (a, b) in pairs.items():
        sd[f"base_model.model.{m}.lora_A.weight"] = a
        sd[f"base_model.model.{m}.lora_B.weight"] = b
    save_file(sd, str(path), metadata=metadata)
    if lora_alpha is not None:
        rank = next(iter(pairs.values()))[0].shape[0]
        config = {"peft_type": "LORA", "r": rank, "lora_alpha": lora_alpha, "target_modules": TARGET_MODULES,
                  "init_lora_weights": "gaussian", "use_rslora": False}
        (path.parent / "adapter_config.json").write_text(json.dumps(config))
    return path


def write_diffusers(path: Path, pairs, prefix: str, lora_alpha: float | None = None) -> Path:
    """<prefix><module>.lora_A/B.weight, the LoraConfig in the `lora_adapter_metadata` field (diffusers' pipeline
    save_lora_weights form, each field prefixed with the component) when lora_alpha is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for m, (a, b) in pairs.items():
        sd[f"{prefix}{m}.lora_A.weight"] = a
        sd[f"{prefix}{m}.lora_B.weight"] = b
    metadata = None
    if lora_alpha is not None:
        component = prefix.rstrip(".")
        rank = next(iter(pairs.values()))[0].shape[0]
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(
            {f"{component}.r": rank, f"{component}.lora_alpha": lora_alpha,
             f"{component}.target_modules": TARGET_MODULES})}
    save_file(sd, str(path), metadata=metadata)
    return path


def write_kohya(path: Path, pairs, alpha: float | None = None) -> Path:
    """lora_unet_<module with "." -> "_">.lora_down/lora_up.weight and .alpha."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for m, (a, b) in pairs.items():
        key = "lora_unet_" + m.replace(".", "_")
        sd[f"{key}.lora_down.weight"] = a
        sd[f"{key}.lora_up.weight"] = b
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path))
    return path


def expected_weights(base: dict[str, torch.Tensor], family: str, pairs, strength: float, scale: float,
                     layers=None) -> dict[str, torch.Tensor]:
    """base with W[rows] += strength * scale * (B @ A) for every module (rows: the module's slice)."""
    layers = layers or LAYERS[family]
    out = {k: v.clone() for k, v in base.items()}
    for m, (a, b) in pairs.items():
        key, first, rows, _ = layers[m]
        out[key][first:first + rows] += strength * scale * (b.double() @ a.double()).float()
    return out


def targeted_keys(family: str) -> set[str]:
    return {key for key, _, _, _ in LAYERS[family].values()}
