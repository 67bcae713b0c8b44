"""One SwD transition outside the sampler, for hand-made scale-wise chains of stock samplers.

Given a clean (or denoised) latent x0 of shape (B, C, h, w) in model space, a target size (h', w') and a noise
level sigma:

    x = (1 - sigma) * resize(x0, (h', w')) + sigma * eps      flow models (SD3.5, FLUX)
    x =               resize(x0, (h', w')) + sigma * eps      eps models (SDXL; ComfyUI's k-diffusion sigmas)

eps = torch.randn((B, C, h', w'), generator=torch.Generator("cpu").manual_seed(seed)) in float32, then moved to
x0's device: a fresh generator per call, so a graph gives the same numbers on any machine.

A stock ComfyUI sampler with its noise disabled does not start from the latent it is given but from
`model_sampling.noise_scaling(sigma, 0, latent)`: (1 - sigma) * latent for flow models, the latent itself for
eps models. `sampler_input` undoes that scaling so that the sampler's first model call sees exactly x.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from .errors import SwDError
from .renoise import renoise_eps, renoise_flow
from .resize import DEFAULT_UPSCALE_METHOD, resize
from .sampling import noise_draws


class UpscaleRenoiseError(SwDError):
    """An input cannot be used; the message names the input and the fix."""


def _nearest_multiple(n: int, factor: float, patch: int) -> int:
    """patch * floor(n * factor / patch + 1/2), in exact rational arithmetic (halves round up)."""
    return patch * math.floor(Fraction(n) * Fraction(str(factor)) / patch + Fraction(1, 2))


def target_size(size: tuple[int, int], *, match: tuple[int, int] | None = None, width: int = 0, height: int = 0,
                scale_factor: float = 0.0, downscale: int = 8, patch: int = 1) -> tuple[int, int]:
    """The latent (h', w') to resize a latent of `size` = (h, w) to, from exactly one of three targets:

    match         the (h, w) of another latent, used as is;
    width/height  a size in pixels: (height / downscale, width / downscale), `downscale` being the VAE's factor;
    scale_factor  (h, w) times the factor, each side rounded to the nearest multiple of `patch` (halves up).

    0 (or None for `match`) means unset. Every side of the result must be a positive multiple of `patch`.
    """
    chosen = [name for name, on in (("match_latent", match is not None), ("width/height", width or height),
                                    ("scale_factor", scale_factor)) if on]
    if not chosen:
        raise UpscaleRenoiseError("no target size: connect match_latent, or set width and height (in pixels), or "
                                  "set scale_factor; leave the other two unset (0 / not connected).")
    if len(chosen) > 1:
        raise UpscaleRenoiseError(f"conflicting target sizes: {' and '.join(chosen)} are set together. Use exactly one "
                                  f"of match_latent, width/height or scale_factor and leave the others at 0 / "
                                  f"not connected.")
    step = downscale * patch
    if match is not None:
        h, w = int(match[0]), int(match[1])
        if h % patch or w % patch:
            raise UpscaleRenoiseError(f"match_latent is {h}x{w} (latent size), not a multiple of the model's patch "
                                      f"size {patch}; use a latent made for {step}-pixel multiples.")
        return h, w
    if width or height:
        if width <= 0 or height <= 0:
            raise UpscaleRenoiseError(f"width and height must both be positive pixel sizes, got width {width} and "
                                      f"height {height}; set both (or both to 0 to use another target).")
        if width % step or height % step:
            nearest = [max(step, round(n / step) * step) for n in (width, height)]
            raise UpscaleRenoiseError(f"width {width} and height {height} must be multiples of {step} pixels (the VAE "
                                      f"factor {downscale} times the model's patch size {patch}), e.g. "
                                      f"{nearest[0]}x{nearest[1]}.")
        return height // downscale, width // downscale
    if scale_factor < 0:
        raise UpscaleRenoiseError(f"scale_factor must be positive, got {scale_factor:g}.")
    h, w = (_nearest_multiple(int(n), scale_factor, patch) for n in size)
    if h <= 0 or w <= 0:
        raise UpscaleRenoiseError(f"scale_factor {scale_factor:g} shrinks the {size[0]}x{size[1]} latent to {h}x{w}; "
                                  f"use a factor of at least {patch / (2 * min(size)):.3g}.")
    return h, w


def validate_sigma(sigma: float, *, flow: bool, sigma_max: float) -> None:
    """Flow models: 0 <= sigma < 1. eps models: 0 <= sigma <= sigma_max (the model's largest sigma)."""
    if flow:
        if sigma == 1.0:
            raise UpscaleRenoiseError("sigma 1 re-noises to pure noise: nothing of the latent survives (a sampler "
                                      "continuing from it divides by 1 - sigma). Start from an empty latent "
                                      "(EmptySD3LatentImage) with the sampler's own noise instead, or use sigma < 1.")
        if not 0.0 <= sigma < 1.0:
            raise UpscaleRenoiseError(f"sigma must be in [0, 1) for this flow model, got {sigma:g}.")
    elif not 0.0 <= sigma <= sigma_max * (1 + 1e-5):
        raise UpscaleRenoiseError(f"sigma must be in [0, {sigma_max:g}] (this model's sigma range), got {sigma:g}.")


def upscale_renoise(x0: torch.Tensor, size: tuple[int, int], sigma: float, seed: int, *, flow: bool,
                    method: str = DEFAULT_UPSCALE_METHOD) -> torch.Tensor:
    """x = renoise(resize(x0, size), sigma, eps) as in the module docstring; float32, shape (B, C, *size)."""
    x0 = resize(x0.float(), size, method)
    batch, channels = x0.shape[:2]
    eps = next(noise_draws(seed, batch, channels, [size], x0.device))
    return (renoise_flow if flow else renoise_eps)(x0, sigma, eps)


def sampler_input(x: torch.Tensor, sigma: float, *, flow: bool) -> torch.Tensor:
    """The latent a stock sampler (noise disabled, first sigma = `sigma`) must get to start from x:
    x / (1 - sigma) for flow models, whose sampler multiplies by (1 - sigma); x itself for eps models."""
    return x / (1.0 - sigma) if flow else x


def resize_mask(mask: torch.Tensor, size: tuple[int, int], new_size: tuple[int, int]) -> torch.Tensor:
    """Resize a noise mask (..., mh, mw) by the factor that takes a latent from `size` to `new_size`.

    The mask keeps its own resolution relative to the latent (ComfyUI's masks are often in pixels): each side
    becomes round(m * new / old), at least 1. Bilinear, so that values stay in [0, 1]; returns (B, 1, mh', mw').
    """
    mh, mw = mask.shape[-2:]
    out = tuple(max(1, math.floor(Fraction(m * new, old) + Fraction(1, 2)))
                for m, new, old in ((mh, new_size[0], size[0]), (mw, new_size[1], size[1])))
    return resize(mask.reshape(-1, 1, mh, mw).float(), out, "bilinear")
