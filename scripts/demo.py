"""`make demo`: SwD in real ComfyUI, headless, through its /prompt API.

By default it runs the pack's own tiny family (models/: a tiny SD3-architecture teacher and the SwD student LoRA
distilled from it by swd_distill/), which draws real pictures of the data card's scenes on a CPU, and writes to
demo_output/:
  tiny_swd_grid.png           16 captions drawn by the SwD student (4 scale-wise steps, cfg 1)
  tiny_teacher_28_grid.png    the same captions and seeds by the teacher, 28 steps (euler, cfg 3)
  tiny_teacher_2_grid.png     ... and by the teacher in 2 full-resolution steps (the same compute as SwD's 4)
  tiny_grids.png              the three grids side by side (the README's docs/tiny_grids.png)
  tiny_swd_scale_<i>_<w>x<h>.png  the student's x0 after each SwD step for the first caption, smallest first
  tiny_captions.txt           the captions, in grid order (left to right, top to bottom)
  timings.json                the sampler wall times printed in the table

With real models it runs the SD3.5 Medium workflow (workflows/swd_sd35_medium_6steps.json) and writes:
  swd_final.png             the workflow's image
  swd_scale_<i>_<w>x<h>.png  x0 after each SwD step (decoded), smallest first
  ksampler_full_res.png     the same model, prompt and seed through the stock KSampler at the final size, same steps
  timings.json              the sampler wall times printed in the table

Real models are used when present: SWD_CHECKPOINT (an SD3.5 checkpoint, e.g. sd3.5_medium.safetensors) and SWD_LORA
(an SwD LoRA, e.g. swd-medium-6-steps.safetensors), or those file names in ComfyUI's models/checkpoints and
models/loras. The text encoders clip_l, clip_g and t5xxl_fp16 are looked up in SWD_TEXT_ENCODERS (a folder) and
ComfyUI's models/text_encoders and models/clip. SWD_SIZE sets the final size (1024 or e.g. 1344x768).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from comfy_harness import ComfyServer, comfyui_path  # noqa: E402
from tiny_workflows import load  # noqa: E402
from tiny_pictures import strip  # noqa: E402  (scripts/, beside this file)
from workflow_to_api import to_api  # noqa: E402

from swd_sampler.schedule import PRESETS, resolve, step_sizes  # noqa: E402

WORKFLOW = "swd_sd35_medium_6steps"
OUT = Path(os.environ.get("SWD_DEMO_OUTPUT") or REPO / "demo_output")
TEXT_ENCODERS = ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")
TINY_CAPTIONS = 16
TIMED_RUNS = 3


def banner(lines: list[str], colour: str = "33"):
    width = max(len(line) for line in lines) + 4
    print(f"\033[1;{colour}m" + "#" * width)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #")
    print("#" * width + "\033[0m", flush=True)


def find_real_models() -> dict | None:
    """{"checkpoint", "lora", "text_encoders": [...]} of real files, None for tiny models; exits when the real
    models are asked for but incomplete."""
    models = comfyui_path() / "models"
    env_ckpt, env_lora = os.environ.get("SWD_CHECKPOINT"), os.environ.get("SWD_LORA")
    ckpt = Path(env_ckpt) if env_ckpt else models / "checkpoints" / "sd3.5_medium.safetensors"
    lora = Path(env_lora) if env_lora else models / "loras" / "swd-medium-6-steps.safetensors"
    asked = bool(env_ckpt or env_lora)
    if not asked and not (ckpt.exists() and lora.exists()):
        return None
    folders = [Path(p) for p in [os.environ.get("SWD_TEXT_ENCODERS")] if p] + [models / "text_encoders", models / "clip"]
    encoders = [next((f / name for f in folders if (f / name).exists()), None) for name in TEXT_ENCODERS]
    missing = [f"{var} ({path})" for var, path in (("SWD_CHECKPOINT", ckpt), ("SWD_LORA", lora)) if not path.exists()]
    missing += [f"{name} (looked in {', '.join(map(str, folders))})" for name, p in zip(TEXT_ENCODERS, encoders) if p is None]
    if missing:
        sys.exit("make demo: real models requested but not found:\n  " + "\n  ".join(missing)
                 + "\nDownload links are in workflows/swd_sd35_medium_6steps.json (its note) and the README.")
    return {"checkpoint": ckpt, "lora": lora, "text_encoders": encoders}


def final_size() -> tuple[int, int]:
    text = os.environ.get("SWD_SIZE")
    if not text:
        return 1024, 1024
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def link(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    dst.symlink_to(src.resolve())


def by_class(prompt: dict, class_type: str) -> str:
    return next(i for i, n in prompt.items() if n["class_type"] == class_type)


class Runner:
    """Runs prompts, times each node from the websocket's "executing" messages, and collects the saved images."""

    def __init__(self, server: ComfyServer):
        self.server = server

    def run(self, prompt: dict) -> tuple[dict, dict, list]:
        stamps = []
        messages, _ = self.server.run_watching(prompt, on_message=lambda s, m: stamps.append((time.perf_counter(), m)))
        errors = [m["data"] for m in messages if m["type"] == "execution_error"]
        if errors:
            raise RuntimeError(f"{errors[0].get('node_type')}: {errors[0].get('exception_message')}\n"
                               f"{self.server.log_tail(30)}")
        durations, images = {}, {}
        executing = [(t, m["data"]["node"]) for t, m in stamps if m["type"] == "executing"]
        end = stamps[-1][0]
        for (t, node), (t_next, _) in zip(executing, executing[1:] + [(end, None)]):
            if node is not None:
                durations[node] = t_next - t
        for _, m in stamps:
            if m["type"] == "executed" and (m["data"].get("output") or {}).get("images"):
                i = m["data"]["output"]["images"][0]
                images[m["data"]["node"]] = self.server.base_dir / i["type"] / i.get("subfolder", "") / i["filename"]
        return durations, images, messages


