"""img2img, hires and inpainting with SwDKSampler / SwDSchedule + SwDSampler in real ComfyUI, model calls logged."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from comfy_harness import PromptError
from test_swd_sampler import custom_sampler_prompt, read_calls, swd_prompt

SD3_SCALE, SD3_SHIFT = 1.5305, 0.0609  # comfy.latent_formats.SD3: process_in(x) = (x - shift) * scale


def random_latent(width, height, seed=4, batch=1):
    return {"class_type": "SwDTestRandomLatent",
            "inputs": {"width": width, "height": height, "batch_size": batch, "channels": 16, "seed": seed}}


def img2img_prompt(denoise, width=1024, height=1024, call_log=None, tag="i2i", seed=7, latent=None, **kwargs):
    """SwDKSampler on a random "encoded image" of width x height px; the input is saved too, as "save_in"."""
    prompt = swd_prompt(call_log=call_log, tag=tag, seed=seed, **kwargs)
    prompt["latent"] = latent or random_latent(width, height)
    prompt["swd"]["inputs"]["denoise"] = denoise
    prompt["save_in"] = {"class_type": "SaveLatent", "inputs": {"samples": ["latent", 0], "filename_prefix": f"{tag}_in"}}
    return prompt


def shapes_and_sigmas(comfy, log):
    calls = read_calls(comfy, log)
    return [tuple(c["shape"][2:]) for c in calls], [c["sigma"] for c in calls]


def test_denoise_one_ignores_the_input_latent_bit_for_bit(comfy):
    empty = comfy.run(swd_prompt(width=256, height=256, seed=9, call_log="d1_empty.jsonl", tag="d1_empty"))
    random = comfy.run(img2img_prompt(1.0, 256, 256, seed=9, call_log="d1_random.jsonl", tag="d1_random"))
    assert torch.equal(empty.latent("save"), random.latent("save"))
    sizes, sigmas = shapes_and_sigmas(comfy, "d1_random.jsonl")
    assert sizes == [(8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32)]
    assert sigmas == pytest.approx([1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022], abs=1e-6)


def test_denoise_0_75_runs_the_last_two_steps_from_the_renoised_input(comfy):
    prompt = img2img_prompt(0.75, tag="d075", seed=31)
    prompt["capture"] = {"class_type": "SwDTestCaptureCalls", "inputs": {"model": ["model", 0], "prefix": "d075"}}
    prompt["swd"]["inputs"]["model"] = ["capture", 0]
    result = comfy.run(prompt)
    first = load_file(str(comfy.output_dir / "d075_0.safetensors"))
    assert not (comfy.output_dir / "d075_2.safetensors").exists()  # exactly two model calls
    assert (comfy.output_dir / "d075_1.safetensors").exists()
    assert first["sigma"].flatten().tolist() == pytest.approx([0.7371], abs=1e-6)
    assert load_file(str(comfy.output_dir / "d075_1.safetensors"))["sigma"].flatten().tolist() == pytest.approx(
        [0.6022], abs=1e-6)
    latent = result.latent("save_in")
    eps = torch.randn((1, 16, 96, 96), generator=torch.Generator("cpu").manual_seed(31))
    shrunk = F.interpolate((latent - SD3_SHIFT) * SD3_SCALE, size=(96, 96), mode="bicubic", antialias=True,
                           align_corners=False)
    expected = (1 - 0.7371) * shrunk + 0.7371 * eps
    assert tuple(first["x"].shape) == (1, 16, 96, 96)
    assert (first["x"] - expected).abs().max().item() <= 1e-4
    assert tuple(result.latent("save").shape) == (1, 16, 128, 128)
    assert result.outputs["swd"]["text"] == [
        "SwD ran 2 of 6 steps (denoise 0.75): 768x768 px at sigma 0.7371, 1024x1024 px at sigma 0.6022."]


def test_denoise_below_every_step_runs_one_step_at_the_final_size_at_sigma_denoise(comfy):
    result = comfy.run(img2img_prompt(0.4, call_log="d04.jsonl", tag="d04"))
    sizes, sigmas = shapes_and_sigmas(comfy, "d04.jsonl")
    assert sizes == [(128, 128)] and sigmas == pytest.approx([0.4], abs=1e-6)
    assert result.outputs["swd"]["text"] == ["SwD ran 1 of 6 steps (denoise 0.4): 1024x1024 px at sigma 0.4."]


def test_hires_latent_upscale_by_two_then_denoise_0_75_runs_at_96_and_128(comfy):
    prompt = img2img_prompt(0.75, 512, 512, call_log="hires.jsonl", tag="hires")
    prompt["draft"] = prompt.pop("latent")
    prompt["latent"] = {"class_type": "LatentUpscaleBy",
                        "inputs": {"samples": ["draft", 0], "upscale_method": "bicubic", "scale_by": 2.0}}
    result = comfy.run(prompt)
    assert tuple(result.latent("save").shape) == (1, 16, 128, 128)
    sizes, sigmas = shapes_and_sigmas(comfy, "hires.jsonl")
    assert sizes == [(96, 96), (128, 128)] and sigmas == pytest.approx([0.7371, 0.6022], abs=1e-6)


def left_half_mask(prompt, width, height):
    """A noise mask of 1 (generate) on the left half of a width x height px image, through SetLatentNoiseMask."""
    prompt["mask_bg"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}}
    prompt["mask_left"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width // 2, "height": height}}
    prompt["mask"] = {"class_type": "MaskComposite", "inputs": {"destination": ["mask_bg", 0], "source": ["mask_left", 0],
                                                                "x": 0, "y": 0, "operation": "add"}}
    prompt["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["latent", 0], "mask": ["mask", 0]}}
    prompt["swd"]["inputs"]["latent_image"] = ["masked", 0]
    return prompt


@pytest.mark.parametrize("denoise", [1.0, 0.75])
def test_inpainting_the_left_half_keeps_the_right_half_of_the_input(comfy, denoise):
    tag = f"inpaint_{denoise:g}"
    result = comfy.run(left_half_mask(img2img_prompt(denoise, 512, 512, call_log=f"{tag}.jsonl", tag=tag), 512, 512))
    out, latent = result.latent("save"), result.latent("save_in")
    assert out.shape == latent.shape == (1, 16, 64, 64)
    assert (out[..., 32:] - latent[..., 32:]).abs().max().item() <= 1e-4
    assert (out[..., :32] - latent[..., :32]).abs().mean().item() > 0.1
    sizes, _ = shapes_and_sigmas(comfy, f"{tag}.jsonl")
    assert sizes == ([(16, 16), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)] if denoise == 1.0
                     else [(48, 48), (64, 64)])


def test_a_mask_batch_other_than_one_or_the_latents_is_refused_naming_both(comfy):
    prompt = left_half_mask(img2img_prompt(0.75, 256, 256, tag="maskbatch", latent=random_latent(256, 256, batch=3)),
                            256, 256)
    prompt["mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}}
    prompt["mask_images"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["mask_image", 0], "amount": 2}}
    prompt["mask_pair"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_images", 0], "channel": "red"}}
    prompt["masked"]["inputs"]["mask"] = ["mask_pair", 0]
    with pytest.raises(PromptError, match="batch of 2 masks but the latent a batch of 3"):
        comfy.run(prompt)


def test_one_mask_is_broadcast_over_the_batch(comfy):
    result = comfy.run(left_half_mask(img2img_prompt(0.75, 256, 256, tag="mask_bcast",
                                                     latent=random_latent(256, 256, batch=2)), 256, 256))
    out, latent = result.latent("save"), result.latent("save_in")
    assert out.shape == (2, 16, 32, 32)
    assert (out[..., 16:] - latent[..., 16:]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family, preset", [("sd3", "SD3.5 Medium · 6 steps"), ("sdxl", "SDXL · 4 steps")])
def test_sampler_custom_advanced_with_swd_schedule_denoise_equals_swd_ksampler(comfy, family, preset):
    latent = random_latent(256, 256, seed=8)
    latent["inputs"]["channels"] = 4 if family == "sdxl" else 16
    custom = custom_sampler_prompt(family, preset, seed=21)
    custom["latent"] = latent
    custom["sched"]["inputs"]["denoise"] = 0.75
    ref = swd_prompt(family, preset, seed=21, tag=f"i2i_ref_{family}")
    ref["latent"] = latent
    ref["swd"]["inputs"]["denoise"] = 0.75
    result, expected = comfy.run(custom).latent("save"), comfy.run(ref).latent("save")
    assert (result - expected).abs().max().item() <= 1e-5


def test_denoise_zero_returns_the_input_unchanged(comfy):
    result = comfy.run(img2img_prompt(0.0, 256, 256, tag="d0"))
    assert torch.equal(result.latent("save"), result.latent("save_in"))
    assert result.outputs["swd"]["text"] == ["SwD ran 0 of 6 steps (denoise 0): none, the latent is returned unchanged."]


def test_the_node_text_shows_the_denoise_that_selected_the_steps(comfy):
    """0.9999999 is below 1: img2img from the input, without the step at sigma 1; the text must not say "1"."""
    result = comfy.run(img2img_prompt(0.9999999, 256, 256, tag="d09999999"))
    assert result.outputs["swd"]["text"] == [
        "SwD ran 5 of 6 steps (denoise 0.9999999): 96x96 px at sigma 0.9454, 128x128 px at sigma 0.8959, "
        "160x160 px at sigma 0.7904, 192x192 px at sigma 0.7371, 256x256 px at sigma 0.6022."]


def test_a_mask_a_float_rounding_above_1_is_accepted(comfy):
    prompt = img2img_prompt(0.75, 256, 256, tag="mask_round")
    prompt["latent"] = {"class_type": "SwDTestTensor", "inputs": {
        "shape": "1,16,32,32", "value": "randn", "poke": "", "seed": 4, "mask_shape": "1,32,32",
        "mask_value": "1.00000012", "mask_poke": ""}}
    result = comfy.run(prompt)
    assert result.latent("save").isfinite().all()
