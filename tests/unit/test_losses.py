"""swd_distill.losses against the official training code's formulas (shared DESIGN.md section 8), with the numbers
worked out by hand in each test and, on random features, against loop-by-loop references written from the formulas."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swd_distill.losses import (dmd_gradient, dmd_loss, fake_score_loss, gan_discriminator_loss, gan_generator_loss,
                                patch_loss)

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_losses_imports_no_comfyui():
    code = "import sys, swd_distill.losses; print(any(m == 'comfy' or m.startswith('comfy.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_linear_patch_loss_is_a_per_channel_pseudo_huber_of_the_token_means():
    real = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # token means (2, 3)
    fake = torch.tensor([[[0.0, 0.0], [2.0, 2.0]]], requires_grad=True)  # token means (1, 1)
    loss = patch_loss(real, fake, "linear", c=1e-3)
    # channel 0: d = 1, sqrt(1 + 1e-6) - 1e-3 = 0.9990005; channel 1: d = 4, sqrt(4 + 1e-6) - 1e-3 = 1.99900025
    assert loss.item() == pytest.approx((0.9990005 + 1.99900025) / 2, rel=1e-6)
    # an L2 norm over the channels (this pack's earlier loss) would give sqrt(5 + 1e-6) - 1e-3 = 2.2350680
    assert abs(loss.item() - 2.2350680) > 0.5
    loss.backward()
    # d/dfake[n, j] = (1 / 2 channels) * (1 / 2 tokens) * (mean_fake_j - mean_real_j) / sqrt(d_j + c^2)
    expected = torch.tensor([-1 / 1.0000005, -2 / 2.00000025]) / 4
    torch.testing.assert_close(fake.grad[0], expected.expand(2, 2), rtol=1e-6, atol=0)


def test_linear_patch_loss_averages_over_images_and_channels():
    real = torch.zeros(2, 3, 1)
    fake = torch.tensor([[[3.0], [3.0], [3.0]], [[0.0], [0.0], [0.0]]])  # image 0 off by 3, image 1 exact
    loss = patch_loss(real, fake, "linear", c=0.0)
    assert loss.item() == pytest.approx((3.0 + 1e-5) / 2)  # image 1: sqrt(0) clamps to eps = 1e-5 (official)


def test_rbf_patch_loss_is_the_unbiased_mmd_with_a_fixed_bandwidth():
    x = torch.tensor([[[0.0], [1.0]]])
    y = torch.tensor([[[0.0], [2.0]]])
    # sigma 1: k = exp(-d^2 / 2). xx off-diagonal: e^-0.5; yy: e^-2; xy: (1 + e^-2 + 2 e^-0.5) / 4
    expected = math.exp(-0.5) + math.exp(-2) - 2 * (1 + math.exp(-2) + 2 * math.exp(-0.5)) / 4
    assert patch_loss(x, y, "rbf", sigma=1.0).item() == pytest.approx(expected, rel=1e-6)  # -0.43233236
    # the default bandwidth is 100: at these distances every kernel value is ~1 and the MMD ~0
    assert abs(patch_loss(x, y, "rbf").item()) < 1e-3


def test_batch_mmd_pools_the_tokens_of_the_whole_batch():
    x = torch.tensor([[[0.0]], [[1.0]]])  # two images of one token: one set {0, 1}
    y = torch.tensor([[[0.0]], [[2.0]]])
    expected = math.exp(-0.5) + math.exp(-2) - 2 * (1 + math.exp(-2) + 2 * math.exp(-0.5)) / 4
    assert patch_loss(x, y, "rbf", sigma=1.0, batch_mmd=True).item() == pytest.approx(expected, rel=1e-6)
    # linear, pooled: one mean per channel over all tokens: means 0.5 and 1.0 -> sqrt(0.25 + c^2) - c
    assert patch_loss(x, y, "linear", batch_mmd=True).item() == pytest.approx(math.sqrt(0.25 + 1e-6) - 1e-3)


def _reference_rbf(x, y, sigma):
    """Unbiased MMD^2 per image, term by term."""
    out = []
    for xb, yb in zip(x, y):
        n = len(xb)
        k = lambda a, b: torch.exp(-(a - b).square().sum() / (2 * sigma ** 2))
        xx = sum(k(xb[i], xb[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(k(yb[i], yb[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        xy = sum(k(xb[i], yb[j]) for i in range(n) for j in range(n)) / (n * n)
        out.append(xx + yy - 2 * xy)
    return torch.stack(out).mean()


def _reference_linear(x, y, c, eps=1e-5):
    terms = [max(math.sqrt((x[b, :, j].mean() - y[b, :, j].mean()).item() ** 2 + c * c), eps) - c
             for b in range(x.shape[0]) for j in range(x.shape[2])]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", [0, 1])
def test_patch_loss_values_and_gradients_match_references_on_random_features(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 6, 8, generator=g, dtype=torch.float64) * 30
    y = (torch.randn(3, 6, 8, generator=g, dtype=torch.float64) * 30).requires_grad_(True)
    assert patch_loss(x, y, "linear").item() == pytest.approx(_reference_linear(x, y, 1e-3), rel=1e-6)
    ours = patch_loss(x, y, "rbf", sigma=50.0)
    reference = _reference_rbf(x, y, 50.0)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    (g_ours,) = torch.autograd.grad(ours, y)
    (g_ref,) = torch.autograd.grad(reference, y)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-12)


def test_patch_loss_refuses_unknown_kernels_and_mismatched_features():
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="linaer"):
        patch_loss(x, x, "linaer")
    with pytest.raises(ValueError, match=r"\(1, 2, 3\) and \(1, 2\)"):
        patch_loss(x, x[..., 0], "linear")


def test_dmd_gradient_is_normalised_by_the_student_teacher_distance_per_image():
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    teacher = torch.zeros(2, 1, 2, 2)
    fake = torch.stack([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])
    grad = dmd_gradient(student, teacher, fake)
    # image 0: (1 - 0) / mean|student - teacher| = 1 / 2.5; image 1: 0 / 0 = NaN -> 0 (nan_to_num)
    torch.testing.assert_close(grad, torch.stack([torch.full((1, 2, 2), 0.4), torch.zeros(1, 2, 2)]))


def test_dmd_loss_pushes_the_student_along_the_gradient():
    x0 = torch.tensor([[[[1.0, -1.0]]]], requires_grad=True)
    grad = torch.tensor([[[[0.5, 2.0]]]])
    loss = dmd_loss(x0, grad)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 4.0) / 2)  # 0.5 * mean(grad^2)
    loss.backward()
    torch.testing.assert_close(x0.grad, grad / 2)  # grad / numel


def test_fake_score_and_gan_losses():
    pred = torch.tensor([[1.0, 3.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = fake_score_loss(pred, target)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert target.grad is None  # the student sample is a fixed target
    # softplus(0) = ln 2, softplus(1) = 1.3132617, softplus(-2) = 0.1269280
    d = gan_discriminator_loss(torch.tensor([0.0, 1.0]), torch.tensor([2.0]))
    assert d.item() == pytest.approx((math.log(2) + 1.3132617) / 2 + 0.1269280, rel=1e-6)
    assert gan_generator_loss(torch.tensor([0.0, 1.0])).item() == pytest.approx((math.log(2) + 0.3132617) / 2,
                                                                                rel=1e-6)
