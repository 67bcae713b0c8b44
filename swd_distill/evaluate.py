"""`make eval-tiny`: the tiny family's quality table, measured through real ComfyUI with the pack's nodes.

Captions come in two splits of 48 (splits.py): validation (seen in distillation; cfg, kernel and recipe are chosen
on it) and held-out (never used to make distillation data; the figures to report). Each row samples each split's
captions, `samples` images per split (every caption equally often), in batches of 16 through an API prompt:
UNETLoader(teacher) [-> SwDLoraLoader(student)] -> KSampler or SwDKSampler -> SwDTinyDecode -> SaveImage, and
judges the saved 128x128 PNGs (area-averaged to 32x32) with the judge (judge.py):
- accuracy: the fraction of images whose five attributes all match the caption;
- FD real: the Frechet distance of the judge's features to those of 2,000 rendered scenes of the split's captions;
- FD teacher: the same to the teacher's own 28-step samples of the split's captions (cfg 3, the settings that make
  the distillation data, other seeds): how faithfully a row reproduces the teacher (distillation fidelity);
- ms/image: the sampler node's wall time per image in a batch of 16; ms/prompt: its median time for one caption
  (batch 1), what one artist's prompt costs. Both exclude model loading (warm-up prompt first).
Rows: the teacher at 28 steps (euler, simple) with cfg 1 and 3, at 4 and 2 full-resolution steps (with the cfg
that is better on the validation split), the teacher through the SwD schedule without the LoRA, and the SwD student
(cfg 1, the preset from the loader's output).
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

from swd_sampler.tiny import ATTRIBUTES, STUDENT_FILE, TEACHER_FILE, TINY_PRESET

from . import splits
from .samples import file_id
from .judge import attribute_accuracy, cached_judge, frechet_distance, to_tensor
from .scenes import make_dataset, scene_of

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
    fd_teacher: float | None = None  # FD to the teacher's 28-step samples of the same captions


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


def sample_images(server, nodes: dict, captions: list[str], seed: int, tag: str) -> tuple[np.ndarray, float]:
    """The row's images of `captions` (batches of 16, batch b seeded seed + b) and the sampler's seconds."""
    images, seconds = [], 0.0
    for b in range(0, len(captions), BATCH):
        paths, s = run_timed(server, prompt(nodes, captions[b:b + BATCH], seed + b, tag))
        images.append(load_images(paths))
        seconds += s
    return np.concatenate(images), seconds


def evaluate_row(server, judge, name: str, nodes: dict, labels: np.ndarray, real_features,
                 teacher_features=None, timed: bool = True) -> Row:
    captions = [scene_of(lab).caption for lab in labels]
    run_timed(server, prompt(nodes, captions[:1], 10_000, "warmup"))  # loads the model
    images, seconds = sample_images(server, nodes, captions, 0, f"eval_{name.split(':')[0]}")
    single = ([run_timed(server, prompt(nodes, captions[k:k + 1], 20_000 + k, "single"))[1] for k in range(5)]
              if timed else [float("nan")])
    predicted, features = judge.predict(to_tensor(images))
    truth = torch.from_numpy(labels)
    shape = list(ATTRIBUTES).index("shape")
    return Row(name, attribute_accuracy(predicted, truth), frechet_distance(features, real_features),
               1000 * seconds / len(captions), 1000 * statistics.median(single), len(captions),
               float((predicted[:, shape] == truth[:, shape]).float().mean()),
               None if teacher_features is None else frechet_distance(features, teacher_features))


def start_server(extra_loras: dict[str, Path]):
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_harness import ComfyServer
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd_eval_")))
    server.prepare()
    for name, path in extra_loras.items():
        (server.models_dir / "loras" / name).symlink_to(path.resolve())
    return server.start()


SPLITS = ("validation", "held-out")
REFERENCE_CFG = 3.0  # the teacher's cfg in the distillation data (cli.py --sample-cfg), for the FD-teacher column


def split_labels(split: str, samples: int) -> np.ndarray:
    """(samples, 5) labels: the split's 48 captions in turn."""
    captions = splits.validation() if split == "validation" else list(splits.heldout())
    return splits.labels_of([captions[k % len(captions)] for k in range(samples)])


