"""Memory and throughput of SwD distillation: (a) the peak memory of one full distillation step of SD3.5 Medium,
SD3.5 Large, FLUX.1-dev and SDXL at 1024 px (bf16 base, rank-64 fp32 adapters, gradient checkpointing, batch 1 and
4), on one device and per rank under FSDP2 with 2, 4 and 8 ranks; (b) steps/s and samples/s of the tiny family in
1 and 2 processes, and of SD3.5 Medium dimensions at 512 px on one GPU when CUDA is present.

(a) is measured on fake tensors (fake_distill.py: ComfyUI's real model classes under FakeTensorMode, this pack's
Network / Distiller / Engine.step, a live-bytes tracker): one process per setting, `--jobs` at a time. The one-device
figure is the tracker's peak. The FSDP2 figure is a MODEL, not a measurement (one process cannot run 8 ranks): the
peak over the step of [activations + buffers + (bf16 weights + fp32 adapters + gradients + AdamW state) / N], taken
on the step an FSDP process runs (`--fsdp-path`: feature passes run every block, the fake score is not frozen), plus
what FSDP2 gathers unsharded: the root unit (everything outside the Engine's `fully_shard` blocks, held from the
forward to the backward), two block units (the one computing and the one prefetched), each in bf16 (the mixed
precision policy's param dtype), and one block's adapter gradients (bf16 + their fp32 copy for the reduce-scatter).
Nothing here models the CUDA context, the caching allocator or kernels' workspaces: `fits` below adds 10 % + 1 GiB.

(b) runs the real thing: distill_throughput.py in one process (1 and 2 threads) and under torchrun (2 processes of
1 thread, gloo, the Engine's parallel="ddp") on the shipped tiny teacher; CUDA: SD3.5 Medium dimensions with random
weights. Prints JSON lines, then the tables; asserts nothing.

    .venv/bin/python benchmarks/bench_distill.py [--jobs 2] [--batches 1 4] [--rows sd3.5-medium ...]
        [--fake-updates 1] [--skip-memory] [--skip-throughput]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
GIB = 2 ** 30
WORLDS = (2, 4, 8)
CARDS = (24, 48, 80)  # GiB

# row: (model, recipe, FSDP rows too)
ROWS = {
    "sd3.5-medium": ("sd3.5-medium", "full"),
    "sd3.5-large": ("sd3.5-large", "full"),
    "flux.1-dev": ("flux.1-dev", "full"),
    "sdxl/mmd": ("sdxl", "mmd"),
    "sdxl/full": ("sdxl", "full"),
}
TITLES = {
    "sd3.5-medium": "SD3.5 Medium, official recipe (DMD cfg 7, fake score, GAN, patch)",
    "sd3.5-large": "SD3.5 Large, official recipe (DMD cfg 4.5)",
    "flux.1-dev": "FLUX.1-dev, official recipe (guidance 3.5)",
    "sdxl/mmd": "SDXL, mmd (the official SDXL recipe: patch loss on the teacher, one network)",
    "sdxl/full": "SDXL, full recipe (DMD cfg 7, fake score, GAN, patch)",
}


def measure(model: str, batch: int, recipe: str, fake_updates: int, fsdp_path: bool, px: int = 1024) -> dict:
    cmd = [sys.executable, str(HERE / "fake_distill.py"), model, str(batch), "--recipe", recipe,
           "--fake-updates", str(fake_updates), "--px", str(px)]
    if fsdp_path:
        cmd.append("--fsdp-path")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1], "command": " ".join(cmd[1:])}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gathered(units: dict) -> float:
    """Bytes FSDP2 holds unsharded besides the shards (module doc)."""
    return units["root_bf16"] + 2 * units["largest_block_bf16"] + 6 * units["largest_block_trainable"]


def smallest_card(gib: float) -> str:
    for card in CARDS:
        if gib * 1.1 + 1 <= card:
            return f"{card} GB"
    return "none of 24/48/80"


def memory(args) -> list[dict]:
    jobs = []
    for row in args.rows:
        model, recipe = ROWS[row]
        for batch in args.batches:
            for fsdp_path in (False, True):
                jobs.append((row, batch, fsdp_path, (model, batch, recipe, args.fake_updates, fsdp_path)))
    results: dict[tuple, dict] = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(measure, *job[3]): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            row, batch, fsdp_path, _ = futures[future]
            results[(row, batch, fsdp_path)] = future.result()
    table = []
    for row in args.rows:
        model, recipe = ROWS[row]
        for batch in args.batches:
            one = results[(row, batch, False)]
            line = {"row": row, "title": TITLES[row], "model": model, "recipe": recipe, "batch": batch,
                    "measured_on": "fake tensors (FakeTensorMode), tracker: fake_distill.LiveBytes"}
            if "error" in one:
                line["error"] = one
                table.append(line)
                print(json.dumps(line), flush=True)
                continue
            line.update({
                "one_device_gib": round(one["peak"] / GIB, 2), "peak_phase": one["peak_phase"],
                "at_peak_gib": {k: round(v / GIB, 2) for k, v in one["at_peak"].items()},
                "params": one["params"], "fake_updates": one["fake_updates"],
                "seconds": one["seconds"]})
            fs = results[(row, batch, True)]
            if "error" in fs:
                line["fsdp_error"] = fs
            else:
                line["fsdp_model_gib"] = {
                    str(n): round((fs["fsdp_peaks"][str(n)]["bytes"] + gathered(fs["units"])) / GIB, 2)
                    for n in WORLDS}
                line["fsdp_units"] = fs["units"]
            table.append(line)
            print(json.dumps(line), flush=True)
    return table


def print_memory_table(table: list[dict], fake_updates: int) -> None:
    print(f"\nPeak memory of one distillation step at 1024 px (latent 128x128), GiB; fake tensors, "
          f"{fake_updates} fake-score update(s) per step; FSDP columns: per rank, MODELLED (not measured)")
    print("| setting | batch per rank | 1 device | FSDP 2 | FSDP 4 | FSDP 8 | smallest card, 1 device | peak in |")
    print("|---|---|---|---|---|---|---|---|")
    for line in table:
        if "error" in line:
            print(f"| {line['title']} | {line['batch']} | error: {line['error']['error']} | | | | | |")
            continue
        fsdp = line.get("fsdp_model_gib", {})
        cells = [f"{fsdp[str(n)]:.1f}" if str(n) in fsdp else "-" for n in WORLDS]
        print(f"| {line['title']} | {line['batch']} | {line['one_device_gib']:.1f} | {' | '.join(cells)} | "
              f"{smallest_card(line['one_device_gib'])} | {line['peak_phase']} |")
    print("FSDP units: the Engine's (Network.units). 'smallest card': peak x 1.1 + 1 GiB <= card.")


def throughput(args) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(HERE / "distill_throughput.py")
    runs = [("1 process, 1 thread", [sys.executable, script, "tiny", "--threads", "1"]),
            ("1 process, 2 threads", [sys.executable, script, "tiny", "--threads", "2"]),
            ("2 processes (torchrun, gloo, DDP), 1 thread each",
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, "tiny",
              "--threads", "1"])]
    try:
        import torch
        if torch.cuda.is_available():
            for batch in args.gpu_batches:
                runs.append((f"SD3.5 Medium dimensions, random weights, 512 px, bf16, 1 GPU, batch {batch}",
                             [sys.executable, script, "sd3.5-medium", "--px", "512", "--batch", str(batch)]))
    except ImportError:
        pass
    rows = []
    for what, cmd in runs:
        load = os.getloadavg()[0]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
        if out.returncode:
            row = {"setting": what, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            row = {"setting": what, **json.loads(out.stdout.strip().splitlines()[-1]),
                   "load_average_before": round(load, 2)}
        if "max_memory_allocated_gb" in row:  # the tracker on the same setting, for comparison
            fake = measure("sd3.5-medium", row["global_batch"], "full", 5, False, px=512)
            if "peak" in fake:
                row["fake_tensor_tracker_gb"] = round(fake["peak"] / 1e9, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\nThroughput (real runs): steps/s of Engine.step (5 fake-score updates + 1 generator update, each on its "
          "own batch); samples/s = global batch x steps/s")
    print("| setting | global batch | steps/s | samples/s | load average before | peak GB (CUDA allocator / "
          "fake-tensor tracker) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['setting']} | error: {row['error']} | | | | |")
        else:
            peak = (f"{row['max_memory_allocated_gb']} / {row.get('fake_tensor_tracker_gb', '-')}"
                    if "max_memory_allocated_gb" in row else "-")
            print(f"| {row['setting']} ({row['device']}) | {row['global_batch']} | {row['steps_per_s']} | "
                  f"{row['samples_per_s']} | {row['load_average_before']} | {peak} |")
    cores = os.cpu_count() or 1
    if any(row.get("device") == "cpu" and row.get("load_average_before", 0) > cores for row in rows):
        print(f"The machine was busy (load average above its {cores} cores before a CPU run): other processes share "
              f"the cores, so these CPU figures are low, the multi-threaded ones most.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="fake-tensor measurements run at a time")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--fake-updates", type=int, default=1,
                        help="fake-score updates in the measured step (official: 5; each starts from zero_grad "
                             "(set_to_none), so the five have the same memory profile: 1 gives the same peak, "
                             "2.3x sooner)")
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    start = time.time()
    if not args.skip_memory:
        table = memory(args)
        print_memory_table(table, args.fake_updates)
    if not args.skip_throughput:
        print()
        throughput(args)
    print(f"\nbench-distill took {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
