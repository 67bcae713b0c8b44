"""Checks of inputs that no formula of the core owns, for the nodes to call before any work: numbers sent through
the API (ComfyUI's min/max check lets NaN through), the tensors a node reads (latents, noise masks, images,
conditioning: empty, NaN/inf, layout), a preset made for another model family, the latent's channels, SwD Sampler's
sigmas, a "custom" preset without a schedule, and the memory of the largest step. Each raises an SwDError subclass
whose message names the input and the fix. Every node calls these; none repeats them."""
from __future__ import annotations

import math
import unicodedata

import torch

from .errors import SwDError
from .inpaint import MaskError
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


# Tensors ------------------------------------------------------------------------------------------------------------

def check_values(tensor: torch.Tensor, name: str, origin: str) -> None:
    """Every value must be finite: one NaN spreads to the whole image in the first model call. `origin` says where
    the values came from (the node input that carried them), for the message."""
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return
    nans, count = int(torch.isnan(tensor).sum()), int(bad.sum())
    where = ", ".join(str(int(i)) for i in bad.nonzero()[0])
    kinds = " and ".join(k for k, n in (("NaN", nans), ("infinite", count - nans)) if n)
    raise InputError(f"{name} holds {count} {kinds} value{'s' * (count > 1)} of {tensor.numel()} (the first at index "
                     f"[{where}] of shape {tuple(tensor.shape)}); they came from {origin}. One would turn the whole "
                     f"image into NaN. Fix or replace the node that made {name} (e.g. a VAE run in fp16, a damaged "
                     f"file, a division by zero in a math node).")


def check_not_empty(shape, name: str, layout: str) -> None:
    """No dimension may be 0: an empty batch or a 0 x 0 latent/image/mask has nothing to sample."""
    if any(int(n) == 0 for n in shape):
        raise InputError(f"{name} is empty: its shape is {tuple(int(n) for n in shape)} {layout}. Give at least one "
                         f"image of at least 1 x 1 (check the batch size, width and height of the node that made it).")


def check_latent(samples: torch.Tensor, name: str, origin: str, *, values: bool = True) -> None:
    """An image latent (batch, channels, height, width), not empty; its values finite when the node reads them
    (`values`=False where only the shape is used, e.g. text-to-image ignores the latent's content)."""
    if samples.ndim != 4:
        raise InputError(f"{name} has shape {tuple(samples.shape)}, but SwD works on image latents of shape (batch, "
                         f"channels, height, width); it came from {origin}. Make it with this model's empty latent "
                         f"node or VAE Encode.")
    check_not_empty(samples.shape, name, "(batch, channels, height, width)")
    if values:
        check_values(samples, name, origin)


def check_image(pixels: torch.Tensor, name: str, origin: str, channels=(3, 4)) -> None:
    """A ComfyUI IMAGE (batch, height, width, channels) with one of `channels`, not empty, every value finite."""
    if pixels.ndim != 4:
        raise InputError(f"{name} has shape {tuple(pixels.shape)}, but an IMAGE is (batch, height, width, "
                         f"channels); it came from {origin}.")
    check_not_empty(pixels.shape, name, "(batch, height, width, channels)")
    if pixels.shape[-1] not in channels:
        allowed = " or ".join(f"{c} ({_COLOURS.get(c, c)})" for c in channels)
        raise InputError(f"{name} has {pixels.shape[-1]} channel{'s' * (pixels.shape[-1] > 1)} per pixel, but this "
                         f"node takes {allowed}; it came from {origin}. Convert a mask with MaskToImage, or load the "
                         f"picture as RGB.")
    check_values(pixels, name, origin)


_COLOURS = {1: "grey", 3: "RGB", 4: "RGBA, the alpha is dropped"}
MASK_TOLERANCE = 1e-4  # float rounding of a resized mask; beyond it a value is out of range


