"""The training loop: the optimizer updates of a Distiller in one process, under torch DDP or under FSDP2, with
checkpoints that any number of processes can resume.

- One process: each update is zero_grad, the micro-batches' losses backward (divided by their number), the gradient
  norm clipped to `clip`, AdamW's step.
- DDP (`parallel="ddp"`): each optimizer's trainable modules (the student's adapters; the fake score's adapters and
  the GAN head) are wrapped in their own DistributedDataParallel, whose forward computes that update's loss; so the
  gradients are averaged by DDP's bucketed all-reduce, overlapped with the backward, and the initial weights are
  broadcast from rank 0. The fake score's parameters stop requiring gradients during the generator's update (its
  losses pass through the fake network without training it). Accumulation steps but the last run under no_sync.
- FSDP2 (`parallel="fsdp"`): `fully_shard` on every unit ComfyUI calls whole (`Network.units`: SD3's joint blocks,
  FLUX's double and single blocks, each layer of a UNet's blocks), on the model and on the GAN head: the frozen base
  and the adapters are sharded across the processes and gathered unit by unit (the model's own parameters outside
  the units, embedders and final layer, stay gathered through the step); bf16 runs use MixedPrecisionPolicy(bf16
  params, fp32 reductions). Forward passes taken only for features run all blocks (FSDP2's hooks expect every
  forward to finish).

Every process's micro-batches are its own slots of the global batch (distill.Split), so the data and noise do not
depend on the number of processes. Checkpoints hold full (gathered) tensors: the adapters, the head, both optimizers'
states and the step, which fixes the data position (every random draw is a function of seed, draw and slot; there is
no other random state), so a run resumes on any number of processes.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from .distill import Distiller, Split, Trainable, config_json

PARALLEL = ("ddp", "fsdp")


class ResumeError(ValueError):
    """A checkpoint to resume from that another configuration or model made."""


class _Loss(nn.Module):
    """What DDP wraps: one optimizer's trainable modules (so DDP finds exactly their parameters) and a forward that
    computes the loss of one micro-batch."""

    def __init__(self, modules: nn.ModuleList, loss):
        super().__init__()
        self.trained = modules
        self.loss = loss

    def forward(self, *args):
        return self.loss(*args)


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def _like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` placed like `like`: a DTensor's shard (FSDP2) or a plain tensor on its device."""
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full.to(like.device_mesh.device_type, like.dtype), like.device_mesh, like.placements)
    return full.to(like.device, like.dtype if full.is_floating_point() else full.dtype)


