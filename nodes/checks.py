"""Model-dependent input checks for the nodes: each reads what it needs from a ComfyUI MODEL and calls the pure
checks of swd_sampler.checks, which raise the pack's own error with the fix."""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample

from ..swd_sampler.checks import (check_latent, check_latent_channels, check_max_size, check_memory,
                                  check_noise_mask, check_preset_family)
from .model_info import is_flow, patch_size


def check_preset_for(model, preset: str) -> None:
    check_preset_family(preset, is_flow(model.get_model_object("model_sampling")))


def latent_for(model, latent: dict, name: str, *, values: bool) -> dict:
    """The LATENT given to input `name`, checked, with ComfyUI's empty-latent channel fix applied to its samples:
    its layout (not empty), its values when the node reads them (`values`; text-to-image ignores them), its channels
    and its noise mask (layout, batch, values)."""
    origin = f"the LATENT connected to {name}"
    check_latent(latent["samples"], name, origin, values=values)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    check_latent_channels(samples.shape[1], model.get_model_object("latent_format").latent_channels, name)
    if latent.get("noise_mask") is not None:
        check_noise_mask(latent["noise_mask"], samples.shape[0], origin=f"the noise mask of {origin}")
    return {**latent, "samples": samples}


def check_step_fits(model, batch: int, channels: int, size: tuple[int, int], device) -> None:
    """Before the first model call: the largest step's latent must fit the model's position table (SD3's
    pos_embed_max_size, in patches); ComfyUI's own activation estimate (BaseModel.memory_required, the figure it
    loads models by) is compared with the device's free memory (RAM on the CPU) for one pass of the batch, see
    check_memory."""
    patch = patch_size(model)
    max_patches = getattr(model.get_model_object("diffusion_model"), "pos_embed_max_size", None)
    check_max_size(size, max_patches * patch if max_patches else None, patch,
                   model.get_model_object("latent_format").spacial_downscale_ratio)
    needed = model.model.memory_required([batch, channels, *size])
    warning = check_memory(needed, comfy.model_management.get_free_memory(device), size, batch, str(device))
    if warning:
        logging.warning("SwD: %s", warning)