def check_noise_mask(mask: torch.Tensor, latent_batch: int, name: str = "noise_mask",
                     origin: str = "the latent's noise mask (SetLatentNoiseMask, VAE Encode for Inpainting)") -> None:
    """A noise mask as ComfyUI's nodes make it: (height, width), (masks, height, width) or (masks, 1, height, width),
    one mask for the whole batch or one per image, not empty, its values finite and in [0, 1] (1 = generate, 0 =
    keep). A 4-d mask with more than one channel holds one mask per latent channel, which ComfyUI's samplers
    would read as that many images: refused."""
    if mask.ndim == 4 and mask.shape[1] != 1:
        raise MaskError(f"{name} is attached per channel: its shape {tuple(mask.shape)} holds {mask.shape[1]} masks "
                        f"per image, one per latent channel, but ComfyUI's samplers use one mask per image (and would "
                        f"read these as {mask.shape[0] * mask.shape[1]} images). Give one mask per image, (batch, "
                        f"height, width), e.g. through SetLatentNoiseMask.")
    if mask.ndim not in (2, 3, 4):
        raise MaskError(f"{name} has shape {tuple(mask.shape)}; a noise mask is (height, width), (batch, height, "
                        f"width) or (batch, 1, height, width). Make it with SetLatentNoiseMask.")
    check_not_empty(mask.shape, name, "(masks, ..., height, width)")
    masks = mask.shape[0] if mask.ndim > 2 else 1
    if masks not in (1, latent_batch):
        raise MaskError(f"the {name.replace('_', ' ')} has a batch of {masks} masks but the latent a batch of {latent_batch} images; "
                        f"give one mask for all of them or one per image (batch {latent_batch}).")
    check_mask_values(mask, name, origin)


def check_mask_values(mask: torch.Tensor, name: str, origin: str) -> None:
    """Finite values in [0, 1] (to float rounding): a mask of 2 or -1 would extrapolate the blend of generated and
    kept latent instead of choosing between them."""
    check_values(mask, name, origin)
    low, high = float(mask.min()), float(mask.max())
    if low < -MASK_TOLERANCE or high > 1 + MASK_TOLERANCE:
        raise MaskError(f"{name} has values from {low:g} to {high:g}, outside [0, 1] (1 = generate, 0 = keep the "
                        f"input); they came from {origin}. Values outside would extrapolate the latent instead of "
                        f"blending it. Clamp the mask to [0, 1] (e.g. with ThresholdMask, or MaskComposite, which "
                        f"clamps) before SetLatentNoiseMask.")


def check_conditioning(conds, name: str, latent_batch: int) -> None:
    """A conditioning as the sampler holds it (ComfyUI's convert_cond: one dict per entry, the text tensor under
    "cross_attn"): each text tensor and pooled output finite, with a batch of 1 (one prompt for all images) or the
    latent's batch (one per image).

    This is where a multi-line caption (SwD Tiny Text Encode makes one conditioning row per line) meets the latent:
    the text node has no latent to compare with, so the sampler checks the count. ComfyUI itself would cycle or drop
    rows silently."""
    for entry in conds:
        for key in ("cross_attn", "pooled_output"):
            tensor = entry.get(key)
            if not isinstance(tensor, torch.Tensor):
                continue
            check_values(tensor, name, f"the {'text' if key == 'cross_attn' else 'pooled output'} of the "
                                       f"conditioning connected to {name}")
            if tensor.ndim and tensor.shape[0] not in (1, latent_batch):
                raise InputError(f"{name} has a batch of {tensor.shape[0]} prompts (e.g. {tensor.shape[0]} caption "
                                 f"lines) but the latent a batch of {latent_batch} images; give one prompt for all "
                                 f"images or one per image (set the latent's batch_size to {tensor.shape[0]}).")


# Text -------------------------------------------------------------------------------------------------------------

LINE_BREAK = "\n"
_OTHER_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() also splits at


def split_lines(text: str, name: str) -> list[str]:
    """Lines of a multi-line text widget, split at "\\n" only (a "\\r\\n" ending is one break). Any other line
    or paragraph separator (a lone "\\r", U+2028, ...) is refused instead of splitting silently: pasted text often
    holds them invisibly."""
    lines = [line.removesuffix("\r") for line in text.split(LINE_BREAK)]
    for n, line in enumerate(lines):
        odd = next((c for c in line if c in _OTHER_BREAKS), None)
        if odd is not None:
            label = unicodedata.name(odd, {"\r": "CARRIAGE RETURN"}.get(odd, "CONTROL CHARACTER"))
            raise InputError(f"{name}: line {n + 1} holds a U+{ord(odd):04X} {label} inside it. Lines are separated "
                             f"by new lines (\\n) only: put each caption on its own line and remove that character "
                             f"(pasted text often carries it).")
    return lines
