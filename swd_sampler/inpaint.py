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
    """A noise mask cannot be used with the latent; the message names both sizes and the fix."""


def check_mask_batch(mask: torch.Tensor, latent_batch: int) -> None:
    """A mask of shape (..., mh, mw) holds numel / (mh * mw) masks: one per latent, or one for all (broadcast)."""
    masks = mask.numel() // (mask.shape[-2] * mask.shape[-1])
    if masks not in (1, latent_batch):
        raise MaskError(f"the noise mask has a batch of {masks} masks but the latent a batch of {latent_batch} images; "
                        f"give one mask for all of them or one per image (batch {latent_batch}).")


def mask_at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask (B, C, H, W) at a step's size (h, w), by area averaging (steps are never larger than the mask)."""
    size = (int(size[0]), int(size[1]))
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask.float(), size=size, mode="area")


def keep_unmasked(x0: torch.Tensor, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mask * x0 + (1 - mask) * latent, all at the same size."""
    return x0 * mask + latent * (1.0 - mask)
