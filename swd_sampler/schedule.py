"""SwD presets, parsing of user schedules and the per-step latent sizes.

A schedule is a pair:
  scales  s_0 <= ... <= s_{N-1}: relative spatial sizes of the N model calls; the last one is the final size.
          Given as latent side lengths (the paper's table: 32, 48, ..., 128 for 1024 px) or as fractions ending
          at 1.0. Only the ratios s_i / s_{N-1} matter, so a preset made for 1024 px works at any final size.
  sigmas  1 >= sigma_0 > ... > sigma_N = 0: the noise level before each call, plus the closing 0.

`denoise` (img2img, hires, inpainting) keeps the steps whose sigma is <= denoise and starts from the input latent
re-noised to the first kept sigma; with no such step it runs one step at the final size at sigma = denoise.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

from .errors import SwDError

CUSTOM = "custom"


@dataclass(frozen=True)
class Preset:
    name: str
    scales: tuple[float, ...]
    sigmas: tuple[float, ...]
    lora: str  # Hugging Face repository of the released LoRA (the tiny family's: its file name in the pack)
    family: str  # "flow" (SD3.5, FLUX) or "eps" (SDXL: sigmas are DDPM times t = s * 1000)
    guidance: float | None = None  # FLUX guidance the LoRA was distilled for


_MEDIUM_6 = ((32, 48, 64, 80, 96, 128), (1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0))
_LATE_4 = ((64, 80, 96, 128), (1.0, 0.8959, 0.7371, 0.6022, 0.0))

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("SD3.5 Medium · 6 steps", *_MEDIUM_6, "yresearch/swd-medium-6-steps", "flow"),
    Preset("SD3.5 Medium · 4 steps", *_LATE_4, "yresearch/swd-medium-4-steps", "flow"),
    Preset("SD3.5 Medium · 4 steps (2025 README)", (32, 64, 96, 128), (1.0, 0.9454, 0.7904, 0.6022, 0.0),
           "yresearch/swd-medium-4-steps", "flow"),
    Preset("SD3.5 Large · 4 steps", *_LATE_4, "yresearch/swd-large-4-steps", "flow"),
    Preset("SD3.5 Large · 6 steps (older release)", *_MEDIUM_6, "yresearch/swd-large-6-steps", "flow"),
    Preset("FLUX.1-dev · 4 steps", (64, 80, 96, 128), (1.0, 0.8956, 0.7363, 0.6007, 0.0), "yresearch/swd_flux",
           "flow", guidance=4.5),
    Preset("SDXL · 4 steps", (64, 80, 96, 128), (1.0, 0.8, 0.6, 0.4, 0.0), "yresearch/swd-sdxl", "eps"),
    # The pack's own tiny family (swd_distill/, models/): the 4-step schedule at a native 16x16 latent (128 px).
    Preset("Tiny demo · 4 steps", (8, 10, 12, 16), (1.0, 0.8959, 0.7371, 0.6022, 0.0), "swd-comfyui/swd-tiny-4-steps",
           "flow"),
)}
DEFAULT_PRESET = "SD3.5 Medium · 6 steps"
PRESET_NAMES = [*PRESETS, CUSTOM]
MAX_STEPS = 64  # SwD runs 4-6 steps; a longer list is a paste gone wrong, not a schedule


class ScheduleError(SwDError):
    """A schedule the user wrote (or picked) cannot be used; the message names the input and the fix."""


# Characters that look like ASCII separators or signs but are not (NFKC handles full-width forms).
_LOOKALIKES = {"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
               "\u201a": ",", "\u060c": ",", "\u3001": ",", "\u066b": ".", "\u066c": ","}


def _check_characters(text: str, name: str) -> None:
    """Refuse any non-ASCII character except white space, naming it and its ASCII replacement (Python's float()
    would accept some of them, e.g. Arabic-Indic digits, and others give an unhelpful "not a number")."""
    for i, c in enumerate(text, 1):
        if c.isascii() or c.isspace():
            continue
        plain = _LOOKALIKES.get(c) or unicodedata.normalize("NFKC", c)
        fix = f"type {plain!r} instead" if plain.isascii() and plain.strip() else "delete it"
        raise ScheduleError(f"{name}: character {i} is U+{ord(c):04X} {unicodedata.name(c, '(unnamed)')}, which "
                            f"only looks like part of a number; {fix}. Write plain ASCII digits, '.' for decimals "
                            f"and ',' between numbers, e.g. {_EXAMPLES[name]}.")


def _decimal_comma_error(text: str, name: str) -> ScheduleError | None:
    """A European decimal comma ("1,0; 0,8") splits every number in two; say so instead of blaming the values."""
    if not (text.isascii() and re.search(r"\d,\d", text) and re.search(r"[;\s]", text.strip())):
        return None
    fixed = re.sub(r"\s*;\s*|\s+", ", ", re.sub(r"(\d),(\d)", r"\1.\2", text.strip()))
    return ScheduleError(f"{name}: {text.strip()!r} looks like it uses decimal commas (1,0 for 1.0). Write "
                         f"decimals with a point and separate the numbers with commas: {fixed!r}.")


def _numbers(text: str, name: str) -> list[float]:
    _check_characters(text, name)
    parts = [p for p in re.split(r"[,\s;]+", text.strip().strip("[]()")) if p]
    if not parts:
        raise ScheduleError(f"{name} is empty: give comma-separated numbers, e.g. {_EXAMPLES[name]}.")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ScheduleError(f"{name}: {p!r} is not a number; write comma-separated numbers, "
                                f"e.g. {_EXAMPLES[name]}.") from None
        if not math.isfinite(v):
            raise ScheduleError(f"{name}: {p!r} is not a finite number; write finite numbers, e.g. "
                                f"{_EXAMPLES[name]}.")
        values.append(v)
    if len(values) > MAX_STEPS + (name == "sigmas"):
        raise ScheduleError(f"{name} has {len(values)} values; SwD schedules have at most {MAX_STEPS} steps (the "
                            f"released ones 4-6). Check that the right text was pasted, e.g. {_EXAMPLES[name]}.")
    return values


_EXAMPLES = {"scales": "32, 48, 64, 80, 96, 128 or 0.25, 0.5, 0.75, 1.0",
             "sigmas": "1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0"}


def parse_scales(text: str) -> tuple[float, ...]:
    """Latent side lengths or fractions ending at 1.0; positive and never decreasing, the last one the largest."""
    try:
        return _checked_scales(_numbers(text, "scales"), text)
    except ScheduleError as e:
        raise _decimal_comma_error(text, "scales") or e from None


def _checked_scales(scales: list[float], text: str) -> tuple[float, ...]:
    if any(s <= 0 for s in scales):
        raise ScheduleError(f"scales must all be positive, got {text.strip()!r}.")
    for a, b in zip(scales, scales[1:]):
        if b < a:
            final = (f" The last scale ({scales[-1]:g}) is the final size, so none may be larger than it."
                     if max(scales) > scales[-1] else "")
            raise ScheduleError(f"scales must never decrease (SwD only upscales), but {b:g} follows {a:g} "
                                f"in {text.strip()!r}.{final}")
    return tuple(scales)


def parse_sigmas(text: str, steps: int | None = None) -> tuple[float, ...]:
    """Noise levels in [0, 1], strictly decreasing, ending at 0.

    The closing 0 may be left out when the count says so: with `steps` model calls, `steps` values get a 0
    appended; `steps + 1` values must end with 0.
    """
    try:
        sigmas = _numbers(text, "sigmas")
        if steps is not None and len(sigmas) == steps and sigmas[-1] != 0.0:
            sigmas.append(0.0)
        validate_sigmas(sigmas)
    except ScheduleError as e:
        raise _decimal_comma_error(text, "sigmas") or e from None
    return tuple(sigmas)


def validate_sigmas(sigmas) -> None:
    shown = ", ".join(f"{s:g}" for s in sigmas)
    if len(sigmas) < 2:
        raise ScheduleError(f"sigmas needs at least two values (a start and the closing 0), got [{shown}].")
    if any(s < 0.0 or s > 1.0 for s in sigmas):
        raise ScheduleError(f"sigmas must lie in [0, 1] (1 = pure noise), got [{shown}].")
    for a, b in zip(sigmas, sigmas[1:]):
        if b >= a:
            raise ScheduleError(f"sigmas must strictly decrease, but {b:g} follows {a:g} in [{shown}].")
    if sigmas[-1] != 0.0:
        raise ScheduleError(f"sigmas must end with 0 (the clean image), got [{shown}]; append 0.")


def check_counts(scales, sigmas) -> None:
    if len(scales) != len(sigmas) - 1:
        raise ScheduleError(
            f"scales and sigmas do not match: {len(scales)} scales need {len(scales) + 1} sigmas "
            f"(one per step plus the closing 0), got {len(sigmas)}. Add or remove values so that "
            f"len(scales) = len(sigmas) - 1.")


def resolve(preset: str, scales_text: str = "", sigmas_text: str = "") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (scales, sigmas) of a preset name, or of the two strings when the preset is "custom"."""
    if preset != CUSTOM:
        if preset not in PRESETS:
            raise ScheduleError(f"preset {preset!r} is unknown; choose one of: {', '.join(PRESET_NAMES)}.")
        p = PRESETS[preset]
        return p.scales, p.sigmas
    scales = parse_scales(scales_text)
    sigmas = parse_sigmas(sigmas_text, steps=len(scales))
    check_counts(scales, sigmas)
    return scales, sigmas


