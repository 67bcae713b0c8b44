"""SwD Distill LoRA and SwD Save LoRA in real ComfyUI: a short distillation of tiny SD3.5 (MMDiT-X, attn2), FLUX.1-dev
and SDXL models in a graph, the saved file (released PEFT keys, preset in the metadata, in the loras folder) loaded
by SwD LoRA Loader with every key, the student changing SwDKSampler's output; the teacher is never patched."""
import json
import pickle

import pytest
import torch
from safetensors import safe_open

from comfy_harness import PromptError
from graphs import cond_nodes, model_nodes, positive_ref, save_latent
from lora_files import lora_pairs, write_peft

PRESET = {"sd35": "SD3.5 Medium · 4 steps", "flux": "FLUX.1-dev · 4 steps", "sdxl": "SDXL · 4 steps"}
CHANNELS = {"sd35": 16, "flux": 16, "sdxl": 4}


def distill_node(family: str, model: list, latents: list, **overrides) -> dict:
    inputs = {"model": model, "latents": latents, "positive": positive_ref(family), "negative": ["neg", 0],
              "preset": PRESET[family], "scales": "", "sigmas": "", "recipe": "full (DMD + patch + GAN)",
              "steps": 20, "batch_size": 2, "learning_rate": 1e-3, "rank": 4, "cfg": 2.0, "fake_updates": 1,
              "patch_kernel": "linear", "patch_weight": 1.0, "patch_block": -1, "gan_weight": 5e-3,
              "warm_steps": 0, "seed": 1, "training_dtype": "auto", "gradient_checkpointing": True,
              "start_lora": "[None]", "checkpoint_name": f"test_{family}", "resume": False, "checkpoint_every": 10,
              "preview_every": 10}
    inputs.update(overrides)
    return {"class_type": "SwDDistillLoRA", "inputs": inputs}


def sampler(model: list, family: str, seed: int = 5) -> dict:
    latent = {"class_type": "EmptyLatentImage" if family == "sdxl" else "EmptySD3LatentImage",
              "inputs": {"width": 128, "height": 128, "batch_size": 1}}
    return {"lat": latent,
            "ks": {"class_type": "SwDKSampler", "inputs": {
                "model": model, "positive": positive_ref(family), "negative": ["neg", 0], "latent_image": ["lat", 0],
                "seed": seed, "preset": PRESET[family], "scales": "", "sigmas": "", "cfg": 1.0,
                "upscale_method": "bicubic"}}}


def graph(family: str) -> tuple[dict, list]:
    nodes, model = model_nodes("sdxl" if family == "sdxl" else family) if family != "sd35" else (
        {"model": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sd35.safetensors",
                                                          "weight_dtype": "default"}}}, ["model", 0])
    nodes.update(cond_nodes(family))
    nodes["data"] = {"class_type": "SwDTestRandomLatent", "inputs": {"width": 128, "height": 128, "batch_size": 4,
                                                                     "channels": CHANNELS[family], "seed": 3}}
    return nodes, model


