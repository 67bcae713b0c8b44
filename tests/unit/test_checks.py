"""swd_sampler.checks: each check passes what is valid and refuses the rest with an SwDError naming input and fix."""
import math
import re

import pytest
import torch

from swd_sampler.checks import (OVERESTIMATE, GiB, InputError, check_conditioning, check_custom_schedule,
                                check_finite, check_image, check_latent, check_latent_channels, check_mask_values,
                                check_max_size, check_memory, check_noise_mask, check_preset_family,
                                check_sampler_sigmas, check_values, split_lines)
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


# tensors ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, kind", [(math.nan, "NaN"), (math.inf, "infinite"), (-math.inf, "infinite")])
def test_a_nan_or_inf_anywhere_is_refused_naming_input_origin_and_place(bad, kind):
    x = torch.randn(2, 4, 8, 8)
    check_values(x, "latent_image", "somewhere")
    x[1, 2, 3, 4] = bad
    with pytest.raises(InputError) as e:
        check_values(x, "latent_image", "the LATENT connected to latent_image")
    message = str(e.value)
    assert f"latent_image holds 1 {kind} value of 512" in message
    assert "index [1, 2, 3, 4] of shape (2, 4, 8, 8)" in message
    assert "came from the LATENT connected to latent_image" in message


def test_nan_and_inf_are_counted_together():
    x = torch.zeros(10)
    x[:3], x[5] = math.nan, math.inf
    with pytest.raises(InputError, match="holds 4 NaN and infinite values of 10"):
        check_values(x, "samples", "x")


@pytest.mark.parametrize("shape", [(0, 16, 8, 8), (1, 16, 0, 0), (1, 16, 8, 0)])
def test_an_empty_latent_is_refused(shape):
    with pytest.raises(InputError, match=r"latent_image is empty: its shape is \(" + ", ".join(map(str, shape))):
        check_latent(torch.zeros(shape), "latent_image", "x")


def test_a_latent_that_is_not_4d_is_refused_and_values_are_read_only_when_asked():
    with pytest.raises(InputError, match=r"has shape \(1, 16, 1, 8, 8\), but SwD works on image latents"):
        check_latent(torch.zeros(1, 16, 1, 8, 8), "latent_image", "x")
    nan = torch.full((1, 16, 8, 8), math.nan)
    check_latent(nan, "latent_image", "x", values=False)  # text-to-image ignores the content
    with pytest.raises(InputError, match="NaN"):
        check_latent(nan, "latent_image", "x")


def test_images_rgb_and_rgba_pass_other_channel_counts_empty_and_nan_are_refused():
    check_image(torch.rand(1, 8, 8, 3), "pixels", "x")
    check_image(torch.rand(1, 8, 8, 4), "pixels", "x")
    with pytest.raises(InputError, match=r"pixels has 1 channel per pixel, but this node takes 3 \(RGB\) or 4"):
        check_image(torch.rand(1, 8, 8, 1), "pixels", "x")
    with pytest.raises(InputError, match="pixels has 2 channels per pixel"):
        check_image(torch.rand(1, 8, 8, 2), "pixels", "x")
    with pytest.raises(InputError, match="pixels is empty"):
        check_image(torch.rand(0, 8, 8, 3), "pixels", "x")
    with pytest.raises(InputError, match="an IMAGE is"):
        check_image(torch.rand(8, 8, 3), "pixels", "x")
    image = torch.rand(1, 8, 8, 3)
    image[0, 0, 0, 0] = math.nan
    with pytest.raises(InputError, match="pixels holds 1 NaN"):
        check_image(image, "pixels", "x")


@pytest.mark.parametrize("shape", [(64, 64), (1, 64, 64), (3, 64, 64), (1, 1, 64, 64), (3, 1, 64, 64)])
def test_masks_as_comfyui_makes_them_pass(shape):
    check_noise_mask(torch.rand(shape), 3)


def test_mask_batch_must_be_one_or_the_latents():
    with pytest.raises(MaskError, match="batch of 2 masks but the latent a batch of 3"):
        check_noise_mask(torch.ones(2, 1, 64, 64), 3)
    with pytest.raises(MaskError, match="batch of 2 masks but the latent a batch of 3"):
        check_noise_mask(torch.ones(2, 64, 64), 3)


