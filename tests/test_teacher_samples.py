"""SwD Teacher Samples in real ComfyUI: its latents are KSampler's for the same prompt and seed, its conditioning is
CLIP Text Encode's (FLUX: with FluxGuidance's guidance), save_to writes a dataset load_dataset reads back, and bad
inputs are refused naming the input."""
import json
import uuid

import pytest
import torch
from safetensors.torch import load_file

from comfy_harness import REPO, PromptError
from graphs import model_nodes
from swd_distill.samples import load_dataset
from swd_sampler.tiny import TEACHER_FILE

PROMPTS = ["red circle", "striped yellow square top left on black"]


def _samples(model, clip, **inputs) -> dict:
    return {"class_type": "SwDTeacherSamples", "inputs": {
        "model": model, "clip": clip, "prompts": "\n".join(PROMPTS), "negative_prompt": "", "width": 128,
        "height": 128, "steps": 2, "cfg": 3.0, "guidance": 3.5, "sampler_name": "euler", "scheduler": "simple",
        "seed": 5, "images_per_prompt": 2, "save_to": "", **inputs}}


def _tiny(**inputs) -> dict:
    return {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}},
            "tiny": {"class_type": "SwDTinyLoader", "inputs": {}},
            "ts": _samples(["unet", 0], ["tiny", 0], **inputs)}


def _ksampler(prompt: dict, i: int, model, positive, negative, seed, cfg, size, batch) -> None:
    prompt[f"lat{i}"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size,
                                                                         "batch_size": batch}}
    prompt[f"ks{i}"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": negative, "latent_image": [f"lat{i}", 0], "seed": seed,
        "steps": 2, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    prompt[f"save{i}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"ks{i}", 0],
                                                                 "filename_prefix": f"ks_{uuid.uuid4().hex}"}}


def _tensors(prompt: dict, node: str, value: list) -> str:
    name = f"cond_{uuid.uuid4().hex}.safetensors"
    prompt[node] = {"class_type": "SwDTestSaveTensors", "inputs": {"value": value, "filename": name}}
    return name


