"""The official recipe's data: the teacher's own samples for the training captions, made once through ComfyUI's
sampler (the code path of KSampler: comfy.sample.sample, euler, the "simple" scheduler) and cached as safetensors
shards, so that distillation learns the teacher's distribution and not another one.

A dataset folder holds `dataset.json` (what made it: teacher file and hash, captions, steps, cfg, seed, size) and
`shard-NNNNN.safetensors` files of up to SHARD samples, each with `latents` (n, C, H, W) in ComfyUI's LATENT format
(what KSampler returns), `context` (n, T, D) and `pooled` (n, D) (the conditioning they were sampled with), and the
captions as a JSON list in the metadata. Sample r is caption r mod len(captions), repetition r div len(captions);
shard s is sampled with noise seed `seed + s` (comfy.sample.prepare_noise). Each shard is written to a temporary
file and renamed, so an interrupted run continues with the first missing shard and never reads half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from swd_sampler import tiny

SHARD = 64
MANIFEST = "dataset.json"


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message names the folder and the fix."""


@dataclass(frozen=True)
class SampleSpec:
    teacher: str  # file name and sha256 of the teacher, "name sha256"
    captions: tuple[str, ...]
    per_caption: int = 8
    steps: int = 28
    cfg: float = 3.0
    seed: int = 0
    width: int = 128
    height: int = 128

    @property
    def count(self) -> int:
        return len(self.captions) * self.per_caption

    @property
    def shards(self) -> int:
        return -(-self.count // SHARD)


def file_id(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path.name} {digest}"


def make_samples(teacher: Path, out: Path, spec: SampleSpec, progress: bool = True) -> Path:
    """Sample what `spec` asks for into `out` (missing shards only); returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        found = json.loads(manifest.read_text())
        wanted = _spec_json(spec)
        if found != wanted:
            differing = sorted(k for k in found.keys() | wanted.keys() if found.get(k) != wanted.get(k))
            raise DatasetError(f"{out} holds samples made with other settings ({', '.join(differing)} differ): choose "
                               f"another folder or delete this one")
    else:
        manifest.write_text(json.dumps(_spec_json(spec), indent=1))
    missing = [s for s in range(spec.shards) if not (out / _shard_name(s)).exists()]
    if not missing:
        return out
    from tqdm import tqdm

    from .model import import_comfy
    import_comfy()
    import comfy.sample
    import comfy.sd
    model = comfy.sd.load_diffusion_model(str(teacher))
    uncond = tiny.encode_text("")
    negative = [[uncond[0], {"pooled_output": uncond[1]}]]
    for s in tqdm(missing, desc="teacher samples", unit="shard", disable=not progress):
        rows = range(s * SHARD, min((s + 1) * SHARD, spec.count))
        captions = [spec.captions[r % len(spec.captions)] for r in rows]
        pairs = [tiny.encode_text(c) for c in captions]
        context, pooled = torch.cat([c for c, _ in pairs]), torch.cat([p for _, p in pairs])
        latent = torch.zeros(len(captions), tiny.LATENT_CHANNELS, spec.height // 8, spec.width // 8)
        noise = comfy.sample.prepare_noise(latent, spec.seed + s)
        samples = comfy.sample.sample(model, noise, spec.steps, spec.cfg, "euler", "simple",
                                      [[context, {"pooled_output": pooled}]], negative, latent,
                                      disable_pbar=True, seed=spec.seed + s)
        if not torch.isfinite(samples).all():
            raise DatasetError(f"the teacher {teacher} gave non-finite samples for shard {s}: check the file")
        tmp = out / (_shard_name(s) + ".tmp")
        save_file({"latents": samples.float().contiguous(), "context": context.contiguous(),
                   "pooled": pooled.contiguous()}, str(tmp), metadata={"captions": json.dumps(captions)})
        os.replace(tmp, out / _shard_name(s))
    return out


def load_samples(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(latents (N, C, H, W) in ComfyUI's LATENT format, context (N, T, D), pooled (N, D), captions) of a complete
    dataset folder."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise DatasetError(f"{folder} is not a dataset folder (no {MANIFEST}): make one with "
                           f"`python -m swd_distill samples`")
    spec = json.loads(manifest.read_text())
    shards = -(-len(spec["captions"]) * spec["per_caption"] // SHARD)
    parts: dict[str, list[torch.Tensor]] = {"latents": [], "context": [], "pooled": []}
    captions: list[str] = []
    for s in range(shards):
        path = folder / _shard_name(s)
        if not path.exists():
            raise DatasetError(f"{folder} is incomplete ({path.name} is missing): run `python -m swd_distill "
                               f"samples` again with the same settings to finish it")
        with safe_open(str(path), "pt") as f:
            for key in parts:
                parts[key].append(f.get_tensor(key))
            captions += json.loads(f.metadata()["captions"])
    return (*(torch.cat(parts[k]) for k in ("latents", "context", "pooled")), captions)


def _spec_json(spec: SampleSpec) -> dict:
    return json.loads(json.dumps(asdict(spec)))


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.safetensors"
