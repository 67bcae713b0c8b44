"""SwDKSampler, SwDSchedule and SwDSampler inside real ComfyUI, on tiny SD3, FLUX and SDXL-style models."""
import json

import pytest
import torch

from comfy_harness import PromptError
from graphs import cond_nodes, empty_latent, model_nodes, positive_ref, save_latent
from swd_sampler.schedule import CUSTOM, PRESETS, step_sizes


def swd_prompt(family="sd3", preset="SD3.5 Medium · 6 steps", seed=7, width=256, height=256, batch=1, cfg=1.0,
               call_log=None, scales="", sigmas="", tag="swd", extra_model=None):
    nodes, model = model_nodes(family, call_log)
    if extra_model:
        nodes.update(extra_model(model))
        model = ["shift", 0]
    return {
        **nodes, **cond_nodes(family),
        "latent": empty_latent(family, width, height, batch),
        "swd": {"class_type": "SwDKSampler", "inputs": {
            "model": model, "positive": positive_ref(family), "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "preset": preset, "scales": scales, "sigmas": sigmas, "cfg": cfg,
            "upscale_method": "bicubic"}},
        "save": save_latent(["swd", 0], tag),
    }


def read_calls(comfy, name):
    return [json.loads(line) for line in (comfy.output_dir / name).read_text().splitlines()]


@pytest.mark.parametrize("preset", [name for name, p in PRESETS.items() if p.family == "flow"])
def test_every_flow_preset_runs_on_sd3_at_final_size_with_one_call_per_scale(comfy, preset):
    log = f"calls_{list(PRESETS).index(preset)}.jsonl"
    latent = comfy.run(swd_prompt(preset=preset, call_log=log, width=256, height=192)).latent("save")
    assert tuple(latent.shape) == (1, 16, 24, 32)
    assert latent.isfinite().all()
    calls = read_calls(comfy, log)
    p = PRESETS[preset]
    sizes = step_sizes(p.scales, 24, 32, 2)
    assert [tuple(c["shape"][2:]) for c in calls] == sizes
    assert [c["sigma"] for c in calls] == pytest.approx(p.sigmas[:-1], abs=1e-6)
    assert all(c["passes"] == 1 for c in calls)  # cfg 1.0: no negative pass


def test_cfg_above_one_runs_the_negative_pass_every_step(comfy):
    comfy.run(swd_prompt(preset="SD3.5 Medium · 4 steps", cfg=2.0, call_log="calls_cfg2.jsonl", tag="cfg2"))
    calls = read_calls(comfy, "calls_cfg2.jsonl")
    assert sum(c["passes"] for c in calls) == 2 * 4
    assert sorted({tuple(c["shape"][2:]) for c in calls}) == step_sizes(PRESETS["SD3.5 Medium · 4 steps"].scales, 32, 32, 2)


def test_same_seed_is_identical_and_another_seed_differs(comfy):
    a = comfy.run(swd_prompt(seed=11, call_log="seed_a.jsonl", tag="seed_a")).latent("save")
    b = comfy.run(swd_prompt(seed=11, call_log="seed_b.jsonl", tag="seed_b")).latent("save")
    c = comfy.run(swd_prompt(seed=12, call_log="seed_c.jsonl", tag="seed_c")).latent("save")
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_batch_of_two_gives_two_different_images(comfy):
    latent = comfy.run(swd_prompt(batch=2, tag="batch2")).latent("save")
    assert tuple(latent.shape) == (2, 16, 32, 32)
    assert (latent[0] - latent[1]).abs().max() > 1e-3


def test_non_square_final_size(comfy):
    log = "calls_nonsquare.jsonl"
    latent = comfy.run(swd_prompt(width=160, height=96, call_log=log, tag="nonsq")).latent("save")
    assert tuple(latent.shape) == (1, 16, 12, 20)
    sizes = step_sizes(PRESETS["SD3.5 Medium · 6 steps"].scales, 12, 20, 2)
    assert [tuple(c["shape"][2:]) for c in read_calls(comfy, log)] == sizes


