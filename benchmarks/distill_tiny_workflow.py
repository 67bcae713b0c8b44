"""The acceptance run of workflows/swd_distill_tiny.json: queued as shipped through real ComfyUI, then judged.

1. Starts ComfyUI (CPU) with the pack, converts the shipped workflow to the API prompt the frontend queues
   (tests/workflow_to_api.py; tests/test_frontend.py checks that the frontend's own graphToPrompt gives the same
   prompt for every shipped workflow), queues it unchanged and times it: SwD Teacher Samples (432 seen captions x 2),
   SwD Distill LoRA (500 steps), SwD Save LoRA, and the two samplers beside each other.
2. Checks that SwD LoRA Loader lists the saved LoRA and that its metadata names the tiny preset.
3. Runs `python -m swd_distill eval --student <that LoRA>` (swd_distill/evaluate.py, real ComfyUI again) and prints
   how SwDKSampler with the LoRA compares to the same schedule without it: accuracy, and FD to the teacher's own
   28-step samples (the issue's bar: at least 30 % lower with the LoRA).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/distill_tiny_workflow.py [--samples 240] [--keep DIR]

Prints figures; asserts nothing (the quality gates live in tests/test_tiny_family.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from comfy_harness import ComfyServer  # noqa: E402
from tiny_workflows import load  # noqa: E402
from workflow_to_api import combo_options, to_api  # noqa: E402


def run_workflow(keep: Path) -> tuple[Path, float, dict]:
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd_distill_tiny_")))
    server.prepare()
    server.start()
    try:
        prompt = to_api(load("swd_distill_tiny"), server.object_info())
        node = {n["class_type"]: i for i, n in prompt.items()}
        started = time.perf_counter()
        result = server.run(prompt, timeout=3600)
        seconds = time.perf_counter() - started
        saved = Path(result.outputs[node["SwDSaveLoRA"]]["text"][0].removeprefix("saved "))
        name = saved.relative_to(server.models_dir / "loras").as_posix()
        loader = server.object_info("SwDLoraLoader")["SwDLoraLoader"]["input"]["required"]["lora_name"]
        from safetensors import safe_open
        with safe_open(str(saved), "pt") as f:
            meta = {"listed_by_SwDLoraLoader": name in combo_options(loader), "file": name,
                    "swd_preset": f.metadata().get("swd_preset"), "tensors": len(list(f.keys()))}
        keep.mkdir(parents=True, exist_ok=True)
        lora = keep / "swd_distill_tiny.safetensors"
        shutil.copyfile(saved, lora)
        return lora, seconds, meta
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=240, help="images per caption split and row in the judging")
    parser.add_argument("--keep", type=Path, default=ROOT / ".swd_work" / "distill_tiny_workflow",
                        help="where the distilled LoRA and the judged figures are kept")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    lora, seconds, meta = run_workflow(args.keep)
    print(json.dumps({"workflow": "swd_distill_tiny", "queued_as_shipped_s": round(seconds, 1), **meta}), flush=True)

    from swd_distill.evaluate import main as evaluate
    figures = args.keep / "eval.json"
    evaluate(args.samples, lora, figures)
    rows = json.loads(figures.read_text())
    by_name = {next(iter(r.values()))["name"]: r for r in rows}
    without = next(r for n, r in by_name.items() if "without the LoRA" in n)
    student = next(r for n, r in by_name.items() if n.startswith("SwD student"))
    print("\nSwDKSampler, the tiny preset, with the workflow's LoRA vs without it:")
    for split in ("validation", "held-out"):
        a, b = student[split], without[split]
        gain = 1 - a["fd_teacher"] / b["fd_teacher"]
        print(f"  {split}: accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f}; FD to the teacher "
              f"{a['fd_teacher']:.2f} vs {b['fd_teacher']:.2f} ({gain:.0%} lower with the LoRA)")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
