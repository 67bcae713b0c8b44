"""SwD distillation of any ComfyUI model: the official training code's method (yandex-research/swd `train.py`,
`src/losses.py`; shared DESIGN.md section 8). The command line (cli.py) and the SwD Distill LoRA node call `distill`.

Networks (network.py): one frozen base, the teacher as ComfyUI loaded it, with LoRA adapters (adapters.py): "student"
(trained, exported as the released SwD PEFT LoRA) and, in the full recipe, "fake" (the online fake score) plus the
GAN head on the fake score's block features.

Schedule: a preset's (or custom) scales and sigmas. Generator step k trains scale i = k mod N; its fake-score updates
use the same scale. A training input at scale i: the data latent (model space) at scale i (area-downsampled from its
native size, as the official code downsamples its images), area-downsampled to scale i-1 and enlarged back (bicubic),
noised to sigma_i: x = noise_scaling(sigma_i, eps, up(down(z))) ((1 - s) up(down(z)) + s eps for flow models); at
i = 0 pure noise (noise_scaling of a zero latent). The student predicts x0 from x at sigma_i.

Recipe "full" (DMD + patch loss + GAN, the official SD3.5 recipe). Per generator step, `fake_updates` fake-score
updates, each on a fresh batch: the student's x0 (no gradient), noised to a sigma drawn from all 28 grid points;
loss = mse(fake x0, student x0) + gan_d * (softplus(D(fake)) + softplus(-D(real))), D = the head on the token mean of
the fake score's block features, the real latent noised with the same eps and sigma. Then the generator update:
- DMD: the student's x0 noised to a grid point in [12, 28) (sigma <= 0.79): x_t. The teacher with cfg (a guidance
  value for FLUX.1-dev) and the fake score at x_t give grad = (x0_F - x0_T) / mean|x0 - x0_T| and the loss
  0.5 mse(x0, sg(x0 - grad));
- GAN: gan * softplus(-D(features of x_t)), the fake score frozen for it;
- patch loss: x0 and its data latent z, noised with the same eps to the same grid point in [18, 28) (sigma <= 0.60),
  through the fake score to block `patch_block`: patch_loss(real, student) (losses.py), weight `patch_weight`.
Recipe "mmd" (the official SDXL release's): the patch loss alone, the features from the frozen teacher; no fake
score, no DMD, no GAN: one network in memory.

The grid: the official 28 training sigmas (`noise_grid`), in SwD's [0, 1] units like the presets (eps models read
them as DDPM times t = 1000 s). Warm start (not in the official code; `warm_steps`, 0 = off, the default): the first
steps regress the student's x0 on z.

Randomness (rank-independent): generator step k draws batches k * (1 + fake_updates) + stream; sample j of the GLOBAL
batch of a draw has its own generator seeded by (seed, draw, j), which gives its data row (one seeded permutation per
epoch), its noise and its sigma indices; so 1 process x batch 8 and 2 processes x batch 4 see the same numbers.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from swd_sampler.resize import resize
from swd_sampler.schedule import CUSTOM, PRESETS, step_sizes

from . import data
from .losses import PATCH_KERNELS, dmd_gradient, dmd_loss, fake_score_loss, gan_discriminator_loss, \
    gan_generator_loss, patch_loss
from .network import Network

GRID_STEPS, GRID_SHIFT = 28, 3.0
DMD_INDICES = (12, GRID_STEPS)  # sigma <= 0.7904
PATCH_INDICES = (18, GRID_STEPS)  # sigma <= 0.6022
RECIPES = ("full", "mmd")


def noise_grid(steps: int = GRID_STEPS, shift: float = GRID_SHIFT) -> torch.Tensor:
    """The official training's sigmas: diffusers' FlowMatchEulerDiscreteScheduler(shift=3).set_timesteps(28), i.e.
    `steps` points spaced evenly from 1 to the shifted 1/1000, shifted once more: s -> shift s / (1 + (shift-1) s)."""
    s_min = shift * 1e-3 / (1 + (shift - 1) * 1e-3)
    s = torch.linspace(1.0, s_min, steps, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float()


@dataclass
class DistillConfig:
    preset: str = "Tiny demo · 4 steps"  # a swd_sampler PRESETS name, or "custom" with scales and sigmas
    scales: tuple[float, ...] = ()
    sigmas: tuple[float, ...] = ()
    steps: int = 500  # generator steps, warm start included
    warm_steps: int = 0
    batch: int = 32  # global: split over the processes and the accumulation steps
    grad_accum: int = 1
    rank: int = 32
    lr: float = 3e-4
    fake_lr: float = 3e-4
    weight_decay: float = 0.01  # AdamW, both optimizers (official)
    clip: float = 10.0  # gradient norm clip, both optimizers (official)
    recipe: str = "full"  # "full" (DMD + patch + GAN, fake score) or "mmd" (patch loss on teacher features)
    fake_updates: int = 5  # fake-score updates per generator step (official)
    cfg: float = 3.0  # the teacher's guidance inside DMD (official SD3.5 Medium: 7; 3 is the tiny teacher's best)
    guidance: float = 0.0  # FLUX.1-dev: the student's guidance value (0: the preset's, else 3.5)
    dmd: bool = True
    patch: str = "linear"  # a losses.PATCH_KERNELS kernel, or "none"
    patch_weight: float = 1.0
    patch_block: int = -1  # the block whose image tokens the patch loss and the GAN head see (-1: the middle one)
    rbf_sigma: float = 100.0
    batch_mmd: bool = False
    huber_c: float = 1e-3
    gan: float = 5e-3  # the generator's GAN weight (official; 0 = no head)
    gan_d: float = 1e-2  # the discriminator loss's weight in the fake-score update (official)
    seed: int = 1
    checkpoint_every: int = 100

    def __post_init__(self):
        problems = []
        if self.preset != CUSTOM and self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is not one of {', '.join(PRESETS)} or {CUSTOM!r}")
        if self.preset == CUSTOM and (len(self.scales) < 1 or len(self.sigmas) != len(self.scales) + 1):
            problems.append("a custom preset needs scales and one more sigma than scales (the closing 0)")
        if self.recipe not in RECIPES:
            problems.append(f"recipe {self.recipe!r} is not one of {', '.join(RECIPES)}")
        if self.patch not in (*PATCH_KERNELS, "none"):
            problems.append(f"patch {self.patch!r} is not one of {', '.join((*PATCH_KERNELS, 'none'))}")
        if self.recipe == "mmd" and self.patch == "none":
            problems.append("the mmd recipe is the patch loss alone: choose a patch kernel")
        if self.recipe == "full" and self.gan > 0 and not self.dmd:
            problems.append("the GAN term uses DMD's noisy sample: turn dmd on or set gan 0")
        if self.warm_steps > self.steps:
            problems.append(f"warm_steps {self.warm_steps} is more than steps {self.steps}")
        if problems:
            raise ValueError("; ".join(problems))
        self.scales, self.sigmas = tuple(self.scales), tuple(self.sigmas)

    @property
    def uses_fake(self) -> bool:
        return self.recipe == "full" and (self.dmd or self.gan > 0)

    def schedule(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(scales, sigmas without the closing 0) in SwD's units."""
        if self.preset == CUSTOM:
            return self.scales, self.sigmas[:-1]
        preset = PRESETS[self.preset]
        return preset.scales, preset.sigmas[:-1]