def sd35_demo(real: dict, started: float):
    """The SD3.5 Medium workflow with real models (SWD_CHECKPOINT / SWD_LORA)."""
    width, height = final_size()
    print(f"Real models: {real['checkpoint']}, {real['lora']}, {', '.join(map(str, real['text_encoders']))}")

    import torch
    cpu = not torch.cuda.is_available()
    base = Path(tempfile.mkdtemp(prefix="swd-demo-"))
    server = ComfyServer(base)
    server.prepare()
    workflow = load(WORKFLOW)
    link(real["checkpoint"], server.models_dir / "checkpoints" / real["checkpoint"].name)
    for path in real["text_encoders"]:
        link(path, server.models_dir / "text_encoders" / path.name)
    lora = real["lora"]  # keep its name (and folder, for adapter_model.safetensors): the loader reads the preset from it
    lora_name = f"{lora.parent.name}/{lora.name}" if lora.name == "adapter_model.safetensors" else lora.name
    link(lora, server.models_dir / "loras" / lora_name)
    if (lora.parent / "adapter_config.json").exists():  # PEFT's alpha, read by the loader from beside the file
        link(lora.parent / "adapter_config.json", (server.models_dir / "loras" / lora_name).parent / "adapter_config.json")

    print(f"Starting ComfyUI ({'CPU' if cpu else 'GPU'}) ...", flush=True)
    server.start(cpu=cpu)
    try:
        prompt = to_api(workflow, server.object_info())
        prompt[by_class(prompt, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = real["checkpoint"].name
        prompt[by_class(prompt, "SwDLoraLoader")]["inputs"]["lora_name"] = lora_name
        latent_id, swd_id, save_id = (by_class(prompt, c) for c in ("EmptySD3LatentImage", "SwDKSampler", "SaveImage"))
        prompt[latent_id]["inputs"].update(width=width, height=height)
        prompt[save_id]["inputs"]["filename_prefix"] = "demo/swd_final"
        runner = Runner(server)
        OUT.mkdir(exist_ok=True)
        for old in list(OUT.glob("*.png")) + [OUT / "timings.json", OUT / "prompt_api.json"]:
            old.unlink(missing_ok=True)
        (OUT / "prompt_api.json").write_text(json.dumps(prompt, indent=1, ensure_ascii=False))

        print(f"Running {WORKFLOW} at {width}x{height} ...", flush=True)
        _, images, messages = runner.run(prompt)
        shutil.copy(images[save_id], OUT / "swd_final.png")
        report = next(m["data"]["output"]["swd_lora"][0] for m in messages
                      if m["type"] == "executed" and "swd_lora" in (m["data"].get("output") or {}))
        swd = prompt[swd_id]["inputs"]
        preset = report["preset"]
        scales, sigmas = resolve(preset, swd["scales"], swd["sigmas"])
        print(f"SwD LoRA: {report['keys_loaded']} keys loaded; preset {preset!r} ({report['preset_reason']})")

        # One image per scale: a run cut after step i returns exactly the x0 of step i (same sizes, same noise draws
        # from the one seeded generator), so each is a custom schedule of the first i+1 scales and sigmas.
        sizes = step_sizes(scales, height // 8, width // 8, 2)
        previews = {}
        for i, (h, w) in enumerate(sizes):
            nodes = {
                f"lat{i}": {"class_type": "EmptySD3LatentImage", "inputs": {"width": w * 8, "height": h * 8, "batch_size": 1}},
                f"swd{i}": {"class_type": "SwDKSampler", "inputs": {
                    **swd, "latent_image": [f"lat{i}", 0], "preset": "custom",
                    "scales": ", ".join(f"{s:g}" for s in scales[:i + 1]),
                    "sigmas": ", ".join(f"{s:g}" for s in (*sigmas[:i + 1], 0.0))}},
                f"dec{i}": {"class_type": "VAEDecode", "inputs": {"samples": [f"swd{i}", 0],
                                                                   "vae": prompt[by_class(prompt, "VAEDecode")]["inputs"]["vae"]}},
                f"save{i}": {"class_type": "SaveImage", "inputs": {"images": [f"dec{i}", 0],
                                                                    "filename_prefix": f"demo/scale_{i + 1}"}},
            }
            prompt.update(nodes)
            previews[f"save{i}"] = OUT / f"swd_scale_{i + 1}_{w * 8}x{h * 8}.png"
        _, images, _ = runner.run({k: v for k, v in prompt.items() if k != save_id})
        for node, path in previews.items():
            shutil.copy(images[node], path)
        for i in range(len(sizes)):
            for k in (f"lat{i}", f"swd{i}", f"dec{i}", f"save{i}"):
                del prompt[k]

        # Timings: the sampler node alone (models already loaded), SwD vs the stock KSampler at the final size.
        baseline = {k: v for k, v in prompt.items() if k not in (swd_id, save_id)}
        baseline["ks"] = {"class_type": "KSampler", "inputs": {
            "model": swd["model"], "positive": swd["positive"], "negative": swd["negative"],
            "latent_image": swd["latent_image"], "seed": swd["seed"], "steps": len(scales), "cfg": swd["cfg"],
            "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
        decode_id = by_class(prompt, "VAEDecode")
        baseline[decode_id] = {**prompt[decode_id], "inputs": {**prompt[decode_id]["inputs"], "samples": ["ks", 0]}}
        baseline["ks_save"] = {"class_type": "SaveImage", "inputs": {"images": [decode_id, 0],
                                                                      "filename_prefix": "demo/ksampler"}}
        seed = swd["seed"] + 1  # a new seed, so that only the sampler and what follows re-run
        timed = json.loads(json.dumps(prompt))
        timed[swd_id]["inputs"]["seed"] = seed
        durations, _, _ = runner.run(timed)
        swd_t = durations[swd_id]
        timed = json.loads(json.dumps(baseline))
        timed["ks"]["inputs"]["seed"] = seed
        durations, images, _ = runner.run(timed)
        ks_t = durations["ks"]
        shutil.copy(images["ks_save"], OUT / "ksampler_full_res.png")
        steps_px = " -> ".join(f"{w * 8}x{h * 8}" for h, w in sizes)
        rows = [("SwD (SwDKSampler)", f"{len(scales)}", steps_px, swd_t),
                ("stock KSampler (euler/simple)", f"{len(scales)}", f"{width}x{height} every step", ks_t)]
        (OUT / "timings.json").write_text(json.dumps({
            "models": {k: str(v) for k, v in real.items()},
            "device": "cpu" if cpu else "cuda", "preset": preset, "final_size": [width, height],
            "steps": len(scales), "step_sizes_px": [[w * 8, h * 8] for h, w in sizes],
            "runs": {"swd": [swd_t], "ksampler": [ks_t]},
            "median_s": {"swd": swd_t, "ksampler": ks_t}}, indent=1, ensure_ascii=False))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"Sampler wall time, models loaded ({'CPU' if cpu else 'GPU'}):")
    head = ("method", "steps", "sizes", "time")
    widths = [max(len(head[0]), *(len(r[0]) for r in rows)), 5, max(len(head[2]), *(len(r[2]) for r in rows)), 9]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for name, steps, px, t in rows:
        print("  " + "  ".join([name.ljust(widths[0]), steps.ljust(widths[1]), px.ljust(widths[2]), f"{t:7.3f} s"]))
    print(f"  SwD / KSampler time: {swd_t / ks_t:.2f}x ({ks_t / swd_t:.2f}x faster)")
    print()
    from PIL import Image, ImageChops
    with Image.open(OUT / "swd_final.png") as a, Image.open(list(previews.values())[-1]) as b:
        same = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None
    print(f"Outputs in {OUT}/:")
    for path in [OUT / "swd_final.png", *previews.values(), OUT / "ksampler_full_res.png", OUT / "timings.json",
                 OUT / "prompt_api.json"]:
        print(f"  {path}")
    print(f"  (the last scale {'is identical to' if same else 'DIFFERS from'} swd_final.png, as it should be)")
    print(f"make demo finished in {time.perf_counter() - started:.0f} s")


def grid(paths: list[Path], out: Path, columns: int = 4):
    from PIL import Image
    tiles = [Image.open(p).convert("RGB") for p in paths]
    w, h = tiles[0].size
    sheet = Image.new("RGB", (columns * w + (columns - 1) * 4, -(-len(tiles) // columns) * (h + 4) - 4), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * (w + 4), (k // columns) * (h + 4)))
    sheet.save(out)


def tiny_demo(started: float):
    """The shipped tiny family: grids of 16 captions (SwD student, teacher 28 and 2 steps), the student's picture
    after every scale, and the sampler timings."""
    from swd_distill.evaluate import prompt as tiny_prompt
    from swd_distill.evaluate import run_timed, sampler_nodes
    from swd_distill.scenes import make_dataset, scene_of
    from swd_sampler.tiny import TINY_PRESET

    banner(["The pack's TINY FAMILY: an SD3-architecture teacher (1.1 M parameters) trained on drawn scenes and its",
            "SwD student LoRA, both made by swd_distill/ (make retrain-tiny) and shipped in models/.",
            "Real SD3.5: SWD_CHECKPOINT=/path/sd3.5_medium.safetensors SWD_LORA=/path/swd-medium-6-steps.safetensors"],
           colour="36")
    captions = [scene_of(labels).caption for labels in make_dataset(TINY_CAPTIONS, 7)[1]]
    rows = [("SwD student (SwDKSampler)", "4 scale-wise", sampler_nodes("swd"), "tiny_swd_grid.png"),
            ("teacher (KSampler euler, cfg 3)", "28", sampler_nodes("ksampler", 28, 3.0), "tiny_teacher_28_grid.png"),
            ("teacher (KSampler euler, cfg 3)", "2", sampler_nodes("ksampler", 2, 3.0), "tiny_teacher_2_grid.png")]
    base = Path(tempfile.mkdtemp(prefix="swd-demo-"))
    server = ComfyServer(base)
    server.prepare()
    print("Starting ComfyUI (CPU) ...", flush=True)
    server.start(cpu=True)
    OUT.mkdir(exist_ok=True)
    for old in list(OUT.glob("*.png")) + [OUT / "timings.json", OUT / "tiny_captions.txt"]:
        old.unlink(missing_ok=True)
    (OUT / "tiny_captions.txt").write_text("\n".join(captions) + "\n")
    times = {}
    try:
        for name, steps, nodes, out in rows:
            run_timed(server, tiny_prompt(nodes, captions[:1], 999, "demo/warmup"))  # loads the models
            runs = []
            for r in range(TIMED_RUNS):
                paths, seconds = run_timed(server, tiny_prompt(nodes, captions, r, f"demo/{out[:-4]}"))
                runs.append(seconds)
                if r == 0:
                    grid(paths, OUT / out)
            times[f"{name}, {steps} steps"] = runs
        strip([OUT / r[3] for r in (rows[1], rows[2], rows[0])],
              ["teacher, 28 steps (cfg 3)", "teacher, 2 full-resolution steps (cfg 3)",
               "SwD student, 4 scale-wise steps (cfg 1)"], height=None, gap=16).save(OUT / "tiny_grids.png")
        # the student's x0 after each scale: a run cut after step i returns exactly step i's x0 (same noise draws)
        preset = PRESETS[TINY_PRESET]
        sizes = step_sizes(preset.scales, 16, 16, 2)
        scale_paths = []
        for i, (h, w) in enumerate(sizes):
            nodes = sampler_nodes("swd")
            nodes["sampler"]["inputs"].update(preset="custom", scales=", ".join(f"{s:g}" for s in preset.scales[:i + 1]),
                                              sigmas=", ".join(f"{s:g}" for s in (*preset.sigmas[:i + 1], 0.0)))
            p = tiny_prompt(nodes, captions[:1], 0, f"demo/scale_{i + 1}")
            p["latent"]["inputs"].update(width=w * 8, height=h * 8)
            paths, _ = run_timed(server, p)
            scale_paths.append(OUT / f"tiny_swd_scale_{i + 1}_{w * 8}x{h * 8}.png")
            shutil.copy(paths[0], scale_paths[-1])
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    (OUT / "timings.json").write_text(json.dumps({"models": "tiny family (models/)", "device": "cpu",
                                                  "captions": len(captions), "runs_s": times, "median_s": medians},
                                                 indent=1, ensure_ascii=False))
    print(f"\nSampler wall time for {len(captions)} captions (one batch), median of {TIMED_RUNS} runs, CPU:")
    swd = medians[next(iter(medians))]
    for name, t in medians.items():
        print(f"  {name:<48} {t:7.3f} s  ({1000 * t / len(captions):6.1f} ms/image, {t / swd:5.1f}x SwD's time)")
    print(f"\nOutputs in {OUT}/ (captions in grid order in tiny_captions.txt, first: {captions[0]!r}):")
    for path in [*(OUT / r[3] for r in rows), OUT / "tiny_grids.png", *scale_paths, OUT / "timings.json"]:
        print(f"  {path}")
    print(f"make demo finished in {time.perf_counter() - started:.0f} s")


def main():
    started = time.perf_counter()
    real = find_real_models()
    if real is None:
        tiny_demo(started)
    else:
        sd35_demo(real, started)


if __name__ == "__main__":
    main()
