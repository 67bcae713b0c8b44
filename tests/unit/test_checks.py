"""swd_sampler.checks: each check passes what is valid and refuses the rest with an SwDError naming input and fix."""
import math

import pytest

from swd_sampler.checks import (OVERESTIMATE, GiB, InputError, check_custom_schedule, check_finite, check_latent_channels,
                                check_max_size, check_memory, check_preset_family, check_sampler_sigmas)
from swd_sampler.errors import SwDError
from swd_sampler.inpaint import MaskError
from swd_sampler.lora import LoraError
from swd_sampler.schedule import CUSTOM, PRESETS, ScheduleError
from swd_sampler.upscale_renoise import UpscaleRenoiseError


def test_every_error_of_the_pack_is_an_swd_error_and_a_value_error():
    for error in (InputError, ScheduleError, LoraError, UpscaleRenoiseError, MaskError):
        assert issubclass(error, SwDError) and issubclass(error, ValueError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_finite_names_the_input(value):
    check_finite(cfg=1.0, strength=-2.5)
    with pytest.raises(InputError, match=f"strength is {value}"):
        check_finite(cfg=1.0, strength=value)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_preset_runs_on_its_family_and_is_refused_on_the_other(preset):
    flow = PRESETS[preset].family == "flow"
    check_preset_family(preset, flow)
    check_preset_family(CUSTOM, not flow)
    with pytest.raises(ScheduleError, match="Pick the preset of this model's SwD LoRA"):
        check_preset_family(preset, not flow)


def test_custom_preset_needs_a_schedule():
    check_custom_schedule(CUSTOM, "64, 128", "")  # the sigmas field's own check then names the empty field
    check_custom_schedule("SDXL · 4 steps", "", "")
    with pytest.raises(ScheduleError, match="could not identify the LoRA"):
        check_custom_schedule(CUSTOM, " ", "")


def test_sampler_sigmas_must_fit_the_scales():
    check_sampler_sigmas((64, 128), (1.0, 0.5, 0.0))
    with pytest.raises(ScheduleError, match="SwD Schedule"):
        check_sampler_sigmas((64, 128), [1.0, 0.5, 0.25, 0.0])


def test_latent_channels():
    check_latent_channels(16, 16, "latent_image")
    with pytest.raises(InputError, match="latent_image has 4 channels but this model's latents have 16"):
        check_latent_channels(4, 16, "latent_image")


def test_memory_above_the_free_memory_warns_and_is_refused_only_when_certain():
    assert check_memory(GiB, 2 * GiB, (128, 128), 1, "cuda:0") is None
    # the case: a batch of 1,000 128 px tiny images, 60 GiB by ComfyUI's estimate, ran in 2.35 GB
    warning = check_memory(60 * GiB, 20 * GiB, (16, 16), 1000, "cpu")
    assert "needs about 60.0 GiB on cpu" in warning and "only 20.0 GiB are free" in warning and "runs it" in warning
    assert check_memory(OVERESTIMATE * 2 * GiB, 2 * GiB, (128, 128), 1, "cuda:0") is not None
    with pytest.raises(InputError, match=r"needs about 258.0 GiB on cuda:0 .* only 2.0 GiB are free: even 128 times "
                                         r"less"):
        check_memory((OVERESTIMATE + 1) * 2 * GiB, 2 * GiB, (128, 128), 1, "cuda:0")


def test_position_table_limit_gives_the_numbers():
    check_max_size((128, 96), 128, 2, 8)
    check_max_size((4096, 4096), None, 2, 8)
    with pytest.raises(InputError, match="at most 1024 px"):
        check_max_size((130, 96), 128, 2, 8)