# settings that may change when a run is resumed (everything else must match the checkpoint)
RESUMABLE = {"steps", "checkpoint_every"}


def config_json(cfg: DistillConfig) -> dict:
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in RESUMABLE}


@dataclass
class Split:
    """This process's part of every global batch: `world` processes x `accum` micro-batches."""
    world: int = 1
    rank: int = 0
    accum: int = 1

    def micro_slots(self, batch: int) -> list[range]:
        local = batch // self.world
        micro = local // self.accum
        start = self.rank * local
        return [range(start + k * micro, start + (k + 1) * micro) for k in range(self.accum)]


@dataclass
class Trainable:
    """What one optimizer trains: its parameters and the modules holding them (what DDP wraps)."""
    params: list[nn.Parameter]
    modules: nn.ModuleList = field(default_factory=nn.ModuleList)


class Distiller:
    """The networks, data and losses of one run: `generator_loss` and `fake_loss` compute one micro-batch's loss."""

    def __init__(self, net: Network, dataset: data.Dataset, negative: dict | None, cfg: DistillConfig,
                 split: Split = Split(), start_lora: dict[str, torch.Tensor] | None = None):
        self.cfg, self.net, self.data, self.split = cfg, net, dataset, split
        scales, sigmas = cfg.schedule()
        channels, height, width = dataset.latent_shape
        patch = getattr(net.dm, "patch_size", 1)
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.sizes = step_sizes(scales, height, width, patch)
        self.sigmas = net.model_sigmas(sigmas)
        self.grid = net.model_sigmas(noise_grid())
        self.block = cfg.patch_block if cfg.patch_block >= 0 else (len(net.blocks) - 1) // 2
        self.negative = negative
        self.dtype = torch.float64 if net.dtype == torch.float64 else torch.float32  # of the adapters and losses
        self.guidance = None
        if net.guided:
            preset_guidance = PRESETS[cfg.preset].guidance if cfg.preset in PRESETS else None
            self.guidance = cfg.guidance or preset_guidance or 3.5
        params = net.adapters.add("student", cfg.rank, cfg.seed, self.dtype)
        if start_lora is not None:
            net.adapters.load_peft("student", start_lora, "start_lora (the LoRA to start from)")
        self.student = Trainable(params, nn.ModuleList(net.adapters.params["student"].values()))
        self.fake = None
        self.head = None
        if cfg.uses_fake:
            params = net.adapters.add("fake", cfg.rank, cfg.seed + 1, self.dtype)
            self.fake = Trainable(params, nn.ModuleList(net.adapters.params["fake"].values()))
            if cfg.gan > 0:
                self.head = discriminator_head(self.feature_width(), cfg.seed + 2).to(net.device, self.dtype)
                self.fake.params += list(self.head.parameters())
                self.fake.modules.append(self.head)
        for p in self.student.params + (self.fake.params if self.fake else []):
            p.requires_grad_(True)

    def feature_width(self) -> int:
        """The width D of the image tokens at the patch block (one small forward of the teacher)."""
        x = torch.zeros(1, self.data.latent_shape[0], *self.sizes[0], device=self.net.device)
        with torch.no_grad():
            conds = self.net.conds([self.data.conds[0]])
            return self.net.features(x, self.sigmas[:1].to(x.device), self._guided(conds), None, self.block).shape[-1]

    @property
    def draws_per_step(self) -> int:
        return 1 + (self.cfg.fake_updates if self.cfg.uses_fake else 0)

    def _guided(self, conds: dict) -> dict:
        if self.guidance is None:
            return conds
        return {**conds, "guidance": torch.full_like(conds["guidance"], self.guidance)}

    def batch(self, step: int, stream: int, slots: range):
        """Draw `stream` of generator step `step` for the global batch `slots`: (x, sigma (B,), z at the scale,
        conds, generators)."""
        net, dev = self.net, self.net.device
        draw = step * self.draws_per_step + stream
        positions = torch.tensor([draw * self.cfg.batch + j for j in slots])
        latents, conds = self.data.get(positions)
        z_native = net.latent_in(latents.to(dev, self.dtype))
        gens = data.sample_generators(self.cfg.seed, draw, slots)
        i = step % len(self.sizes)
        eps = data.randn(gens, (z_native.shape[1], *self.sizes[i])).to(dev, z_native.dtype)
        z = resize(z_native, self.sizes[i], "area")
        sigma = self.sigmas[i].expand(len(slots)).to(dev, z.dtype)
        start = torch.zeros_like(z) if i == 0 else resize(resize(z, self.sizes[i - 1], "area"), self.sizes[i],
                                                               "bicubic")
        x = net.noised(start, sigma, eps)
        return x, sigma, z, self._guided(net.conds(conds)), gens

    def grid_noise(self, gens, indices: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma (B,) at grid points drawn from `indices`, eps like `like`), one draw per sample."""
        sigma = self.grid[data.randint(gens, *indices)].to(like.device, like.dtype)
        return sigma, data.randn(gens, like.shape[1:]).to(like.device, like.dtype)

    def fake_loss(self, step: int, stream: int, slots: range) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, net = self.cfg, self.net
        x, sigma, z, conds, gens = self.batch(step, stream, slots)
        with torch.no_grad():
            x0 = net.x0(x, sigma, conds, "student")
        t, eps = self.grid_noise(gens, (0, GRID_STEPS), x0)
        logs = {}
        with net.block_output(self.block, stop=False) as taken:
            loss = fake_score_loss(net.x0(net.noised(x0, t, eps), t, conds, "fake"), x0)
        logs["fake"] = loss.item()
        if self.head is not None:
            f_fake = taken["h"]
            with torch.no_grad():
                f_real = self.features(net.noised(z, t, eps), t, conds, "fake")
            d = gan_discriminator_loss(self.critic(f_fake), self.critic(f_real))
            loss = loss + cfg.gan_d * d
            logs["d"] = d.item()
        return loss, logs

    def critic(self, tokens: torch.Tensor) -> torch.Tensor:
        """The GAN head's logit of block features (B, N, D): on their token mean."""
        return self.head(tokens.mean(1).to(self.dtype))

    def features(self, x, sigma, conds, adapter):
        return self.net.features(x, sigma, conds, adapter, self.block, stop=self.stop_early)

    stop_early = True  # FSDP runs every block of a forward (parallel.py)

    def generator_loss(self, step: int, slots: range) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, net = self.cfg, self.net
        x, sigma, z, conds, gens = self.batch(step, 0, slots)
        x0 = net.x0(x, sigma, conds, "student")
        logs = {}
        if step < cfg.warm_steps:
            loss = F.mse_loss(x0, z)
            logs["warm"] = loss.item()
            return loss, logs
        loss = torch.zeros((), device=x0.device, dtype=x0.dtype)
        if cfg.recipe == "full" and cfg.dmd:
            t, eps = self.grid_noise(gens, DMD_INDICES, x0)
            x_t = net.noised(x0, t, eps)
            with torch.no_grad():
                negative = None if self.negative is None else net.conds([self.negative] * len(slots))
                x0_teacher = net.teacher(x_t.detach(), t, conds, negative, cfg.cfg)
                x0_fake = net.x0(x_t.detach(), t, conds, "fake")
            dmd = dmd_loss(x0, dmd_gradient(x0.detach(), x0_teacher, x0_fake))
            loss = loss + dmd
            logs["dmd"] = dmd.item()
            if self.head is not None:
                gan = gan_generator_loss(self.critic(self.features(x_t, t, conds, "fake")))
                loss = loss + cfg.gan * gan
                logs["gan"] = gan.item()
        if cfg.patch != "none":
            t, eps = self.grid_noise(gens, PATCH_INDICES, x0)
            adapter = "fake" if cfg.recipe == "full" else None
            f_student = self.features(net.noised(x0, t, eps), t, conds, adapter)
            with torch.no_grad():
                f_real = self.features(net.noised(z, t, eps), t, conds, adapter)
            patch = patch_loss(f_real, f_student, cfg.patch, c=cfg.huber_c, sigma=cfg.rbf_sigma,
                               batch_mmd=cfg.batch_mmd)
            loss = loss + cfg.patch_weight * patch
            logs["patch"] = patch.item()
        return loss, logs


def discriminator_head(hidden: int, seed: int, layers: int = 4) -> nn.Module:
    """The official GAN head: `layers` x [LayerNorm, GELU, Linear], widths falling linearly from `hidden` to 1
    (torch.linspace(hidden, 1, layers + 1) cast to int: 128 -> 96 -> 64 -> 32 -> 1), on the token mean of the fake
    score's block features; torch's default initialisation from `seed`; fp32."""
    widths = torch.linspace(hidden, 1, layers + 1, dtype=torch.int64).tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(*(nn.Sequential(nn.LayerNorm(a), nn.GELU(), nn.Linear(a, b))
                               for a, b in zip(widths, widths[1:])))
