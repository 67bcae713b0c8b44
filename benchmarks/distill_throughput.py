"""Steps per second of SwD distillation (`Engine.step`: the fake-score updates and the generator update), in one
process or under torchrun (gloo on the CPU, NCCL on CUDA; the Engine's parallel="ddp"). Used by bench_distill.py:

    .venv/bin/python benchmarks/distill_throughput.py tiny [--threads 1] [--batch 32] [--steps 8]
    torchrun --nproc_per_node 2 benchmarks/distill_throughput.py tiny --threads 1
    .venv/bin/python benchmarks/distill_throughput.py sd3.5-medium [--px 512] [--batch 1]   (CUDA; random weights)

`tiny`: the shipped teacher (models/diffusion_models/swd-tiny-teacher.safetensors, comfy.sd.load_diffusion_model),
fp32, the shipped student's settings (rank 32, global batch 32, the official recipe: 5 fake-score updates, cfg 3,
GAN head, linear patch loss), rendered scenes as data. Real-size models (`sd3.5-medium` ...): ComfyUI's model class
built from fake_distill.py's detected config on the device with random weights (N(0, 0.02)), bf16, gradient
checkpointing, rank 64, the official recipe, a `px` x `px` image (latent px/8). Every process runs `warmup` steps,
then `steps` timed ones (wall clock between barriers; on CUDA after synchronize); prints one JSON line from rank 0.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def tiny_setup(device):
    import comfy.sd
    from swd_distill import data
    from swd_distill.network import Network
    from swd_sampler import tiny
    patcher = comfy.sd.load_diffusion_model(str(ROOT / "models" / "diffusion_models" / "swd-tiny-teacher.safetensors"))
    net = Network(patcher.model, dtype=torch.float32)
    z, labels = data.batch(1, 0, 0, 64)  # rendered scenes: model-space latents (64, 16, 16, 16) and their labels
    context, pooled = data.conditioning(labels)
    latents = patcher.model.process_latent_out(z)  # ComfyUI's LATENT format
    conds = [net.encode([context[i:i + 1], {"pooled_output": pooled[i:i + 1]}], latents.shape[1:])
             for i in range(len(latents))]
    empty = tiny.encode_text("")
    negative = net.encode([empty[0], {"pooled_output": empty[1]}], latents.shape[1:])
    return net, latents, conds, negative, {"preset": "Tiny demo · 4 steps", "rank": 32, "cfg": 3.0}


def large_setup(name: str, px: int, device, depth: int | None):
    """A real-size model with random weights on `device` (depth: a shallower stand-in, to try this path on a CPU)."""
    import fake_distill
    from swd_distill.network import Network
    fake_distill._as_distill()
    if depth is not None:  # smoke test of this code path only
        config = dict(fake_distill.MODELS[name][0])
        config.update(depth=depth, x_block_self_attn_layers=[], num_patches=64 * 64, pos_embed_max_size=64,
                      context_embedder_config={"target": "torch.nn.Linear",
                                               "params": {"in_features": 4096, "out_features": 64 * depth}})
        fake_distill.MODELS[name] = (config, *fake_distill.MODELS[name][1:])
    config = fake_distill.model_config(name)
    base = config.get_model({}, "", device=device)
    with torch.no_grad():
        for p in base.diffusion_model.parameters():
            p.normal_(0.0, 0.02)
    base.to(device)
    net = Network(base, dtype=torch.bfloat16, checkpointing=True)
    channels = fake_distill.MODELS[name][4][0]
    latents = torch.zeros(1, channels, px // 8, px // 8)
    entry = fake_distill.conditioning(name)
    conds = [net.encode(entry, latents.shape[1:])]
    _, preset, _, cfg, _ = fake_distill.MODELS[name]
    return net, latents, conds, (None if net.guided else conds[0]), {"preset": preset, "rank": 64, "cfg": cfg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="tiny, or a fake_distill.MODELS name (CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch", type=int, default=None, help="global batch (tiny: 32; others: 1 per process)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (8 = each of the 4 scales twice)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--px", type=int, default=512)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--depth", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda else "cpu")
    torch.set_num_threads(args.threads)
    from swd_distill.model import import_comfy
    import_comfy(cpu=not cuda)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=300))
    if cuda:
        torch.cuda.set_device(device)

    from swd_distill.data import Dataset
    from swd_distill.distill import DistillConfig, Distiller, Split
    from swd_distill.train import Engine

    import comfy.model_management
    comfy.model_management.in_training = True  # as swd_distill.train.distill sets it around its loop
    if args.model == "tiny":
        net, latents, conds, negative, settings = tiny_setup(device)
        batch = args.batch or 32
    else:
        net, latents, conds, negative, settings = large_setup(args.model, args.px, device, args.depth)
        batch = args.batch or world
    cfg = DistillConfig(batch=batch, steps=args.warmup + args.steps, **settings)
    split = Split(world, rank, 1)
    run = Distiller(net, Dataset(latents, conds, 1), negative, cfg, split)
    engine = Engine(run, split, "ddp" if world > 1 else None, device)

    def sync():
        if cuda:
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()

    for step in range(args.warmup):
        engine.step(step)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        engine.step(step)
    sync()
    seconds = time.perf_counter() - start
    if rank == 0:
        out = {"model": args.model, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
               "processes": world, "threads_per_process": args.threads, "global_batch": batch,
               "latent": list(latents.shape[1:]), "fake_updates": cfg.fake_updates, "timed_steps": args.steps,
               "seconds": round(seconds, 3), "steps_per_s": round(args.steps / seconds, 3),
               "samples_per_s": round(args.steps * batch / seconds, 2),
               "batches_per_step": run.draws_per_step}
        if cuda:
            out["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        print(json.dumps(out), flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
