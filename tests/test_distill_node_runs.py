"""SwD Distill LoRA runs against the command line and across faults, on the shipped tiny teacher (1.2M parameters,
128 px, fp32 on the CPU), a few steps each:
- the node and `python -m swd_distill distill` give the same LoRA (and the same checkpoint: adapters, GAN head,
  optimizer states, settings) for the same data, settings and seed;
- a run cancelled mid-way keeps its checkpoint in output/swd_distill/ and, resumed, ends bit-identical to a run that
  was never cancelled;
- out of memory is refused with advice (SwDError) and leaves the teacher as it was.
Faults ride on tests/comfy_test_nodes/distill_faults.py (a call of model_sampling.calculate_input, which the
distiller's x0 goes through)."""
import json
import os
import subprocess
import sys
import uuid

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from comfy_harness import REPO, PromptError, comfyui_path
from swd_sampler.tiny import TEACHER_FILE

PRESET = "Tiny demo · 4 steps"
CAPTIONS = ["red circle", "striped yellow square top left on black"]
CHECKPOINTS = "swd_distill"  # nodes/distill.py: output/swd_distill/<checkpoint_name>.ckpt.safetensors
# settings the node and the command line share, by the node's input name, and the command line's option of each
# (learning_rate is both --lr and --fake-lr: the node trains the student and the fake score at one rate)
SETTINGS = {"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "rank": 4, "cfg": 3.0, "fake_updates": 1,
            "patch_weight": 1.0, "patch_block": -1, "gan_weight": 5e-3, "warm_steps": 1, "seed": 7}
OPTIONS = {"steps": "--steps", "batch_size": "--batch", "rank": "--rank", "cfg": "--cfg",
           "fake_updates": "--fake-updates", "patch_weight": "--patch-weight", "patch_block": "--patch-block",
           "gan_weight": "--gan", "warm_steps": "--warm-steps", "seed": "--seed"}


def teacher_graph(save_to: str = "") -> dict:
    """The tiny teacher, its CLIP and its samples of CAPTIONS (2 each, 2 sampling steps, cfg 3)."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}},
        "tiny": {"class_type": "SwDTinyLoader", "inputs": {}},
        "ts": {"class_type": "SwDTeacherSamples", "inputs": {
            "model": ["unet", 0], "clip": ["tiny", 0], "prompts": "\n".join(CAPTIONS), "negative_prompt": "",
            "width": 128, "height": 128, "steps": 2, "cfg": 3.0, "guidance": 3.5, "sampler_name": "euler",
            "scheduler": "simple", "seed": 5, "images_per_prompt": 2, "save_to": save_to}}}


def distill(model: list, checkpoint_name: str, **overrides) -> dict:
    inputs = {"model": model, "latents": ["ts", 0], "positive": ["ts", 1], "negative": ["ts", 2], "preset": PRESET,
              "scales": "", "sigmas": "", "recipe": "full (DMD + patch + GAN)", "patch_kernel": "linear",
              **SETTINGS, "training_dtype": "fp32", "gradient_checkpointing": True, "start_lora": "[None]",
              "checkpoint_name": checkpoint_name, "resume": False, "checkpoint_every": 100, "preview_every": 2}
    inputs.update(overrides)
    return {"class_type": "SwDDistillLoRA", "inputs": inputs}


def save_lora(source: str, prefix: str) -> dict:
    return {"class_type": "SwDSaveLoRA", "inputs": {"lora": [source, 1], "preset": [source, 3],
                                                    "filename_prefix": prefix}}


def saved(result, node: str) -> dict:
    return load_file(result.outputs[node]["text"][0].removeprefix("saved "))


def read(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file."""
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def checkpoint(comfy, name: str) -> tuple[dict, dict]:
    """The node's checkpoint `name`: every trained tensor ("t.*"), the optimizer states ("o.*"); step and settings
    in the metadata."""
    return read(comfy.output_dir / CHECKPOINTS / f"{name}.ckpt.safetensors")


def live_models(comfy, tag: str) -> int:
    """The number of models alive in the server; the teacher graph stays in the prompt, so in ComfyUI's cache."""
    prompt = teacher_graph()
    prompt["live"] = {"class_type": "SwDTestLiveModels", "inputs": {"tag": tag, "keep": ["ts", 2]}}
    return int(comfy.run(prompt).outputs["live"]["text"][0])


def cached_nodes(comfy, result) -> set:
    """The nodes of a finished prompt that ComfyUI took from its cache instead of running."""
    messages = comfy.get(f"/history/{result.prompt_id}")[result.prompt_id]["status"]["messages"]
    return {n for kind, data in messages if kind == "execution_cached" for n in data["nodes"]}


