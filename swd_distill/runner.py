"""What every training run shares: the process group, checkpoints with --resume, progress bars.

Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1) each process joins a torch.distributed group (NCCL on CUDA,
gloo on the CPU) with a timeout, so that a process that dies makes the others fail with a message instead of waiting
for ever; the gradients are averaged by torch DDP or FSDP2 (train.py; the teacher's training wraps its network in
DDP). A single process trains alone.

Checkpoints are safetensors files (never pickles): every trained tensor, the optimizer states and the step, written
atomically by the main process every `checkpoint_every` steps and at the end; `resume=True` continues from the last
one, with any number of processes (the tensors are whole, not shards).
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file


TIMEOUT_S = int(os.environ.get("SWD_DIST_TIMEOUT", "300"))  # a collective that waits longer fails the run


class Parallel:
    def __init__(self, device: str | None = None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() if device is None else device == "cuda"
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=TIMEOUT_S))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def save_weights(self, out: Path, weights: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        """The main process writes the result to `out` (atomically: a temporary file, then renamed)."""
        if self.main:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            save_file(weights, str(tmp), metadata={**metadata, "processes": str(self.world)})
            sort_metadata(tmp)
            os.replace(tmp, out)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata in key order (safetensors writes it in hash order), so that
    the same weights and metadata always give the same bytes; the header keeps its length, the data is untouched."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:
            raise RuntimeError(f"{path}: the sorted safetensors header outgrew the original ({len(text)} > {size})")
        f.seek(8)
        f.write(text.ljust(size, b" "))


def checkpoint_path(work: Path, name: str) -> Path:
    """work/<name>.ckpt.safetensors; a temporary file that a killed checkpoint write left beside it is removed."""
    path = work / f"{name}.ckpt.safetensors"
    path.with_suffix(".tmp").unlink(missing_ok=True)
    return path


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], optimizers: dict, step: int,
                    extra: dict | None = None) -> None:
    """Trained tensors, optimizer states (optimizers or their state dicts) and the step in one safetensors file
    (written to a temp file, then moved); non-finite weights are refused and the last checkpoint kept."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"training diverged: {bad[0]} is not finite at step {step}; the last checkpoint "
                                 f"{path} is kept: lower the learning rate and resume")
    out = {f"t.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"step": str(step), "extra": json.dumps(extra or {}), "rng": "none: every draw is seeded by its step"}
    for name, opt in optimizers.items():
        state = opt.state_dict() if hasattr(opt, "state_dict") else opt
        meta[f"opt.{name}"] = json.dumps(state["param_groups"])
        for index, slots in state["state"].items():
            for slot, value in slots.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                out[f"o.{name}.{index}.{slot}"] = value.detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")  # a write killed half-way leaves only this, which the next save replaces
    save_file(out, str(tmp), metadata=meta)
    os.replace(tmp, path)


TRAINING_ADVICE = ("The distiller reads safetensors files only and never unpickles one, since a pickle can run code: "
                   "give the file this pack wrote, or convert it in a trusted environment with "
                   "safetensors.torch.save_file.")


def read_weights(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a teacher or checkpoint file; a missing, empty, cut-off, random or pickled file raises
    one clear error naming `what` (e.g. "--teacher x.safetensors")."""
    from swd_sampler.lora import read_safetensors
    if not path.is_file():
        raise FileNotFoundError(f"{what} does not exist")
    return read_safetensors(path, what, TRAINING_ADVICE)


def checkpoint_extra(path: Path) -> dict:
    """The extra dict save_checkpoint stored."""
    meta = read_weights(path, f"the checkpoint {path}")[1]
    if "step" not in meta:
        raise ValueError(f"the checkpoint {path} was not written by this distiller (no step in its metadata)")
    return json.loads(meta.get("extra", "{}"))


def read_checkpoint(path: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, dict], dict]:
    """(step, tensors, optimizer state dicts, extra) of a checkpoint save_checkpoint wrote."""
    data, meta = read_weights(path, f"the checkpoint {path}")
    if "step" not in meta:
        raise ValueError(f"the checkpoint {path} was not written by this distiller (no step in its metadata)")
    tensors = {k[2:]: v for k, v in data.items() if k.startswith("t.")}
    optimizers = {}
    for key in meta:
        if key.startswith("opt."):
            name = key[4:]
            state: dict[int, dict] = {}
            for k, value in data.items():
                if k.startswith(f"o.{name}."):
                    index, slot = k[len(name) + 3:].split(".", 1)
                    state.setdefault(int(index), {})[slot] = value
            optimizers[name] = {"state": state, "param_groups": json.loads(meta[key])}
    return int(meta["step"]), tensors, optimizers, json.loads(meta.get("extra", "{}"))


def load_checkpoint(path: Path, tensors: dict[str, torch.Tensor],
                    optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, dict]:
    """Restore what save_checkpoint wrote into `tensors` (in place) and the optimizers; returns (the step, the
    extra dict saved with it)."""
    data, meta = read_weights(path, f"the checkpoint {path}")
    missing = [k for k in tensors if f"t.{k}" not in data]
    wrong = [k for k in tensors if f"t.{k}" in data and data[f"t.{k}"].shape != tensors[k].shape]
    if missing or wrong or "step" not in meta:
        raise ValueError(f"the checkpoint {path} does not fit this run ({len(missing)} tensors missing, "
                         f"{len(wrong)} of another shape): it belongs to another configuration; start without "
                         f"--resume or use its --work folder")
    with torch.no_grad():
        for k, v in tensors.items():
            v.copy_(data[f"t.{k}"])
    for name, opt in optimizers.items():
        state: dict[int, dict] = {}
        for key, value in data.items():
            if key.startswith(f"o.{name}."):
                index, slot = key[len(name) + 3:].split(".", 1)
                state.setdefault(int(index), {})[slot] = value
        opt.load_state_dict({"state": state, "param_groups": json.loads(meta[f"opt.{name}"])})
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


class Progress:
    """A tqdm bar (loss, steps per second, ETA) on the main process; plain log lines when not on a terminal."""

    def __init__(self, total: int, start: int, label: str, enabled: bool):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=start, desc=label, disable=not enabled, dynamic_ncols=True,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
        self.start_time = time.monotonic()

    def update(self, **values) -> None:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        self.bar.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar and print the wall time of this run (once; also when the run was interrupted)."""
        if getattr(self, "closed", False):
            return
        self.closed = True
        self.bar.close()
        seconds = time.monotonic() - self.start_time
        if not self.bar.disable:
            print(f"{self.bar.desc}: {self.bar.n} steps, this run took {seconds / 60:.1f} min", file=sys.stderr)