def test_the_tiny_teachers_samples_are_ksamplers_and_the_conditioning_clip_text_encodes(comfy):
    folder = f"swd_test/{uuid.uuid4().hex}"
    prompt = _tiny(save_to=folder)
    prompt["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["tiny", 0], "text": ""}}
    files = {"negative": _tensors(prompt, "save_neg", ["neg", 0]), "out_negative": _tensors(prompt, "nsv", ["ts", 2]),
             "out_positive": _tensors(prompt, "psv", ["ts", 1])}  # a list: the last image's (prompt 2) is kept
    for i, text in enumerate(PROMPTS):
        prompt[f"pos{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["tiny", 0], "text": text}}
        files[i] = _tensors(prompt, f"psave{i}", [f"pos{i}", 0])
        _ksampler(prompt, i, ["unet", 0], [f"pos{i}", 0], ["neg", 0], seed=5 + i, cfg=3.0, size=128, batch=2)
    prompt["list"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ts", 0], "filename_prefix": "ts_list"}}
    result = comfy.run(prompt)
    want = torch.cat([result.latent(f"save{i}") for i in range(2)])

    latents, entries, captions = load_dataset(comfy.output_dir / folder)
    assert torch.equal(latents, want)  # exactly KSampler's: prompt i is its batch of 2 for seed 5 + i
    assert captions == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    saved = [load_file(str(comfy.output_dir / f["subfolder"] / f["filename"]))["latent_tensor"]
             for f in result.outputs["list"]["latents"]]
    assert len(saved) == 4 and all(torch.equal(s, want[k:k + 1]) for k, s in enumerate(saved))  # one LATENT each

    def cond(name):
        return load_file(str(comfy.output_dir / files[name]))
    for k, (context, extra) in enumerate(entries):
        assert torch.equal(context, cond(k // 2)["cond_0"])
        assert torch.equal(extra["pooled_output"], cond(k // 2)["pooled_output_0"])
    assert cond("out_positive").keys() == cond(1).keys()
    assert all(torch.equal(cond("out_positive")[k], cond(1)[k]) for k in cond(1))
    assert all(torch.equal(cond("out_negative")[k], cond("negative")[k]) for k in cond("negative"))
    negative = load_file(str(comfy.output_dir / folder / "negative.safetensors"))
    assert torch.equal(negative["context"], cond("negative")["cond_0"])
    manifest = json.loads((comfy.output_dir / folder / "dataset.json").read_text())
    assert manifest["teacher"] == "graph" and manifest["guidance"] is None and manifest["per_caption"] == 2


def test_flux_samples_carry_the_guidance_as_flux_guidance_does(comfy):
    folder = f"swd_test/{uuid.uuid4().hex}"
    prompt, model = model_nodes("flux")
    prompt["clip"] = {"class_type": "SwDTestTinyCLIP", "inputs": {"family": "flux", "tag": ""}}
    prompt["ts"] = _samples(model, ["clip", 0], prompts="a fox", width=64, height=64, cfg=1.0, guidance=4.0,
                            images_per_prompt=1, save_to=folder)
    prompt["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a fox"}}
    prompt["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": ""}}
    prompt["fg"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": 4.0}}
    _ksampler(prompt, 0, model, ["fg", 0], ["neg", 0], seed=5, cfg=1.0, size=64, batch=1)
    positive = _tensors(prompt, "psv", ["ts", 1])
    result = comfy.run(prompt)
    latents, entries, _ = load_dataset(comfy.output_dir / folder)
    assert torch.equal(latents, result.latent("save0"))
    assert entries[0][1]["guidance"] == 4.0
    meta = json.loads((comfy.output_dir / folder / "dataset.json").read_text())
    assert meta["guidance"] == 4.0 and meta["cfg"] == 1.0
    with open(comfy.output_dir / positive, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"]["keys_0"] == "guidance,pooled_output"


def _nan_teacher(comfy) -> str:
    """The tiny teacher with NaN output weights, in the server's diffusion_models folder."""
    from safetensors.torch import save_file
    name = "swd_test_nan_teacher.safetensors"
    path = comfy.models_dir / "diffusion_models" / name
    if not path.exists():
        weights = load_file(str(REPO / "models" / "diffusion_models" / TEACHER_FILE))
        weights["final_layer.linear.weight"] = weights["final_layer.linear.weight"] * float("nan")
        save_file(weights, str(path))
    return name


@pytest.mark.parametrize("inputs, message", [
    ({"prompts": "\n   \n"}, "SwD Teacher Samples: prompts is empty: write one prompt per line"),
    ({"width": 120}, "SwD Teacher Samples: width 120 does not fit this model: it must be a multiple of 16 (e.g. 128)"),
    ({"save_to": "../elsewhere"}, "save_to '../elsewhere' must name a folder inside ComfyUI's output folder"),
    ({"prompts": "red circle\npurple circle"}, "the word 'purple' is not in the tiny models' vocabulary"),
    ({"nan": True}, "SwD Teacher Samples: the model gave NaN or inf values for prompt 1 ('red circle') at seed 5"),
])
def test_bad_inputs_are_refused_naming_the_input(comfy, inputs, message):
    nan = inputs.pop("nan", False)
    prompt = _tiny(**inputs)
    if nan:
        prompt["unet"]["inputs"]["unet_name"] = _nan_teacher(comfy)
    prompt["show"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ts", 0], "filename_prefix": "bad"}}
    with pytest.raises(PromptError) as e:
        comfy.run(prompt)
    assert message in e.value.message


def test_a_save_to_folder_of_other_settings_is_never_overwritten(comfy):
    folder = f"swd_test/{uuid.uuid4().hex}"
    first = _tiny(save_to=folder, steps=1, images_per_prompt=1)
    first["o"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ts", 0], "filename_prefix": "first"}}
    comfy.run(first)
    before = (comfy.output_dir / folder / "shard-00000.safetensors").read_bytes()
    second = _tiny(save_to=folder, steps=2, images_per_prompt=1)
    second["o"] = first["o"]
    with pytest.raises(PromptError) as e:
        comfy.run(second)
    assert "holds samples made with other settings (steps differ): choose another folder" in e.value.message
    assert (comfy.output_dir / folder / "shard-00000.safetensors").read_bytes() == before


def test_an_interrupt_stops_between_images(comfy):
    prompt = _tiny(steps=1, seed=77)
    prompt["fault"] = {"class_type": "SwDTestFault", "inputs": {"model": ["unet", 0], "fault": "interrupt",
                                                                "at_call": 0, "tag": uuid.uuid4().hex}}
    prompt["ts"]["inputs"]["model"] = ["fault", 0]
    prompt["o"] = {"class_type": "SaveLatent", "inputs": {"samples": ["ts", 0], "filename_prefix": "interrupted"}}
    with pytest.raises(PromptError, match="interrupted"):
        comfy.run(prompt)


def test_the_node_is_listed_with_its_lists_and_the_flux_advice(comfy):
    info = comfy.object_info("SwDTeacherSamples")["SwDTeacherSamples"]
    assert info["category"] == "sampling/swd/distill" and info["display_name"] == "SwD Teacher Samples"
    assert info["output_is_list"] == [True, True, False] and info["output"] == ["LATENT", "CONDITIONING",
                                                                                 "CONDITIONING"]
    required = info["input"]["required"]
    assert "FLUX: put the guidance with FluxGuidance on the prompt's conditioning and leave cfg at 1" in \
        required["cfg"][1]["tooltip"]
    assert all(spec[1].get("tooltip") for spec in [*required.values(), *info["input"]["optional"].values()])
