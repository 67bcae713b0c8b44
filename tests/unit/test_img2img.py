"""denoise (step selection, the start from an input latent) and noise masks, against references from the formulas."""
import pytest
import torch
import torch.nn.functional as F

from swd_sampler.inpaint import mask_at
from swd_sampler.resize import resize_latent
from swd_sampler.sampling import sample_scalewise
from swd_sampler.schedule import PRESETS, ScheduleError, describe, select_steps, step_sizes

MEDIUM6 = PRESETS["SD3.5 Medium · 6 steps"]


def toy_denoise(x, sigma):
    return torch.tanh(x) * (1.0 - 0.5 * sigma) + 0.1 * sigma


@pytest.mark.parametrize("preset, denoise, scales, sigmas", [
    ("SD3.5 Medium · 6 steps", 0.75, (96, 128), (0.7371, 0.6022, 0.0)),
    ("SD3.5 Medium · 6 steps", 0.9454, (48, 64, 80, 96, 128), (0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0)),
    ("SD3.5 Medium · 6 steps", 0.6022, (128,), (0.6022, 0.0)),
    ("SD3.5 Medium · 6 steps", 0.4, (128,), (0.4, 0.0)),
    ("SD3.5 Medium · 4 steps", 0.75, (96, 128), (0.7371, 0.6022, 0.0)),
    ("SD3.5 Medium · 4 steps", 0.9, (80, 96, 128), (0.8959, 0.7371, 0.6022, 0.0)),
    ("SDXL · 4 steps", 0.7, (96, 128), (0.6, 0.4, 0.0)),
    ("SDXL · 4 steps", 0.3, (128,), (0.3, 0.0)),
])
def test_denoise_keeps_the_steps_at_or_below_it_and_starts_from_the_latent(preset, denoise, scales, sigmas):
    p = PRESETS[preset]
    run = select_steps(p.scales, p.sigmas, denoise)
    assert run.scales == scales and run.sigmas == pytest.approx(sigmas) and run.from_latent


def test_denoise_one_is_the_whole_schedule_from_pure_noise_and_zero_runs_nothing():
    run = select_steps(MEDIUM6.scales, MEDIUM6.sigmas, 1.0)
    assert (run.scales, run.sigmas, run.from_latent) == (MEDIUM6.scales, MEDIUM6.sigmas, False)
    assert select_steps(MEDIUM6.scales, MEDIUM6.sigmas, 0.0).scales == ()


@pytest.mark.parametrize("denoise", [-0.1, 1.5])
def test_denoise_outside_zero_one_is_refused(denoise):
    with pytest.raises(ScheduleError, match="denoise must lie in"):
        select_steps(MEDIUM6.scales, MEDIUM6.sigmas, denoise)


@pytest.mark.parametrize("final", [(128, 128), (96, 168)])
def test_kept_steps_run_at_the_sizes_they_have_in_the_full_schedule(final):
    full = step_sizes(MEDIUM6.scales, *final, 2)
    for denoise in (0.95, 0.8, 0.75, 0.7):
        run = select_steps(MEDIUM6.scales, MEDIUM6.sigmas, denoise)
        assert step_sizes(run.scales, *final, 2) == full[len(full) - len(run.scales):]


def test_resize_latent_antialiases_when_shrinking_only():
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(resize_latent(x, (12, 12)),
                       F.interpolate(x, size=(12, 12), mode="bicubic", antialias=True, align_corners=False))
    assert torch.equal(resize_latent(x, (24, 24)), F.interpolate(x, size=(24, 24), mode="bicubic", align_corners=False))
    assert torch.equal(resize_latent(x, (8, 8), "area"), F.interpolate(x, size=(8, 8), mode="area"))


def reference_img2img(latent, sigmas, sizes, seed, mask=None):
    """x = (1 - s_0) bicubic_aa(L, size_0) + s_0 eps_0; each x0 (blended with L outside the mask) upscaled and
    re-noised as in text-to-image."""
    g = torch.Generator().manual_seed(seed)
    b, c = latent.shape[:2]

    def at(t, size):
        return F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False) \
            if tuple(size) != tuple(t.shape[-2:]) else t

    x = (1 - sigmas[0]) * at(latent, sizes[0]) + sigmas[0] * torch.randn(b, c, *sizes[0], generator=g)
    for i, size in enumerate(sizes):
        x0 = toy_denoise(x, sigmas[i])
        if mask is not None:
            m = F.adaptive_avg_pool2d(mask, size)
            x0 = m * x0 + (1 - m) * at(latent, size)
        if i + 1 == len(sizes):
            return x0
        x0 = F.interpolate(x0, size=sizes[i + 1], mode="bicubic", align_corners=False)
        x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * torch.randn(b, c, *sizes[i + 1], generator=g)