def step_sizes(scales, height: int, width: int, patch: int = 1) -> list[tuple[int, int]]:
    """Latent (h, w) of every step for a final latent of (height, width).

    h_i = p * floor(height * s_i / (s_last * p) + 1/2), at least p (nearest multiple of the patch size, halves
    round up; exact rational arithmetic so that halves are halves). The last size is exactly (height, width).
    """
    if height < patch or width < patch:
        raise ScheduleError(f"the final latent size {height}x{width} is empty or smaller than the model's patch size "
                            f"{patch}; use an image of at least {8 * patch}x{8 * patch} pixels.")
    if height % patch or width % patch:
        raise ScheduleError(f"the final latent size {height}x{width} is not a multiple of the model's patch size "
                            f"{patch}; pick a width and height divisible by {8 * patch} pixels.")
    last = Fraction(str(scales[-1]))

    def side(n: int, s: float) -> int:
        k = math.floor(Fraction(n) * Fraction(str(s)) / (last * patch) + Fraction(1, 2))
        return patch * max(k, 1)

    sizes = [(side(height, s), side(width, s)) for s in scales[:-1]]
    return sizes + [(height, width)]


@dataclass(frozen=True)
class Run:
    """The steps one run takes after `denoise`: scales (one per step), sigmas in SwD's [0, 1] units (one per step plus
    the closing 0) and whether the run starts from the input latent re-noised to sigmas[0] (img2img) or from pure
    noise (text-to-image)."""
    scales: tuple[float, ...]
    sigmas: tuple[float, ...]
    from_latent: bool


