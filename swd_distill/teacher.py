"""Teacher training: rectified flow on the rendered scenes.

x_sigma = (1 - sigma) x0 + sigma eps; the network predicts v = eps - x0 (ComfyUI's SD3 convention), loss
||v_pred - v||^2. sigma ~ logit-normal(0, 1) (SD3's choice) for 3/4 of each batch, uniform for the rest, so both
ends of the 28-step schedule are seen. Captions are dropped whole 10 % of the time and per attribute 5 % (data.py).
40 % of the batches are shown at a smaller scale (latent side 8, 10, 12 or 14: the native latent resized with
antialiased bicubic), so that the teacher also knows the low resolutions SwD's early steps run at (SD3.5 itself was
trained at many resolutions). The saved weights are an exponential moving average (0.999) of the trained ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import data
from .model import build_mmdit
from .runner import Parallel, Progress, checkpoint_path, load_checkpoint, save_checkpoint
from swd_sampler.resize import resize

SMALL_SCALES = (8, 10, 12, 14)


@dataclass
class TeacherConfig:
    steps: int = 52000
    batch: int = 16  # global: split over the processes (more small updates beat fewer large ones here)
    lr: float = 5e-4
    warmup: int = 200
    decay_start: int = 36000  # the learning rate falls linearly from here to 0 at the last step
    ema: float = 0.999
    small_scale_p: float = 0.4
    seed: int = 0
    checkpoint_every: int = 1000


def sample_sigmas(n: int, generator: torch.Generator) -> torch.Tensor:
    logit_normal = torch.sigmoid(torch.randn(n, generator=generator))
    uniform = torch.rand(n, generator=generator)
    return torch.where(torch.rand(n, generator=generator) < 0.75, logit_normal, uniform).clamp(1e-3, 1.0)


def teacher_loss(net, step: int, cfg: TeacherConfig, par: Parallel) -> torch.Tensor:
    local = cfg.batch // par.world
    x0, labels = data.batch(cfg.seed, step, par.rank, local)
    g = data.seeded(cfg.seed, step, par.rank)
    if torch.rand(1, generator=g).item() < cfg.small_scale_p:
        side = SMALL_SCALES[int(torch.randint(len(SMALL_SCALES), (1,), generator=g))]
        x0 = resize(x0, (side, side), "bicubic-antialiased")
    context, pooled = data.conditioning(labels, g, dropout=True)
    sigma = sample_sigmas(local, g)
    eps = torch.randn(x0.shape, generator=g)
    s = sigma.view(-1, 1, 1, 1)
    x = (1 - s) * x0 + s * eps
    dev = par.device
    v = net(x.to(dev), sigma.to(dev) * 1000.0, y=pooled.to(dev), context=context.to(dev))
    return (v - (eps - x0).to(dev)).square().mean()


def train_teacher(out: Path, cfg: TeacherConfig, work: Path, resume: bool = False) -> list[float]:
    """Train, write the EMA weights (fp16, ComfyUI keys) to `out`; returns the loss of every step run."""
    par = Parallel()
    net = build_mmdit(cfg.seed).to(par.device)
    params = [p for p in net.parameters() if p.requires_grad]
    model = net
    if par.world > 1:  # DDP averages the gradients and broadcasts rank 0's initial weights
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net, device_ids=[par.device] if par.device.type == "cuda" else None)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    checkpoint = checkpoint_path(work, "teacher")
    tensors = {**{f"net.{k}": v for k, v in net.state_dict().items()}, **{f"ema.{k}": v for k, v in ema.items()}}
    if resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {work} ({checkpoint.name}); run without --resume to "
                                f"start at step 0")
    start = load_checkpoint(checkpoint, tensors, {"opt": opt})[0] if resume else 0
    with Progress(cfg.steps, start, "teacher", par.main) as progress:
        losses = []
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup,
                                           (cfg.steps - step) / max(1, cfg.steps - cfg.decay_start))
            loss = teacher_loss(model, step, cfg, par)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                for k, v in net.state_dict().items():
                    ema[k].lerp_(v, 1 - cfg.ema) if v.is_floating_point() else ema[k].copy_(v)
            losses.append(par.mean(loss.item()))
            progress.update(loss=losses[-1])
            if par.main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                save_checkpoint(checkpoint, tensors, {"opt": opt}, step + 1)
    weights = {k: v.to(torch.float16).contiguous() for k, v in ema.items()}
    par.save_weights(out, weights, {"swd_tiny": "teacher", "steps": str(cfg.steps), "seed": str(cfg.seed)})
    par.close()
    return losses
