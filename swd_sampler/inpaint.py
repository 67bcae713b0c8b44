"""Noise masks (inpainting) across SwD's scales.

A noise mask m has 1 where the image is generated and 0 where the input latent is kept. At every step i the
prediction is blended with the input latent L resized to that step's size (h_i, w_i):

    x0_i <- m_i * x0_i + (1 - m_i) * L_i        m_i = area(m, (h_i, w_i)), L_i = resize_latent(L, (h_i, w_i))

so that the next re-noise, and the result, keep L outside the mask (the result equals L there to float precision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import SwDError


class MaskError(SwDError):
    """A noise mask cannot be used with the latent (checks.check_noise_mask); the message names it and the fix."""


def mask_at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask (B, C, H, W) at a step's size (h, w), by area averaging (steps are never larger than the mask)."""
    size = (int(size[0]), int(size[1]))
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask.float(), size=size, mode="area")


def keep_unmasked(x0: torch.Tensor, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mask * x0 + (1 - mask) * latent, all at the same size."""
    return x0 * mask + latent * (1.0 - mask)