def assert_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: keys differ: {sorted(a.keys() ^ b.keys())[:5]}"
    differing = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differing, f"{what}: {len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}: max |diff| " \
                          f"{max(float((a[k].double() - b[k].double()).abs().max()) for k in differing):.3g}"


def test_the_command_line_distils_the_same_lora_as_the_node(comfy, tmp_path):
    """The node's data, written by SwD Teacher Samples (save_to) and given to `python -m swd_distill distill
    --dataset` with the same settings, give the same LoRA bit for bit: both train in fp32 on the CPU, with the same
    seeded draws, the same negative (the dataset's negative.safetensors is the negative output the node gets) and the
    same defaults for what the node does not expose."""
    tag = uuid.uuid4().hex[:8]
    folder = f"swd_test/cli_{tag}"
    prompt = teacher_graph(save_to=folder)
    prompt["distill"] = distill(["unet", 0], f"cli_{tag}")
    prompt["save"] = save_lora("distill", f"swd_test/cli-{tag}")
    node = comfy.run(prompt, timeout=300)

    out, work = tmp_path / "cli.safetensors", tmp_path / "work"
    args = [sys.executable, "-m", "swd_distill", "distill", "--teacher",
            str(REPO / "models" / "diffusion_models" / TEACHER_FILE), "--dataset", str(comfy.output_dir / folder),
            "--preset", PRESET, "--recipe", "full", "--patch", "linear", "--lr", "1e-3", "--fake-lr", "1e-3",
            "--dtype", "fp32", "--checkpointing", "true", "--out", str(out), "--work", str(work)]
    for name, option in OPTIONS.items():
        args += [option, str(SETTINGS[name])]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COMFYUI_PATH": str(comfyui_path())})
    assert run.returncode == 0, run.stderr[-3000:]

    assert_identical(saved(node, "save"), load_file(str(out)), "the saved LoRAs (fp16)")
    # the fp32 state behind them: both runs' last checkpoints (adapters, GAN head, AdamW states, step, settings)
    tensors, meta = checkpoint(comfy, f"cli_{tag}")
    cli, cli_meta = read(work / out.stem / "student.ckpt.safetensors")  # run.py: --work/<--out's stem>/student
    assert_identical(tensors, cli, "the fp32 checkpoints")
    assert meta["step"] == cli_meta["step"] == str(SETTINGS["steps"])
    assert json.loads(meta["extra"]) == json.loads(cli_meta["extra"])  # one DistillConfig, field by field


def test_a_cancelled_run_keeps_its_checkpoint_and_resumes_bit_identically(comfy):
    """4 steps, a checkpoint every 2, a preview every 3. ComfyUI's interrupt flag (what Cancel sets) is set at a fixed
    model call: (a) inside step 4, where ComfyUI's layers raise it mid-step: that step is lost and the checkpoint of
    step 2 is kept; (b) inside the preview after step 3: the step is whole, so its checkpoint is written. Either prompt
    ends interrupted; queued again with resume, the run ends with the LoRA, GAN head and optimizer states of an
    uninterrupted 4-step run, torch.equal tensor by tensor."""
    tag = uuid.uuid4().hex[:8]
    steps, every = 4, 2
    settings = {"steps": steps, "checkpoint_every": every, "preview_every": 3}
    whole = teacher_graph()
    whole["distill"] = distill(["unet", 0], f"whole_{tag}", **settings)
    whole["save"] = save_lora("distill", f"swd_test/whole-{tag}")
    reference = saved(comfy.run(whole, timeout=300), "save")
    whole_state, whole_meta = checkpoint(comfy, f"whole_{tag}")
    assert whole_meta["step"] == str(steps)

    # model calls (model_sampling.calculate_input): 0 sizes the GAN head; step 1 (a warm step) 1; steps 2-4 ten each
    # (fake update 3, generator 7: student, teacher cond + uncond, fake, GAN, patch student + real) at 2-11, 12-21,
    # 26-35; the preview after step 3 four (22-25)
    for case, at_call, kept in (("mid-step", 30, 2), ("preview", 23, 3)):
        name = f"cancel_{case}_{tag}"
        prompt = teacher_graph()
        prompt["fault"] = {"class_type": "SwDTestModelSamplingFault", "inputs": {
            "model": ["unet", 0], "fault": "interrupt", "at_call": at_call, "tag": name}}
        prompt["distill"] = distill(["fault", 0], name, **settings)
        prompt["save"] = save_lora("distill", f"swd_test/{name}")
        with pytest.raises(PromptError) as e:
            comfy.run(prompt, timeout=300)
        assert e.value.message == "interrupted", case
        path = comfy.output_dir / CHECKPOINTS / f"{name}.ckpt.safetensors"
        assert path.is_file(), f"{case}: Cancel left no checkpoint at {path}"
        assert checkpoint(comfy, name)[1]["step"] == str(kept), case

        resumed = teacher_graph()
        resumed["distill"] = distill(["unet", 0], name, resume=True, **settings)
        resumed["save"] = save_lora("distill", f"swd_test/resumed-{name}")
        resumed["steps"] = {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 4]}}
        resumed["losses"] = {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 2]}}
        result = comfy.run(resumed, timeout=300)
        assert result.outputs["steps"]["text"] == [str(steps)]
        losses = eval(result.outputs["losses"]["text"][0], {"inf": float("inf"), "nan": float("nan")})
        assert len(losses["patch"]) == steps - kept, case  # the resumed prompt ran only the steps left
        assert_identical(saved(result, "save"), reference, f"{case}: the resumed and uninterrupted LoRAs")
        state, meta = checkpoint(comfy, name)
        assert meta["step"] == str(steps)
        assert_identical(state, whole_state, f"{case}: the resumed and uninterrupted checkpoints (fp32)")


