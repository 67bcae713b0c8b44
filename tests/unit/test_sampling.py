"""The SwD loop (swd_sampler.sampling) against an independent pure-torch reference written from the formula."""
import pytest
import torch
import torch.nn.functional as F

from swd_sampler.renoise import renoise_eps, renoise_flow
from swd_sampler.resize import UPSCALE_METHODS, resize
from swd_sampler.sampling import noise_draws, sample_scalewise
from swd_sampler.schedule import PRESETS, step_sizes


def toy_denoise(x, sigma):
    """A deterministic stand-in for a model: any smooth function of (x, sigma) does."""
    return torch.tanh(x) * (1.0 - 0.5 * sigma) + 0.1 * sigma


def reference_swd(sigmas, sizes, batch, channels, seed):
    """x = eps_0; for each step: x0 = D(x, s_i); x = (1 - s_{i+1}) * bicubic(x0) + s_{i+1} * eps_{i+1}."""
    g = torch.Generator().manual_seed(seed)
    h, w = sizes[0]
    x = torch.randn(batch, channels, h, w, generator=g)
    for i in range(len(sizes)):
        x0 = toy_denoise(x, sigmas[i])
        if i + 1 == len(sizes):
            return x0
        if tuple(sizes[i + 1]) != tuple(x0.shape[-2:]):
            x0 = F.interpolate(x0, size=sizes[i + 1], mode="bicubic", align_corners=False)
        eps = torch.randn(batch, channels, *sizes[i + 1], generator=g)
        x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * eps


@pytest.mark.parametrize("preset", ["SD3.5 Medium · 6 steps", "SD3.5 Medium · 4 steps"])
@pytest.mark.parametrize("final", [(128, 128), (96, 160)])
@pytest.mark.parametrize("batch", [1, 3])
def test_loop_equals_reference(preset, final, batch):
    p = PRESETS[preset]
    sizes = step_sizes(p.scales, *final, 2)
    out = sample_scalewise(toy_denoise, p.sigmas, sizes, batch=batch, channels=16, seed=1234)
    ref = reference_swd(p.sigmas, sizes, batch, 16, 1234)
    assert out.shape == (batch, 16, *final)
    assert (out - ref).abs().max().item() <= 1e-6


def test_model_sees_each_scale_at_its_sigma_in_order():
    p = PRESETS["SD3.5 Medium · 6 steps"]
    sizes = step_sizes(p.scales, 96, 160, 2)
    seen = []

    def denoise(x, sigma):
        seen.append((tuple(x.shape), sigma))
        return toy_denoise(x, sigma)

    sample_scalewise(denoise, p.sigmas, sizes, batch=2, channels=4, seed=0)
    assert seen == [((2, 4, *hw), s) for hw, s in zip(sizes, p.sigmas[:-1])]


def test_callback_runs_once_per_step_with_x0_and_x():
    p = PRESETS["SD3.5 Medium · 4 steps"]
    sizes = step_sizes(p.scales, 64, 64, 2)
    calls = []
    sample_scalewise(toy_denoise, p.sigmas, sizes, batch=1, channels=4, seed=0,
                     callback=lambda i, x0, x, n: calls.append((i, tuple(x0.shape), tuple(x.shape), n)))
    assert calls == [(i, (1, 4, *hw), (1, 4, *hw), 4) for i, hw in enumerate(sizes)]


def test_seed_contract_one_cpu_generator_in_order():
    sizes = [(4, 6), (8, 10)]
    draws = list(noise_draws(7, 2, 3, sizes))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(draws[0], torch.randn(2, 3, 4, 6, generator=g))
    assert torch.equal(draws[1], torch.randn(2, 3, 8, 10, generator=g))


def test_same_seed_same_result_other_seed_differs():
    p = PRESETS["SD3.5 Medium · 4 steps"]
    sizes = step_sizes(p.scales, 32, 32, 2)
    a = sample_scalewise(toy_denoise, p.sigmas, sizes, batch=1, channels=4, seed=5)
    b = sample_scalewise(toy_denoise, p.sigmas, sizes, batch=1, channels=4, seed=5)
    c = sample_scalewise(toy_denoise, p.sigmas, sizes, batch=1, channels=4, seed=6)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_eps_loop_starts_from_scaled_pure_noise_and_adds_sigma_eps():
    sigmas = [14.6, 3.0, 1.0, 0.0]
    sizes = [(4, 4), (6, 6), (8, 8)]
    out = sample_scalewise(toy_denoise, sigmas, sizes, batch=1, channels=4, seed=3, renoise=renoise_eps)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 4, generator=g) * (1 + 14.6 ** 2) ** 0.5
    for i in range(3):
        x0 = toy_denoise(x, sigmas[i])
        if i == 2:
            break
        x0 = F.interpolate(x0, size=sizes[i + 1], mode="bicubic", align_corners=False)
        x = x0 + sigmas[i + 1] * torch.randn(1, 4, *sizes[i + 1], generator=g)
    assert (out - x0).abs().max().item() <= 1e-6


def test_flow_start_is_pure_noise_even_below_sigma_one():
    seen = []
    sample_scalewise(lambda x, s: seen.append(x) or x, [0.9, 0.0], [(2, 3)], batch=1, channels=2, seed=4)
    assert torch.equal(seen[0], torch.randn(1, 2, 2, 3, generator=torch.Generator().manual_seed(4)))


def test_renoise_formulas():
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.allclose(renoise_flow(x0, 0.3, eps), 0.7 * x0 + 0.3 * eps)
    assert torch.equal(renoise_flow(x0, 0.3, eps, max_denoise=True), eps)
    assert torch.allclose(renoise_eps(x0, 2.0, eps), x0 + 2.0 * eps)
    assert torch.allclose(renoise_eps(torch.zeros_like(x0), 2.0, eps, max_denoise=True), 5 ** 0.5 * eps)


def test_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="need 3 sigmas"):
        sample_scalewise(toy_denoise, [1.0, 0.0], [(2, 2), (4, 4)], batch=1, channels=1, seed=0)


@pytest.mark.parametrize("method", UPSCALE_METHODS)
def test_resize_methods_keep_dtype_and_reach_the_size(method):
    x = torch.randn(1, 4, 8, 12, dtype=torch.float16)
    y = resize(x, (12, 20), method)
    assert y.shape == (1, 4, 12, 20) and y.dtype == torch.float16


def test_resize_bicubic_is_torch_bicubic_without_corner_alignment_and_noop_at_same_size():
    x = torch.randn(1, 2, 5, 7)
    assert torch.equal(resize(x, (9, 11)), F.interpolate(x, size=(9, 11), mode="bicubic", align_corners=False))
    assert resize(x, (5, 7)) is x


def test_antialiased_resize_differs_only_when_shrinking():
    x = torch.randn(1, 2, 16, 16)
    assert torch.allclose(resize(x, (24, 24), "bilinear-antialiased"), resize(x, (24, 24), "bilinear"), atol=1e-5)
    assert not torch.allclose(resize(x, (6, 6), "bilinear-antialiased"), resize(x, (6, 6), "bilinear"), atol=1e-2)


def test_unknown_resize_method_names_the_choices():
    with pytest.raises(ValueError, match="bicubic"):
        resize(torch.zeros(1, 1, 2, 2), (4, 4), "lanczos")