def test_previews_and_progress_fire_once_per_step(comfy):
    messages, previews = comfy.run_watching(swd_prompt(preset="SD3.5 Medium · 6 steps", seed=99, tag="watch"))
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "swd"]
    assert [(p["value"], p["max"]) for p in progress] == [(i, 6) for i in range(1, 7)]
    assert previews == 6


def test_interrupt_stops_the_run_and_the_next_prompt_runs(comfy):
    def interrupt_after_first_step(server, msg):
        if msg["type"] == "progress" and msg["data"]["value"] == 1:
            server.interrupt()

    messages, _ = comfy.run_watching(swd_prompt(seed=123, width=512, height=512, tag="interrupted"),
                                     on_message=interrupt_after_first_step)
    assert messages[-1]["type"] == "execution_interrupted"
    assert max(m["data"]["value"] for m in messages if m["type"] == "progress") < 6
    latent = comfy.run(swd_prompt(seed=124, tag="after_interrupt")).latent("save")
    assert tuple(latent.shape) == (1, 16, 32, 32)


def custom_sampler_prompt(family="sd3", preset="SD3.5 Medium · 6 steps", seed=7, width=256, height=256):
    nodes, model = model_nodes(family)
    return {
        **nodes, **cond_nodes(family),
        "latent": empty_latent(family, width, height),
        "sched": {"class_type": "SwDSchedule", "inputs": {"model": model, "preset": preset, "scales": "", "sigmas": ""}},
        "sampler": {"class_type": "SwDSampler", "inputs": {"scales": ["sched", 1], "upscale_method": "bicubic"}},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": model, "conditioning": positive_ref(family)}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "sca": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                "sampler": ["sampler", 0], "sigmas": ["sched", 0], "latent_image": ["latent", 0]}},
        "save": save_latent(["sca", 0], "custom"),
        "save_denoised": save_latent(["sca", 1], "custom_denoised"),
    }


@pytest.mark.parametrize("family, preset", [("sd3", "SD3.5 Medium · 6 steps"), ("sdxl", "SDXL · 4 steps")])
def test_sampler_custom_advanced_equals_swd_ksampler(comfy, family, preset):
    result = comfy.run(custom_sampler_prompt(family, preset, seed=21, width=160, height=96))
    ref = comfy.run(swd_prompt(family, preset, seed=21, width=160, height=96, tag=f"ref_{family}")).latent("save")
    assert torch.equal(result.latent("save"), ref)
    assert torch.equal(result.latent("save_denoised"), ref)


def test_flux_model_runs_the_flux_preset(comfy):
    log = "calls_flux.jsonl"
    latent = comfy.run(swd_prompt("flux", "FLUX.1-dev · 4 steps", call_log=log, tag="flux")).latent("save")
    assert tuple(latent.shape) == (1, 16, 32, 32) and latent.isfinite().all()
    calls = read_calls(comfy, log)
    assert [tuple(c["shape"][2:]) for c in calls] == [(16, 16), (20, 20), (24, 24), (32, 32)]
    assert [c["sigma"] for c in calls] == pytest.approx([1.0, 0.8956, 0.7363, 0.6007], abs=1e-6)


def test_eps_model_runs_the_sdxl_preset_at_ddpm_timesteps(comfy):
    log = "calls_sdxl.jsonl"
    latent = comfy.run(swd_prompt("sdxl", "SDXL · 4 steps", call_log=log, tag="sdxl")).latent("save")
    assert tuple(latent.shape) == (1, 4, 32, 32) and latent.isfinite().all()
    calls = read_calls(comfy, log)
    assert [tuple(c["shape"][2:]) for c in calls] == [(16, 16), (20, 20), (24, 24), (32, 32)]
    # SDXL's DDPM schedule (scaled linear betas 0.00085 .. 0.012): sigma_t = sqrt((1 - abar_t) / abar_t)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    ddpm_sigma = ((1 - abar) / abar) ** 0.5
    assert [c["sigma"] for c in calls] == pytest.approx([float(ddpm_sigma[t]) for t in (999, 800, 600, 400)], rel=1e-4)


