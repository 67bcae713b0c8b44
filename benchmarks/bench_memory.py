"""Peak memory of one SwD model pass against ComfyUI's own estimate (BaseModel.memory_required, which
SwD's memory check compares with the free memory), on the shipped tiny teacher and the tests' tiny SD3/FLUX.

Each (model, batch, latent size) runs in a fresh process: load the model, then one no-grad pass of the diffusion
model (as the sampler runs it, cfg 1) on a batch of noise. CPU: the peak resident set size above the one after
loading (ru_maxrss); CUDA (when present): torch.cuda.max_memory_allocated above the loaded model. Prints JSON lines;
asserts nothing.

    .venv/bin/python benchmarks/bench_memory.py [--cases tiny:1000:16 tiny:16:64 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from comfy_harness import comfyui_path  # noqa: E402

DEFAULT_CASES = ["tiny:1:16", "tiny:64:16", "tiny:1000:16", "tiny:4:64", "tiny:1:128", "sd3:1:128", "sd3:8:64",
                 "flux:1:128", "flux:8:64"]

CHILD = r"""
import json, resource, sys, torch
sys.argv = ["main.py", "--cpu"] if not torch.cuda.is_available() else ["main.py"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.model_management as mm, comfy.sd
path, batch, side = sys.argv_in
model = comfy.sd.load_diffusion_model(path)
mm.load_models_gpu([model], force_full_load=True)
device = model.load_device
cuda = device.type == "cuda"
ctx, pooled = {"tiny": (24, 24)}.get(KIND, (64, 32))
cond = {"c_crossattn": torch.randn(int(batch), 8, ctx, device=device), "y": torch.randn(int(batch), pooled, device=device)}
if KIND == "flux":
    cond["guidance"] = torch.full((int(batch),), 3.5, device=device)
x = torch.randn(int(batch), 16, int(side), int(side), device=device)
sigma = torch.full((int(batch),), 0.5, device=device)
estimate = model.model.memory_required(list(x.shape))
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    model.model.apply_model(x, sigma, **cond)
peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
print(json.dumps({"device": str(device), "estimate": estimate, "peak": peak}))
"""


def run(kind: str, batch: int, side: int, files: dict) -> dict:
    code = CHILD.replace("sys.argv_in", repr([str(files[kind]), batch, side])).replace("KIND", repr(kind))
    out = subprocess.run([sys.executable, "-c", code], cwd=comfyui_path(), capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(comfyui_path())}, timeout=900)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES, help="model:batch:latent_side")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, str(TESTS / "tiny_models.py"), str(tmp)], check=True,
                   env={**os.environ, "PYTHONPATH": str(comfyui_path())})
    files = {"tiny": ROOT / "models" / "diffusion_models" / "swd-tiny-teacher.safetensors",
             "sd3": tmp / "tiny_sd3.safetensors", "flux": tmp / "tiny_flux.safetensors"}
    for case in args.cases:
        kind, batch, side = case.split(":")
        row = {"model": kind, "batch": int(batch), "latent": f"{side}x{side}", **run(kind, int(batch), int(side), files)}
        if "peak" in row:
            row["estimate_over_peak"] = round(row["estimate"] / max(row["peak"], 1), 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
