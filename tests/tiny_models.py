"""Tiny seeded models built from ComfyUI's own classes, saved with safetensors (run inside ComfyUI's tree).

    python tests/tiny_models.py OUT_DIR

writes OUT_DIR/tiny_sd3.safetensors (2-block MMDiT, hidden 128: detected as SD3 by UNETLoader) and
OUT_DIR/tiny_flux.safetensors (1 double + 1 single block, hidden 128 = one 128-wide head: detected as FLUX.1-dev) and
OUT_DIR/tiny_sd35.safetensors (tiny_sd3 with SD3.5 Medium's MMDiT-X attn2 in block 0).
The conditioning sizes are small and fixed here (COND, also for the test-only SDXL UNet); the test-only nodes and
tests/graphs.py build matching conditionings from them.
"""
from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

SD3_CONTEXT, SD3_POOLED = 64, 32  # context embedder in-features, pooled (adm) width
FLUX_CONTEXT, FLUX_POOLED = 64, 32
SDXL_CONTEXT, SDXL_POOLED = 64, 1280  # the test-only SDXL UNet (tests/comfy_test_nodes): SDXL's adm needs 1280
COND = {"sd3": (SD3_CONTEXT, SD3_POOLED), "flux": (FLUX_CONTEXT, FLUX_POOLED), "sdxl": (SDXL_CONTEXT, SDXL_POOLED)}
UNET_FILE = {"sd3": "tiny_sd3.safetensors", "flux": "tiny_flux.safetensors", "sd35": "tiny_sd35.safetensors"}


def _randomize(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in module.state_dict().items():
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", ".scale")) or "key_norm" in name or "query_norm" in name:
            v = torch.ones(t.shape)
        else:
            v = torch.randn(t.shape, generator=g) * 0.05
        out[name] = v.contiguous()
    return out


def build_sd3(seed: int = 0, attn2_blocks: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """attn2_blocks: SD3.5 Medium's MMDiT-X, whose first blocks have a second image self-attention (x_block.attn2)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    model = MMDiT(patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=SD3_POOLED,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": SD3_CONTEXT, "out_features": 128}},
                  pos_embed_max_size=64, num_patches=64 * 64, x_block_self_attn_layers=list(attn2_blocks),
                  operations=comfy.ops.disable_weight_init)
    return _randomize(model, seed)


def build_sd35(seed: int = 2) -> dict[str, torch.Tensor]:
    return build_sd3(seed, attn2_blocks=(0,))


def build_flux(seed: int = 1) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    model = Flux(in_channels=16, out_channels=16, vec_in_dim=FLUX_POOLED, context_in_dim=FLUX_CONTEXT, hidden_size=128,
                 mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000,
                 patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[],
                 operations=comfy.ops.disable_weight_init)
    return _randomize(model, seed)


def main(out_dir: str) -> None:
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported: no CUDA probe
    os.makedirs(out_dir, exist_ok=True)
    for family, build in (("sd3", build_sd3), ("flux", build_flux), ("sd35", build_sd35)):
        path = os.path.join(out_dir, UNET_FILE[family])
        if not os.path.exists(path):
            save_file(build(), path)


if __name__ == "__main__":
    main(sys.argv[1])