def test_sdxl_size_conditioning_describes_the_final_size_at_every_scale(comfy):
    comfy.run(swd_prompt("sdxl", "SDXL · 4 steps", width=256, height=192, call_log="y_swd.jsonl", tag="y_swd"))
    swd_y = [c["y_size"] for c in read_calls(comfy, "y_swd.jsonl")]

    def stock_y(width, height, name):
        nodes, model = model_nodes("sdxl", name)
        comfy.run({**nodes, **cond_nodes("sdxl"), "latent": empty_latent("sdxl", width, height),
                   "ks": {"class_type": "KSampler", "inputs": {
                       "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
                       "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                       "denoise": 1.0}},
                   "save": save_latent(["ks", 0], name)})
        return read_calls(comfy, name)[0]["y_size"]

    assert len(swd_y) == 4 and all(y == stock_y(256, 192, "y_final.jsonl") for y in swd_y)
    assert swd_y[0] != stock_y(128, 96, "y_first_scale.jsonl")


@pytest.mark.parametrize("shift_node, family", [("ModelSamplingSD3", "sd3"), ("ModelSamplingFlux", "flux")])
def test_timestep_shift_nodes_do_not_change_the_result(comfy, shift_node, family):
    preset = "FLUX.1-dev · 4 steps" if family == "flux" else "SD3.5 Medium · 4 steps"
    inputs = {"shift": 6.0} if family == "sd3" else {"max_shift": 2.0, "base_shift": 0.8, "width": 256, "height": 256}

    def shift(model):
        return {"shift": {"class_type": shift_node, "inputs": {"model": model, **inputs}}}

    plain = comfy.run(swd_prompt(family, preset, seed=5, tag=f"plain_{family}")).latent("save")
    shifted = comfy.run(swd_prompt(family, preset, seed=5, tag=f"shift_{family}", extra_model=shift)).latent("save")
    assert torch.equal(plain, shifted)


@pytest.mark.parametrize("scales, sigmas, name", [
    ("64, 80, 96, 128", "1.0, 0.8, 0.0", "scales and sigmas do not match"),
    ("64, 96, 80, 128", "1.0, 0.9, 0.8, 0.6, 0.0", "scales must never decrease"),
    ("64, 128", "1.5, 0.5, 0.0", "sigmas must lie in [0, 1]"),
    ("64, 128", "0.5, 0.9, 0.0", "sigmas must strictly decrease"),
    ("64, big", "1.0, 0.5, 0.0", "scales: 'big' is not a number"),
    ("64, 128", "", "sigmas is empty"),
])
@pytest.mark.parametrize("node", ["SwDKSampler", "SwDSchedule"])
def test_malformed_custom_schedules_are_refused_naming_the_input(comfy, scales, sigmas, name, node):
    if node == "SwDKSampler":
        prompt = swd_prompt(preset=CUSTOM, scales=scales, sigmas=sigmas, tag="bad")
    else:
        prompt = custom_sampler_prompt()
        prompt["sched"]["inputs"].update(preset=CUSTOM, scales=scales, sigmas=sigmas)
    with pytest.raises(PromptError) as e:
        comfy.run(prompt)
    assert name in e.value.message


def test_custom_schedule_runs_and_equals_the_preset_it_spells(comfy):
    spelled = comfy.run(swd_prompt(preset=CUSTOM, scales="0.5 0.625 0.75 1", sigmas="1.0, 0.8959, 0.7371, 0.6022",
                                   seed=3, tag="spelled")).latent("save")
    preset = comfy.run(swd_prompt(preset="SD3.5 Medium · 4 steps", seed=3, tag="preset4")).latent("save")
    assert torch.equal(spelled, preset)


def test_sigmas_above_the_model_range_are_refused_by_swd_sampler(comfy):
    prompt = custom_sampler_prompt()
    prompt["manual"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": "1.5, 1.2, 0.9, 0.8, 0.7, 0.6, 0.0"}}
    prompt["sca"]["inputs"]["sigmas"] = ["manual", 0]
    with pytest.raises(PromptError, match="above this model's largest sigma"):
        comfy.run(prompt)
