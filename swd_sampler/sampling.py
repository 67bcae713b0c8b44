"""The scale-wise sampling loop (SwD, arXiv 2503.16397) over any `denoise(x, sigma) -> x0` callable.

With sigmas s_0 > ... > s_N = 0 and latent sizes (h_0, w_0) <= ... <= (h_{N-1}, w_{N-1}) = the final size:

    x = eps_0                                         # pure noise at the first, smallest size
    for i in 0 .. N-1:
        x0 = denoise(x, s_i)
        if i == N-1: return x0
        x0 = resize(x0, (h_{i+1}, w_{i+1}))            # bicubic by default; skipped when the size is unchanged
        x  = renoise(x0, s_{i+1}, eps_{i+1})          # flow: (1 - s) * x0 + s * eps

img2img (denoise < 1, see schedule.select_steps): the first line becomes x = renoise(resize_latent(L, (h_0, w_0)),
s_0, eps_0) for the input latent L of the final size. Inpainting: every x0 is blended with L (see inpaint.py).

Seed contract: one CPU `torch.Generator` seeded with `seed` draws eps_0 ~ N(0, 1) of shape (B, C, h_0, w_0), then
eps_1, eps_2, ... at each following size, in that order, in float32; each draw is then moved to `device`. The
result therefore equals the official diffusers pipeline run with a CPU generator, for any batch size and device.
"""
from __future__ import annotations

from typing import Callable

import torch

from .inpaint import keep_unmasked, mask_at
from .renoise import renoise_flow
from .resize import DEFAULT_UPSCALE_METHOD, resize, resize_latent

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
Renoise = Callable[[torch.Tensor, float, torch.Tensor, bool], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor, int], None]


def noise_draws(seed: int, batch: int, channels: int, sizes, device=None):
    """Yield eps_0, eps_1, ... of shapes (batch, channels, h_i, w_i) per the seed contract."""
    generator = torch.Generator("cpu").manual_seed(seed)
    for h, w in sizes:
        yield torch.randn((batch, channels, h, w), generator=generator, dtype=torch.float32).to(device)


def sample_scalewise(
    denoise: Denoise,
    sigmas,
    sizes,
    *,
    batch: int,
    channels: int,
    seed: int,
    renoise: Renoise = renoise_flow,
    upscale_method: str = DEFAULT_UPSCALE_METHOD,
    callback: Callback | None = None,
    device=None,
    latent: torch.Tensor | None = None,
    from_latent: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the SwD loop and return x0 of the last step, shape (batch, channels, *sizes[-1]), float32.

    `sigmas` has N + 1 entries ending with 0 and `sizes` N entries (h, w). `renoise(x0, sigma, eps, max_denoise)`
    puts noise on a clean latent; the first call, with x0 = 0 and max_denoise=True, makes the pure-noise start.
    `callback(i, x0, x, N)` runs after every model call with that step's input x and prediction x0.
    `latent` (batch, channels, *sizes[-1]) is the input latent in model space. With `from_latent` the run starts from
    it, resized to sizes[0] and re-noised to sigmas[0] (img2img), instead of from pure noise. With `mask` (1 or
    batch, 1 or channels, *sizes[-1]; 1 = generate, 0 = keep) every x0 keeps the latent outside the mask (inpainting).
    """
    sigmas = [float(s) for s in sigmas]
    steps = len(sizes)
    if len(sigmas) != steps + 1:
        raise ValueError(f"{steps} sizes need {steps + 1} sigmas (one per step plus the closing 0), got {len(sigmas)}.")
    eps = noise_draws(seed, batch, channels, sizes, device)
    first = next(eps)
    if from_latent:
        x = renoise(resize_latent(latent.float(), sizes[0], upscale_method), sigmas[0], first, False)
    else:
        x = renoise(torch.zeros_like(first), sigmas[0], first, True)
    for i in range(steps):
        x0 = denoise(x, sigmas[i]).float()
        if mask is not None:
            x0 = keep_unmasked(x0, resize_latent(latent.float(), sizes[i], upscale_method), mask_at(mask, sizes[i]))
        if callback is not None:
            callback(i, x0, x, steps)
        if i == steps - 1:
            return x0
        x0 = resize(x0, sizes[i + 1], upscale_method)
        x = renoise(x0, sigmas[i + 1], next(eps), False)
