"""Latent resizing between SwD scales.

Works on float32 tensors of shape (B, C, h, w) and returns the input dtype. "bicubic" (align_corners=False) is
what the released models were distilled with; the authors' first code used torch's default "nearest", which
aliases. The antialiased variants low-pass before sampling and only differ from the plain ones when shrinking.
`resize_latent` picks them by itself when shrinking an input latent (img2img start, inpainting).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

UPSCALE_METHODS = ["bicubic", "bilinear", "area", "nearest-exact", "bicubic-antialiased", "bilinear-antialiased"]
DEFAULT_UPSCALE_METHOD = "bicubic"


def resize(x: torch.Tensor, size: tuple[int, int], method: str = DEFAULT_UPSCALE_METHOD) -> torch.Tensor:
    """Resize the last two dims of `x` to `size` = (h, w); a no-op when the size already matches."""
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method {method!r} is unknown; choose one of: {', '.join(UPSCALE_METHODS)}.")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    mode = method.removesuffix("-antialiased")
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    if mode != method:
        kwargs["antialias"] = True
    return F.interpolate(x.float(), size=size, mode=mode, **kwargs).to(x.dtype)


def resize_latent(x: torch.Tensor, size: tuple[int, int], method: str = DEFAULT_UPSCALE_METHOD) -> torch.Tensor:
    """Resize an input latent to a step's size: with the antialiased variant of `method` when either side shrinks
    (bicubic -> bicubic-antialiased, bilinear -> bilinear-antialiased; area already averages and nearest-exact has
    no such variant), with `method` itself otherwise."""
    if size[0] < x.shape[-2] or size[1] < x.shape[-1]:
        method = f"{method}-antialiased" if f"{method}-antialiased" in UPSCALE_METHODS else method
    return resize(x, size, method)