@pytest.mark.parametrize("denoise", [0.9, 0.75, 0.4])
def test_img2img_loop_equals_reference(denoise):
    run = select_steps(MEDIUM6.scales, MEDIUM6.sigmas, denoise)
    sizes = step_sizes(run.scales, 64, 48, 2)
    latent = torch.randn(2, 4, 64, 48, generator=torch.Generator().manual_seed(9))
    out = sample_scalewise(toy_denoise, run.sigmas, sizes, batch=2, channels=4, seed=3, latent=latent,
                           from_latent=True)
    assert (out - reference_img2img(latent, run.sigmas, sizes, 3)).abs().max().item() <= 1e-6


def test_first_model_input_is_the_latent_shrunk_antialiased_and_renoised_with_the_first_draw():
    run = select_steps(MEDIUM6.scales, MEDIUM6.sigmas, 0.75)
    sizes = step_sizes(run.scales, 32, 32, 2)
    latent = torch.randn(1, 4, 32, 32)
    seen = []
    sample_scalewise(lambda x, s: seen.append(x) or x, run.sigmas, sizes, batch=1, channels=4, seed=11,
                     latent=latent, from_latent=True)
    eps = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(11))
    expected = (1 - 0.7371) * F.interpolate(latent, size=(24, 24), mode="bicubic", antialias=True,
                                            align_corners=False) + 0.7371 * eps
    assert seen[0].shape == (1, 4, 24, 24) and (seen[0] - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("denoise", [1.0, 0.75])
def test_masked_loop_keeps_the_latent_outside_the_mask_and_equals_reference(denoise):
    run = select_steps(MEDIUM6.scales, MEDIUM6.sigmas, denoise)
    sizes = step_sizes(run.scales, 32, 32, 2)
    latent = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1.0  # generate the left half
    out = sample_scalewise(toy_denoise, run.sigmas, sizes, batch=2, channels=4, seed=5, latent=latent,
                           from_latent=run.from_latent, mask=mask)
    assert torch.allclose(out[..., 16:], latent[..., 16:], atol=1e-6)
    assert (out[..., :16] - latent[..., :16]).abs().max() > 0.1
    if run.from_latent:
        assert (out - reference_img2img(latent, run.sigmas, sizes, 5, mask)).abs().max().item() <= 1e-6


def test_mask_is_area_averaged_to_each_step_size():
    mask = torch.rand(1, 4, 32, 32)
    assert torch.allclose(mask_at(mask, (8, 8)), mask.reshape(1, 4, 8, 4, 8, 4).mean((3, 5)), atol=1e-6)
    assert mask_at(mask, (32, 32)) is mask


def test_describe_names_steps_pixel_sizes_and_sigmas():
    text = describe([(768, 768), (1024, 1024)], [0.7371, 0.6022, 0.0], 6, 0.75)
    assert text == "SwD ran 2 of 6 steps (denoise 0.75): 768x768 px at sigma 0.7371, 1024x1024 px at sigma 0.6022."
    assert describe([], [], 6, 0.0).endswith("none, the latent is returned unchanged.")


def test_describe_shows_the_denoise_that_selected_the_steps_digit_for_digit():
    run = select_steps((32, 64), (1.0, 0.5, 0.0), 0.9999999)
    assert run.sigmas == (0.5, 0.0)  # below 1: the step at sigma 1 is skipped, so "denoise 1" would mislead
    assert describe([(512, 512)], run.sigmas, 2, 0.9999999).startswith("SwD ran 1 of 2 steps (denoise 0.9999999):")
    assert describe([(1024, 1024)], [0.99999988, 0.0], 1, 0.9999999).endswith("px at sigma 0.9999999.")
    assert "(denoise 1)" in describe([(1024, 1024)], [1.0, 0.0], 1, 1.0)
