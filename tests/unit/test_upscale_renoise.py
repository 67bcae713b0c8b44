"""swd_sampler.upscale_renoise against references written from the formulas (no ComfyUI)."""
import pytest
import torch
import torch.nn.functional as F

from swd_sampler.upscale_renoise import (UpscaleRenoiseError, resize_mask, sampler_input, target_size,
                                         upscale_renoise, validate_sigma)

TORCH_MODES = {"bicubic": {"mode": "bicubic", "align_corners": False},
               "bilinear": {"mode": "bilinear", "align_corners": False},
               "area": {"mode": "area"},
               "nearest-exact": {"mode": "nearest-exact"},
               "bicubic-antialiased": {"mode": "bicubic", "align_corners": False, "antialias": True}}


def documented_eps(seed, shape):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def latent(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 1.3 + 0.2


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("method", list(TORCH_MODES))
@pytest.mark.parametrize("sigma", [0.9454, 0.6022, 0.25])
def test_flow_renoise_is_one_minus_sigma_resized_x0_plus_sigma_eps(method, sigma):
    x0 = latent((2, 16, 6, 8))
    out = upscale_renoise(x0, (9, 14), sigma, seed=123, flow=True, method=method)
    eps = documented_eps(123, (2, 16, 9, 14))
    ref = (1 - sigma) * F.interpolate(x0, size=(9, 14), **TORCH_MODES[method]) + sigma * eps
    assert out.shape == (2, 16, 9, 14) and out.dtype == torch.float32
    assert max_diff(out, ref) <= 1e-6


@pytest.mark.parametrize("sigma", [14.6146, 3.0, 0.03])
def test_eps_renoise_is_resized_x0_plus_sigma_eps(sigma):
    x0 = latent((1, 4, 8, 6), seed=1)
    out = upscale_renoise(x0, (12, 10), sigma, seed=9, flow=False)
    eps = documented_eps(9, (1, 4, 12, 10))
    ref = F.interpolate(x0, size=(12, 10), mode="bicubic", align_corners=False) + sigma * eps
    assert max_diff(out, ref) <= 1e-6


def test_downscaling_works_too():
    x0 = latent((1, 4, 16, 16), seed=2)
    out = upscale_renoise(x0, (8, 12), 0.5, seed=4, flow=True, method="area")
    ref = 0.5 * F.interpolate(x0, size=(8, 12), mode="area") + 0.5 * documented_eps(4, (1, 4, 8, 12))
    assert max_diff(out, ref) <= 1e-6


@pytest.mark.parametrize("flow", [True, False])
def test_sigma_zero_returns_the_resized_latent_exactly(flow):
    x0 = latent((1, 16, 4, 6), seed=3)
    out = upscale_renoise(x0, (6, 8), 0.0, seed=5, flow=flow)
    assert torch.equal(out, F.interpolate(x0, size=(6, 8), mode="bicubic", align_corners=False))


def test_same_size_only_adds_noise():
    x0 = latent((1, 16, 4, 6), seed=3)
    out = upscale_renoise(x0, (4, 6), 0.7, seed=5, flow=True)
    assert max_diff(out, 0.3 * x0 + 0.7 * documented_eps(5, (1, 16, 4, 6))) <= 1e-6


@pytest.mark.parametrize("sigma", [0.0, 0.6022, 0.9454, 0.999])
def test_flow_sampler_input_times_comfyui_noise_scaling_gives_back_x(sigma):
    x = latent((1, 16, 4, 4), seed=6)
    # CONST.noise_scaling(sigma, noise=0, latent) = sigma * 0 + (1 - sigma) * latent
    assert max_diff((1 - sigma) * sampler_input(x, sigma, flow=True), x) <= 1e-6 * max(1.0, x.abs().max().item())


def test_eps_sampler_input_is_x_itself():
    x = latent((1, 4, 4, 4), seed=7)
    # EPS.noise_scaling(sigma, noise=0, latent) = 0 * sigma + latent
    assert torch.equal(sampler_input(x, 5.0, flow=False), x)


def test_pixel_target_divides_by_the_vae_factor_non_square():
    assert target_size((4, 4), width=128, height=96, downscale=8, patch=2) == (12, 16)
    assert target_size((4, 4), width=72, height=40, downscale=8, patch=1) == (5, 9)


def test_match_target_takes_the_other_latents_size():
    assert target_size((4, 6), match=(10, 14), patch=2) == (10, 14)


@pytest.mark.parametrize("size, factor, expected", [
    ((6, 8), 1.25, (8, 10)),            # 80/64 of the 6-step preset at a 96x128 px final size: 7.5 -> 8
    ((4, 6), 1.5, (6, 10)),             # 6 and 9 -> nearest even: 6, 10 (halves round up)
    ((12, 16), 4 / 3, (16, 22)),        # 21.33 -> 22
    ((8, 8), 0.5, (4, 4)),
])
def test_factor_target_rounds_each_side_to_the_nearest_patch_multiple(size, factor, expected):
    assert target_size(size, scale_factor=factor, patch=2) == expected


def test_factor_with_patch_one_rounds_to_integers():
    assert target_size((5, 7), scale_factor=1.5, patch=1) == (8, 11)


@pytest.mark.parametrize("kwargs, words", [
    ({}, "no target size"),
    ({"match": (8, 8), "scale_factor": 2.0}, "conflicting target sizes: match_latent and scale_factor"),
    ({"width": 64, "height": 64, "scale_factor": 2.0}, "conflicting target sizes: width/height and scale_factor"),
    ({"match": (8, 8), "width": 64, "height": 64}, "conflicting target sizes: match_latent and width/height"),
    ({"width": 64}, "width and height must both be positive"),
    ({"width": -64, "height": 64}, "width and height must both be positive"),
    ({"scale_factor": -1.0}, "scale_factor must be positive"),
    ({"scale_factor": 0.1}, "shrinks the 8x8 latent to 0x0"),
    ({"width": 72, "height": 64}, "multiples of 16 pixels"),
    ({"width": 100, "height": 64}, "multiples of 16 pixels"),
    ({"match": (9, 8)}, "not a multiple of the model's patch size 2"),
])
def test_bad_targets_give_one_clear_error(kwargs, words):
    with pytest.raises(UpscaleRenoiseError, match=words):
        target_size((8, 8), downscale=8, patch=2, **kwargs)


@pytest.mark.parametrize("sigma, flow, words", [
    (1.0, True, "empty latent"),
    (1.5, True, r"\[0, 1\)"),
    (-0.1, True, r"\[0, 1\)"),
    (15.0, False, r"\[0, 14.6146\]"),
    (-1.0, False, r"\[0, 14.6146\]"),
])
def test_sigma_outside_the_models_range_is_refused(sigma, flow, words):
    with pytest.raises(UpscaleRenoiseError, match=words):
        validate_sigma(sigma, flow=flow, sigma_max=14.6146)


@pytest.mark.parametrize("sigma, flow", [(0.0, True), (0.9999, True), (0.0, False), (14.6146, False)])
def test_sigma_inside_the_range_is_accepted(sigma, flow):
    validate_sigma(sigma, flow=flow, sigma_max=14.6146)


def test_pixel_mask_keeps_its_ratio_to_the_latent():
    mask = torch.rand((1, 96, 128), generator=torch.Generator().manual_seed(0))
    out = resize_mask(mask, (12, 16), (18, 24))
    ref = F.interpolate(mask.reshape(1, 1, 96, 128), size=(144, 192), mode="bilinear", align_corners=False)
    assert out.shape == (1, 1, 144, 192)
    assert max_diff(out, ref) <= 1e-6
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_latent_sized_mask_becomes_target_sized():
    mask = torch.ones((2, 1, 6, 8))
    assert resize_mask(mask, (6, 8), (9, 12)).shape == (2, 1, 9, 12)
