"""The shipped workflows/: valid against the live /object_info, complete, and runnable on tiny stand-in models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_harness import ComfyServer
from tiny_workflows import (PACK_MODELS, WORKFLOWS, family, load, loras_used, ships_its_models, with_tiny_models,
                            write_input_image, write_tiny_lora)
from workflow_to_api import (CONTROL_VALUES, FRONTEND_ONLY, WorkflowError, combo_options, input_specs, to_api,
                             validate, widget_values)

EXPECTED = ["swd_sd35_medium_6steps", "swd_sd35_large_4steps", "swd_flux_dev", "swd_sdxl", "swd_custom_sampler",
            "swd_manual_chain", "swd_sd35_medium_1344x768", "swd_img2img", "swd_hires_2x", "swd_inpaint",
            "swd_tiny_demo", "swd_tiny_img2img", "swd_tiny_hires_2x", "swd_tiny_inpaint", "swd_distill_tiny",
            "swd_distill_sd35_medium", "swd_distill_flux_dev", "swd_distill_sdxl"]
TINY = [n for n in EXPECTED if n.startswith("swd_tiny_")]
DISTILL = {"swd_distill_tiny": "Tiny demo · 4 steps", "swd_distill_sd35_medium": "SD3.5 Medium · 4 steps",
           "swd_distill_flux_dev": "FLUX.1-dev · 4 steps", "swd_distill_sdxl": "SDXL · 4 steps"}
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
PACK_MODULE = "custom_nodes.swd-comfyui"
LOADER_FOLDERS = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models", "clip_name1": "text_encoders",
                  "clip_name2": "text_encoders", "clip_name3": "text_encoders", "vae_name": "vae", "lora_name": "loras"}
LORA_SUBFOLDER = "swd_workflow_tests"


@pytest.fixture(scope="module")
def object_info(comfy):
    write_input_image(comfy.input_dir)  # before /object_info lists it as LoadImage's option
    return comfy.object_info()


@pytest.fixture(scope="module")
def uncached_comfy(tmp_path_factory):
    """A server that executes every node of every prompt (--cache-none), for the tiny demos: they load the same
    shipped files and share captions, which the session's server would take from its cache after the first demo."""
    server = ComfyServer(tmp_path_factory.mktemp("uncached"))
    server.prepare()
    server.start(extra_args=["--cache-none"])
    yield server
    server.stop()


def pack_nodes(object_info) -> set[str]:
    return {k for k, v in object_info.items() if v.get("python_module") == PACK_MODULE}


def test_the_issue_workflows_exist_and_nothing_else():
    assert sorted(EXPECTED) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_ui_format_and_fits_the_live_object_info(name, object_info):
    workflow = load(name)
    assert workflow["version"] == 0.4
    assert validate(workflow, object_info) == []


@pytest.mark.parametrize("name", NAMES)
def test_workflow_uses_pack_nodes_and_explains_itself_in_a_note(name, object_info):
    workflow = load(name)
    types = [n["type"] for n in workflow["nodes"]]
    assert set(types) & pack_nodes(object_info)
    notes = [n for n in workflow["nodes"] if n["type"] in ("MarkdownNote", "Note")]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 300
    assert all(n["mode"] == 0 for n in workflow["nodes"]), "shipped workflows bypass or mute nothing"