class Engine:
    def __init__(self, run: Distiller, split: Split, parallel: str | None = None, device=None):
        self.run, self.split, self.parallel = run, split, parallel if split.world > 1 else None
        cfg = run.cfg
        self.student_loss, self.fake_loss = run.generator_loss, run.fake_loss
        if self.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device] if device is not None and device.type == "cuda" else None
            self.student_loss = DDP(_Loss(run.student.modules, run.generator_loss), device_ids=ids,
                                    broadcast_buffers=False)
            if run.fake is not None:
                self.fake_loss = DDP(_Loss(run.fake.modules, run.fake_loss), device_ids=ids, broadcast_buffers=False)
        elif self.parallel == "fsdp":
            self._shard()
        self.opt = torch.optim.AdamW(run.student.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.fake_opt = (torch.optim.AdamW(run.fake.params, lr=cfg.fake_lr, weight_decay=cfg.weight_decay)
                         if run.fake is not None else None)

    def _shard(self) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        run, net = self.run, self.run.net
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if net.dtype == torch.bfloat16 else MixedPrecisionPolicy()
        for unit in net.units:
            fully_shard(unit, mp_policy=policy)
        # The root's own parameters (embedders, final layer: a small part) stay gathered through the whole step. FSDP2
        # gathers a module again for backward when the gradient reaches its output; a loss on a block's features
        # reaches the embedders without passing the root's output, so after the first of several such backward
        # branches (the GAN's and the patch loss's) resharded them, the next would find their storage freed.
        fully_shard(net.dm, mp_policy=policy, reshard_after_forward=False)
        net.dm.set_reshard_after_backward(False, recurse=False)
        run.student.params = net.adapters.parameters("student")
        if run.fake is not None:
            run.fake.params = net.adapters.parameters("fake")
            if run.head is not None:
                fully_shard(run.head, mp_policy=policy)
                run.fake.params += list(run.head.parameters())
        run.stop_early = False

    def _update(self, loss_fn, optimizer, group: Trainable, args) -> dict[str, float]:
        cfg, micro = self.run.cfg, self.split.micro_slots(self.run.cfg.batch)
        optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for k, slots in enumerate(micro):
            sync = k == len(micro) - 1 or not hasattr(loss_fn, "no_sync")
            with contextlib.nullcontext() if sync else loss_fn.no_sync():
                loss, step_logs = loss_fn(*args, slots)
                (loss / len(micro)).backward()
            for key, value in step_logs.items():
                logs[key] = logs.get(key, 0.0) + value / len(micro)
        torch.nn.utils.clip_grad_norm_(group.params, cfg.clip)
        optimizer.step()
        return logs

    def step(self, step: int) -> dict[str, float]:
        """One generator step (and its fake-score updates before it); the losses, averaged over this process's
        micro-batches."""
        run, cfg = self.run, self.run.cfg
        logs: dict[str, float] = {}
        if run.fake is not None and step >= cfg.warm_steps:
            for f in range(cfg.fake_updates):
                logs.update(self._update(self.fake_loss, self.fake_opt, run.fake, (step, 1 + f)))
        frozen = run.fake.params if run.fake is not None and self.parallel != "fsdp" else []
        for p in frozen:
            p.requires_grad_(False)
        try:
            logs.update(self._update(self.student_loss, self.opt, run.student, (step,)))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        if run.fake is not None:
            for p in run.fake.params:
                p.grad = None  # under FSDP the generator's losses reach the fake side too; it does not learn them
        return logs

    # checkpoints -------------------------------------------------------------------------------------------------

    def groups(self) -> dict[str, tuple[torch.optim.Optimizer, list[nn.Parameter]]]:
        out = {"student": (self.opt, self.run.student.params)}
        if self.fake_opt is not None:
            out["fake"] = (self.fake_opt, self.run.fake.params)
        return out

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
        """(full tensors of every trained parameter, full optimizer states) on the CPU; every process must call it
        (FSDP gathers)."""
        tensors, optimizers = {}, {}
        for name, (opt, params) in self.groups().items():
            tensors.update({f"{name}.{i}": _full(p) for i, p in enumerate(params)})
            state = opt.state_dict()
            optimizers[name] = {"param_groups": state["param_groups"],
                                "state": {i: {k: _full(v) if torch.is_tensor(v) else v for k, v in s.items()}
                                          for i, s in state["state"].items()}}
        return tensors, optimizers

    def load_state(self, tensors: dict[str, torch.Tensor], optimizers: dict[str, dict]) -> None:
        for name, (opt, params) in self.groups().items():
            with torch.no_grad():
                for i, p in enumerate(params):
                    value = _like(tensors[f"{name}.{i}"], p)
                    (p.to_local() if hasattr(p, "to_local") else p).copy_(
                        value.to_local() if hasattr(value, "to_local") else value)
            state = optimizers[name]
            opt.load_state_dict({"param_groups": state["param_groups"], "state": {
                int(i): {k: _like(v, params[int(i)]) if torch.is_tensor(v) and v.ndim else v for k, v in s.items()}
                for i, s in state["state"].items()}})

    def student_lora(self) -> dict[str, torch.Tensor]:
        """The student's LoRA, gathered, under the released PEFT keys (fp32, CPU); every process must call it."""
        full = {f"student.{i}": _full(p) for i, p in enumerate(self.run.student.params)}
        names = self.run.net.adapters.params["student"]
        out, i = {}, 0
        for module in names:
            out[f"base_model.model.{module}.lora_A.weight"] = full[f"student.{i}"].float()
            out[f"base_model.model.{module}.lora_B.weight"] = full[f"student.{i + 1}"].float()
            i += 2
        return out


def train(engine: Engine, start: int, checkpoint: Path | None, main: bool = True, on_step=None,
          should_stop=None, mean=lambda v: v) -> tuple[int, list[dict]]:
    """Run steps start..cfg.steps; a checkpoint every `checkpoint_every` steps, at the end and when `should_stop()`
    turns true (checked after every step). Returns (the steps done in all, the losses of every step run)."""
    from .runner import save_checkpoint
    cfg = engine.run.cfg
    history: list[dict] = []
    step = start
    while step < cfg.steps:
        logs = engine.step(step)
        step += 1
        history.append({k: mean(v) for k, v in logs.items()})
        if on_step is not None:
            on_step(step, history[-1])
        stop = should_stop is not None and should_stop()
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps or stop):
            tensors, optimizers = engine.state()
            if main:
                save_checkpoint(checkpoint, tensors, optimizers, step, {"config": config_json(cfg)})
        if stop:
            break
    return step, history


