"""Wall time of SwD against full-resolution sampling with the same number of steps, in real ComfyUI.

Starts ComfyUI (CPU unless CUDA is present) with the pack and the tiny seeded SD3 model of the tests, then times
SwDKSampler (every SD3.5 preset) and the stock KSampler (euler, same step count, final size for every step) at
several final sizes. Each figure is the median of `--repeats` runs of ComfyUI's own execution time (from the
prompt's execution_start to execution_success), after one warm-up run. Prints JSON; asserts nothing.

    .venv/bin/python benchmarks/bench_sampler.py [--sizes 512 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from comfy_harness import ComfyServer, comfyui_path  # noqa: E402
from graphs import cond_nodes, empty_latent, model_nodes, positive_ref  # noqa: E402

PRESETS = ["SD3.5 Medium · 6 steps", "SD3.5 Medium · 4 steps"]


def sampler_node(kind: str, preset: str, seed: int, steps: int) -> dict:
    common = {"model": ["model", 0], "positive": positive_ref("sd3"), "negative": ["neg", 0],
              "latent_image": ["latent", 0], "seed": seed, "cfg": 1.0}
    if kind == "swd":
        return {"class_type": "SwDKSampler", "inputs": {**common, "preset": preset, "scales": "", "sigmas": "",
                                                         "upscale_method": "bicubic"}}
    return {"class_type": "KSampler", "inputs": {**common, "steps": steps, "sampler_name": "euler",
                                                  "scheduler": "simple", "denoise": 1.0}}


def execution_seconds(server: ComfyServer, prompt: dict) -> float:
    prompt_id = server.queue(prompt)
    server.wait(prompt_id)
    messages = dict(server.get(f"/history/{prompt_id}")[prompt_id]["status"]["messages"])
    return (messages["execution_success"]["timestamp"] - messages["execution_start"]["timestamp"]) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="final sizes in pixels (square)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp))
        server.prepare(extra_custom_nodes=[("swd_test_nodes", TESTS / "comfy_test_nodes")])
        subprocess.run([sys.executable, str(TESTS / "tiny_models.py"), str(server.models_dir / "diffusion_models")],
                       check=True, env={**os.environ, "PYTHONPATH": str(comfyui_path())})
        server.start()
        try:
            rows, seed = [], 1000
            for size in args.sizes:
                for preset in PRESETS:
                    steps = 6 if "6 steps" in preset else 4
                    times = {}
                    for kind in ("swd", "full"):
                        samples = []
                        for _ in range(args.repeats + 1):  # the first run loads the model: warm-up
                            seed += 1
                            nodes, _ = model_nodes("sd3")
                            prompt = {**nodes, **cond_nodes("sd3"), "latent": empty_latent("sd3", size, size),
                                      "sampler": sampler_node(kind, preset, seed, steps),
                                      "out": {"class_type": "SaveLatent",
                                              "inputs": {"samples": ["sampler", 0], "filename_prefix": "bench"}}}
                            samples.append(execution_seconds(server, prompt))
                        times[kind] = statistics.median(samples[1:])
                    rows.append({"final_px": size, "preset": preset, "steps": steps,
                                 "swd_s": round(times["swd"], 4), "full_resolution_s": round(times["full"], 4),
                                 "speedup": round(times["full"] / times["swd"], 2)})
        finally:
            server.stop()
    import torch
    print(json.dumps({"model": "tiny SD3 MMDiT (2 blocks, hidden 128, random weights)",
                      "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                      "repeats": args.repeats, "results": rows}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