def references(server, judge, split: str, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features of 2,000 rendered scenes of the split's captions, features of the teacher's 28-step cfg-3 samples
    of them at other seeds), the latter cached in .swd_work/ per teacher file and sample count."""
    from safetensors.torch import load_file, save_file
    labels = split_labels(split, samples)
    real = judge.predict(to_tensor(make_dataset(2000, 99, np.unique(labels, axis=0))[0]))[1]
    teacher = ROOT / "models" / "diffusion_models" / TEACHER_FILE
    digest = file_id(teacher).split()[-1][:16]
    cache = ROOT / ".swd_work" / f"eval-reference-{split}-{samples}-{digest}.safetensors"
    if cache.exists():
        return real, load_file(str(cache))["features"]
    captions = [scene_of(lab).caption for lab in labels]
    images, _ = sample_images(server, sampler_nodes("ksampler", 28, REFERENCE_CFG), captions, 500_000, "reference")
    features = judge.predict(to_tensor(images))[1]
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.contiguous()}, str(cache))
    return real, features


def table(results: list[dict[str, Row]]) -> str:
    lines = ["| model | sampling | validation: accuracy | FD teacher | held-out: accuracy | shape right | FD real | "
             "FD teacher | ms/image (batch 16) | ms/prompt (batch 1) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        v, h = r["validation"], r["held-out"]
        model, _, sampling = h.name.partition(": ")
        lines.append(f"| {model} | {sampling} | {v.accuracy:.3f} | {v.fd_teacher:.2f} | {h.accuracy:.3f} | "
                     f"{h.shape_accuracy:.3f} | {h.fd:.2f} | {h.fd_teacher:.2f} | {h.ms_per_image:.1f} | "
                     f"{h.ms_per_prompt:.0f} |")
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
    loras = {"eval-student.safetensors": student} if student else {}
    server = start_server(loras)
    lora = "eval-student.safetensors" if student else STUDENT_FILE
    try:
        refs = {split: references(server, judge, split, samples) for split in SPLITS}

        def evaluate(name: str, nodes: dict) -> dict[str, Row]:
            result = {split: evaluate_row(server, judge, name, nodes, split_labels(split, samples), *refs[split],
                                          timed=split == "held-out") for split in SPLITS}
            print(table([result]).splitlines()[-1], flush=True)
            return result

        if student_only:
            results = [evaluate(f"SwD student: {student or lora}", sampler_nodes("swd", lora=lora))]
        else:
            cfgs = (1.0, 3.0)
            results = [evaluate(f"teacher: 28 steps, cfg {cfg:g}", sampler_nodes("ksampler", 28, cfg))
                       for cfg in cfgs]
            best_cfg = max(zip(cfgs, results), key=lambda pair: pair[1]["validation"].accuracy)[0]
            results += [evaluate(name, nodes) for name, nodes in rows_to_run(best_cfg, lora)]
    finally:
        server.stop()
    print(f"\nTiny family, {samples} samples per caption split and row, judged at 32x32 "
          f"({time.perf_counter() - started:.0f} s):\n")
    print(table(results))
    if json_out:
        json_out.write_text(json.dumps([{k: asdict(r) for k, r in result.items()} for result in results], indent=1))
    return 0


def ablation_table(folder: Path) -> str:
    """The ablation's rows from the `eval --student-only --json` files in `folder` (<row>.json); rows named
    <name>-seed<k> are merged into mean +- sd over their seeds."""
    groups: dict[str, list[dict[str, dict]]] = {}
    for path in sorted(folder.glob("*.json")):
        name = path.stem.rpartition("-seed")[0] if "-seed" in path.stem else path.stem
        groups.setdefault(name, []).append(json.loads(path.read_text())[0])

    def cell(results, split, key):
        values = [r[split][key] for r in results]
        if len(values) == 1:
            return f"{values[0]:.3f}" if key.endswith("accuracy") else f"{values[0]:.2f}"
        digits = 3 if key.endswith("accuracy") else 2
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    lines = ["| student | seeds | validation: accuracy | FD teacher | held-out: accuracy | FD real | FD teacher |",
             "|---|---|---|---|---|---|---|"]
    for name, results in groups.items():
        lines.append(f"| {name} | {len(results)} | {cell(results, 'validation', 'accuracy')} | "
                     f"{cell(results, 'validation', 'fd_teacher')} | {cell(results, 'held-out', 'accuracy')} | "
                     f"{cell(results, 'held-out', 'fd')} | {cell(results, 'held-out', 'fd_teacher')} |")
    return "\n".join(lines)