def lora_metadata(cfg, rank: int, family: str, targets) -> dict[str, str]:
    """The saved LoRA's metadata: its SwD schedule (SwD LoRA Loader reads `swd_preset`), the PEFT config and the
    distillation settings."""
    meta = {"swd_preset": cfg.preset, "swd_family": family, "swd_distill": json.dumps(config_json(cfg)),
            "steps": str(cfg.steps),
            "lora_adapter_metadata": json.dumps({"r": rank, "lora_alpha": rank, "target_modules": sorted(targets)})}
    if cfg.preset == "custom":
        meta["swd_scales"] = ", ".join(f"{s:g}" for s in cfg.scales)
        meta["swd_sigmas"] = ", ".join(f"{s:g}" for s in cfg.sigmas)
    return meta


def check_finite_lora(lora: dict[str, torch.Tensor], where: str) -> None:
    bad = [k for k, v in lora.items() if not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"the distilled LoRA has non-finite weights ({bad[0]} and {len(bad) - 1} more): "
                                 f"nothing was written to {where}; lower the learning rate or check the teacher")


def distill(net, dataset, negative, cfg, *, checkpoint: Path | None = None, resume: bool = False,
            parallel: str | None = None, split: Split | None = None, device=None, start_lora=None, on_step=None,
            should_stop=None, mean=lambda v: v, main: bool = True):
    """Distil `net` (network.Network) on `dataset` (data.Dataset); `negative`: the encoded negative conditioning
    (None: no classifier-free guidance pass). With `resume`, continue from `checkpoint` (its settings must match,
    except steps and checkpoint_every). Returns (the student LoRA (fp32, PEFT keys), steps done, losses per step)."""
    from .runner import read_checkpoint
    split = split or Split(accum=cfg.grad_accum)
    run = Distiller(net, dataset, negative, cfg, split, start_lora)
    engine = Engine(run, split, parallel, device)
    start = 0
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise FileNotFoundError(f"resume: there is no checkpoint {checkpoint}; start without resume")
        step, tensors, optimizers, extra = read_checkpoint(checkpoint)
        saved, now = extra.get("config", {}), config_json(cfg)
        differing = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v and k != "grad_accum"}
        if differing:
            raise ResumeError(f"resume: the checkpoint {checkpoint} was made with other settings: "
                              + ", ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in differing.items()))
        mine = engine.state()[0]
        if mine.keys() != tensors.keys() or any(mine[k].shape != tensors[k].shape for k in mine):
            raise ResumeError(f"resume: the checkpoint {checkpoint} does not fit this run (another model or rank)")
        engine.load_state(tensors, optimizers)
        start = step
    import comfy.model_management
    training, comfy.model_management.in_training = comfy.model_management.in_training, True  # as TrainLoraNode:
    try:  # ComfyUI's models then take their differentiable code paths (e.g. FLUX's rope without comfy_kitchen)
        steps, history = train(engine, start, checkpoint, main, on_step, should_stop, mean)
    finally:
        comfy.model_management.in_training = training
    lora = engine.student_lora()
    check_finite_lora(lora, "the output")
    return lora, steps, history