def select_steps(scales, sigmas, denoise: float = 1.0) -> Run:
    """The steps of a schedule that run for `denoise` in [0, 1].

    1: every step, from pure noise (text-to-image, as without denoise). Below 1: the steps whose sigma is <= denoise,
    in order, from the input latent; if there is none, one step at the final size at sigma = denoise. 0: no step
    (the latent is returned unchanged, as ComfyUI's KSampler does). For SDXL the values compared are the preset's
    0-1 values, before their conversion to DDPM sigmas. Because the sizes are relative to the last scale, the kept
    steps run at the same sizes as in the full schedule.
    """
    if not 0.0 <= denoise <= 1.0:
        raise ScheduleError(f"denoise must lie in [0, 1] (1 = text-to-image, lower keeps more of the input latent), "
                            f"got {denoise:g}.")
    scales, sigmas = tuple(scales), tuple(sigmas)
    if denoise == 1.0:
        return Run(scales, sigmas, from_latent=False)
    if denoise == 0.0:
        return Run((), (), from_latent=True)
    first = next((i for i, s in enumerate(sigmas[:-1]) if s <= denoise), None)
    if first is None:
        return Run(scales[-1:], (denoise, 0.0), from_latent=True)
    return Run(scales[first:], sigmas[first:], from_latent=True)


def describe(sizes_px, sigmas, total_steps: int, denoise: float) -> str:
    """One line saying which steps ran: 'SwD ran 2 of 6 steps (denoise 0.75): 768x768 px at sigma 0.7371, ...'.
    The denoise shown is the value that selected the steps, digit for digit (0.9999999 is not 1)."""
    shown = f"{denoise:g}" if float(f"{denoise:g}") == denoise else repr(float(denoise))
    head = f"SwD ran {len(sizes_px)} of {total_steps} steps (denoise {shown})"
    if not sizes_px:
        return head + ": none, the latent is returned unchanged."
    return head + ": " + ", ".join(f"{w}x{h} px at sigma {_sigma(s)}" for (h, w), s in zip(sizes_px, sigmas)) + "."


def _sigma(s: float) -> str:
    """4 digits, or 7 where 4 would round a sigma below 1 (float32, e.g. denoise 0.9999999) to 1."""
    text = f"{s:.4g}"
    return f"{s:.7g}" if float(text) in (0.0, 1.0) and float(text) != s else text
