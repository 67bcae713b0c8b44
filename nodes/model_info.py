"""What the SwD nodes need to know about a ComfyUI MODEL: its noise family, patch size and sigma range."""
from __future__ import annotations

import torch

import comfy.model_sampling

from ..swd_sampler.renoise import renoise_flow


def is_flow(model_sampling) -> bool:
    """Rectified-flow models (SD3/SD3.5, FLUX): x = (1 - sigma) * x0 + sigma * eps."""
    return isinstance(model_sampling, comfy.model_sampling.CONST)


def patch_size(model) -> int:
    """Spatial patch size of the diffusion model: 2 for SD3 and FLUX, 1 for UNets."""
    p = getattr(model.get_model_object("diffusion_model"), "patch_size", 1)
    return int(p[0] if isinstance(p, (tuple, list)) else p)


def model_sigmas(model_sampling, sigmas) -> torch.Tensor:
    """The model's sigmas for a schedule written in SwD's [0, 1] units.

    Flow models use them as given (they already are points of the shifted grid; no shift is applied on top).
    eps models read them as DDPM times t = s * 1000 (1000 clamped to 999) and take sigma(t); the final 0 stays 0.
    """
    if is_flow(model_sampling):
        return torch.tensor([float(s) for s in sigmas], dtype=torch.float32)
    out = [float(model_sampling.sigma(torch.tensor(min(float(s) * 1000.0, 999.0)))) if s > 0 else 0.0 for s in sigmas]
    return torch.tensor(out, dtype=torch.float32)


def renoise_with(model_sampling):
    """`renoise(x0, sigma, eps, max_denoise)` for this model: the paper's flow formula for flow models, ComfyUI's
    own `noise_scaling` (x0 + sigma * eps) for eps models."""
    if is_flow(model_sampling):
        return renoise_flow

    def renoise(x0, sigma, eps, max_denoise):
        sigma = torch.tensor(float(sigma), device=eps.device, dtype=eps.dtype)
        return model_sampling.noise_scaling(sigma, eps, x0, max_denoise=max_denoise)
    return renoise
