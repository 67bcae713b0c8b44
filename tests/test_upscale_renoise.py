"""SwDLatentUpscaleRenoise inside real ComfyUI: stock one-step samplers chained with it compute SwD."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from comfy_harness import PromptError
from graphs import cond_nodes, empty_latent, model_nodes, positive_ref, save_latent
from swd_sampler.resize import UPSCALE_METHODS
from swd_sampler.schedule import PRESETS, step_sizes

NODE = "SwDLatentUpscaleRenoise"
FINAL = (12, 16)  # latent (h, w) of a 96x128 px image
# comfy/latent_formats.py: model space = (latent - shift) * scale
LATENT_FORMAT = {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159), "sdxl": (0.13025, 0.0)}
CHANNELS = {"sd3": 16, "flux": 16, "sdxl": 4}
PATCH = {"sd3": 2, "flux": 2, "sdxl": 1}
TORCH_MODES = {"bicubic": {"mode": "bicubic", "align_corners": False},
               "bilinear": {"mode": "bilinear", "align_corners": False},
               "area": {"mode": "area"},
               "nearest-exact": {"mode": "nearest-exact"},
               "bicubic-antialiased": {"mode": "bicubic", "align_corners": False, "antialias": True},
               "bilinear-antialiased": {"mode": "bilinear", "align_corners": False, "antialias": True}}


def to_model(family, latent):
    scale, shift = LATENT_FORMAT[family]
    return (latent - shift) * scale


def documented_eps(seed, shape):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def bicubic(x, size):
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def max_diff(a, b):
    return (a - b).abs().max().item()


def ddpm_sigma(t: int) -> float:
    """sigma(t) of SD's linear DDPM schedule (ComfyUI's ModelSamplingDiscrete) at an integer t."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return float(((1 - alphas_cumprod[t]) / alphas_cumprod[t]) ** 0.5)


def renoise_node(samples, sigma=0.0, seed=0, width=0, height=0, scale_factor=0.0, match=None, model=("model", 0),
                 method="bicubic"):
    inputs = {"model": list(model), "samples": samples, "width": width, "height": height,
              "scale_factor": scale_factor, "sigma": sigma, "seed": seed, "upscale_method": method}
    if match is not None:
        inputs["match_latent"] = match
    return {"class_type": NODE, "inputs": inputs}


def chain_prompt(family, tag, sigmas, sizes, seeds, target):
    """Stage i: SamplerCustomAdvanced from sigma_i to 0 (stage 0 with RandomNoise on an empty latent, the others
    with DisableNoise on SwDLatentUpscaleRenoise's output), saving its denoised_output as x0_i."""
    nodes, model = model_nodes(family)
    prompt = {
        **nodes, **cond_nodes(family),
        "capture": {"class_type": "SwDTestCaptureCalls", "inputs": {"model": model, "prefix": tag}},
        "guider": {"class_type": "BasicGuider",
                   "inputs": {"model": ["capture", 0], "conditioning": positive_ref(family)}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seeds[0]}},
        "off": {"class_type": "DisableNoise", "inputs": {}},
        "start": empty_latent(family, sizes[0][1] * 8, sizes[0][0] * 8),
    }
    latent = ["start", 0]
    for i, (h, w) in enumerate(sizes):
        if i:
            size = {"width": w * 8, "height": h * 8}
            if target == "match":
                prompt[f"size{i}"] = empty_latent(family, w * 8, h * 8)
                size = {"match": [f"size{i}", 0]}
            prompt[f"up{i}"] = renoise_node([f"sca{i - 1}", 1], sigmas[i], seeds[i], model=model, **size)
            prompt[f"save_up{i}"] = save_latent([f"up{i}", 0], f"{tag}_up{i}")
            latent = [f"up{i}", 0]
        prompt[f"sigmas{i}"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": f"{sigmas[i]!r}, 0"}}
        prompt[f"sca{i}"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise" if i == 0 else "off", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
            "sigmas": [f"sigmas{i}", 0], "latent_image": latent}}
        prompt[f"save_x0{i}"] = save_latent([f"sca{i}", 1], f"{tag}_x0{i}")
    return prompt