@pytest.mark.parametrize("name", NAMES)
def test_every_model_file_is_named_with_a_download_url(name, object_info):
    """Each file a loader widget names is in that node's properties.models with a Hugging Face URL and the right
    models folder (what ComfyUI templates do, and what the frontend's missing-models dialog downloads), unless the
    pack ships it in its own models/ folder (the tiny demo family)."""
    for node in load(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        values = widget_values(node, object_info[node["type"]])
        models = {m["name"]: m for m in node["properties"].get("models", [])}
        for widget, folder in LOADER_FOLDERS.items():
            if widget not in values or (PACK_MODELS / folder / values[widget]).is_file():
                continue
            entry = models.get(values[widget])
            assert entry, f"{name}: node {node['id']} ({node['type']}) loads {values[widget]!r} without a models entry"
            assert entry["directory"] == folder
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith(".safetensors")
            assert entry["name"].endswith(".safetensors")
        assert set(models) <= set(values.values()), f"{name}: node {node['id']} lists models it does not load"


def test_sampler_presets_match_the_loras_and_flux_guidance_is_4_5(object_info):
    presets = {"swd_sd35_medium_6steps": "SD3.5 Medium · 6 steps", "swd_sd35_medium_1344x768": "SD3.5 Medium · 6 steps",
               "swd_sd35_large_4steps": "SD3.5 Large · 4 steps", "swd_flux_dev": "FLUX.1-dev · 4 steps",
               "swd_sdxl": "SDXL · 4 steps", "swd_custom_sampler": "SD3.5 Medium · 6 steps",
               "swd_img2img": "SD3.5 Medium · 6 steps", "swd_hires_2x": "SD3.5 Medium · 6 steps",
               "swd_inpaint": "SD3.5 Medium · 6 steps", **{name: "Tiny demo · 4 steps" for name in TINY}, **DISTILL}
    for name, preset in presets.items():
        workflow = load(name)
        for node in workflow["nodes"]:
            if node["type"] in ("SwDKSampler", "SwDSchedule"):
                values = widget_values(node, object_info[node["type"]])
                assert values["preset"] == preset and values.get("cfg", 1.0) == 1.0, name
            if node["type"] == "FluxGuidance":
                assert widget_values(node, object_info["FluxGuidance"])["guidance"] == 4.5
    sizes = {n["type"]: widget_values(n, object_info[n["type"]]) for n in load("swd_sd35_medium_1344x768")["nodes"]
             if n["type"] == "EmptySD3LatentImage"}
    assert (sizes["EmptySD3LatentImage"]["width"], sizes["EmptySD3LatentImage"]["height"]) == (1344, 768)


# The converter itself, on a hand-written graph: bypass, mute, reroute, primitive, control_after_generate ---------

OI = {
    "Src": {"input": {"required": {"seed": ["INT", {"default": 0, "control_after_generate": True}]}},
            "input_order": {"required": ["seed"]}, "output": ["LATENT"], "output_name": ["LATENT"]},
    "Mid": {"input": {"required": {"samples": ["LATENT"], "factor": ["FLOAT", {"default": 1.0}]},
                      "optional": {"mode": [["a", "b"]]}},
            "input_order": {"required": ["samples", "factor"], "optional": ["mode"]},
            "output": ["LATENT"], "output_name": ["LATENT"]},
    "Sink": {"input": {"required": {"samples": ["LATENT"], "name": ["STRING", {}]}},
             "input_order": {"required": ["samples", "name"]}, "output": [], "output_name": []},
}


def _graph(mid_mode=0, through_reroute=False):
    nodes = [
        {"id": 1, "type": "Src", "mode": 0, "inputs": [{"name": "seed", "type": "INT", "widget": {"name": "seed"},
                                                        "link": None}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}], "widgets_values": [5, "randomize"]},
        {"id": 2, "type": "Mid", "mode": mid_mode,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 1},
                    {"name": "factor", "type": "FLOAT", "widget": {"name": "factor"}, "link": 3}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}], "widgets_values": [2.0, "b"]},
        {"id": 3, "type": "Sink", "mode": 0,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 2},
                    {"name": "name", "type": "STRING", "widget": {"name": "name"}, "link": None}],
         "outputs": [], "widgets_values": ["out"]},
        {"id": 4, "type": "PrimitiveNode", "mode": 0, "inputs": [],
         "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [3]}], "widgets_values": [0.5, "fixed"]},
        {"id": 5, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hello"]},
    ]
    links = [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"], [3, 4, 0, 2, 1, "FLOAT"]]
    if through_reroute:
        nodes.append({"id": 6, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}],
                      "outputs": [{"name": "", "type": "LATENT", "links": [4]}]})
        links[1] = [2, 2, 0, 6, 0, "LATENT"]
        links.append([4, 6, 0, 3, 0, "LATENT"])
        nodes[2]["inputs"][0]["link"] = 4
    return {"nodes": nodes, "links": links}


def test_converter_maps_widgets_skipping_control_values_and_follows_links_primitives_and_reroutes():
    for reroute in (False, True):
        api = to_api(_graph(through_reroute=reroute), OI)
        assert set(api) == {"1", "2", "3"}
        assert api["1"]["inputs"] == {"seed": 5}
        assert api["2"]["inputs"] == {"samples": ["1", 0], "factor": 0.5, "mode": "b"}
        assert api["3"]["inputs"] == {"samples": ["2", 0], "name": "out"}


