"""`python -m swd_distill distill` from files: the teacher (any file ComfyUI's loaders read), a dataset folder
(samples.py), the LoRA out; one process or one of torchrun's (runner.Parallel).

Under torchrun the command line places the model itself (ComfyUI's model management serves the node path): each
process loads the teacher on the CPU, casts it to the training dtype and moves it to its device (under FSDP2 then
sharded by train.Engine).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}


def load_model(path: Path, device: torch.device, dtype: torch.dtype):
    """ComfyUI's BaseModel of a diffusion-model or checkpoint file, in `dtype` on `device`; a file that is not
    safetensors, holds no model ComfyUI knows or has non-finite weights raises one error naming it."""
    from swd_sampler.lora import check_finite_weights

    from .model import import_comfy
    from .runner import read_weights
    what = f"--teacher {path}"
    weights = read_weights(path, what)[0]
    check_finite_weights(weights, what)
    import_comfy(cpu=device.type != "cuda")
    import comfy.sd
    try:
        patcher = comfy.sd.load_diffusion_model_state_dict(weights)
        if patcher is None:
            patcher = comfy.sd.load_state_dict_guess_config(weights, output_vae=False, output_clip=False,
                                                            output_clipvision=False)[0]
    except Exception as e:  # ComfyUI's loaders raise many kinds for files they do not recognise
        raise ValueError(f"{what} is not a diffusion model or checkpoint ComfyUI recognises ({e})") from None
    if patcher is None:
        raise ValueError(f"{what} is not a diffusion model or checkpoint ComfyUI recognises: give an SD3/SD3.5, "
                         f"FLUX.1 or SDXL file")
    base = patcher.model
    base.diffusion_model.to(device=device, dtype=dtype)
    base.diffusion_model.dtype = dtype
    base.manual_cast_dtype = None
    base.model_sampling.to(device)
    return base


def negative_of(folder: Path, net, latent_shape) -> dict | None:
    """The dataset's negative conditioning (negative.safetensors: context, pooled), encoded for the model; the tiny
    family's is its empty caption; None when the dataset has none (then --cfg must be 1 or the model guided)."""
    from safetensors.torch import load_file
    path = folder / "negative.safetensors"
    if path.exists():
        data = load_file(str(path))
        extra = {"pooled_output": data["pooled"]} if "pooled" in data else {}
        return net.encode([data["context"], extra], latent_shape)
    if is_tiny(net):
        from . import tiny
        context, pooled = tiny.encode_text("")
        return net.encode([context, {"pooled_output": pooled}], latent_shape)
    return None


def distill_files(teacher: Path, dataset, out: Path, cfg, work: Path, resume: bool, parallel: str,
                  dtype: str | None, checkpointing: bool) -> None:
    """`dataset`: the folder, or (no --dataset) a function that makes the tiny teacher's default one."""
    from . import samples
    from .adapters import family_of
    from .data import Dataset
    from .network import Network
    from .runner import Parallel, Progress, checkpoint_path
    from .distill import Split
    from .train import distill, lora_metadata
    par = Parallel()
    try:
        torch_dtype = DTYPES[dtype] if dtype else (torch.bfloat16 if par.device.type == "cuda" else torch.float32)
        base = load_model(teacher, par.device, torch_dtype)
        if family_of(base) == "flux" and torch_dtype == torch.float64:
            raise ValueError("--dtype fp64 does not run FLUX: ComfyUI's rotary-embedding kernel takes fp16, bf16 or "
                             "fp32 only; use --dtype fp32")
        net = Network(base, torch_dtype, checkpointing)
        if callable(dataset):  # no --dataset: only the tiny teacher has a default one
            if not is_tiny(net):
                raise ValueError(f"--dataset is needed for --teacher {teacher}: make one with `python -m "
                                 f"swd_distill samples` or the SwD Teacher Samples node")
            dataset = dataset()
        latents, entries, captions = samples.load_dataset(dataset)
        shape = tuple(latents.shape[1:])
        if shape[0] != net.latent_channels:
            raise ValueError(f"--dataset {dataset} holds latents of {shape[0]} channels, but the teacher's have "
                             f"{net.latent_channels}: it was made with another model family")
        conds = [net.encode(entry, shape) for entry in entries]
        negative = negative_of(dataset, net, shape)
        if negative is None and cfg.cfg != 1 and not net.guided:
            raise ValueError(f"--dataset {dataset} has no negative conditioning (negative.safetensors) for --cfg "
                             f"{cfg.cfg:g}: remake it with `samples`, or use --cfg 1")
        data = Dataset(latents, conds, cfg.seed, captions, what=f"--dataset {dataset}")
        checkpoint = checkpoint_path(work, "student")
        bar: list[Progress] = []

        def on_step(step, logs):
            if not bar:
                bar.append(Progress(cfg.steps, step - 1, "student", par.main))
            bar[0].update(**logs)
        try:
            lora, steps, _ = distill(net, data, negative, cfg, checkpoint=checkpoint, resume=resume,
                                     parallel=parallel, split=Split(par.world, par.rank, cfg.grad_accum),
                                     device=par.device, on_step=on_step, mean=par.mean, main=par.main)
        finally:
            if bar:
                bar[0].close()
        save = torch.float64 if torch_dtype == torch.float64 else torch.float16
        lora = {k: v.to(save).contiguous() for k, v in lora.items()}
        metadata = lora_metadata(cfg, cfg.rank, net.family, net.adapters.targets)
        metadata.update({"swd_teacher": teacher.name, "swd_dataset": dataset.name})
        if is_tiny(net):
            metadata["swd_tiny"] = "student"
        par.save_weights(out, lora, metadata)
        if par.main:
            print(f"wrote {out} ({steps} steps)", file=sys.stderr)
    finally:
        par.close()


def is_tiny(net) -> bool:
    """The pack's tiny family (an SD3 MMDiT reading its 24-wide caption tokens)."""
    from . import tiny
    return net.family == "sd3" and net.dm.context_embedder.in_features == tiny.CONTEXT_DIM
