"""SwD distillation of the tiny teacher into a 4-step scale-wise student (the method of shared DESIGN.md section 8,
scaled down to 2 CPU cores).

Networks: one frozen base (the teacher) with two LoRA adapters (model.py): "student" (trained, exported as the
PEFT LoRA) and "fake" (the online fake score, trained on the student's samples).

Schedule: the "Tiny demo · 4 steps" preset: latent sides 8, 10, 12, 16 (the paper's 64, 80, 96, 128 halved twice)
at sigmas 1.0, 0.8959, 0.7371, 0.6022. Generator step k trains scale i = k mod 4.

A training input at scale i: the data latent z at scale i (antialiased bicubic from the native 16x16), shrunk to
scale i-1 and enlarged back (bicubic), then noised to sigma_i: x = (1 - s_i) up(down(z)) + s_i eps; at i = 0 it is
pure noise. The student predicts x0 from x at sigma_i. Data: freshly rendered scenes (the real distribution, which
the tiny family has; the official code uses teacher samples for want of it). No caption dropout.

Losses of the student (generator):
- warm start (the first `warm_steps`): ||x0_student - z||^2, a scale-wise regression that adapts the LoRA to the
  scale-wise inputs;
- distribution matching (DMD2's form): x_t = (1 - t) x0_student + t eps, t ~ U(0.02, dmd_sigma_max); with the
  teacher's guided x0 (cfg) and the fake score's x0 at x_t,
  grad = (x0_fake - x0_teacher) / mean|x0_student - x0_teacher| (per sample, at least 1e-5) and the surrogate
  0.5 ||x0_student - sg(x0_student - grad)||^2, weight 1;
- the patch loss: the image tokens after joint block 0 (the middle of a 2-block network) of the fake-score network
  for x0_student and for the paired real z, both noised with the same eps to the same t ~ U(0.02,
  patch_sigma_max), compared as sets of patches: "linear" (the released default: each image's token mean against
  its real partner's under a pseudo-Huber penalty sqrt(d^2 + c^2) - c, c = 1e-3) or "rbf" (MMD^2 between the two
  token sets with a Gaussian kernel, bandwidth the median distance); weight `patch_weight`.
- the GAN term (DMD2's, optional: weight `gan`, 0 = off): a small MLP discriminator on the token mean of the same
  fake-score features of the noised x0_student (t ~ U(0.02, dmd_sigma_max)); the student's loss is
  softplus(-logit).
Fake score: before each generator step, `fake_updates` steps on fresh batches of ||x0_fake(x_t) - x0_student||^2
at t ~ U(0.02, 1); with the GAN term on, plus `gan_d` x the discriminator's loss softplus(logit(fake)) +
softplus(-logit(real)), the real latent noised with the same t and eps (the fake adapter and the head both learn).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from swd_sampler.resize import resize
from swd_sampler.schedule import PRESETS, step_sizes

from . import data
from .model import (add_lora, adapter, block_features, build_mmdit, peft_state_dict, predict_x0, predict_x0_cfg,
                    torch_default_init)
from .runner import Parallel, Progress, load_checkpoint, save_checkpoint
from .tiny import NATIVE_LATENT, TINY_PRESET


@dataclass
class DistillConfig:
    steps: int = 2000  # generator steps, warm start included
    warm_steps: int = 200
    batch: int = 32
    rank: int = 32
    lr: float = 3e-4
    fake_lr: float = 3e-4
    fake_updates: int = 1
    cfg: float = 3.0  # the teacher's guidance inside DMD (the official SD3.5 run: 7; 3 is the tiny teacher's best)
    dmd: bool = True
    dmd_sigma_max: float = 0.79
    patch: str = "linear"  # "linear" (the released default, the ablation's best here), "rbf" or "none"
    patch_weight: float = 1.0
    patch_sigma_max: float = 0.60
    huber_c: float = 1e-3
    gan: float = 0.0  # the generator's GAN weight (0: no discriminator head)
    gan_d: float = 0.01  # the discriminator loss's weight in the fake-score update (the official value)
    seed: int = 1
    checkpoint_every: int = 100


def schedule() -> tuple[list[tuple[int, int]], list[float]]:
    preset = PRESETS[TINY_PRESET]
    return step_sizes(preset.scales, NATIVE_LATENT, NATIVE_LATENT, 2), list(preset.sigmas)


def scalewise_input(z: torch.Tensor, i: int, sizes, sigmas, eps: torch.Tensor) -> torch.Tensor:
    """The student's input at step i made from the data latent z at scale i (module docstring)."""
    if i == 0:
        return eps
    up = resize(resize(z, sizes[i - 1], "bicubic-antialiased"), sizes[i], "bicubic")
    return (1 - sigmas[i]) * up + sigmas[i] * eps