CHAINS = {
    "sd3-6-steps-pixels": ("sd3", "SD3.5 Medium · 6 steps", "pixels"),
    "sd3-4-steps-match": ("sd3", "SD3.5 Medium · 4 steps", "match"),
    "flux-4-steps-pixels": ("flux", "FLUX.1-dev · 4 steps", "pixels"),
    "sdxl-4-steps-pixels": ("sdxl", "SDXL · 4 steps", "pixels"),
}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_chain_of_stock_one_step_samplers_computes_the_swd_recurrence(comfy, chain):
    family, preset_name, target = CHAINS[chain]
    preset = PRESETS[preset_name]
    flow = preset.family == "flow"
    sigmas = list(preset.sigmas[:-1]) if flow else [ddpm_sigma(min(round(s * 1000), 999)) for s in preset.sigmas[:-1]]
    sizes = step_sizes(preset.scales, *FINAL, PATCH[family])
    seeds = [101 + 7 * i for i in range(len(sizes))]

    def shape(size):
        return (1, CHANNELS[family], *size)

    result = comfy.run(chain_prompt(family, f"chain_{chain}", sigmas, sizes, seeds, target))
    calls = [load_file(str(comfy.output_dir / f"chain_{chain}_{i}.safetensors")) for i in range(len(sizes))]
    assert not (comfy.output_dir / f"chain_{chain}_{len(sizes)}.safetensors").exists(), "one model call per stage"

    # Stage 0 is the stock sampler's own start: flow x = eps; eps models at sigma_max: sqrt(1 + sigma^2) * eps.
    x = documented_eps(seeds[0], shape(sizes[0])) * (1.0 if flow else (1 + sigmas[0] ** 2) ** 0.5)
    input_deltas, node_deltas = [], []
    for i, size in enumerate(sizes):
        assert tuple(calls[i]["x"].shape) == shape(size)
        assert calls[i]["sigma"].flatten()[0].item() == pytest.approx(sigmas[i], rel=1e-6)
        input_deltas.append(max_diff(calls[i]["x"], x) / max(1.0, sigmas[i]))
        x0 = calls[i]["x0"]
        if i + 1 < len(sizes):
            s, eps = sigmas[i + 1], documented_eps(seeds[i + 1], shape(sizes[i + 1]))
            x = (1 - s) * bicubic(x0, sizes[i + 1]) + s * eps if flow else bicubic(x0, sizes[i + 1]) + s * eps
            # What the node hands over (ComfyUI latent space): the sampler multiplies it by (1 - s) (flow).
            handed = to_model(family, result.latent(f"save_up{i + 1}"))
            node_deltas.append(max_diff(handed, x / (1 - s) if flow else x) / max(1.0, s))
    final = to_model(family, result.latent(f"save_x0{len(sizes) - 1}"))
    final_delta = max_diff(final, calls[-1]["x0"])
    print(f"\n{chain}: model-input max abs diff per stage {['%.1e' % d for d in input_deltas]}, node output "
          f"{['%.1e' % d for d in node_deltas]}, final {final_delta:.1e}")
    assert max(input_deltas) <= 1e-4
    assert max(node_deltas) <= 1e-4
    assert final_delta <= 1e-4
    assert tuple(final.shape) == shape(FINAL)


def test_ksampler_advanced_with_add_noise_disabled_starts_from_the_renoised_latent(comfy):
    def prompt(tag, latent_nodes, latent, start_at_step):
        nodes, model = model_nodes("sd3")
        return {**nodes, **cond_nodes("sd3"), **latent_nodes,
                "capture": {"class_type": "SwDTestCaptureCalls", "inputs": {"model": model, "prefix": tag}},
                "ks": {"class_type": "KSamplerAdvanced", "inputs": {
                    "model": ["capture", 0], "add_noise": "disable", "noise_seed": 0, "steps": 4, "cfg": 1.0,
                    "sampler_name": "euler", "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
                    "latent_image": latent, "start_at_step": start_at_step, "end_at_step": 10000,
                    "return_with_leftover_noise": "disable"}},
                "save": save_latent(["ks", 0], tag)}

    comfy.run(prompt("ksa_sigmas", {"empty": empty_latent("sd3", 64, 48)}, ["empty", 0], 0))
    sigma = load_file(str(comfy.output_dir / "ksa_sigmas_2.safetensors"))["sigma"].flatten()[0].item()
    latent_nodes = {"empty": empty_latent("sd3", 64, 48),
                    "noisy": renoise_node(["empty", 0], sigma=0.5, seed=3, scale_factor=1.0),
                    "up": renoise_node(["noisy", 0], sigma=sigma, seed=5, width=96, height=64),
                    "save_in": save_latent(["noisy", 0], "ksa_in")}
    result = comfy.run(prompt("ksa", latent_nodes, ["up", 0], 2))
    first = load_file(str(comfy.output_dir / "ksa_0.safetensors"))
    x0 = to_model("sd3", result.latent("save_in"))
    ref = (1 - sigma) * bicubic(x0, (8, 12)) + sigma * documented_eps(5, (1, 16, 8, 12))
    assert first["sigma"].flatten()[0].item() == sigma
    assert max_diff(first["x"], ref) <= 1e-4


def noise_latent_prompt(tag, node_inputs, family="sd3", width=64, height=48):
    """An empty latent re-noised to 0.5 (a non-trivial latent), then the node under test with `node_inputs`."""
    nodes, _ = model_nodes(family)
    return {**nodes,
            "empty": empty_latent(family, width, height),
            "noisy": renoise_node(["empty", 0], sigma=0.5, seed=3, scale_factor=1.0),
            "node": renoise_node(["noisy", 0], **node_inputs),
            "save_in": save_latent(["noisy", 0], f"{tag}_in"),
            "save": save_latent(["node", 0], tag)}


@pytest.mark.parametrize("method", UPSCALE_METHODS)
def test_sigma_zero_returns_the_resized_latent(comfy, method):
    result = comfy.run(noise_latent_prompt(f"sigma0_{method}", {"width": 96, "height": 80, "method": method}))
    x, out = result.latent("save_in"), result.latent("save")
    ref = F.interpolate(x, size=(10, 12), **TORCH_MODES[method])
    assert tuple(out.shape) == (1, 16, 10, 12)
    assert max_diff(out, ref) <= 1e-5


