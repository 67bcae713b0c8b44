"""`make eval-tiny`: the tiny family's quality table, measured through real ComfyUI with the pack's nodes.

Each row samples the same captions (random scenes of the card, seeded) in batches of 16 through an API prompt:
UNETLoader(teacher) [-> SwDLoraLoader(student)] -> KSampler or SwDKSampler -> SwDTinyDecode -> SaveImage, and
judges the saved 128x128 PNGs (area-averaged to 32x32) with the judge (judge.py):
- accuracy: the fraction of images whose five attributes all match the caption;
- FD: the Frechet distance of the judge's features to those of 2,000 rendered scenes;
- ms/image: the sampler node's wall time per image in a batch of 16; ms/prompt: its median time for one caption
  (batch 1), what one artist's prompt costs. Both exclude model loading (warm-up prompt first).
Rows: the teacher at 28 steps (euler, simple) with cfg 1 and 3, at 4 and 2 full-resolution steps (with the better
of the two cfgs), the teacher through the SwD schedule without the LoRA, and the SwD student (cfg 1, the preset from
the loader's output).
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .judge import attribute_accuracy, cached_judge, frechet_distance, to_tensor
from .scenes import ATTRIBUTES, make_dataset, scene_of
from .tiny import STUDENT_FILE, TEACHER_FILE, TINY_PRESET

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16


@dataclass
class Row:
    name: str
    accuracy: float
    fd: float
    ms_per_image: float
    ms_per_prompt: float
    samples: int
    shape_accuracy: float  # the attribute the tiny teacher finds hardest (README, Quality)


def sampler_nodes(kind: str, steps: int = 0, cfg: float = 1.0, lora: str = STUDENT_FILE) -> dict:
    """The model and sampler part of a prompt: "ksampler" (teacher, full resolution), "swd-teacher" (the teacher
    through the SwD preset) or "swd" (teacher + the SwD LoRA, preset from the loader)."""
    nodes = {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}}}
    common = {"positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0]}
    if kind == "ksampler":
        nodes["sampler"] = {"class_type": "KSampler", "inputs": {
            **common, "model": ["unet", 0], "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}}
        return nodes
    model, preset = ["unet", 0], TINY_PRESET
    if kind == "swd":
        nodes["lora"] = {"class_type": "SwDLoraLoader", "inputs": {"model": ["unet", 0], "lora_name": lora,
                                                                   "strength": 1.0, "allow_partial": False}}
        model, preset = ["lora", 0], ["lora", 1]
    nodes["sampler"] = {"class_type": "SwDKSampler", "inputs": {
        **common, "model": model, "preset": preset, "scales": "", "sigmas": "", "cfg": cfg,
        "upscale_method": "bicubic", "denoise": 1.0}}
    return nodes


def prompt(nodes: dict, captions: list[str], seed: int, prefix: str) -> dict:
    out = {**json.loads(json.dumps(nodes)),
           "pos": {"class_type": "SwDTinyTextEncode", "inputs": {"text": "\n".join(captions)}},
           "neg": {"class_type": "SwDTinyTextEncode", "inputs": {"text": ""}},
           "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128,
                                                                      "batch_size": len(captions)}},
           "decode": {"class_type": "SwDTinyDecode", "inputs": {"samples": ["sampler", 0]}},
           "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}}
    out["sampler"]["inputs"]["seed"] = seed
    return out


def run_timed(server, p: dict) -> tuple[list[Path], float]:
    """Run a prompt; (its saved images, the sampler node's wall seconds from the websocket's executing events)."""
    stamps = []
    messages, _ = server.run_watching(p, on_message=lambda s, m: stamps.append((time.perf_counter(), m)))
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    if errors:
        raise RuntimeError(f"{errors[0].get('node_type')}: {errors[0].get('exception_message')}")
    executing = [(t, m["data"]["node"]) for t, m in stamps if m["type"] == "executing"]
    seconds = next(t2 - t1 for (t1, n), (t2, _) in zip(executing, executing[1:]) if n == "sampler")
    saved = next(m["data"]["output"]["images"] for _, m in stamps
                 if m["type"] == "executed" and m["data"]["node"] == "save")
    return [server.output_dir / i.get("subfolder", "") / i["filename"] for i in saved], seconds


def load_images(paths: list[Path]) -> np.ndarray:
    from PIL import Image
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def evaluate_row(server, judge, name: str, nodes: dict, labels: np.ndarray, real_features) -> Row:
    captions = [scene_of(lab).caption for lab in labels]
    run_timed(server, prompt(nodes, captions[:1], 10_000, "warmup"))  # loads the model
    images, seconds = [], 0.0
    for b in range(0, len(captions), BATCH):
        paths, s = run_timed(server, prompt(nodes, captions[b:b + BATCH], b, f"eval_{name}"))
        images.append(load_images(paths))
        seconds += s
    single = [run_timed(server, prompt(nodes, captions[k:k + 1], 20_000 + k, "single"))[1] for k in range(5)]
    predicted, features = judge.predict(to_tensor(np.concatenate(images)))
    truth = torch.from_numpy(labels)
    shape = list(ATTRIBUTES).index("shape")
    return Row(name, attribute_accuracy(predicted, truth), frechet_distance(features, real_features),
               1000 * seconds / len(captions), 1000 * statistics.median(single), len(captions),
               float((predicted[:, shape] == truth[:, shape]).float().mean()))


def start_server(extra_loras: dict[str, Path]):
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_harness import ComfyServer
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd_eval_")))
    server.prepare()
    for name, path in extra_loras.items():
        (server.models_dir / "loras" / name).symlink_to(path.resolve())
    return server.start()


def table(rows: list[Row]) -> str:
    lines = ["| model | sampling | accuracy (all 5 attributes) | shape right | FD | ms/image (batch 16) | "
             "ms/prompt (batch 1) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        model, _, sampling = r.name.partition(": ")
        lines.append(f"| {model} | {sampling} | {r.accuracy:.3f} | {r.shape_accuracy:.3f} | {r.fd:.2f} | "
                     f"{r.ms_per_image:.1f} | {r.ms_per_prompt:.0f} |")
    return "\n".join(lines)


def rows_to_run(best_cfg: float, student: str) -> list[tuple[str, dict]]:
    return [(f"teacher: 4 full-resolution steps, cfg {best_cfg:g}", sampler_nodes("ksampler", 4, best_cfg)),
            (f"teacher: 2 full-resolution steps, cfg {best_cfg:g}", sampler_nodes("ksampler", 2, best_cfg)),
            ("teacher: SwD schedule without the LoRA, cfg 1", sampler_nodes("swd-teacher")),
            ("SwD student: 4 scale-wise steps, cfg 1", sampler_nodes("swd", lora=student))]


def main(samples: int = 240, student: Path | None = None, json_out: Path | None = None,
         student_only: bool = False) -> int:
    started = time.perf_counter()
    print("the judge: trained on rendered scenes (cached in .swd_work/) ...", flush=True)
    judge = cached_judge(ROOT / ".swd_work" / "judge.safetensors")
    labels = make_dataset(samples, 2026)[1]
    real_features = judge.predict(to_tensor(make_dataset(2000, 99)[0]))[1]
    loras = {"eval-student.safetensors": student} if student else {}
    server = start_server(loras)
    lora = "eval-student.safetensors" if student else STUDENT_FILE
    try:
        if student_only:
            rows = [evaluate_row(server, judge, f"SwD student: {student or lora}", sampler_nodes("swd", lora=lora),
                                 labels, real_features)]
            return _report(rows, samples, started, json_out)
        cfgs = (1.0, 3.0)
        rows = [evaluate_row(server, judge, f"teacher: 28 steps, cfg {cfg:g}", sampler_nodes("ksampler", 28, cfg),
                             labels, real_features) for cfg in cfgs]
        best_cfg = max(zip(cfgs, rows), key=lambda pair: pair[1].accuracy)[0]
        for name, nodes in rows_to_run(best_cfg, lora):
            rows.append(evaluate_row(server, judge, name, nodes, labels, real_features))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        server.stop()
    return _report(rows, samples, started, json_out)


def _report(rows: list[Row], samples: int, started: float, json_out: Path | None) -> int:
    print(f"\nTiny family, {samples} samples per row, judged at 32x32 ({time.perf_counter() - started:.0f} s):\n")
    print(table(rows))
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0