def noised(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, 1, 1, 1)
    return (1 - t) * x0 + t * eps


def patch_loss(f_student: torch.Tensor, f_real: torch.Tensor, kernel: str, c: float) -> torch.Tensor:
    """f: (B, tokens, dim) features; see the module docstring."""
    if kernel == "linear":
        d2 = (f_student.mean(1) - f_real.mean(1)).square().sum(-1)
        return (torch.sqrt(d2 + c * c) - c).mean()
    xy = torch.cat([f_student, f_real], 1)  # per image pair: MMD^2 of the two token sets
    dist = torch.cdist(xy, xy).square()
    bandwidth = dist.detach().flatten(1).median(1).values.clamp(min=1e-6).view(-1, 1, 1)
    k = torch.exp(-dist / bandwidth)
    n = f_student.shape[1]
    return (k[:, :n, :n].mean((1, 2)) + k[:, n:, n:].mean((1, 2)) - 2 * k[:, :n, n:].mean((1, 2))).mean()


def discriminator(hidden: int, seed: int) -> torch.nn.Module:
    """DMD2's head: an MLP on the token mean of the fake score's block features, one logit per image."""
    import comfy.ops
    ops = comfy.ops.disable_weight_init
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = torch.nn.Sequential(ops.Linear(hidden, hidden), torch.nn.SiLU(), ops.Linear(hidden, 1))
        return torch_default_init(head)