def test_flow_output_is_pre_divided_by_one_minus_sigma_in_model_space(comfy):
    result = comfy.run(noise_latent_prompt("flow_convention", {"sigma": 0.6022, "seed": 77, "scale_factor": 1.5}))
    x0 = to_model("sd3", result.latent("save_in"))
    out = to_model("sd3", result.latent("save"))
    ref = bicubic(x0, (10, 12)) + 0.6022 / (1 - 0.6022) * documented_eps(77, (1, 16, 10, 12))
    assert max_diff(out, ref) <= 1e-5 * ref.abs().max().item()


@pytest.mark.parametrize("inputs, size", [
    ({"width": 128, "height": 96}, (12, 16)),
    ({"scale_factor": 1.5}, (10, 12)),    # 6x8 -> 9x12 -> nearest even: 10x12
    ({"match": ["other", 0]}, (4, 14)),
])
def test_each_kind_of_target_sets_the_size(comfy, inputs, size):
    prompt = noise_latent_prompt(f"size_{'_'.join(inputs)}", inputs)
    prompt["other"] = empty_latent("sd3", 112, 32)
    assert tuple(comfy.run(prompt).latent("save").shape) == (1, 16, *size)


def test_noise_mask_is_carried_to_the_next_sampler(comfy):
    nodes, model = model_nodes("sd3")
    prompt = {**nodes, **cond_nodes("sd3"),
              "empty": empty_latent("sd3", 64, 48),
              "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 48}},
              "masked": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["empty", 0], "mask": ["mask", 0]}},
              "node": renoise_node(["masked", 0], sigma=0.7, seed=1, width=96, height=64),
              "guider": {"class_type": "BasicGuider", "inputs": {"model": model, "conditioning": ["pos", 0]}},
              "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "off": {"class_type": "DisableNoise", "inputs": {}},
              "sigmas": {"class_type": "ManualSigmas", "inputs": {"sigmas": "0.7, 0"}},
              "sca": {"class_type": "SamplerCustomAdvanced", "inputs": {
                  "noise": ["off", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
                  "latent_image": ["node", 0]}},
              "save": save_latent(["sca", 0], "masked")}
    out = comfy.run(prompt).latent("save")
    assert tuple(out.shape) == (1, 16, 8, 12) and out.isfinite().all()


@pytest.mark.parametrize("inputs, words", [
    ({}, "no target size"),
    ({"width": 64, "height": 64, "scale_factor": 2.0}, "conflicting target sizes: width/height and scale_factor"),
    ({"match": ["empty", 0], "scale_factor": 2.0}, "conflicting target sizes: match_latent and scale_factor"),
    ({"width": 64, "height": 0}, "width and height must both be positive"),
    ({"scale_factor": 0.05}, "shrinks the 6x8 latent to 0x0"),
    ({"width": 72, "height": 64}, "multiples of 16 pixels"),
    ({"match": ["odd", 0]}, "not a multiple of the model's patch size 2"),
    ({"scale_factor": 1.0, "sigma": 1.0}, "empty latent"),
    ({"scale_factor": 1.0, "sigma": 1.5}, r"sigma must be in [0, 1)"),
    ({"width": -64, "height": 64}, "smaller than min of 0"),
    ({"scale_factor": 1.0, "sigma": -0.5}, "smaller than min of 0"),
])
def test_bad_inputs_give_one_clear_error(comfy, inputs, words):
    prompt = noise_latent_prompt("bad", inputs)
    del prompt["save_in"]  # with another valid output, ComfyUI runs that one and only reports the invalid node
    prompt["odd"] = empty_latent("sd3", 72, 48)
    with pytest.raises(PromptError) as e:
        comfy.run(prompt)
    assert words in e.value.message


def test_eps_sigma_above_the_models_range_is_refused(comfy):
    prompt = noise_latent_prompt("bad_eps", {"scale_factor": 1.0, "sigma": 20.0}, family="sdxl")
    with pytest.raises(PromptError) as e:
        comfy.run(prompt)
    assert "sigma must be in [0, 14.61" in e.value.message and "this model's sigma range" in e.value.message


def test_node_schema_has_tooltips_category_and_methods(comfy):
    info = comfy.object_info(NODE)[NODE]
    assert info["display_name"] == "SwD Latent Upscale + Re-noise"
    assert info["category"] == "sampling/swd" and info["description"]
    inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
    assert set(inputs) == {"model", "samples", "width", "height", "scale_factor", "sigma", "seed", "upscale_method",
                           "match_latent"}
    assert "match_latent" in info["input"]["optional"]
    assert all(spec[1].get("tooltip") for spec in inputs.values())
    assert inputs["upscale_method"][1]["default"] == "bicubic"
    assert list(inputs["upscale_method"][0] if isinstance(inputs["upscale_method"][0], list)
                else inputs["upscale_method"][1]["options"]) == UPSCALE_METHODS