@pytest.mark.parametrize("family", ["sd35", "flux", "sdxl"])
def test_a_short_distillation_in_a_graph_saves_a_lora_the_loader_reads_whole(comfy, family):
    nodes, model = graph(family)
    nodes["distill"] = distill_node(family, model, ["data", 0])
    nodes["save"] = {"class_type": "SwDSaveLoRA", "inputs": {"lora": ["distill", 1], "preset": ["distill", 3],
                                                             "filename_prefix": f"swd/test-{family}"}}
    nodes["steps"] = {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 4]}}
    nodes["losses"] = {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 2]}}
    nodes.update(sampler(["distill", 0], family))
    nodes["out"] = save_latent(["ks", 0], f"distilled_{family}")
    nodes["teacher_ks"] = {**nodes["ks"], "inputs": {**nodes["ks"]["inputs"], "model": model}}
    nodes["teacher_out"] = save_latent(["teacher_ks", 0], f"teacher_{family}")
    result = comfy.run(nodes, timeout=600)
    assert result.outputs["steps"]["text"] == ["20"]
    losses = eval(result.outputs["losses"]["text"][0], {"inf": float("inf"), "nan": float("nan")})
    assert set(losses) >= {"fake", "d", "dmd", "gan", "patch", "loss"} and len(losses["dmd"]) == 20
    assert all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())
    name = result.outputs["save"]["text"][0].removeprefix("saved ")
    with safe_open(name, "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert metadata["swd_preset"] == PRESET[family]
    assert keys and all(k.startswith("base_model.model.") for k in keys)
    assert "/models/loras/swd/" in name and "swd-comfyui" not in name  # the user's loras folder, not the pack
    if family == "sd35":  # MMDiT-X: the second attention of block 0 is adapted too, slice by slice
        assert "base_model.model.transformer_blocks.0.attn2.to_q.lora_A.weight" in keys
    if family == "flux":
        assert "base_model.model.single_transformer_blocks.0.attn.to_v.lora_B.weight" in keys
    distilled, teacher = result.latent("out"), result.latent("teacher_out")
    assert torch.isfinite(distilled).all() and not torch.equal(distilled, teacher)

    lora_name = name.split("/models/loras/", 1)[1]
    check = {k: v for k, v in nodes.items() if k in ("model", "pos", "neg", "posg")}
    check["lora"] = {"class_type": "SwDLoraLoader", "inputs": {"model": model, "lora_name": lora_name,
                                                               "strength": 1.0, "allow_partial": False}}
    check.update(sampler(["lora", 0], family))
    check["out"] = save_latent(["ks", 0], f"loaded_{family}")
    loaded = comfy.run(check, timeout=300)
    report = loaded.outputs["lora"]["swd_lora"][0]
    assert report["keys_not_loaded"] == 0 and report["keys_loaded"] == len(keys)
    assert report["preset"] == PRESET[family] and "metadata" in report["preset_reason"]
    # the saved file (fp16) gives the student the node returned, up to fp16 rounding of the LoRA
    assert torch.allclose(loaded.latent("out"), distilled, atol=2e-2)


def test_resuming_with_other_settings_names_the_settings(comfy):
    nodes, model = graph("sd35")
    show = {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 4]}}
    first = distill_node("sd35", model, ["data", 0], steps=1, checkpoint_every=1, checkpoint_name="test_resume_other")
    comfy.run({**nodes, "distill": first, "show": show}, timeout=300)
    other = distill_node("sd35", model, ["data", 0], steps=2, rank=8, resume=True,
                         checkpoint_name="test_resume_other")
    with pytest.raises(PromptError) as e:
        comfy.run({**nodes, "distill": other, "show": show}, timeout=300)
    assert "was made with other settings: rank 4 there, 8 now" in e.value.message, e.value.message
    assert e.value.details.get("exception_type", "").endswith(".DistillInputError"), e.value.details


def test_bad_inputs_are_refused_naming_them(comfy):
    nodes, model = graph("sd35")
    cases = [
        (distill_node("sd35", model, ["data", 0], preset="SDXL · 4 steps"), "preset 'SDXL · 4 steps' is for eps"),
        (distill_node("sd35", model, ["small", 0]), "latents have 4 channels but this model's have 16"),
        (distill_node("sd35", model, ["data", 0], resume=True, checkpoint_name="never_made"),
         "resume: there is no checkpoint"),
        (distill_node("sd35", model, ["data", 0], positive=["two", 0]), "positive: 2 conditionings for 4 latents"),
        (distill_node("sd35", model, ["nan", 0]), "latent 0 (and 3 more) holds NaN"),
        (distill_node("sd35", model, ["odd", 0]), "the final latent size 15x15 is not a multiple of the model's "
                                                  "patch size 2"),
        (distill_node("sd35", model, ["data", 0], start_lora="swd_distill_tests/flux_lora.safetensors"),
         "start_lora (the LoRA to start from) does not fit this model and rank"),
        (distill_node("sd35", model, ["data", 0], start_lora="swd_distill_tests/pickle.safetensors"),
         "start_lora swd_distill_tests/pickle.safetensors is not a safetensors file: it is a Python pickle"),
    ]
    folder = comfy.models_dir / "loras" / "swd_distill_tests"
    folder.mkdir(parents=True, exist_ok=True)
    write_peft(folder / "flux_lora.safetensors", lora_pairs("flux", rank=4, seed=6))
    (folder / "pickle.safetensors").write_bytes(pickle.dumps({"lora": [0.0] * 4}))
    nodes["odd"] = {"class_type": "SwDTestTensor", "inputs": {"shape": "4,16,15,15", "value": "randn", "poke": "",
                                                              "seed": 0, "mask_shape": "", "mask_value": "1",
                                                              "mask_poke": ""}}
    nodes["small"] = {"class_type": "SwDTestRandomLatent", "inputs": {"width": 128, "height": 128, "batch_size": 4,
                                                                      "channels": 4, "seed": 3}}
    nodes["nan"] = {"class_type": "SwDTestTensor", "inputs": {"shape": "4,16,16,16", "value": "nan", "poke": "",
                                                              "seed": 0, "mask_shape": "", "mask_value": "1",
                                                              "mask_poke": ""}}
    nodes["two"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                    "conditioning_2": ["neg", 0]}}
    for node, message in cases:
        with pytest.raises(PromptError) as e:
            comfy.run({**nodes, "distill": node,
                       "show": {"class_type": "SwDTestShowValue", "inputs": {"value": ["distill", 4]}}})
        assert message in e.value.message, e.value.message
        kind = e.value.details.get("exception_type", "")  # SwDErrors: the loader's own for a file that is no LoRA
        assert kind.endswith(".NotSafetensorsError" if "pickle" in message else ".DistillInputError"), kind