def distill(teacher: Path, out: Path, cfg: DistillConfig, work: Path, resume: bool = False) -> list[dict]:
    """Distil, write the student LoRA (fp16, PEFT keys) to `out`; returns the losses of every step run."""
    par = Parallel()
    dev = par.device
    net = build_mmdit(0)
    net.load_state_dict({k: v.float() for k, v in load_file(str(teacher)).items()})
    net.requires_grad_(False)
    student = add_lora(net, "student", cfg.rank, cfg.rank, cfg.seed)
    fake = add_lora(net, "fake", cfg.rank, cfg.rank, cfg.seed + 1)
    head = discriminator(net.hidden_size, cfg.seed + 2).to(dev) if cfg.gan > 0 else None
    fake += list(head.parameters()) if head is not None else []
    net.to(dev)
    for p in student + fake:
        p.requires_grad_(True)
    par.broadcast(student + fake)
    opt = torch.optim.AdamW(student, lr=cfg.lr, weight_decay=0.0)
    fake_opt = torch.optim.AdamW(fake, lr=cfg.fake_lr, weight_decay=0.0)
    sizes, sigmas = schedule()
    local = cfg.batch // par.world
    u_ctx, u_pooled = (t.to(dev) for t in data.uncond(local))

    checkpoint = work / "student.ckpt.safetensors"
    tensors = {f"lora.{i}": p for i, p in enumerate(student + fake)}
    optimizers = {"student": opt, "fake": fake_opt}
    start = load_checkpoint(checkpoint, tensors, optimizers) if resume and checkpoint.exists() else 0
    progress = Progress(cfg.steps, start, "student", par.main)
    history = []

    def sample(step: int, stream: int):
        """(student input, its sigma (B,), data latent z at the scale, context, pooled, generator)."""
        i = step % len(sizes)
        z16, labels = data.batch(cfg.seed * 7 + stream, step, par.rank, local)
        g = data.seeded(cfg.seed * 7 + stream, step, par.rank)
        z = resize(z16, sizes[i], "bicubic-antialiased")
        x = scalewise_input(z, i, sizes, sigmas, torch.randn(z.shape, generator=g))
        context, pooled = data.conditioning(labels)
        sigma = torch.full((local,), sigmas[i])
        return x.to(dev), sigma.to(dev), z.to(dev), context.to(dev), pooled.to(dev), g

    for step in range(start, cfg.steps):
        warm = step < cfg.warm_steps
        logs = {}
        if not warm and cfg.dmd:
            for f in range(cfg.fake_updates):
                x, sigma, z, ctx, pooled, g = sample(step, 1 + f)
                with torch.no_grad(), adapter(net, "student"):
                    x0_s = predict_x0(net, x, sigma, ctx, pooled)
                t = torch.empty(local).uniform_(0.02, 1.0, generator=g).to(dev)
                x_t = noised(x0_s, t, torch.randn(x0_s.shape, generator=g).to(dev))
                with adapter(net, "fake"):
                    fake_loss = F.mse_loss(predict_x0(net, x_t, t, ctx, pooled), x0_s)
                    if head is not None:
                        eps = torch.randn(x0_s.shape, generator=g).to(dev)
                        t_d = torch.empty(local).uniform_(0.02, cfg.dmd_sigma_max, generator=g).to(dev)
                        d_fake = head(block_features(net, noised(x0_s, t_d, eps), t_d, ctx, pooled).mean(1))
                        d_real = head(block_features(net, noised(z, t_d, eps), t_d, ctx, pooled).mean(1))
                        d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
                        fake_loss = fake_loss + cfg.gan_d * d_loss
                        logs["d"] = d_loss.item()
                fake_opt.zero_grad(set_to_none=True)
                fake_loss.backward()
                par.average_gradients(fake)
                torch.nn.utils.clip_grad_norm_(fake, 1.0)
                fake_opt.step()
            logs["fake"] = fake_loss.item()

        x, sigma, z, ctx, pooled, g = sample(step, 0)
        with adapter(net, "student"):
            x0_s = predict_x0(net, x, sigma, ctx, pooled)
        if warm:
            loss = F.mse_loss(x0_s, z)
            logs["warm"] = loss.item()
        else:
            loss = torch.zeros((), device=dev)
            if cfg.dmd:
                t = torch.empty(local).uniform_(0.02, cfg.dmd_sigma_max, generator=g).to(dev)
                x_t = noised(x0_s.detach(), t, torch.randn(x0_s.shape, generator=g).to(dev))
                with torch.no_grad():
                    with adapter(net, None):
                        x0_t = predict_x0_cfg(net, x_t, t, ctx, pooled, u_ctx, u_pooled, cfg.cfg)
                    with adapter(net, "fake"):
                        x0_f = predict_x0(net, x_t, t, ctx, pooled)
                    scale = (x0_s - x0_t).abs().mean((1, 2, 3), keepdim=True).clamp(min=1e-5)
                    grad = (x0_f - x0_t) / scale
                dmd = 0.5 * F.mse_loss(x0_s, (x0_s - grad).detach())
                loss = loss + dmd
                logs["dmd"] = dmd.item()
            if cfg.patch != "none":
                t = torch.empty(local).uniform_(0.02, cfg.patch_sigma_max, generator=g).to(dev)
                eps = torch.randn(x0_s.shape, generator=g).to(dev)
                with adapter(net, "fake"):
                    f_student = block_features(net, noised(x0_s, t, eps), t, ctx, pooled)
                    with torch.no_grad():
                        f_real = block_features(net, noised(z, t, eps), t, ctx, pooled)
                patch = patch_loss(f_student, f_real, cfg.patch, cfg.huber_c)
                loss = loss + cfg.patch_weight * patch
                logs["patch"] = patch.item()
            if head is not None:
                t = torch.empty(local).uniform_(0.02, cfg.dmd_sigma_max, generator=g).to(dev)
                with adapter(net, "fake"):
                    features = block_features(net, noised(x0_s, t, torch.randn(x0_s.shape, generator=g).to(dev)),
                                              t, ctx, pooled)
                gan = F.softplus(-head(features.mean(1))).mean()
                loss = loss + cfg.gan * gan
                logs["gan"] = gan.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        par.average_gradients(student)
        torch.nn.utils.clip_grad_norm_(student, 1.0)
        opt.step()
        for p in fake:
            p.grad = None  # the patch and GAN losses reach the fake side too; only the student learns from them
        history.append({k: par.mean(v) for k, v in logs.items()})
        progress.update(**history[-1])
        if par.main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(checkpoint, tensors, optimizers, step + 1)
    progress.close()
    lora = {k: v.to(torch.float16).contiguous() for k, v in peft_state_dict(net.cpu(), "student").items()}
    par.save_weights(out, lora, {"swd_preset": TINY_PRESET, "swd_tiny": "student", "rank": str(cfg.rank),
                                 "steps": str(cfg.steps), "seed": str(cfg.seed),
                                 "patch": cfg.patch, "dmd": str(cfg.dmd), "gan": str(cfg.gan)}, work)
    par.close()
    return history