def test_converter_skips_the_upload_button_value_after_an_image_upload_widget():
    info = {"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}, "input_order": {"required": ["image"]}}
    node = {"id": 1, "type": "LoadImage", "widgets_values": ["a.png", "image"]}
    assert widget_values(node, info) == {"image": "a.png"}
    with pytest.raises(WorkflowError, match="upload"):
        widget_values(dict(node, widgets_values=["a.png"]), info)


def test_converter_passes_a_bypassed_node_through_and_drops_a_muted_one():
    bypassed = to_api(_graph(mid_mode=4), OI)
    assert "2" not in bypassed and bypassed["3"]["inputs"]["samples"] == ["1", 0]
    muted = to_api(_graph(mid_mode=2), OI)
    assert "2" not in muted and "samples" not in muted["3"]["inputs"]


def test_converter_refuses_widget_values_that_do_not_fit_the_schema():
    graph = _graph()
    graph["nodes"][0]["widgets_values"] = [5]  # the control_after_generate entry is missing
    with pytest.raises(WorkflowError, match="control_after_generate"):
        to_api(graph, OI)
    graph["nodes"][0]["widgets_values"] = [5, "fixed", 7]
    with pytest.raises(WorkflowError, match="3 entries"):
        to_api(graph, OI)
    assert any("not one of the options" in e for e in validate(
        {**_graph(), "nodes": [dict(_graph()["nodes"][1], widgets_values=[1.0, "c"])]}, OI))


# Execution on tiny models -------------------------------------------------------------------------------------

def _output_images(comfy, messages) -> dict[str, list[Path]]:
    out = {}
    for m in messages:
        if m["type"] == "executed" and (m["data"].get("output") or {}).get("images"):
            out[m["data"]["node"]] = [comfy.base_dir / i["type"] / i.get("subfolder", "") / i["filename"]
                                      for i in m["data"]["output"]["images"]]
    return out


@pytest.mark.parametrize("name", [n for n in NAMES if n not in DISTILL])
def test_workflow_runs_on_tiny_models_and_executes_every_pack_node(name, comfy, object_info, request):
    """On stand-ins of the real models, or on the shipped tiny family for the tiny demos. The distillation
    workflows run for minutes to days: the tiny one runs shrunk below, the others are checked statically."""
    workflow = load(name)
    if ships_its_models(workflow):
        comfy = request.getfixturevalue("uncached_comfy")
    fam = family(workflow)
    prompt = to_api(workflow, object_info)
    if not ships_its_models(workflow):
        prompt = with_tiny_models(prompt, fam, tag=f"test_workflows/{name}")
    for node in prompt.values():
        if node["class_type"] == "SwDLoraLoader" and not ships_its_models(workflow):
            file = f"{LORA_SUBFOLDER}/{node['inputs']['lora_name']}"
            write_tiny_lora(comfy.models_dir / "loras" / file, fam)
            node["inputs"]["lora_name"] = file
    assert loras_used(workflow), f"{name} loads no SwD LoRA"

    messages, _ = comfy.run_watching(prompt)
    kinds = [m["type"] for m in messages]
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert not errors, f"{name}: {errors[0].get('node_type')}: {errors[0].get('exception_message')}"
    assert "execution_success" in kinds
    executed = {m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"].get("node")}
    cached = {n for m in messages if m["type"] == "execution_cached" for n in m["data"]["nodes"]}
    pack_ids = {str(n["id"]) for n in workflow["nodes"] if n["type"] in pack_nodes(object_info)}
    assert pack_ids and pack_ids <= executed - cached, f"{name}: pack nodes not executed: {pack_ids - executed}"

    reports = [m["data"]["output"]["swd_lora"][0] for m in messages  # the tiny LoRA loads whole; its name tells the preset
               if m["type"] == "executed" and "swd_lora" in (m["data"].get("output") or {})]
    assert len(reports) == sum(n["class_type"] == "SwDLoraLoader" for n in prompt.values())
    assert all(r["keys_not_loaded"] == 0 and r["keys_loaded"] > 0 and r["preset"] != "custom" for r in reports), reports

    images = _output_images(comfy, messages)
    saves = [i for i, n in prompt.items() if n["class_type"] == "SaveImage"]
    assert len(saves) == 1 and saves[0] in images
    batch = next((n["inputs"]["batch_size"] for n in prompt.values() if "batch_size" in n["inputs"]), 1)
    assert len(images[saves[0]]) == batch
    sizes = {}
    for node_id, paths in images.items():
        with Image.open(paths[0]) as im:
            sizes[node_id] = im.size
    if name == "swd_manual_chain":  # one preview per scale, growing, then the final image
        assert [sizes[i] for i in sorted(sizes, key=int)] == [(128, 128), (160, 160), (192, 192), (256, 256)]
    else:
        assert sizes[saves[0]] == final_size(prompt)


def final_size(prompt: dict) -> tuple[int, int]:
    """(width, height) of the saved image: the fitted input image (img2img, inpainting) or the empty latent, times
    any latent upscale (hires)."""
    sized = next(n["inputs"] for n in prompt.values()
                 if n["class_type"] in ("ImageScale", "EmptySD3LatentImage", "EmptyLatentImage"))
    factor = next((n["inputs"]["scale_by"] for n in prompt.values() if n["class_type"] == "LatentUpscaleBy"), 1)
    return round(sized["width"] * factor), round(sized["height"] * factor)


DENOISE = {"swd_img2img": [0.8], "swd_hires_2x": [1.0, 0.75], "swd_inpaint": [1.0], "swd_tiny_img2img": [1.0, 0.9],
           "swd_tiny_hires_2x": [1.0, 0.75], "swd_tiny_inpaint": [1.0, 1.0]}


@pytest.mark.parametrize("name", sorted(DENOISE))
def test_img2img_workflows_set_denoise_and_their_note_says_which_and_why(name, object_info):
    workflow = load(name)
    samplers = [widget_values(n, object_info["SwDKSampler"]) for n in workflow["nodes"] if n["type"] == "SwDKSampler"]
    assert [s["denoise"] for s in samplers] == DENOISE[name]
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert f"**Use {min(DENOISE[name]):g}" in note or f"**Use 0.6–{min(DENOISE[name]):g}**" in note
    assert "denoise" in note and "\u03c3" in note


@pytest.mark.parametrize("name", TINY)
def test_tiny_workflows_load_the_family_the_pack_ships_with_one_caption_per_picture(name, object_info):
    """The tiny demos run out of the box: ComfyUI lists the pack's own files (on_load registers its models/ folders),
    the LoRA loader's preset drives every sampler, and each sampler's positive has one caption line per latent."""
    workflow = load(name)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    values = {i: widget_values(n, object_info[n["type"]]) for i, n in nodes.items() if n["type"] not in FRONTEND_ONLY}
    source = {(l[3], nodes[l[3]]["inputs"][l[4]]["name"]): l[1] for l in workflow["links"]}
    unet = next(v for i, v in values.items() if nodes[i]["type"] == "UNETLoader")
    lora = next(i for i in values if nodes[i]["type"] == "SwDLoraLoader")
    assert unet["unet_name"] == "swd-tiny-teacher.safetensors"
    assert values[lora]["lora_name"] == "swd-tiny-4-steps.safetensors"
    assert unet["unet_name"] in combo_options(object_info["UNETLoader"]["input"]["required"]["unet_name"])
    assert values[lora]["lora_name"] in combo_options(object_info["SwDLoraLoader"]["input"]["required"]["lora_name"])
    samplers = [i for i in values if nodes[i]["type"] == "SwDKSampler"]
    assert len(samplers) == (1 if name == "swd_tiny_demo" else 2)
    for sampler in samplers:
        assert source[(sampler, "preset")] == lora and source[(sampler, "model")] == lora
        captions = values[source[(sampler, "positive")]]["text"].splitlines()
        assert values[source[(sampler, "negative")]]["text"] == ""
        latent = source[(sampler, "latent_image")]
        while nodes[latent]["type"] != "EmptySD3LatentImage":  # back through upscale, encode, decode, draft
            upstream = next(e["name"] for e in nodes[latent]["inputs"] if e["type"] in ("LATENT", "IMAGE"))
            latent = source[(latent, upstream)]
        assert values[latent]["batch_size"] == len(captions) == (4 if name == "swd_tiny_demo" else 1)
        assert (values[latent]["width"], values[latent]["height"]) == (128, 128)


@pytest.mark.parametrize("name", sorted(DISTILL))
def test_distillation_workflows_chain_teacher_samples_distill_save_and_sampler(name, object_info):
    """SwD Teacher Samples feeds SwD Distill LoRA on the same teacher; the distiller's preset drives SwD Save LoRA and
    the sampler, which draws with the distilled MODEL; the real-model templates train in bf16 with gradient
    checkpointing at a batch that fits one GPU and their note gives the memory and the torchrun command."""
    workflow = load(name)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    source = {(l[3], nodes[l[3]]["inputs"][l[4]]["name"]): (l[1], l[2]) for l in workflow["links"]}
    one = {t: next(i for i, n in nodes.items() if n["type"] == t)
           for t in ("SwDTeacherSamples", "SwDDistillLoRA", "SwDSaveLoRA", "SwDKSampler")}
    samples, distill, save, sampler = one.values()
    values = {i: widget_values(nodes[i], object_info[nodes[i]["type"]]) for i in one.values()}
    for k, name_ in enumerate(("latents", "positive", "negative")):
        assert source[(distill, name_)] == (samples, k)
    assert source[(distill, "model")] == source[(samples, "model")]
    assert source[(save, "lora")] == (distill, 1) and source[(save, "preset")] == (distill, 3)
    assert source[(sampler, "model")] == (distill, 0) and source[(sampler, "preset")] == (distill, 3)
    assert values[distill]["preset"] == values[save]["preset"] == DISTILL[name]
    controls = {v for i in (samples, distill) for v in nodes[i]["widgets_values"] if v in CONTROL_VALUES}
    assert controls == {"fixed"}, "a seed that changes after every run would make resume refuse the settings"
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert "output/swd_distill/" in note and "resume" in note and "models/loras/" in note
    if name == "swd_distill_tiny":
        from swd_distill.splits import heldout, seen
        assert values[samples]["prompts"].splitlines() == seen() and not set(seen()) & set(heldout())
        assert (values[samples]["width"], values[samples]["steps"], values[samples]["cfg"]) == (128, 28, 3.0)
        assert {k: values[distill][k] for k in ("steps", "warm_steps", "batch_size", "rank", "learning_rate", "cfg",
                                                "seed")} == {"steps": 500, "warm_steps": 100, "batch_size": 32,
                                                             "rank": 32, "learning_rate": 3e-4, "cfg": 3.0, "seed": 3}
        teacher = next(i for i, n in nodes.items() if n["type"] == "KSampler")
        assert source[(teacher, "model")] == source[(samples, "model")]
        assert "min in all" in note
    else:
        assert values[samples]["width"] == values[samples]["height"] == 1024
        assert values[distill]["training_dtype"] == "bf16" and values[distill]["gradient_checkpointing"]
        assert 1 <= values[distill]["batch_size"] <= 4
        assert "torchrun" in note and "GiB at batch 1" in note


def test_the_tiny_distillation_workflow_runs_shrunk_and_saves_a_lora_the_loader_lists(comfy, object_info):
    """swd_distill_tiny, its graph as shipped with its widgets made small (4 of its captions x 2 images, 5 steps at
    batch 4): SwD Save LoRA writes the tiny preset into a file SwD LoRA Loader lists, and both samplers draw."""
    prompt = to_api(load("swd_distill_tiny"), object_info)
    node = {n["class_type"]: i for i, n in prompt.items()}
    samples = prompt[node["SwDTeacherSamples"]]["inputs"]
    samples.update(prompts="\n".join(samples["prompts"].splitlines()[:4]), images_per_prompt=2)
    prompt[node["SwDDistillLoRA"]]["inputs"].update(steps=5, warm_steps=2, batch_size=4,
                                                   checkpoint_name="test_workflows_distill_tiny")
    prompt[node["SwDSaveLoRA"]]["inputs"]["filename_prefix"] = f"{LORA_SUBFOLDER}/distill_tiny"
    for who in ("SwDKSampler", "KSampler"):
        prompt[f"latent_{who}"] = {"class_type": "SaveLatent", "inputs": {"samples": [node[who], 0],
                                                                         "filename_prefix": f"distill_tiny_{who}"}}
    result = comfy.run(prompt, timeout=300)

    path = Path(result.outputs[node["SwDSaveLoRA"]]["text"][0].removeprefix("saved "))
    lora_name = path.relative_to(comfy.models_dir / "loras").as_posix()
    listed = combo_options(comfy.object_info("SwDLoraLoader")["SwDLoraLoader"]["input"]["required"]["lora_name"])
    assert lora_name.startswith(f"{LORA_SUBFOLDER}/distill_tiny_") and lora_name in listed
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["swd_preset"] == DISTILL["swd_distill_tiny"]
        assert f.keys() and all(k.startswith("base_model.model.") for k in f.keys())
    for who in ("SwDKSampler", "KSampler"):
        latent = result.latent(f"latent_{who}")
        assert latent.shape == (4, 16, 16, 16) and torch.isfinite(latent).all()
    for who in ("SaveImage", "PreviewImage"):
        images = [comfy.base_dir / i["type"] / i.get("subfolder", "") / i["filename"]
                  for i in result.outputs[node[who]]["images"]]
        assert len(images) == 4
        for image in images:
            with Image.open(image) as im:
                assert im.size == (128, 128)


def test_tiny_inpainting_keeps_the_draft_outside_the_mask_and_repaints_inside(comfy, object_info):
    workflow = load("swd_tiny_inpaint")
    prompt = to_api(workflow, object_info)
    box = next(n["inputs"] for n in prompt.values() if n["class_type"] == "SolidMask" and n["inputs"]["value"] == 1.0)
    composite = next(n["inputs"] for n in prompt.values() if n["class_type"] == "MaskComposite")
    messages, _ = comfy.run_watching(prompt)
    images = _output_images(comfy, messages)
    kinds = {i: prompt[i]["class_type"] for i in images}
    draft, result = (np.asarray(Image.open(images[next(i for i in images if kinds[i] == k)][0]).convert("RGB"),
                                np.int16) for k in ("PreviewImage", "SaveImage"))
    inside = np.zeros(draft.shape[:2], bool)
    inside[composite["y"]:composite["y"] + box["height"], composite["x"]:composite["x"] + box["width"]] = True
    assert inside.mean() == pytest.approx((72 / 128) ** 2)
    assert np.array_equal(draft[~inside], result[~inside])
    assert np.abs(draft[inside] - result[inside]).mean() > 10


def test_a_workflow_saved_before_denoise_loads_and_gives_the_same_result(comfy, object_info):
    """Files saved before denoise existed carry the 6-step values in scales/sigmas and no denoise value; the frontend
    gives a missing last widget its default (1.0). Such a file gives the current file's result, bit for bit."""
    current = load("swd_sd35_medium_6steps")
    old = json.loads(json.dumps(current))
    node = next(n for n in old["nodes"] if n["type"] == "SwDKSampler")
    values = node["widgets_values"]
    assert values[3:5] == ["", ""] and values[-1] == 1.0
    node["widgets_values"] = values[:3] + ["32, 48, 64, 80, 96, 128",
                                          "1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0"] + values[5:-1]
    node["inputs"] = [i for i in node["inputs"] if i["name"] != "denoise"]
    with pytest.raises(WorkflowError, match="too few for widget 'denoise'"):  # the old file, as saved
        to_api(old, object_info)
    node["widgets_values"].append(object_info["SwDKSampler"]["input"]["optional"]["denoise"][1]["default"])  # loaded
    results = []
    for workflow, tag in ((old, "before_denoise"), (current, "with_denoise")):
        prompt = with_tiny_models(to_api(workflow, object_info), "sd3", tag="test_workflows/before_denoise")
        for n in prompt.values():
            if n["class_type"] == "SwDLoraLoader":
                n["inputs"]["lora_name"] = f"{LORA_SUBFOLDER}/{n['inputs']['lora_name']}"
                write_tiny_lora(comfy.models_dir / "loras" / n["inputs"]["lora_name"], "sd3")
        sampler = next(i for i, n in prompt.items() if n["class_type"] == "SwDKSampler")
        prompt["save_latent"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": tag}}
        results.append(comfy.run(prompt).latent("save_latent"))
    assert torch.equal(*results)


def test_pack_nodes_have_a_description_and_a_tooltip_on_every_input(object_info):
    gaps = []
    for node in sorted(pack_nodes(object_info)):
        info = object_info[node]
        if not info.get("description"):
            gaps.append(f"{node}: no description")
        for name, spec, _ in input_specs(info):
            if not (spec[1] if len(spec) > 1 else {}).get("tooltip"):
                gaps.append(f"{node}.{name}: no tooltip")
    assert gaps == []
    assert {"SwDKSampler", "SwDSchedule", "SwDSampler", "SwDLatentUpscaleRenoise", "SwDLoraLoader"} <= pack_nodes(object_info)


def test_builder_script_reproduces_the_committed_workflows(object_info, tmp_path):
    """scripts/build_workflows.py is how the files are made; the committed JSON must be its current output."""
    import subprocess
    import sys
    saved = tmp_path / "object_info.json"
    saved.write_text(json.dumps(object_info))
    out = tmp_path / "workflows"
    subprocess.run([sys.executable, str(WORKFLOWS.parent / "scripts" / "build_workflows.py"), "--object-info", str(saved),
                    "--out", str(out)], check=True, capture_output=True, text=True)
    for name in NAMES:
        assert json.loads((out / f"{name}.json").read_text()) == load(name), f"{name}.json is stale: rerun the builder"
