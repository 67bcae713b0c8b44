"""The losses of SwD distillation, as the official training code computes them (yandex-research/swd,
`src/losses.py`; shared DESIGN.md section 8). Pure torch: importing this module never imports ComfyUI.

Shapes: latents (B, C, H, W); patch features (B, N, D): N tokens of width D per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH_KERNELS = ("linear", "rbf", "rbf-median")


def patch_loss(real: torch.Tensor, fake: torch.Tensor, kernel: str = "linear", *, c: float = 1e-3,
               sigma: float = 100.0, batch_mmd: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """The paper's patch loss: an MMD between the token sets of real and generated images (official `mmd_loss_`).

    - "linear" (the released default): per image b and channel j, d = (mean_n real[b, n, j] - mean_n fake[b, n, j])^2,
      mmd = max(sqrt(d + c^2), eps) - c (a pseudo-Huber penalty per channel); the loss is the mean over images AND
      channels.
    - "rbf": the unbiased MMD^2 per image with the fixed-bandwidth kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2)):
      (sum_{n != m} k(x_n, x_m)) / (N (N - 1)) + the same for y - 2 (sum_{n, m} k(x_n, y_m)) / N^2, then the mean
      over images.
    - "rbf-median" (not in the official code; this pack's earlier choice, kept for comparison): the biased MMD^2
      with the kernel exp(-|a - b|^2 / m), m the median squared distance of the pooled tokens (no gradient).
    batch_mmd=True treats all tokens of the batch as one set (one image of B * N tokens).
    """
    if kernel not in PATCH_KERNELS:
        raise ValueError(f"patch kernel {kernel!r} is not one of {', '.join(PATCH_KERNELS)}")
    if real.ndim != 3 or real.shape != fake.shape:
        raise ValueError(f"patch features must both be (B, N, D); got {tuple(real.shape)} and {tuple(fake.shape)}")
    if batch_mmd:
        real, fake = real.flatten(0, 1)[None], fake.flatten(0, 1)[None]
    x, y = _at_least_fp32(real), _at_least_fp32(fake)
    if kernel == "linear":
        d = (x.mean(1) - y.mean(1)) ** 2
        return ((d + c ** 2).sqrt().clamp(min=eps) - c).mean()
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"the {kernel} patch kernel needs at least 2 tokens per set; got {n} (use batch_mmd, or "
                         f"features of a larger latent)")
    if kernel == "rbf":  # the official arithmetic, step by step (float32 cancels: the order matters)
        xx, yy, xy = torch.bmm(x, x.transpose(1, 2)), torch.bmm(y, y.transpose(1, 2)), torch.bmm(x, y.transpose(1, 2))
        # |a|^2 of every token, laid out along the last axis: rx[b, i, j] = |x_j|^2 (its transpose: |x_i|^2)
        rx = xx.diagonal(dim1=1, dim2=2).unsqueeze(1).expand_as(xx)
        ry = yy.diagonal(dim1=1, dim2=2).unsqueeze(1).expand_as(yy)
        alpha = 1 / (2 * sigma ** 2)
        k_xx = torch.exp(-alpha * (rx.transpose(1, 2) + rx - 2.0 * xx))
        k_yy = torch.exp(-alpha * (ry.transpose(1, 2) + ry - 2.0 * yy))
        k_xy = torch.exp(-alpha * (rx.transpose(1, 2) + ry - 2.0 * xy))
        xx_mean = (k_xx.sum(dim=(1, 2)) - n) / (n * (n - 1))  # the diagonal, k(a, a) = 1, left out
        yy_mean = (k_yy.sum(dim=(1, 2)) - n) / (n * (n - 1))
        xy_mean = k_xy.sum(dim=(1, 2)) / (n * n)
        return (xx_mean + yy_mean - 2.0 * xy_mean).mean()
    xy = torch.cat([x, y], 1)
    dist = (xy[:, :, None] - xy[:, None, :]).square().sum(-1)
    bandwidth = dist.detach().flatten(1).median(1).values.clamp(min=1e-6).view(-1, 1, 1)
    k = torch.exp(-dist / bandwidth)
    return (k[:, :n, :n].mean((1, 2)) + k[:, n:, n:].mean((1, 2)) - 2 * k[:, :n, n:].mean((1, 2))).mean()


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 features are computed in float32 (the official `.float()`); float64 stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def dmd_gradient(x0_student: torch.Tensor, x0_teacher: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD's normalised gradient: (x0_fake - x0_teacher) / mean_{C,H,W} |x0_student - x0_teacher|, per image, with
    NaN and inf (a zero denominator) replaced by torch.nan_to_num, as official."""
    dims = tuple(range(1, x0_student.ndim))
    scale = (x0_student - x0_teacher).abs().mean(dims, keepdim=True)
    return torch.nan_to_num((x0_fake - x0_teacher) / scale)


def dmd_loss(x0_student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 * mse(x0, sg(x0 - grad)): its gradient with respect to x0 is grad / x0.numel()."""
    return 0.5 * F.mse_loss(_at_least_fp32(x0_student), _at_least_fp32(x0_student - grad).detach())


def fake_score_loss(x0_fake: torch.Tensor, x0_student: torch.Tensor) -> torch.Tensor:
    """The fake score's denoising loss: mse of its x0 prediction against the (detached) student sample."""
    return F.mse_loss(_at_least_fp32(x0_fake), _at_least_fp32(x0_student).detach())


def gan_discriminator_loss(logits_fake: torch.Tensor, logits_real: torch.Tensor) -> torch.Tensor:
    """softplus(logit_fake) + softplus(-logit_real), each averaged over the batch."""
    return F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()


def gan_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating GAN loss: softplus(-logit_fake), averaged over the batch."""
    return F.softplus(-logits_fake).mean()