def test_out_of_memory_is_refused_with_advice_and_leaves_the_teacher_as_it_was(comfy):
    """torch.OutOfMemoryError inside the distiller's forward (model call 3: the fake-score update of step 2, the first
    after the warm step) becomes an SwDError naming batch_size, gradient_checkpointing and training_dtype with advice;
    the training copy is freed at once, and the same teacher gives the same sample, the same weights and the same
    distillation as before it."""
    tag = uuid.uuid4().hex[:8]
    settings = {"steps": 2, "preview_every": 0}

    def normal(run: str) -> dict:
        prompt = teacher_graph()
        prompt["distill"] = distill(["unet", 0], f"oom_{tag}_{run}", **settings)
        prompt["save"] = save_lora("distill", f"swd_test/oom-{tag}-{run}")
        prompt["weights"] = {"class_type": "SwDTestDumpWeights", "inputs": {
            "model": ["unet", 0], "filename": f"oom_{tag}_{run}.safetensors"}}
        # zeros as EmptySD3LatentImage gives; the unused seed makes KSampler run again instead of coming from the cache
        prompt["lat"] = {"class_type": "SwDTestTensor", "inputs": {
            "shape": "1,16,16,16", "value": "0", "poke": "", "seed": len(run), "mask_shape": "", "mask_value": "1",
            "mask_poke": ""}}
        prompt["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["tiny", 0], "text": CAPTIONS[0]}}
        prompt["ks"] = {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["ts", 2], "latent_image": ["lat", 0],
            "seed": 11, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
        prompt["out"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0],
                                                                "filename_prefix": f"swd_test/oom-{tag}-{run}"}}
        return prompt

    before = comfy.run(normal("before"), timeout=300)
    alive = live_models(comfy, f"{tag}_before")
    oom = teacher_graph()
    oom["fault"] = {"class_type": "SwDTestModelSamplingFault", "inputs": {
        "model": ["unet", 0], "fault": "oom", "at_call": 3, "tag": tag}}
    oom["distill"] = distill(["fault", 0], f"oom_{tag}_fault", batch_size=2, **settings)
    oom["save"] = save_lora("distill", f"swd_test/oom-{tag}-fault")
    with pytest.raises(PromptError) as e:
        comfy.run(oom, timeout=300)
    message = e.value.message
    assert e.value.details.get("exception_type", "").endswith("DistillOutOfMemoryError"), e.value.details
    assert message.startswith("SwDDistillLoRA: SwD Distill LoRA: out of memory"), message
    for advice in ("batch_size 2, gradient_checkpointing on, training_dtype fp32", "lower batch_size",
                   "set training_dtype to bf16", "mmd recipe"):
        assert advice in message, message
    assert live_models(comfy, f"{tag}_oom") == alive  # the training copy is freed, not left to a later collection

    after = comfy.run(normal("after"), timeout=300)
    cached = cached_nodes(comfy, after)
    assert "unet" in cached and not {"ks", "weights", "distill"} & cached  # the same teacher object, used anew
    assert torch.equal(after.latent("out"), before.latent("out"))
    weights = [load_file(str(comfy.output_dir / f"oom_{tag}_{run}.safetensors")) for run in ("before", "after")]
    assert_identical(*weights, "the teacher's weights before and after the out-of-memory error")
    assert_identical(saved(after, "save"), saved(before, "save"), "the LoRAs distilled before and after")
