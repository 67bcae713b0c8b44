"""SwD distillation of the tiny teacher into a 4-step scale-wise student: the official training code's method
(yandex-research/swd `train.py`, `src/losses.py`; shared DESIGN.md section 8), scaled down to 2 CPU cores.

Networks: one frozen base (the teacher) with LoRA adapters (model.py): "student" (trained, exported as the PEFT
LoRA) and, in the full recipe, "fake" (the online fake score) plus the GAN head on the fake score's block features.

Schedule: the "Tiny demo · 4 steps" preset: latent sides 8, 10, 12, 16 at sigmas 1.0, 0.8959, 0.7371, 0.6022 (points
0, 7, 14 and 18 of the official 28-step training grid, `noise_grid`). Generator step k trains scale i = k mod 4; its
fake-score updates use the same scale.

Data (`data`): "teacher" (the official recipe and the default): the teacher's own 28-step samples of the seen
captions (samples.py); "real": freshly rendered scenes of the seen captions. The held-out captions (splits.py) are
never used. A training input at scale i: the data latent at scale i (area-downsampled from 16x16, as the official
code downsamples its images), area-downsampled to scale i-1 and enlarged back (bicubic), noised to sigma_i:
x = (1 - s_i) up(down(z)) + s_i eps; at i = 0 pure noise. The student predicts x0 from x at sigma_i.

Recipe "full" (DMD + patch loss + GAN, the official SD3.5 recipe). Per generator step, `fake_updates` fake-score
updates, each on a fresh batch: the student's x0 (no gradient), noised to a sigma drawn from all 28 grid points;
loss = mse(fake x0, student x0) + gan_d * (softplus(D(fake)) + softplus(-D(real))), D = the head on the token mean of
the fake score's block features, the real latent noised with the same eps and sigma. Then the generator update:
- DMD: the student's x0 noised to a grid point in [12, 28) (sigma <= 0.79): x_t. The teacher with cfg (x0_T) and the
  fake score (x0_F) at x_t give grad = (x0_F - x0_T) / mean|x0 - x0_T| and the loss 0.5 mse(x0, sg(x0 - grad));
- GAN: gan * softplus(-D(features of x_t)), the fake score frozen for it;
- patch loss: x0 and its data latent z, noised with the same eps to the same grid point in [18, 28) (sigma <= 0.60),
  through the fake score to block `patch_block`: patch_loss(real, student) (losses.py), weight `patch_weight`.
Recipe "mmd" (the official SDXL release's): the patch loss alone, the features from the frozen teacher; no fake
score, no DMD, no GAN: one network in memory.

Warm start (not in the official code; `warm_steps`, 0 = off): the first steps regress the student's x0 on z.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from swd_sampler.lora import check_finite_weights
from swd_sampler.resize import resize
from swd_sampler.schedule import PRESETS, step_sizes

from . import data
from .losses import PATCH_KERNELS, dmd_gradient, dmd_loss, fake_score_loss, gan_discriminator_loss, \
    gan_generator_loss, patch_loss
from .model import (add_lora, adapter, block_output, build_mmdit, discriminator_head, features, peft_state_dict,
                    predict_x0, predict_x0_cfg)
from .runner import (Parallel, Progress, checkpoint_extra, checkpoint_path, load_checkpoint, read_weights,
                     save_checkpoint)
from .tiny import NATIVE_LATENT, TINY_PRESET

GRID_STEPS, GRID_SHIFT = 28, 3.0
DMD_INDICES = (12, GRID_STEPS)  # sigma <= 0.7904
PATCH_INDICES = (18, GRID_STEPS)  # sigma <= 0.6022
RECIPES = ("full", "mmd")
DATA = ("teacher", "real")


def noise_grid(steps: int = GRID_STEPS, shift: float = GRID_SHIFT) -> torch.Tensor:
    """The official training's sigmas: diffusers' FlowMatchEulerDiscreteScheduler(shift=3).set_timesteps(28), i.e.
    `steps` points spaced evenly from 1 to the shifted 1/1000, shifted once more: s -> shift s / (1 + (shift-1) s)."""
    s_min = shift * 1e-3 / (1 + (shift - 1) * 1e-3)
    s = torch.linspace(1.0, s_min, steps, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float()


@dataclass
class DistillConfig:
    steps: int = 500  # generator steps, warm start included
    warm_steps: int = 100
    batch: int = 32  # global: split over the processes
    rank: int = 32
    lr: float = 3e-4
    fake_lr: float = 3e-4
    weight_decay: float = 0.01  # AdamW, both optimizers (official)
    clip: float = 10.0  # gradient norm clip, both optimizers (official)
    recipe: str = "full"  # "full" (DMD + patch + GAN, fake score) or "mmd" (patch loss on teacher features)
    data: str = "teacher"  # "teacher" (the teacher's samples) or "real" (rendered scenes)
    fake_updates: int = 5  # fake-score updates per generator step (official)
    cfg: float = 3.0  # the teacher's guidance inside DMD (official SD3.5 Medium: 7; 3 is the tiny teacher's best)
    dmd: bool = True
    patch: str = "linear"  # a losses.PATCH_KERNELS kernel, or "none"
    patch_weight: float = 1.0
    patch_block: int = 0  # the joint block whose image tokens the patch loss and the GAN head see
    rbf_sigma: float = 100.0
    batch_mmd: bool = False
    huber_c: float = 1e-3
    gan: float = 5e-3  # the generator's GAN weight (official; 0 = no head)
    gan_d: float = 1e-2  # the discriminator loss's weight in the fake-score update (official)
    seed: int = 1
    checkpoint_every: int = 100

    def __post_init__(self):
        problems = []
        if self.recipe not in RECIPES:
            problems.append(f"recipe {self.recipe!r} is not one of {', '.join(RECIPES)}")
        if self.data not in DATA:
            problems.append(f"data {self.data!r} is not one of {', '.join(DATA)}")
        if self.patch not in (*PATCH_KERNELS, "none"):
            problems.append(f"patch {self.patch!r} is not one of {', '.join((*PATCH_KERNELS, 'none'))}")
        if self.recipe == "mmd" and self.patch == "none":
            problems.append("the mmd recipe is the patch loss alone: choose a patch kernel")
        if self.recipe == "full" and self.gan > 0 and not self.dmd:
            problems.append("the GAN term uses DMD's noisy sample: turn dmd on or set gan 0")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def uses_fake(self) -> bool:
        return self.recipe == "full" and (self.dmd or self.gan > 0)


# settings that may change when a run is resumed (everything else must match the checkpoint)
RESUMABLE = {"steps", "checkpoint_every"}


def schedule() -> tuple[list[tuple[int, int]], list[float]]:
    preset = PRESETS[TINY_PRESET]
    return step_sizes(preset.scales, NATIVE_LATENT, NATIVE_LATENT, 2), list(preset.sigmas)


def scale_inputs(z_native: torch.Tensor, i: int, sizes, sigma: float, eps: torch.Tensor):
    """(the student's input x at scale i, the data latent z at scale i) from the native-size data latent."""
    z = resize(z_native, sizes[i], "area")
    if i == 0:
        return eps, z
    up = resize(resize(z, sizes[i - 1], "area"), sizes[i], "bicubic")
    return (1 - sigma) * up + sigma * eps, z


def noised(x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * x0 + s * eps


def load_teacher(path: Path) -> torch.nn.Module:
    """The tiny teacher network from its file (frozen); a file that is not safetensors or holds another network
    raises one clear error naming it."""
    weights = read_weights(path, f"--teacher {path}")[0]
    net = build_mmdit(0)
    expected = net.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    wrong = sorted(k for k in expected.keys() & weights.keys() if weights[k].shape != expected[k].shape)
    if missing or wrong or weights.keys() - expected.keys():
        example = (missing or wrong or sorted(weights.keys() - expected.keys()))[0]
        raise ValueError(f"--teacher {path} is not the tiny teacher's architecture (a depth-2 SD3 MMDiT, hidden 128): "
                         f"{len(missing)} of its tensors are missing, {len(wrong)} have another shape and "
                         f"{len(weights.keys() - expected.keys())} are unknown (e.g. {example})")
    check_finite_weights(weights, f"--teacher {path}")
    net.load_state_dict({k: v.float() for k, v in weights.items()})
    return net.requires_grad_(False)


class Distiller:
    """The networks, optimizers and data of one run, and its two updates."""

    def __init__(self, teacher: Path, cfg: DistillConfig, dataset: Path | None, par: Parallel):
        self.cfg, self.par = cfg, par
        dev = par.device
        net = load_teacher(teacher)
        self.net = net
        self.student = add_lora(net, "student", cfg.rank, cfg.rank, cfg.seed)
        self.fake = add_lora(net, "fake", cfg.rank, cfg.rank, cfg.seed + 1) if cfg.uses_fake else []
        self.head = (discriminator_head(net.hidden_size, cfg.seed + 2).to(dev)
                     if cfg.uses_fake and cfg.gan > 0 else None)
        if self.head is not None:
            self.fake += list(self.head.parameters())
        net.to(dev)
        for p in self.student + self.fake:
            p.requires_grad_(True)
        par.broadcast(self.student + self.fake)
        self.opt = torch.optim.AdamW(self.student, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.fake_opt = (torch.optim.AdamW(self.fake, lr=cfg.fake_lr, weight_decay=cfg.weight_decay)
                         if self.fake else None)
        self.sizes, self.sigmas = schedule()
        self.grid = noise_grid()
        self.local = cfg.batch // par.world
        self.slots = range(par.rank * self.local, (par.rank + 1) * self.local)
        if cfg.data == "teacher":
            if dataset is None:
                raise ValueError("data 'teacher' needs the teacher's samples: give a dataset folder")
            self.data = data.TeacherSamples(dataset, cfg.seed)
        else:
            from .splits import seen
            self.data = data.RenderedScenes(seen(), cfg.seed)
        u_ctx, u_pooled = data.uncond(self.local)
        self.uncond = (u_ctx.to(dev), u_pooled.to(dev))

    @property
    def draws_per_step(self) -> int:
        return 1 + (self.cfg.fake_updates if self.cfg.uses_fake else 0)

    def batch(self, step: int, stream: int):
        """Draw `stream` of generator step `step`: (x, sigma (B,), z at the scale, context, pooled, generators)."""
        draw = step * self.draws_per_step + stream
        positions = torch.tensor([draw * self.cfg.batch + j for j in self.slots])
        z_native, context, pooled = self.data.get(positions)
        gens = data.sample_generators(self.cfg.seed, draw, self.slots)
        i = step % len(self.sizes)
        eps = data.randn(gens, (z_native.shape[1], *self.sizes[i]))
        x, z = scale_inputs(z_native, i, self.sizes, self.sigmas[i], eps)
        sigma = torch.full((self.local,), self.sigmas[i])
        dev = self.par.device
        return x.to(dev), sigma.to(dev), z.to(dev), context.to(dev), pooled.to(dev), gens

    def grid_noise(self, gens, indices: tuple[int, int], shape) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma (B,) at grid points drawn from `indices`, eps (B, *shape)), one draw per sample."""
        sigma = self.grid[data.randint(gens, *indices)]
        return sigma.to(self.par.device), data.randn(gens, shape).to(self.par.device)

    def update(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor) -> None:
        """One optimizer step on `loss`: gradients averaged over the processes, clipped to norm `clip`."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.par.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, self.cfg.clip)
        optimizer.step()

    def fake_update(self, step: int, stream: int) -> dict[str, float]:
        cfg, net = self.cfg, self.net
        x, sigma, z, ctx, pooled, gens = self.batch(step, stream)
        with torch.no_grad(), adapter(net, "student"):
            x0 = predict_x0(net, x, sigma, ctx, pooled)
        t, eps = self.grid_noise(gens, (0, GRID_STEPS), x0.shape[1:])
        logs = {}
        with adapter(net, "fake"), block_output(net, cfg.patch_block, stop=False) as taken:
            loss = fake_score_loss(predict_x0(net, noised(x0, t, eps), t, ctx, pooled), x0)
            logs["fake"] = loss.item()
            if self.head is not None:
                f_fake = taken["h"]
                with torch.no_grad():
                    f_real = features(net, noised(z, t, eps), t, ctx, pooled, cfg.patch_block)
                d = gan_discriminator_loss(self.head(f_fake.mean(1)), self.head(f_real.mean(1)))
                loss = loss + cfg.gan_d * d
                logs["d"] = d.item()
        self.update(self.fake_opt, self.fake, loss)
        return logs

    def generator_update(self, step: int) -> dict[str, float]:
        cfg, net = self.cfg, self.net
        x, sigma, z, ctx, pooled, gens = self.batch(step, 0)
        with adapter(net, "student"):
            x0 = predict_x0(net, x, sigma, ctx, pooled)
        logs = {}
        if step < cfg.warm_steps:
            loss = F.mse_loss(x0, z)
            logs["warm"] = loss.item()
        else:
            loss = torch.zeros((), device=x0.device)
            if cfg.recipe == "full" and cfg.dmd:
                t, eps = self.grid_noise(gens, DMD_INDICES, x0.shape[1:])
                x_t = noised(x0, t, eps)
                with torch.no_grad():
                    with adapter(net, None):
                        x0_teacher = predict_x0_cfg(net, x_t, t, ctx, pooled, *self.uncond, cfg.cfg)
                    with adapter(net, "fake"):
                        x0_fake = predict_x0(net, x_t, t, ctx, pooled)
                dmd = dmd_loss(x0, dmd_gradient(x0.detach(), x0_teacher, x0_fake))
                loss = loss + dmd
                logs["dmd"] = dmd.item()
                if self.head is not None:
                    with adapter(net, "fake"):
                        f = features(net, x_t, t, ctx, pooled, cfg.patch_block)
                    gan = gan_generator_loss(self.head(f.mean(1)))
                    loss = loss + cfg.gan * gan
                    logs["gan"] = gan.item()
            if cfg.patch != "none":
                t, eps = self.grid_noise(gens, PATCH_INDICES, x0.shape[1:])
                with adapter(net, "fake" if cfg.recipe == "full" else None):
                    f_student = features(net, noised(x0, t, eps), t, ctx, pooled, cfg.patch_block)
                    with torch.no_grad():
                        f_real = features(net, noised(z, t, eps), t, ctx, pooled, cfg.patch_block)
                patch = patch_loss(f_real, f_student, cfg.patch, c=cfg.huber_c, sigma=cfg.rbf_sigma,
                                   batch_mmd=cfg.batch_mmd)
                loss = loss + cfg.patch_weight * patch
                logs["patch"] = patch.item()
        self.update(self.opt, self.student, loss)
        for p in self.fake:
            p.grad = None  # the GAN and patch losses reach the fake side too; only the student learns from them
        return logs

    def step(self, step: int) -> dict[str, float]:
        logs = {}
        if self.cfg.uses_fake and step >= self.cfg.warm_steps:
            for f in range(self.cfg.fake_updates):
                logs.update(self.fake_update(step, 1 + f))
        logs.update(self.generator_update(step))
        return logs

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {f"lora.{i}": p for i, p in enumerate(self.student + self.fake)}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt, **({"fake": self.fake_opt} if self.fake_opt else {})}


def config_json(cfg: DistillConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE}


def distill(teacher: Path, out: Path, cfg: DistillConfig, work: Path, resume: bool = False,
            dataset: Path | None = None) -> list[dict]:
    """Distil, write the student LoRA (fp16, PEFT keys) to `out`; returns the losses of every step run. With
    `resume`, continue from the checkpoint in `work` (its settings must match, except steps and checkpoint_every)."""
    par = Parallel()
    run = Distiller(teacher, cfg, dataset, par)
    checkpoint = checkpoint_path(work, "student")
    start = 0
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {work} ({checkpoint.name}); run without --resume "
                                    f"to start at step 0")
        saved = checkpoint_extra(checkpoint).get("config", {})
        differing = {k: (v, config_json(cfg).get(k)) for k, v in saved.items() if config_json(cfg).get(k) != v}
        if differing:
            raise ValueError(f"--resume: the checkpoint in {work} was made with other settings: "
                             + ", ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in differing.items()))
        start = load_checkpoint(checkpoint, run.checkpoint_tensors(), run.optimizers())[0]
    with Progress(cfg.steps, start, "student", par.main) as progress:
        history = []
        for step in range(start, cfg.steps):
            logs = run.step(step)
            history.append({k: par.mean(v) for k, v in logs.items()})
            progress.update(**history[-1])
            if par.main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                save_checkpoint(checkpoint, run.checkpoint_tensors(), run.optimizers(), step + 1,
                                {"config": config_json(cfg)})
    lora = {k: v.to(torch.float16).contiguous() for k, v in peft_state_dict(run.net.cpu(), "student").items()}
    bad = [k for k, v in lora.items() if not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"the distilled LoRA has non-finite weights ({bad[0]} and {len(bad) - 1} more): "
                                 f"nothing was written to {out}; lower the learning rate or check the teacher")
    metadata = {"swd_preset": TINY_PRESET, "swd_tiny": "student", "steps": str(cfg.steps),
                **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in config_json(cfg).items()}}
    par.save_weights(out, lora, metadata, work)
    par.close()
    return history
