"""Re-noising a clean latent x0 to noise level sigma with noise eps (same shape as x0).

flow (SD3.5, FLUX; rectified flow):   x = (1 - sigma) * x0 + sigma * eps
eps  (SDXL; k-diffusion form of DDPM): x = x0 + sigma * eps

`max_denoise=True` marks the first step, which starts from pure noise as the official pipelines do (their initial
latent is eps whatever sigma_0 is): flow x = eps; eps x = sqrt(1 + sigma^2) * eps (DDPM's x_t = eps expressed in the
k-diffusion scale x / sqrt(alpha_bar_t)). The eps form is ComfyUI's EPS `noise_scaling`, which the nodes call.
"""
from __future__ import annotations

import torch


def renoise_flow(x0: torch.Tensor, sigma: float, eps: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
    if max_denoise:
        return eps
    return (1.0 - sigma) * x0 + sigma * eps


def renoise_eps(x0: torch.Tensor, sigma: float, eps: torch.Tensor, max_denoise: bool = False) -> torch.Tensor:
    scale = (1.0 + sigma ** 2) ** 0.5 if max_denoise else sigma
    return x0 + scale * eps
