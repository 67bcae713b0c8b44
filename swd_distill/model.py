"""The tiny teacher network (ComfyUI's own SD3 MMDiT class, so its state dict is ComfyUI's key format) and the way
to import ComfyUI from the command line. (The adapters that make the student and the fake score, for any model, are
in adapters.py; the teacher as a ComfyUI model in network.py.)

The network predicts the flow velocity v = eps - x0 at timestep t = 1000 * sigma (ComfyUI's SD3 model sampling),
so x0 = x - sigma * v, exactly what ComfyUI computes when it samples the saved file.

"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from .tiny import MMDIT


def import_comfy(cpu: bool | None = None):
    """Put ComfyUI (COMFYUI_PATH, or the tree `make setup` made) on sys.path; cpu=None: CPU unless CUDA works."""
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    path = os.environ.get("COMFYUI_PATH") or (root / ".comfyui" / "comfyui_path").read_text().strip()
    if path not in sys.path:
        sys.path.insert(0, path)
    if "comfy.model_management" not in sys.modules:
        from comfy.cli_args import args
        args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu


def torch_default_init(module: nn.Module) -> nn.Module:
    """Give the comfy.ops layers of `module` (which skip initialisation) torch's own default initialisation."""
    for layer in module.modules():
        for kind in (nn.Conv2d, nn.Linear, nn.LayerNorm):
            if isinstance(layer, kind):
                kind.reset_parameters(layer)
    return module


def build_mmdit(seed: int) -> nn.Module:
    """The teacher's MMDiT (SD3 class, depth 2, hidden 128) with DiT's initialisation from `seed`: xavier linear
    layers, zero modulation and output layers (so it starts as the identity of its blocks), SD3's fixed 2-D sin-cos
    position table."""
    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT, get_2d_sincos_pos_embed_torch
    torch.manual_seed(seed)
    size = MMDIT["pos_embed_max_size"]
    net = MMDiT(patch_size=MMDIT["patch_size"], in_channels=MMDIT["in_channels"], out_channels=MMDIT["out_channels"],
                depth=MMDIT["depth"], adm_in_channels=MMDIT["adm_in_channels"], qk_norm="rms",
                context_embedder_config={"target": "torch.nn.Linear", "params": {
                    "in_features": MMDIT["context_dim"], "out_features": 64 * MMDIT["depth"]}},
                pos_embed_max_size=size, num_patches=size * size, operations=comfy.ops.disable_weight_init)
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            nn.init.xavier_uniform_(p.view(p.shape[0], -1))
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)  # RMSNorm weights
    for module in net.modules():
        if hasattr(module, "adaLN_modulation"):
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)
    nn.init.zeros_(net.final_layer.linear.weight)
    for mlp in (net.t_embedder.mlp, net.y_embedder.mlp):
        nn.init.normal_(mlp[0].weight, std=0.02)
        nn.init.normal_(mlp[2].weight, std=0.02)
    with torch.no_grad():
        net.pos_embed.copy_(get_2d_sincos_pos_embed_torch(net.hidden_size, size, size).reshape(1, size * size, -1))
    return net