@pytest.mark.parametrize("batch", [1, 16])
def test_a_mask_per_channel_is_named_as_such(batch):
    with pytest.raises(MaskError, match=r"noise_mask is attached per channel: its shape \(1, 16, 64, 64\) holds 16 "
                                        r"masks per image"):
        check_noise_mask(torch.ones(1, 16, 64, 64), batch)


def test_masks_of_other_ranks_empty_masks_and_bad_values_are_refused():
    with pytest.raises(MaskError, match=r"has shape \(64,\)"):
        check_noise_mask(torch.ones(64), 1)
    with pytest.raises(MaskError, match=r"has shape \(1, 1, 1, 8, 8\)"):
        check_noise_mask(torch.ones(1, 1, 1, 8, 8), 1)
    with pytest.raises(InputError, match="noise_mask is empty"):
        check_noise_mask(torch.ones(1, 0, 0), 1)
    mask = torch.ones(1, 8, 8)
    mask[0, 1, 2] = math.nan
    with pytest.raises(InputError, match=r"noise_mask holds 1 NaN value of 64 \(the first at index \[0, 1, 2\]"):
        check_noise_mask(mask, 1)


@pytest.mark.parametrize("low, high", [(0.0, 2.0), (-0.5, 1.0), (-1.0, 3.0)])
def test_mask_values_outside_0_1_are_refused(low, high):
    mask = torch.full((1, 8, 8), 0.5)
    mask[0, 0, 0], mask[0, 7, 7] = low, high
    with pytest.raises(MaskError, match=f"noise_mask has values from {low:g} to {high:g}, outside \\[0, 1\\]"):
        check_mask_values(mask, "noise_mask", "x")


def test_mask_values_a_float_rounding_off_0_1_pass():
    check_mask_values(torch.tensor([-1e-6, 0.5, 1 + 1e-6]), "noise_mask", "x")


def _cond(batch, tokens=5, width=24, pooled=True):
    entry = {"cross_attn": torch.randn(batch, tokens, width)}
    if pooled:
        entry["pooled_output"] = torch.randn(batch, width)
    return entry


def test_conditioning_batch_must_be_one_or_the_latents():
    check_conditioning([_cond(1)], "positive", 4)
    check_conditioning([_cond(3)], "positive", 3)
    check_conditioning([{"cross_attn": torch.randn(1, 5, 8), "guidance": 3.5}], "positive", 2)
    with pytest.raises(InputError, match="positive has a batch of 3 prompts .* but the latent a batch of 2 images"):
        check_conditioning([_cond(3)], "positive", 2)
    with pytest.raises(InputError, match="negative has a batch of 2 prompts .* a batch of 3 images"):
        check_conditioning([_cond(1), _cond(2, pooled=False)], "negative", 3)


def test_conditioning_values_must_be_finite():
    bad = _cond(1)
    bad["pooled_output"][0, 3] = math.inf
    with pytest.raises(InputError, match="positive holds 1 infinite value .* the pooled output of the conditioning "
                                         "connected to positive"):
        check_conditioning([bad], "positive", 1)


# text ---------------------------------------------------------------------------------------------------------------

def test_lines_split_at_newline_only_and_crlf_endings_work():
    assert split_lines("red circle\nblue square", "text") == ["red circle", "blue square"]
    assert split_lines("red circle\r\nblue square\r\n", "text") == ["red circle", "blue square", ""]
    assert split_lines("red circle", "text") == ["red circle"]


@pytest.mark.parametrize("char, name", [("\r", "U+000D CARRIAGE RETURN"), ("\u2028", "U+2028 LINE SEPARATOR"),
                                        ("\u2029", "U+2029 PARAGRAPH SEPARATOR"), ("\x0b", "U+000B"),
                                        ("\x85", "U+0085")])
def test_other_line_breaks_inside_a_line_are_refused_not_split(char, name):
    with pytest.raises(InputError, match=re.escape(f"text: line 2 holds a {name}")):
        split_lines(f"red circle\nblue{char}square", "text")
