"""Checks of inputs that no formula of the core owns, for the nodes to call before any work: numbers sent through
the API (ComfyUI's min/max check lets NaN through), a preset made for another model family, the latent's channels, SwD Sampler's sigmas, a "custom" preset without a schedule, and the memory of the largest
step. Each raises an SwDError subclass whose message names the input and the fix."""
from __future__ import annotations

import math

from .errors import SwDError
from .schedule import CUSTOM, PRESETS, ScheduleError

GiB = 1024 ** 3
_FAMILY_NAMES = {"flow": "a flow model (SD3/SD3.5, FLUX)", "eps": "an eps model (SDXL)"}


class InputError(SwDError):
    """A number, latent or size a node cannot use; the message names the input and the fix."""


def check_finite(**values: float) -> None:
    """Every value must be a finite number: check_finite(cfg=cfg, strength=strength)."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise InputError(f"{name} is {value}, not a finite number (ComfyUI's range check lets NaN through the "
                             f"API). Send a finite value for {name}.")


def check_preset_family(preset: str, flow: bool) -> None:
    """Refuse a preset distilled for another model family: an SDXL preset's sigmas are DDPM times, a flow preset's
    are flow sigmas, so either on the other family runs and gives a wrong image."""
    if preset == CUSTOM or preset not in PRESETS:
        return
    family = PRESETS[preset].family
    model = "flow" if flow else "eps"
    if family != model:
        fitting = [name for name, p in PRESETS.items() if p.family == model]
        raise ScheduleError(f"preset {preset!r} is for {_FAMILY_NAMES[family]}, but this model is "
                            f"{_FAMILY_NAMES[model]}. Pick the preset of this model's SwD LoRA ({', '.join(fitting)}) "
                            f"or connect SwD LoRA Loader's preset output.")


def check_custom_schedule(preset: str, scales: str, sigmas: str) -> None:
    """"custom" with both fields empty: most often SwD LoRA Loader could not identify the LoRA and said "custom"."""
    if preset == CUSTOM and not (scales or "").strip() and not (sigmas or "").strip():
        raise ScheduleError(
            "preset is \"custom\" but scales and sigmas are empty, so there is no schedule to run. When the preset "
            "comes from SwD LoRA Loader, \"custom\" means it could not identify the LoRA (its text says why). Fix: "
            "rename the LoRA file after its release as in the README's table (e.g. swd-medium-6-steps.safetensors), "
            "or choose the preset on this node, or type scales and sigmas.")


def check_sampler_sigmas(scales, sigmas) -> None:
    """SwD Sampler needs one sigma per scale plus the closing 0, as SwD Schedule makes them."""
    if len(sigmas) != len(scales) + 1:
        raise ScheduleError(
            f"SwD Sampler got {len(sigmas)} sigmas for {len(scales)} scales (it needs {len(scales) + 1}: one per step "
            f"plus the closing 0). Connect the SIGMAS output of the same SwD Schedule node that gives the SCALES, "
            f"not a stock scheduler's.")


def check_latent_channels(channels: int, expected: int, name: str) -> None:
    """A latent with content must have the model's channel count (ComfyUI only fixes empty latents)."""
    if channels != expected:
        raise InputError(
            f"{name} has {channels} channels but this model's latents have {expected}: it was made for another "
            f"model family. Make the latent with this model's empty latent node (EmptySD3LatentImage for SD3.5 and "
            f"FLUX, EmptyLatentImage for SDXL) or encode the image with this model's VAE.")


# ComfyUI's estimate (BaseModel.memory_required: latent area x 0.15 MiB x the model's factor on CPU, tuned for the
# real models) against the measured peak of one pass (benchmarks/bench_memory.py, CPU RSS, 2 cores): the tiny teacher
# 7.6x too high at batch 1 of 16x16, 51x at batch 64, 72x at batch 1000 (60 GiB estimated, 0.9 GB used), 35x at batch
# 4 of 64x64; the tests' tiny SD3 13x at 128x128 and 39x at batch 8 of 64x64; tiny FLUX 40x at 128x128 and 103x at
# batch 8 of 64x64. So an estimate above the free memory is only a warning; it is refused when even an estimate
# OVERESTIMATE times too high would not fit.
OVERESTIMATE = 128


def check_memory(needed: float, free: float, size: tuple[int, int], batch: int, device: str) -> str | None:
    """The largest step's estimated memory against what the device has free: refused before any model call when it
    exceeds it for certain (OVERESTIMATE times over), a warning (returned) when the estimate merely exceeds it."""
    numbers = (f"the largest step (latent {size[0]}x{size[1]}, batch {batch}) needs about {needed / GiB:.1f} GiB on "
               f"{device} by ComfyUI's own estimate, but only {free / GiB:.1f} GiB are free")
    if needed > free * OVERESTIMATE:
        raise InputError(f"{numbers}: even {OVERESTIMATE} times less, the most this estimate was ever measured too "
                         f"high, would not fit. Lower the width and height (latent_image) or the batch size, or free "
                         f"memory (close other programs, unload other models).")
    if needed > free:
        return (f"{numbers}. The estimate is often far too high for small models, so SwD runs it; if it runs out "
                f"of memory, lower the size or the batch.")
    return None


def check_max_size(size: tuple[int, int], max_side: int | None, patch: int, downscale: int) -> None:
    """Models with a learned position table (SD3/SD3.5) hold latents up to max_side per side."""
    if max_side is not None and max(size) > max_side:
        px = max_side * downscale
        raise InputError(f"the latent is {size[0]}x{size[1]} but this model's position table holds at most "
                         f"{max_side}x{max_side} ({px}x{px} px, patch size {patch}). Use a width and height of at "
                         f"most {px} px.")
