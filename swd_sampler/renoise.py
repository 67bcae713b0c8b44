"""Re-noising a clean latent x0 to noise level sigma with noise eps (same shape as x0).

flow (SD3.5, FLUX; rectified flow):   x = (1 - sigma) * x0 + sigma * eps
eps  (SDXL; k-diffusion form of DDPM): x = x0 + sigma * eps, and at the very first step, which starts from pure
      noise at sigma_max, x = sqrt(1 + sigma^2) * eps (DDPM's x_T = eps, divided by sqrt(alpha_bar_T)).
These mirror ComfyUI's `model_sampling.noise_scaling` for CONST and EPS models, which the nodes call directly.
"""
from __future__ import annotations

import torch


def renoise_flow(x0: torch.Tensor, sigma: float, eps: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * eps


def renoise_eps(x0: torch.Tensor, sigma: float, eps: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
    scale = (1.0 + sigma ** 2) ** 0.5 if max_denoise else sigma
    return x0 + scale * eps
