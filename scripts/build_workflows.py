"""Writes the example workflows in workflows/ (UI format, schema 0.4, as the pinned frontend saves it).

    .venv/bin/python scripts/build_workflows.py                       # starts ComfyUI once to read /object_info
    .venv/bin/python scripts/build_workflows.py --object-info oi.json # or reads a saved /object_info
    .venv/bin/python scripts/build_workflows.py --thumbnails          # also draws workflows/<name>.jpg

The graphs below name widgets by input name; the layout of `inputs` and `widgets_values` (including the extra
"fixed"/"randomize" entry after a seed with control_after_generate, and "image" after LoadImage's image) comes
from the live /object_info, so the files follow the nodes' schemas. The committed JSON files are what ships;
tests/test_workflows.py checks them against /object_info independently of this script.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swd_sampler.schedule import PRESETS, select_steps, step_sizes  # noqa: E402
from swd_sampler.tiny import (GRAMMAR, MMDIT, NATIVE_LATENT, STUDENT_FILE, TEACHER_FILE, TINY_PRESET,  # noqa: E402
                              vocabulary)
OUT = REPO / "workflows"
FRONTEND_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
HF = "https://huggingface.co"
CORE = {"cnr_id": "comfy-core", "ver": "0.30.0"}
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}
PROMPT_COLORS = {"color": "#232", "bgcolor": "#353"}
NEGATIVE_COLORS = {"color": "#322", "bgcolor": "#533"}


def model_file(name: str, url: str, directory: str) -> dict:
    return {"name": name, "url": url, "directory": directory}


SD35_MEDIUM = model_file("sd3.5_medium.safetensors",
                         f"{HF}/stabilityai/stable-diffusion-3.5-medium/resolve/main/sd3.5_medium.safetensors",
                         "checkpoints")
SD35_LARGE = model_file("sd3.5_large.safetensors",
                        f"{HF}/stabilityai/stable-diffusion-3.5-large/resolve/main/sd3.5_large.safetensors",
                        "checkpoints")
SD3_TEXT = [model_file(n, f"{HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/{n}", "text_encoders")
            for n in ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors")]
FLUX_DEV = model_file("flux1-dev.safetensors", f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
                      "diffusion_models")
FLUX_TEXT = [model_file(n, f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/{n}", "text_encoders")
             for n in ("clip_l.safetensors", "t5xxl_fp16.safetensors")]
FLUX_VAE = model_file("ae.safetensors", f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors", "vae")
SDXL_BASE = model_file("sd_xl_base_1.0.safetensors",
                       f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
                       "checkpoints")


def swd_lora(repo: str, name: str) -> dict:
    """The released SwD LoRAs are PEFT adapter_model.safetensors files; users save them under a telling name."""
    return model_file(name, f"{HF}/{repo}/resolve/main/adapter_model.safetensors", "loras")


LORA = {
    "medium6": swd_lora("yresearch/swd-medium-6-steps", "swd-medium-6-steps.safetensors"),
    "medium4": swd_lora("yresearch/swd-medium-4-steps", "swd-medium-4-steps.safetensors"),
    "large4": swd_lora("yresearch/swd-large-4-steps", "swd-large-4-steps.safetensors"),
    "flux": swd_lora("yresearch/swd_flux", "swd_flux.safetensors"),
    "sdxl": swd_lora("yresearch/swd-sdxl", "swd-sdxl.safetensors"),
}

PROMPT = ("a red fox sitting in a snowy birch forest at golden hour, soft rim light, shallow depth of field, "
          "highly detailed photograph")


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return not opts.get("forceInput") and (isinstance(kind, list) or kind in WIDGET_TYPES)


def combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    return (spec[1] if len(spec) > 1 else {}).get("options") if spec[0] == "COMBO" else None


class Node:
    def __init__(self, graph: "Graph", node_id: int, type_: str, info: dict | None, pos, size, title, properties,
                 widgets: dict, colors: dict | None, mode: int):
        self.graph, self.id, self.type, self.info = graph, node_id, type_, info
        self.pos, self.size, self.title, self.properties, self.mode = list(pos), size, title, properties, mode
        self.colors = colors or {}
        self.inputs: list[dict] = []
        self.outputs: list[dict] = []
        self.widgets_values: list = []
        if info is not None:
            self._layout(widgets)

    def _layout(self, widgets: dict):
        specs = {}
        for group in ("required", "optional"):
            for name in self.info["input_order"].get(group, []):
                specs[name] = (self.info["input"][group][name], group == "optional")
        unknown = set(widgets) - {n for n, (s, _) in specs.items() if is_widget(s)}
        if unknown:
            raise KeyError(f"{self.type}: no widget input named {sorted(unknown)}")
        sockets, widget_inputs = [], []
        for name, (spec, optional) in specs.items():
            entry = {"localized_name": name, "name": name, "type": spec[0], "link": None}
            if optional:
                entry["shape"] = 7
            if not is_widget(spec):
                sockets.append(entry)
                continue
            opts = spec[1] if len(spec) > 1 else {}
            entry["type"] = "COMBO" if isinstance(spec[0], list) else spec[0]
            entry["widget"] = {"name": name}
            widget_inputs.append(entry)
            if name in widgets:
                value = widgets[name]
            elif "default" in opts:
                value = opts["default"]
            elif combo_options(spec):  # the frontend's default for a combo without one
                value = combo_options(spec)[0]
            else:
                raise KeyError(f"{self.type}: widget {name!r} has no default; give its value")
            self.widgets_values.append(value)
            control = opts.get("control_after_generate")
            if control is None:  # the frontend's integer widget adds one to a seed whose spec does not say
                control = spec[0] == "INT" and name in ("seed", "noise_seed")
            if control:
                self.widgets_values.append(widgets.get(f"{name}:control", "fixed"))
            if opts.get("image_upload"):  # the upload button, which the frontend saves as "image"
                self.widgets_values.append("image")
        self.inputs = sockets + widget_inputs
        self.outputs = [{"localized_name": n, "name": n, "type": t, "links": []}
                        for t, n in zip(self.info["output"], self.info["output_name"])]

    def out(self, name_or_index):
        if isinstance(name_or_index, int):
            return self, name_or_index
        names = [o["name"] for o in self.outputs]
        return self, names.index(name_or_index)

    def to_json(self, order: int) -> dict:
        size = self.size or [320, 46 + 22 * max(len(self.outputs), sum("widget" not in i for i in self.inputs))
                             + 26 * len(self.widgets_values)]
        d = {"id": self.id, "type": self.type, "pos": self.pos, "size": list(size), "flags": {}, "order": order,
             "mode": self.mode, "inputs": self.inputs, "outputs": self.outputs}
        if self.title:
            d["title"] = self.title
        d["properties"] = self.properties
        d["widgets_values"] = self.widgets_values
        d.update(self.colors)
        return d


class Graph:
    def __init__(self, object_info: dict, name: str):
        self.oi, self.name = object_info, name
        self.nodes: list[Node] = []
        self.links: list[list] = []

    def add(self, type_: str, pos, size=None, title=None, models=None, colors=None, mode=0, **widgets) -> Node:
        if type_ not in self.oi:
            raise KeyError(f"node type {type_!r} is not in /object_info (is the pack complete?)")
        props = {"Node name for S&R": type_}
        if self.oi[type_]["python_module"] in ("nodes",) or self.oi[type_]["python_module"].startswith("comfy_extras."):
            props.update(CORE)
        if models:
            props["models"] = models
        node = Node(self, len(self.nodes) + 1, type_, self.oi[type_], pos, size, title, props, widgets, colors, mode)
        self.nodes.append(node)
        return node

    def note(self, text: str, pos, size, title="Read me") -> Node:
        node = Node(self, len(self.nodes) + 1, "MarkdownNote", None, pos, size, title, {}, {}, NOTE_COLORS, 0)
        node.widgets_values = [text]
        self.nodes.append(node)
        return node

    def connect(self, source: tuple[Node, int], target: Node, input_name: str):
        src, slot = source
        index = next(i for i, e in enumerate(target.inputs) if e["name"] == input_name)
        if target.inputs[index]["link"] is not None:
            raise ValueError(f"{target.type}.{input_name} is already connected")
        link_id = len(self.links) + 1
        kind = src.outputs[slot]["type"]
        self.links.append([link_id, src.id, slot, target.id, index, kind])
        target.inputs[index]["link"] = link_id
        src.outputs[slot]["links"].append(link_id)
        return link_id

    def _order(self) -> dict[int, int]:
        deps = {n.id: set() for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            deps[dst].add(src)
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            for i in ready:
                order[i] = len(order)
            done.update(ready)
        return order

    def to_json(self) -> dict:
        order = self._order()
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"swd-comfyui/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": [n.to_json(order[n.id]) for n in self.nodes],
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [60, 80]}},
            "version": 0.4,
        }


# --- building blocks ------------------------------------------------------------------------------------------

def lora_loader(g: Graph, model, lora: dict, pos) -> Node:
    node = g.add("SwDLoraLoader", pos, models=[lora], lora_name=lora["name"])
    g.connect(model, node, "model")
    return node


def text_encoders(g: Graph, family: str, pos) -> Node:
    if family == "flux":
        return g.add("DualCLIPLoader", pos, models=FLUX_TEXT, clip_name1=FLUX_TEXT[0]["name"],
                     clip_name2=FLUX_TEXT[1]["name"], type="flux")
    return g.add("TripleCLIPLoader", pos, models=SD3_TEXT, clip_name1=SD3_TEXT[0]["name"],
                 clip_name2=SD3_TEXT[1]["name"], clip_name3=SD3_TEXT[2]["name"])


def prompts(g: Graph, clip, pos, negative=True):
    x, y = pos
    pos_node = g.add("CLIPTextEncode", (x, y), size=[420, 180], title="Positive prompt", colors=PROMPT_COLORS,
                     text=PROMPT)
    g.connect(clip, pos_node, "clip")
    if not negative:
        return pos_node, None
    neg_node = g.add("CLIPTextEncode", (x, y + 230), size=[420, 110], title="Negative prompt (unused at cfg 1)",
                     colors=NEGATIVE_COLORS, text="")
    g.connect(clip, neg_node, "clip")
    return pos_node, neg_node


def connect_preset(g: Graph, lora: Node, sampler: Node):
    """SwDLoraLoader's preset output drives the sampler's preset when the types allow it."""
    preset_out = lora.out("preset")
    kind = preset_out[0].outputs[preset_out[1]]["type"]
    if kind == "COMBO" or isinstance(kind, list):
        g.connect(preset_out, sampler, "preset")


def decode_and_save(g: Graph, latent, vae, prefix: str, pos, preview=False, below=False, title=None) -> Node:
    """VAEDecode (SwD Tiny Decode when vae is None) into SaveImage, or PreviewImage; returns the decode node."""
    decode = g.add("VAEDecode" if vae else "SwDTinyDecode", pos, size=[210, 46])
    g.connect(latent, decode, "samples")
    if vae:
        g.connect(vae, decode, "vae")
    at = (pos[0], pos[1] + 90) if preview or below else (pos[0] + 240, pos[1])
    if preview:
        out = g.add("PreviewImage", at, size=[320, 340], title=title)
    else:
        out = g.add("SaveImage", at, size=[520, 560] if not below else [320, 360], title=title, filename_prefix=prefix)
    g.connect(decode.out(0), out, "images")
    return decode


NOTE_COMMON = """
**SwD (Scale-wise Distillation)** samples in a few steps while growing the image: each step predicts the clean
image at a small size, upscales it (bicubic) and re-noises it for the next, larger step.

**What to change**
- *Prompt*: the green node. The negative prompt is only used when cfg \u2260 1 (SwD is distilled for cfg 1, which
  also halves the work).
- *Size*: the empty-latent node is the **final** size; the sampler starts smaller by itself. Use multiples of 64 px;
  the preset's scales are relative, so other sizes and aspect ratios work.
- *Seed*: set it to *randomize* for a new image on every run.
- *preset* must match the LoRA (SwD LoRA Loader's `preset` output tells which one a file is).
"""


def sd35_models(g: Graph, checkpoint: dict, lora: dict):
    """Checkpoint, text encoders, SwD LoRA and the two prompts of an SD3.5 workflow: (checkpoint, lora, pos, neg)."""
    ckpt = g.add("CheckpointLoaderSimple", (40, 120), size=[360, 100], models=[checkpoint],
                 ckpt_name=checkpoint["name"])
    clip = text_encoders(g, "sd3", (40, 280))
    swd = lora_loader(g, ckpt.out("MODEL"), lora, (440, 120))
    pos, neg = prompts(g, clip.out(0), (440, 340))
    return ckpt, swd, pos, neg


def swd_ksampler(g: Graph, swd: Node, pos: Node, neg: Node, latent, pos_xy, title=None, seed=42, **widgets) -> Node:
    """An SwDKSampler on the LoRA'd model and both prompts, its preset driven by the LoRA loader."""
    sampler = g.add("SwDKSampler", pos_xy, size=[340, 360], title=title, seed=seed, **widgets)
    g.connect(swd.out("MODEL"), sampler, "model")
    g.connect(pos.out(0), sampler, "positive")
    g.connect(neg.out(0), sampler, "negative")
    g.connect(latent, sampler, "latent_image")
    connect_preset(g, swd, sampler)
    return sampler


def sd35_txt2img(oi, name, checkpoint, lora, preset, width, height, note_title, note_models):
    g = Graph(oi, name)
    ckpt, swd, pos, neg = sd35_models(g, checkpoint, lora)
    latent = g.add("EmptySD3LatentImage", (440, 760), width=width, height=height, batch_size=1)
    sampler = swd_ksampler(g, swd, pos, neg, latent.out(0), (900, 120), preset=preset)
    decode_and_save(g, sampler.out(0), ckpt.out("VAE"), f"swd/{name}", (1280, 120))
    g.note(f"## {note_title}\n{NOTE_COMMON}\n**Models** (file \u2192 ComfyUI/models/\u2026)\n{note_models}", (40, 500),
           [360, 560])
    return g


def models_md(*files) -> str:
    return "\n".join(f"- [{f['name']}]({f['url']}) \u2192 `{f['directory']}/`" for f in files)


def build(oi: dict) -> dict[str, Graph]:
    graphs = {}
    medium_models = models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium6"])
    graphs["swd_sd35_medium_6steps"] = sd35_txt2img(
        oi, "swd_sd35_medium_6steps", SD35_MEDIUM, LORA["medium6"], "SD3.5 Medium · 6 steps", 1024, 1024,
        "SD3.5 Medium · SwD 6 steps · 1024×1024",
        medium_models + "\n\nThe LoRA is the `adapter_model.safetensors` of the Hugging Face repository, renamed.")
    graphs["swd_sd35_medium_1344x768"] = sd35_txt2img(
        oi, "swd_sd35_medium_1344x768", SD35_MEDIUM, LORA["medium6"], "SD3.5 Medium · 6 steps", 1344, 768,
        "SD3.5 Medium · SwD 6 steps · 1344×768 (non-square)",
        medium_models + "\n\nEvery step keeps the final aspect ratio: with 1344×768 the six steps run at "
                        + ", ".join(f"{w * 8}×{h * 8}" for h, w in step_sizes(PRESETS["SD3.5 Medium · 6 steps"].scales,
                                                                              768 // 8, 1344 // 8, 2)) + " px.")
    graphs["swd_sd35_large_4steps"] = sd35_txt2img(
        oi, "swd_sd35_large_4steps", SD35_LARGE, LORA["large4"], "SD3.5 Large · 4 steps", 1024, 1024,
        "SD3.5 Large · SwD 4 steps · 1024×1024",
        models_md(SD35_LARGE, *SD3_TEXT, LORA["large4"])
        + "\n\nFor the older 6-step Large LoRA pick the preset *SD3.5 Large · 6 steps (older release)*.")
    graphs["swd_flux_dev"] = flux(oi)
    graphs["swd_sdxl"] = sdxl(oi)
    graphs["swd_custom_sampler"] = custom_sampler(oi)
    graphs["swd_manual_chain"] = manual_chain(oi)
    graphs["swd_img2img"] = img2img(oi)
    graphs["swd_hires_2x"] = hires_2x(oi)
    graphs["swd_inpaint"] = inpaint(oi)
    graphs["swd_tiny_demo"] = tiny_demo(oi)
    graphs["swd_tiny_img2img"] = tiny_img2img(oi)
    graphs["swd_tiny_hires_2x"] = tiny_hires_2x(oi)
    graphs["swd_tiny_inpaint"] = tiny_inpaint(oi)
    graphs["swd_distill_tiny"] = distill_tiny(oi)
    graphs["swd_distill_sd35_medium"] = distill_real(oi, "sd35")
    graphs["swd_distill_flux_dev"] = distill_real(oi, "flux")
    graphs["swd_distill_sdxl"] = distill_real(oi, "sdxl")
    return graphs


def flux(oi) -> Graph:
    g = Graph(oi, "swd_flux_dev")
    unet = g.add("UNETLoader", (40, 120), size=[360, 82], models=[FLUX_DEV], unet_name=FLUX_DEV["name"])
    clip = text_encoders(g, "flux", (40, 250))
    vae = g.add("VAELoader", (40, 470), size=[360, 60], models=[FLUX_VAE], vae_name=FLUX_VAE["name"])
    swd = lora_loader(g, unet.out(0), LORA["flux"], (440, 120))
    pos, neg = prompts(g, clip.out(0), (440, 340))
    guidance = g.add("FluxGuidance", (900, 500), size=[300, 60], guidance=4.5,
                     title="FluxGuidance (SwD FLUX: 4.5)")
    g.connect(pos.out(0), guidance, "conditioning")
    latent = g.add("EmptySD3LatentImage", (440, 760), width=1024, height=1024, batch_size=1)
    sampler = g.add("SwDKSampler", (900, 120), size=[340, 360], seed=42, preset="FLUX.1-dev · 4 steps")
    g.connect(swd.out("MODEL"), sampler, "model")
    g.connect(guidance.out(0), sampler, "positive")
    g.connect(neg.out(0), sampler, "negative")
    g.connect(latent.out(0), sampler, "latent_image")
    connect_preset(g, swd, sampler)
    decode_and_save(g, sampler.out(0), vae.out(0), "swd/flux_dev", (1280, 120))
    g.note("## FLUX.1-dev · SwD 4 steps · 1024×1024\n" + NOTE_COMMON
           + "- *FluxGuidance* stays at **4.5**, the guidance the SwD FLUX LoRA was distilled with; cfg stays 1.\n\n"
           "**Models** (file \u2192 ComfyUI/models/\u2026; FLUX.1-dev is gated: accept its license on Hugging Face)\n"
           + models_md(FLUX_DEV, *FLUX_TEXT, FLUX_VAE, LORA["flux"]), (40, 590), [360, 600])
    return g


def sdxl(oi) -> Graph:
    g = Graph(oi, "swd_sdxl")
    ckpt = g.add("CheckpointLoaderSimple", (40, 120), size=[360, 100], models=[SDXL_BASE], ckpt_name=SDXL_BASE["name"])
    swd = lora_loader(g, ckpt.out("MODEL"), LORA["sdxl"], (440, 120))
    pos, neg = prompts(g, ckpt.out("CLIP"), (440, 340))
    latent = g.add("EmptyLatentImage", (440, 760), width=1024, height=1024, batch_size=1)
    sampler = g.add("SwDKSampler", (900, 120), size=[340, 360], seed=42, preset="SDXL · 4 steps")
    g.connect(swd.out("MODEL"), sampler, "model")
    g.connect(pos.out(0), sampler, "positive")
    g.connect(neg.out(0), sampler, "negative")
    g.connect(latent.out(0), sampler, "latent_image")
    connect_preset(g, swd, sampler)
    decode_and_save(g, sampler.out(0), ckpt.out("VAE"), "swd/sdxl", (1280, 120))
    g.note("## SDXL · SwD 4 steps · 1024×1024\n" + NOTE_COMMON
           + "- SDXL is an eps-prediction UNet: the preset's sigmas are read as DDPM times, and the latent comes "
             "from *Empty Latent Image* (4 channels), not the SD3 one.\n\n**Models** (file \u2192 ComfyUI/models/\u2026)\n"
           + models_md(SDXL_BASE, LORA["sdxl"]), (40, 280), [360, 560])
    return g


def custom_sampler(oi) -> Graph:
    g = Graph(oi, "swd_custom_sampler")
    ckpt = g.add("CheckpointLoaderSimple", (40, 120), size=[360, 100], models=[SD35_MEDIUM],
                 ckpt_name=SD35_MEDIUM["name"])
    clip = text_encoders(g, "sd3", (40, 280))
    swd = lora_loader(g, ckpt.out("MODEL"), LORA["medium6"], (440, 120))
    pos, _ = prompts(g, clip.out(0), (440, 340), negative=False)
    guider = g.add("BasicGuider", (900, 120), size=[240, 50])
    g.connect(swd.out("MODEL"), guider, "model")
    g.connect(pos.out(0), guider, "conditioning")
    noise = g.add("RandomNoise", (900, 220), size=[260, 82], noise_seed=42)
    schedule = g.add("SwDSchedule", (900, 350), size=[340, 170], preset="SD3.5 Medium · 6 steps")
    g.connect(swd.out("MODEL"), schedule, "model")
    connect_preset(g, swd, schedule)
    sampler = g.add("SwDSampler", (900, 570), size=[260, 60])
    g.connect(schedule.out(1), sampler, "scales")
    latent = g.add("EmptySD3LatentImage", (440, 580), width=1024, height=1024, batch_size=1)
    custom = g.add("SamplerCustomAdvanced", (1280, 120), size=[300, 110])
    g.connect(noise.out(0), custom, "noise")
    g.connect(guider.out(0), custom, "guider")
    g.connect(sampler.out(0), custom, "sampler")
    g.connect(schedule.out(0), custom, "sigmas")
    g.connect(latent.out(0), custom, "latent_image")
    decode_and_save(g, custom.out(0), ckpt.out("VAE"), "swd/custom_sampler", (1620, 120))
    g.note("## SwD with SamplerCustomAdvanced\nThe same sampling as *SwD Scale-wise KSampler*, split into ComfyUI's "
           "custom-sampling parts so that it combines with other guiders (e.g. CFGGuider, DualCFGGuider) and noise "
           "nodes.\n\n- **SwD Schedule** gives the sigmas (SIGMAS) and the relative sizes (SCALES) of the preset.\n"
           "- **SwD Sampler** runs the scale-wise loop; connect SCALES to it.\n- The seed comes from *RandomNoise*; "
           "the latent is the **final** size.\n- A guider with cfg \u2260 1 works but the SwD LoRAs are distilled for "
           "cfg 1 (BasicGuider).\n\n**Models** (file \u2192 ComfyUI/models/\u2026)\n"
           + models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium6"]), (40, 500), [360, 600])
    return g


MANUAL_STEPS = [(512, 1.0), (640, 0.8959), (768, 0.7371), (1024, 0.6022)]  # SD3.5 Medium · 4 steps


def manual_chain(oi) -> Graph:
    g = Graph(oi, "swd_manual_chain")
    ckpt = g.add("CheckpointLoaderSimple", (40, 120), size=[360, 100], models=[SD35_MEDIUM],
                 ckpt_name=SD35_MEDIUM["name"])
    clip = text_encoders(g, "sd3", (40, 280))
    swd = lora_loader(g, ckpt.out("MODEL"), LORA["medium4"], (440, 120))
    pos, _ = prompts(g, clip.out(0), (440, 340), negative=False)
    guider = g.add("BasicGuider", (440, 580), size=[240, 50])
    g.connect(swd.out("MODEL"), guider, "model")
    g.connect(pos.out(0), guider, "conditioning")
    euler = g.add("KSamplerSelect", (440, 680), size=[260, 60], sampler_name="euler")
    noise = g.add("RandomNoise", (440, 790), size=[260, 82], noise_seed=42)
    no_noise = g.add("DisableNoise", (440, 920), size=[200, 30])
    first = g.add("EmptySD3LatentImage", (440, 1000), width=MANUAL_STEPS[0][0], height=MANUAL_STEPS[0][0],
                  batch_size=1)
    previous = None
    x = 900
    for step, (px, sigma) in enumerate(MANUAL_STEPS, start=1):
        if previous is None:
            latent = first.out(0)
        else:
            renoise = g.add("SwDLatentUpscaleRenoise", (x, 120), size=[320, 260],
                            title=f"Step {step}: upscale to {px} px, re-noise to \u03c3 {sigma:g}",
                            width=px, height=px, sigma=sigma, seed=step)
            g.connect(swd.out("MODEL"), renoise, "model")
            g.connect(previous, renoise, "samples")
            latent = renoise.out(0)
        sigmas = g.add("ManualSigmas", (x, 420), size=[320, 60], title=f"Step {step} sigmas",
                       sigmas=f"{sigma:g}, 0")
        sample = g.add("SamplerCustomAdvanced", (x, 520), size=[300, 110], title=f"Step {step}: one step at {px} px")
        g.connect(noise.out(0) if previous is None else no_noise.out(0), sample, "noise")
        g.connect(guider.out(0), sample, "guider")
        g.connect(euler.out(0), sample, "sampler")
        g.connect(sigmas.out(0), sample, "sigmas")
        g.connect(latent, sample, "latent_image")
        previous = sample.out("denoised_output")
        last = step == len(MANUAL_STEPS)
        decode_and_save(g, previous, ckpt.out("VAE"), "swd/manual_chain" if last else "", (x, 680),
                        preview=not last, below=True)
        x += 380
    g.note("## SwD by hand: stock one-step samplers + SwD Latent Upscale + Re-noise\nThe *SD3.5 Medium · 4 steps* "
           "schedule written out: scales 64, 80, 96, 128 (512 \u2192 1024 px), sigmas 1.0, 0.8959, 0.7371, 0.6022, 0. "
           "Each column is one SwD step with a preview of its x0.\n\n- One Euler step from \u03c3 to 0 returns the "
           "model's x0 prediction (`denoised_output`).\n- **SwD Latent Upscale + Re-noise** resizes x0 to the next "
           "size and mixes in fresh noise at the next \u03c3; the next sampler starts at that \u03c3 with *DisableNoise*.\n"
           "- Change the sizes and sigmas together: the \u03c3 of a step's ManualSigmas must equal the re-noise \u03c3.\n"
           "- The result is close to, not bit-equal with, *SwD Scale-wise KSampler*: that one draws all noise "
           "from one seeded generator.\n\n**Models** (file \u2192 ComfyUI/models/\u2026)\n"
           + models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium4"]), (40, 500), [360, 640])
    return g


MEDIUM6 = PRESETS["SD3.5 Medium · 6 steps"]
INPUT_IMAGE = "example.png"  # ComfyUI's own input/example.png, as its img2img templates use


def steps_md(denoise: float, final_px: int = 1024, preset=MEDIUM6) -> str:
    """Which steps of a preset (SD3.5 Medium · 6 steps by default) run at `denoise` for a square final image."""
    run = select_steps(preset.scales, preset.sigmas, denoise)
    sizes = step_sizes(run.scales, final_px // 8, final_px // 8, 2)
    return (f"denoise {denoise:g} runs {len(sizes)} of {len(preset.scales)} steps: "
            + ", ".join(f"{w * 8} px at \u03c3 {s:g}" for (h, w), s in zip(sizes, run.sigmas)))


DENOISE_RULE = ("**denoise**: only the preset's steps whose \u03c3 is at most denoise run, starting from your latent "
                "resized to the first of them and re-noised to its \u03c3; the final size is always the input's size. "
                "Lower keeps more of the input.")


def load_and_fit_image(g: Graph, pos_xy, size: int = 1024):
    """LoadImage (with its mask) and ImageScale to size x size, centre-cropped: SD3.5 needs multiples of 16 px."""
    image = g.add("LoadImage", pos_xy, size=[320, 360], image=INPUT_IMAGE)
    fit = g.add("ImageScale", (pos_xy[0], pos_xy[1] + 400), size=[320, 130], title=f"Fit to {size}×{size}",
                upscale_method="lanczos", width=size, height=size, crop="center")
    g.connect(image.out("IMAGE"), fit, "image")
    return image, fit


def img2img(oi) -> Graph:
    g = Graph(oi, "swd_img2img")
    ckpt, swd, pos, neg = sd35_models(g, SD35_MEDIUM, LORA["medium6"])
    _, fit = load_and_fit_image(g, (40, 820))
    encode = g.add("VAEEncode", (440, 820), size=[210, 46])
    g.connect(fit.out(0), encode, "pixels")
    g.connect(ckpt.out("VAE"), encode, "vae")
    sampler = swd_ksampler(g, swd, pos, neg, encode.out(0), (900, 120), preset="SD3.5 Medium · 6 steps", denoise=0.8)
    decode_and_save(g, sampler.out(0), ckpt.out("VAE"), "swd/img2img", (1280, 120))
    g.note("## SD3.5 Medium · SwD img2img · 1024×1024\nRedraws your image after the prompt, keeping its layout and "
           f"colours.\n\n- {DENOISE_RULE}\n- **Use 0.8** ({steps_md(0.8)}): the small early steps, which compose "
           "the image, are skipped, the later ones redraw it. 0.9 changes more (5 steps from 384 px), 0.75 less "
           f"(2 steps). Below 0.6022 one step at the final size runs.\n- *Load Image*: your picture; *Fit to "
           "1024×1024* gives SD3.5 a size it can use (multiples of 16 px).\n- The prompt should describe your "
           "image; cfg stays 1.\n\n**Models** (file \u2192 ComfyUI/models/\u2026)\n"
           + models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium6"]), (40, 1380), [360, 600])
    return g


def hires_2x(oi) -> Graph:
    g = Graph(oi, "swd_hires_2x")
    ckpt, swd, pos, neg = sd35_models(g, SD35_MEDIUM, LORA["medium6"])
    latent = g.add("EmptySD3LatentImage", (440, 760), width=512, height=512, batch_size=1)
    draft = swd_ksampler(g, swd, pos, neg, latent.out(0), (900, 120), title="Draft: 512×512, all 6 steps",
                         preset="SD3.5 Medium · 6 steps")
    decode_and_save(g, draft.out(0), ckpt.out("VAE"), "", (900, 520), preview=True)
    upscale = g.add("LatentUpscaleBy", (1280, 120), size=[300, 82], upscale_method="bicubic", scale_by=2.0)
    g.connect(draft.out(0), upscale, "samples")
    hires = swd_ksampler(g, swd, pos, neg, upscale.out(0), (1280, 260), title="Hires: 1024×1024, the last steps",
                         preset="SD3.5 Medium · 6 steps", denoise=0.75)
    decode_and_save(g, hires.out(0), ckpt.out("VAE"), "swd/hires_2x", (1660, 120))
    g.note("## SD3.5 Medium · SwD hires fix · 512 \u2192 1024 px\nA quick 512×512 draft, upscaled ×2 in latent space "
           "and finished at 1024×1024 by the last steps of the same preset: SwD's later steps are an upscaler.\n\n"
           f"- {DENOISE_RULE}\n- **Use 0.6–0.75** on the upscaled latent: {steps_md(0.75)}; {steps_md(0.6)}. "
           "Higher adds detail and may change the draft; lower keeps it closer.\n- With the 4-step preset "
           "(SD3.5 Medium/Large · 4 steps: 512, 640, 768, 1024 px) denoise 0.75 runs 768 and 1024 px too, 0.9 runs "
           "640, 768 and 1024 px.\n- The draft's seed decides the composition; change it on the first sampler.\n\n"
           "**Models** (file \u2192 ComfyUI/models/\u2026)\n" + models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium6"]),
           (40, 1000), [360, 640])
    return g


def inpaint(oi) -> Graph:
    g = Graph(oi, "swd_inpaint")
    ckpt, swd, pos, neg = sd35_models(g, SD35_MEDIUM, LORA["medium6"])
    image, fit = load_and_fit_image(g, (40, 820))
    encode = g.add("VAEEncodeForInpaint", (440, 820), size=[260, 100], grow_mask_by=6)
    g.connect(fit.out(0), encode, "pixels")
    g.connect(ckpt.out("VAE"), encode, "vae")
    g.connect(image.out("MASK"), encode, "mask")
    sampler = swd_ksampler(g, swd, pos, neg, encode.out(0), (900, 120), preset="SD3.5 Medium · 6 steps", denoise=1.0)
    decode_and_save(g, sampler.out(0), ckpt.out("VAE"), "swd/inpaint", (1280, 120))
    g.note("## SD3.5 Medium · SwD inpainting · 1024×1024\nRepaints the masked part of your image after the prompt; "
           "the rest stays as it is (the sampler puts your latent back outside the mask after every step, at every "
           "scale).\n\n- *Load Image*: right-click \u2192 *Open in MaskEditor* and paint the part to redraw.\n"
           f"- {DENOISE_RULE}\n- **Use 1.0** with *VAE Encode (for Inpainting)*: it greys out the masked pixels, so "
           "there is nothing there to keep and all 6 steps compose the new part in context. To keep what is under "
           "the mask and only change it, use *VAE Encode* + *Set Latent Noise Mask* and denoise 0.6–0.8.\n"
           "- The prompt describes the whole picture with the new part.\n\n**Models** (file \u2192 ComfyUI/models/\u2026)\n"
           + models_md(SD35_MEDIUM, *SD3_TEXT, LORA["medium6"]), (40, 1380), [360, 640])
    return g


# --- the tiny demo family that ships in the pack's models/ folder (runs on a CPU, nothing to download) --------

TINY = PRESETS[TINY_PRESET]
TINY_PX = NATIVE_LATENT * 8
TINY_CAPTIONS = ["solid red circle top left on blue", "striped yellow square top right on green",
                 "solid white triangle bottom left on black", "striped cyan circle bottom right on gray"]
TINY_MASK = 72  # px: covers a shape in the top-left quadrant (centre 0.23–0.33 of the side, half-size up to 0.2)
TINY_ABOUT = (
    "The pack ships this model family in its own `models/` folder, so it runs out of the box, on a CPU, in well "
    f"under a second: `{TEACHER_FILE}` is an SD3-architecture MMDiT (depth 2) trained as a rectified flow on "
    "scenes the pack draws itself (one shape on a background, 32×32 pixels shown as 128×128, drawn by "
    f"`swd_distill/scenes.py`; nothing is downloaded); `{STUDENT_FILE}` is its SwD student, a LoRA made by the "
    "pack's own scale-wise distillation "
    "(`python -m swd_distill`), which samples in 4 steps at growing sizes ("
    + ", ".join(f"{w * 8}" for _, w in step_sizes(TINY.scales, NATIVE_LATENT, NATIVE_LATENT, 2)) + " px).")
TINY_GRAMMAR = (f"**Captions**: `{GRAMMAR}`, e.g. `{TINY_CAPTIONS[0]}`, or any part of one (`yellow square`); the "
                f"empty caption is the unconditional prompt (the negative, unused at cfg 1). Words: {vocabulary()}.")


def tiny_models(g: Graph, caption: str, caption_pos=(440, 340)):
    """UNETLoader of the tiny teacher, the SwD LoRA on it and the positive and empty negative captions."""
    unet = g.add("UNETLoader", (40, 120), size=[360, 82], unet_name=TEACHER_FILE)
    swd = g.add("SwDLoraLoader", (440, 120), lora_name=STUDENT_FILE)
    g.connect(unet.out(0), swd, "model")
    pos = tiny_caption(g, caption, caption_pos)
    neg = g.add("SwDTinyTextEncode", (40, 260), size=[360, 100], title="Negative caption (unused at cfg 1)",
                colors=NEGATIVE_COLORS, text="")
    return swd, pos, neg


def tiny_caption(g: Graph, caption: str, pos_xy, title="Caption") -> Node:
    return g.add("SwDTinyTextEncode", pos_xy, size=[420, 130], title=title, colors=PROMPT_COLORS, text=caption)


def tiny_latent(g: Graph, pos_xy, batch_size=1) -> Node:
    return g.add("EmptySD3LatentImage", pos_xy, width=TINY_PX, height=TINY_PX, batch_size=batch_size)


def tiny_demo(oi) -> Graph:
    g = Graph(oi, "swd_tiny_demo")
    swd, pos, neg = tiny_models(g, "\n".join(TINY_CAPTIONS))
    latent = tiny_latent(g, (440, 520), batch_size=len(TINY_CAPTIONS))
    sampler = swd_ksampler(g, swd, pos, neg, latent.out(0), (900, 120), preset=TINY_PRESET)
    decode_and_save(g, sampler.out(0), None, "swd/tiny_demo", (1280, 120))
    g.note(f"## Tiny demo · SwD 4 steps · {TINY_PX}×{TINY_PX} on a CPU\n{TINY_ABOUT}\n\n{TINY_GRAMMAR}\n\n"
           "**What to change**\n- *Caption*: one caption per line, one picture per line; the empty latent's "
           f"*batch_size* must equal the number of lines ({len(TINY_CAPTIONS)} here).\n- *Seed*: set it to "
           "*randomize* for new pictures on every run.\n- *preset* stays *Tiny demo · 4 steps* (SwD LoRA Loader's "
           "`preset` output sets it).\n- The SwD Tiny nodes (text encoder, latent codec without a VAE) serve only "
           "these two models.", (40, 400), [360, 700])
    return g


def tiny_draft(g: Graph, caption: str, x=900) -> tuple[Node, Node, Node, Node]:
    """The tiny models and a txt2img draft that the second pass starts from: (lora, positive, negative, draft)."""
    swd, pos, neg = tiny_models(g, caption)
    latent = tiny_latent(g, (440, 520))
    draft = swd_ksampler(g, swd, pos, neg, latent.out(0), (x, 120), title="Draft: the input picture, all 4 steps",
                         preset=TINY_PRESET)
    return swd, pos, neg, draft


def tiny_second_pass(g: Graph, swd: Node, pos: Node, neg: Node, latent, denoise: float, name: str, x: int):
    """The second SwDKSampler (another seed than the draft's) from `latent` at `denoise`, decoded and saved."""
    sampler = swd_ksampler(g, swd, pos, neg, latent, (x, 300), title=f"SwD KSampler, denoise {denoise:g}", seed=7,
                           preset=TINY_PRESET, denoise=denoise)
    decode_and_save(g, sampler.out(0), None, f"swd/{name}", (x + 460, 120), below=True)
    return sampler


def tiny_input_picture(g: Graph, draft: Node) -> Node:
    """The draft decoded (shown) and encoded again: the IMAGE -> SwD Tiny Encode path a picture of your own takes."""
    decode = decode_and_save(g, draft.out(0), None, "", (900, 520), preview=True, title="Input picture")
    encode = g.add("SwDTinyEncode", (900, 1000), size=[210, 46])
    g.connect(decode.out(0), encode, "pixels")
    return encode


OWN_PICTURE = ("- *Your own picture*: Load Image \u2192 Upscale Image to 128×128 \u2192 *SwD Tiny Encode*'s `pixels`, "
               "instead of the draft (it must look like the tiny scenes).")


def tiny_img2img(oi) -> Graph:
    g = Graph(oi, "swd_tiny_img2img")
    swd, _, neg, draft = tiny_draft(g, "solid red circle top left on blue")
    encode = tiny_input_picture(g, draft)
    pos = tiny_caption(g, "solid yellow circle top left on blue", (1280, 120), title="Caption of the result")
    tiny_second_pass(g, swd, pos, neg, encode.out(0), 0.9, "tiny_img2img", 1280)
    g.note(f"## Tiny demo · SwD img2img · {TINY_PX}×{TINY_PX}\nRedraws a picture after a new caption that changes "
           "one thing (here the colour: red \u2192 yellow), keeping the rest. The input picture is drawn first by the "
           "same models (the draft), so the workflow needs no input file.\n\n"
           f"- {DENOISE_RULE}\n- **Use 0.9** ({steps_md(0.9, TINY_PX, TINY)}): the input is re-noised to "
           "\u03c3 0.8959, "
           "enough for the caption to change a colour while the layout survives. 0.8 or 0.75 "
           f"({steps_md(0.8, TINY_PX, TINY)}) start at \u03c3 0.7371, where more of the input survives (its colour may "
           "too): use them to change details only. 1 ignores the input.\n" + OWN_PICTURE
           + f"\n\n{TINY_GRAMMAR}\n\n{TINY_ABOUT}", (40, 400), [360, 900])
    return g


def tiny_hires_2x(oi) -> Graph:
    g = Graph(oi, "swd_tiny_hires_2x")
    swd, pos, neg, draft = tiny_draft(g, "striped magenta square bottom right on green")
    decode_and_save(g, draft.out(0), None, "", (900, 520), preview=True, title=f"Draft, {TINY_PX}×{TINY_PX}")
    upscale = g.add("LatentUpscaleBy", (900, 1000), size=[300, 82], upscale_method="bicubic", scale_by=2.0)
    g.connect(draft.out(0), upscale, "samples")
    tiny_second_pass(g, swd, pos, neg, upscale.out(0), 0.75, "tiny_hires_2x", 1280)
    big = 2 * TINY_PX
    g.note(f"## Tiny demo · SwD hires fix · {TINY_PX} \u2192 {big} px\nA {TINY_PX}×{TINY_PX} draft, upscaled ×2 in "
           f"latent space and finished at {big}×{big} by the last steps of the same preset: SwD's later steps are "
           f"an upscaler.\n\n- {DENOISE_RULE}\n- **Use 0.6–0.75** on the upscaled latent: "
           f"{steps_md(0.75, big, TINY)}; {steps_md(0.6, big, TINY)}. Higher redraws more and may change the "
           f"draft; lower keeps it closer (and blurrier).\n- The tiny teacher was trained at {TINY_PX} px only; "
           f"{big} px (a {big // 8}×{big // 8} latent) is within its position embedding (up to a "
           f"{2 * MMDIT['pos_embed_max_size']}×{2 * MMDIT['pos_embed_max_size']} latent), so this shows how well "
           "the learned upscaling steps carry to a size never seen.\n- Both samplers share the caption; the draft's "
           f"seed decides the composition.\n\n{TINY_GRAMMAR}\n\n{TINY_ABOUT}", (40, 400), [360, 900])
    return g


def tiny_inpaint(oi) -> Graph:
    g = Graph(oi, "swd_tiny_inpaint")
    swd, _, neg, draft = tiny_draft(g, "solid red circle top left on blue")
    encode = tiny_input_picture(g, draft)
    side = TINY_MASK
    empty = g.add("SolidMask", (440, 700), size=[260, 106], title="Mask: nothing", value=0.0, width=TINY_PX,
                  height=TINY_PX)
    box = g.add("SolidMask", (440, 850), size=[260, 106], title="Mask: the top-left box", value=1.0, width=side,
                height=side)
    mask = g.add("MaskComposite", (440, 1000), size=[260, 130], x=0, y=0, operation="add")
    g.connect(empty.out(0), mask, "destination")
    g.connect(box.out(0), mask, "source")
    noise_mask = g.add("SetLatentNoiseMask", (900, 1100), size=[260, 46])
    g.connect(encode.out(0), noise_mask, "samples")
    g.connect(mask.out(0), noise_mask, "mask")
    pos = tiny_caption(g, "striped yellow triangle top left on blue", (1280, 120), title="Caption of the result")
    tiny_second_pass(g, swd, pos, neg, noise_mask.out(0), 1.0, "tiny_inpaint", 1280)
    g.note(f"## Tiny demo · SwD inpainting · {TINY_PX}×{TINY_PX}\nRepaints the masked part of a picture after the "
           f"caption; the rest stays as it is (the sampler puts the input back outside the mask after every step, "
           f"at every scale). Here the top-left {side}×{side} px box, where the draft's shape is, gets a new shape "
           "and colour. The input picture is drawn first by the same models (the draft), so the workflow needs no "
           f"input file.\n\n- {DENOISE_RULE}\n- **Use 1.0**: the old shape must go entirely, so all 4 steps "
           "compose the new one from noise, in the context of the kept background. 0.6–0.8 keeps what is under "
           "the mask and only changes it (e.g. its colour).\n- *Mask*: change the box's size and the "
           "composite's x, y; with your own picture, Load Image's MASK (painted in its mask editor) can replace "
           "it.\n- The caption describes the whole picture "
           "with the new part; the scenes have one shape, so put the new one where the old one was.\n"
           + OWN_PICTURE + f"\n\n{TINY_GRAMMAR}\n\n{TINY_ABOUT}", (40, 400), [360, 1000])
    return g


# --- distillation in a graph: SwD Teacher Samples -> SwD Distill LoRA -> SwD Save LoRA -> SwD KSampler ----------

DISTILL_COLORS = {"color": "#223", "bgcolor": "#335"}
# swd_distill_tiny queued as shipped on this project's 2 idle CPU cores (ComfyUI --cpu): seconds per stage
TINY_DISTILL = {"per_prompt": 2, "samples_s": 61, "distill_s": 192, "draw_s": 1}
DISTILL_FILES = (
    "**Where the files go**\n- *SwD Save LoRA* writes `<filename_prefix>_00001_.safetensors` (fp16, the released "
    "PEFT keys, the preset in its metadata) into the first ComfyUI loras folder outside this pack, normally "
    "`ComfyUI/models/loras/swd/`; *SwD LoRA Loader* lists it after a refresh (press R) and reads its preset from the "
    "metadata, whatever the file is called.\n- Checkpoints (both adapters, the GAN head, the optimizers, the step): "
    "`ComfyUI/output/swd_distill/<checkpoint_name>.ckpt.safetensors`, every *checkpoint_every* steps and at the "
    "end.")
DISTILL_RESUME = (
    "**Cancel and resume**: *Cancel* stops SwD Distill LoRA and the graph (nothing is saved to the loras folder). The "
    "checkpoint keeps the last step written: every *checkpoint_every* steps, or the step you cancelled at when the "
    "Cancel came between two steps or during a preview; a step cut in the middle is lost. To go on, turn *resume* on "
    "and queue again with the same settings (only *steps* and *checkpoint_every* may change, so raise *steps* to "
    "train longer): it continues from the checkpoint, and ComfyUI still holds the teacher samples in its cache "
    "unless it was restarted. With *resume* off a run starts at step 0 and overwrites the checkpoint of that name.")


def teacher_samples(g: Graph, model, clip, pos_xy, captions: list[str], **widgets) -> Node:
    node = g.add("SwDTeacherSamples", pos_xy, size=[420, 620], colors=PROMPT_COLORS, prompts="\n".join(captions),
                 **widgets)
    g.connect(model, node, "model")
    g.connect(clip, node, "clip")
    return node


def distill_lora(g: Graph, model, data: Node, pos_xy, size=None, **widgets) -> tuple[Node, Node]:
    """SwD Distill LoRA on the teacher and SwD Teacher Samples' lists, and SwD Save LoRA below it (its preset
    driven by the distiller's)."""
    distill = g.add("SwDDistillLoRA", pos_xy, size=size or [360, 780], colors=DISTILL_COLORS, **widgets)
    g.connect(model, distill, "model")
    for name in ("latents", "positive", "negative"):
        g.connect(data.out(name), distill, name)
    save = g.add("SwDSaveLoRA", (pos_xy[0], pos_xy[1] + (size or [0, 780])[1] + 60), size=[360, 130],
                 preset=widgets["preset"], filename_prefix=f"swd/{widgets['checkpoint_name']}")
    g.connect(distill.out("lora"), save, "lora")
    connect_preset(g, distill, save)
    return distill, save


def distill_tiny(oi) -> Graph:
    from swd_distill.splits import seen
    g = Graph(oi, "swd_distill_tiny")
    unet = g.add("UNETLoader", (40, 120), size=[360, 82], unet_name=TEACHER_FILE)
    tiny = g.add("SwDTinyLoader", (40, 250), size=[360, 70])
    captions = seen()
    data = teacher_samples(g, unet.out(0), tiny.out("CLIP"), (440, 120), captions, width=TINY_PX, height=TINY_PX,
                           steps=28, cfg=3.0, images_per_prompt=TINY_DISTILL["per_prompt"])
    distill, save = distill_lora(
        g, unet.out(0), data, (900, 120), preset=TINY_PRESET, recipe="full (DMD + patch + GAN)", steps=500,
        warm_steps=100, batch_size=32, rank=32, learning_rate=3e-4, cfg=3.0, seed=3, training_dtype="fp32",
        gradient_checkpointing=False, checkpoint_name="swd-tiny-distilled")
    pos = tiny_caption(g, "\n".join(TINY_CAPTIONS), (1300, 120), title="Captions to draw")
    neg = g.add("SwDTinyTextEncode", (1300, 300), size=[420, 100], title="Negative caption (the teacher's cfg 3)",
                colors=NEGATIVE_COLORS, text="")
    latent = tiny_latent(g, (1300, 450), batch_size=len(TINY_CAPTIONS))
    student = swd_ksampler(g, distill, pos, neg, latent.out(0), (1760, 120), title="Your student: SwD, 4 steps",
                           preset=TINY_PRESET)
    decode_and_save(g, student.out(0), tiny.out("VAE"), "swd/distill_tiny", (2140, 120), below=True,
                    title="Your student, 4 steps")
    teacher = g.add("KSampler", (1760, 540), size=[340, 290], title="The teacher: 28 steps, cfg 3", seed=42,
                    steps=28, cfg=3.0, sampler_name="euler", scheduler="simple")
    g.connect(unet.out(0), teacher, "model")
    g.connect(pos.out(0), teacher, "positive")
    g.connect(neg.out(0), teacher, "negative")
    g.connect(latent.out(0), teacher, "latent_image")
    decode_and_save(g, teacher.out(0), tiny.out("VAE"), "", (2140, 600), preview=True, title="The teacher, 28 steps")
    t = TINY_DISTILL
    total = t["samples_s"] + t["distill_s"] + t["draw_s"]
    g.note(
        f"## Tiny demo · distil your own SwD student · on a CPU\nThe whole SwD recipe in one graph, on the tiny "
        "family the pack ships (nothing to download): the teacher draws its own training data, SwD Distill LoRA "
        "trains a 4-step scale-wise student LoRA on it, SwD Save LoRA writes the file, and the student (4 steps) is "
        "drawn beside the teacher (28 steps, cfg 3) on the same captions.\n\n"
        f"1. **SwD Teacher Samples**: the teacher's samples of the {len(captions)} *seen* captions of the tiny family "
        f"(`swd_distill/splits.py`; the 48 held-out ones are never trained on), {t['per_prompt']} per caption "
        f"({len(captions) * t['per_prompt']} images), {TINY_PX}×{TINY_PX} px, 28 steps, cfg 3: the official "
        "recipe trains on the teacher's own samples.\n"
        "2. **SwD Distill LoRA**: the settings of the shipped student (`make retrain-tiny`): preset *Tiny demo · 4 "
        "steps*, the full recipe (DMD + patch loss + GAN), 500 steps of which 100 warm-start steps, batch 32, rank "
        "32, lr 3e-4, teacher cfg 3, seed 3, fp32, no gradient checkpointing (a CPU has the memory).\n"
        "3. **SwD Save LoRA** writes it; the student MODEL goes straight to *SwD Scale-wise KSampler*.\n\n"
        f"**Run time**, measured on 2 CPU cores with nothing else running: about {total / 60:.0f} min in all "
        f"({total} s): teacher samples {t['samples_s']} s, distillation {t['distill_s']} s, drawing about "
        f"{t['draw_s']} s. Other jobs on the same cores slow torch down a lot (the teacher samples took 165 s and "
        "510 s while other jobs kept 2-4 cores' worth busy). The progress bar shows the student's sample of the "
        "first caption every 50 steps. Fewer *steps* or *images_per_prompt* make it quicker and the student "
        "weaker; the shipped student (`swd-tiny-4-steps.safetensors`) was distilled from 8 samples per "
        "caption.\n\n"
        f"**Captions to draw**: one per line, one picture per line (the empty latent's batch_size = "
        f"{len(TINY_CAPTIONS)} lines); the last one, `{TINY_CAPTIONS[-1]}`, is held out: the student never saw it.\n\n"
        f"{DISTILL_FILES}\n\n{DISTILL_RESUME}\n\n{TINY_GRAMMAR}", (40, 380), [360, 1100])
    return g


DISTILL_PROMPTS = [
    PROMPT,
    "a cozy reading nook by a rainy window, warm lamp light, a cat asleep on a knitted blanket, film photograph",
    "an astronaut riding a horse across a desert at sunset, dramatic clouds, cinematic wide shot",
    "a bowl of ramen with a soft-boiled egg and spring onions, steam rising, top-down food photography",
    "a lighthouse on a rocky cliff in a storm, crashing waves, oil painting",
    "a portrait of an old fisherman with a weathered face and a knitted cap, natural light, 85 mm photograph",
    "a futuristic city street at night with neon signs reflected in puddles, rain, cyberpunk illustration",
    "a watercolor painting of a hummingbird drinking from a red hibiscus flower",
]
# family: title, teacher settings (SwD Teacher Samples), distillation settings, sampler preset, memory rows (GiB at
# batch 1 / 4 on one device, README's bench-distill table)
DISTILL_REAL = {
    "sd35": {"name": "swd_distill_sd35_medium", "title": "SD3.5 Medium", "checkpoint": "swd-sd35-medium-4steps",
             "teacher": {"cfg": 4.5, "steps": 28, "sampler_name": "euler", "scheduler": "simple"},
             "distill": {"preset": "SD3.5 Medium · 4 steps", "recipe": "full (DMD + patch + GAN)", "cfg": 7.0,
                         "batch_size": 4, "learning_rate": 5e-6, "patch_block": 11},
             "memory": (7.8, 11.3), "latent": "EmptySD3LatentImage"},
    "flux": {"name": "swd_distill_flux_dev", "title": "FLUX.1-dev", "checkpoint": "swd-flux-dev-4steps",
             "teacher": {"cfg": 1.0, "guidance": 3.5, "steps": 28, "sampler_name": "euler", "scheduler": "simple"},
             "distill": {"preset": "FLUX.1-dev · 4 steps", "recipe": "full (DMD + patch + GAN)", "cfg": 3.5,
                         "batch_size": 1, "learning_rate": 5e-6},
             "memory": (30.4, 39.3), "latent": "EmptySD3LatentImage"},
    "sdxl": {"name": "swd_distill_sdxl", "title": "SDXL", "checkpoint": "swd-sdxl-4steps",
             "teacher": {"cfg": 7.0, "steps": 30, "sampler_name": "dpmpp_2m", "scheduler": "karras"},
             "distill": {"preset": "SDXL · 4 steps", "recipe": "mmd (patch loss only)", "cfg": 7.0, "batch_size": 4,
                         "learning_rate": 5e-6},
             "memory": (8.4, 12.0), "latent": "EmptyLatentImage"},
}


def distill_real(oi, family: str) -> Graph:
    spec = DISTILL_REAL[family]
    g = Graph(oi, spec["name"])
    if family == "flux":
        loader = g.add("UNETLoader", (40, 120), size=[360, 82], models=[FLUX_DEV], unet_name=FLUX_DEV["name"])
        clip = text_encoders(g, "flux", (40, 250)).out(0)
        vae = g.add("VAELoader", (40, 470), size=[360, 60], models=[FLUX_VAE], vae_name=FLUX_VAE["name"]).out(0)
        model, files = loader.out(0), [FLUX_DEV, *FLUX_TEXT, FLUX_VAE]
    else:
        checkpoint = SD35_MEDIUM if family == "sd35" else SDXL_BASE
        loader = g.add("CheckpointLoaderSimple", (40, 120), size=[360, 100], models=[checkpoint],
                       ckpt_name=checkpoint["name"])
        model, vae = loader.out("MODEL"), loader.out("VAE")
        clip = text_encoders(g, "sd3", (40, 280)).out(0) if family == "sd35" else loader.out("CLIP")
        files = [checkpoint, *SD3_TEXT] if family == "sd35" else [checkpoint]
    data = teacher_samples(g, model, clip, (440, 120), DISTILL_PROMPTS, width=1024, height=1024, seed=0,
                           images_per_prompt=4, **spec["teacher"])
    settings = {"steps": 3000, "rank": 64, "seed": 1, "training_dtype": "bf16", "gradient_checkpointing": True,
                "checkpoint_name": spec["checkpoint"], **spec["distill"]}
    distill, _ = distill_lora(g, model, data, (900, 120), **settings)
    pos, neg = prompts(g, clip, (1300, 120))
    positive = pos
    if family == "flux":  # the SwD FLUX student samples at the preset's guidance, 4.5
        positive = g.add("FluxGuidance", (1300, 500), size=[300, 60], guidance=4.5,
                         title="FluxGuidance (SwD FLUX: 4.5)")
        g.connect(pos.out(0), positive, "conditioning")
    latent = g.add(spec["latent"], (1300, 620), width=1024, height=1024, batch_size=1)
    sampler = swd_ksampler(g, distill, positive, neg, latent.out(0), (1760, 120), title="Your student: SwD, 4 steps",
                           preset=settings["preset"])
    decode_and_save(g, sampler.out(0), vae, "", (2140, 120), preview=True, title="Your student, 4 steps")
    t, d, (m1, m4) = spec["teacher"], spec["distill"], spec["memory"]
    teacher_md = (f"guidance {t['guidance']:g} on every prompt's conditioning (as FluxGuidance sets it), cfg 1"
                  if family == "flux" else f"cfg {t['cfg']:g}")
    dmd_md = {"sd35": "teacher cfg 7 inside DMD and patch block 11 (the official SD3.5 Medium values)",
              "flux": "teacher guidance 3.5 inside DMD (the student samples at the preset's 4.5: FluxGuidance 4.5 "
                      "on the prompt below)",
              "sdxl": "the **mmd** recipe (the official SDXL release: the patch loss on the teacher's own features, "
                      "no fake score, one network in memory); cfg is unused by it"}[family]
    cli_teacher = {"sd35": "checkpoints/sd3.5_medium.safetensors", "flux": "diffusion_models/flux1-dev.safetensors",
                   "sdxl": "checkpoints/sd_xl_base_1.0.safetensors"}[family]
    cli_args = {"sd35": "--cfg 7 --patch-block 11", "flux": "--cfg 3.5", "sdxl": "--recipe mmd"}[family]
    g.note(
        f"## {spec['title']} · distil your own SwD LoRA (4 steps, 1024 px)\nA template of the whole SwD recipe for "
        f"{spec['title']}: the teacher draws its own training data, SwD Distill LoRA trains the scale-wise student "
        "LoRA, SwD Save LoRA writes it, and the student is previewed at once with *SwD Scale-wise KSampler* "
        f"(preset *{d['preset']}*, cfg 1).\n\n"
        f"1. **SwD Teacher Samples**: {len(DISTILL_PROMPTS)} example prompts × 4 images at 1024×1024, "
        f"{t['steps']} steps of {t['sampler_name']}/{t['scheduler']}, {teacher_md}, empty negative (the official "
        "recipe). **Replace them by your own, many of them**: the official SD3.5 runs trained on 200k teacher "
        "images; a handful of prompts only shows that the graph works. Sampling costs what KSampler costs for "
        "the same images.\n"
        f"2. **SwD Distill LoRA**: preset *{d['preset']}*, {dmd_md}; {settings['steps']} steps at batch "
        f"{d['batch_size']}, lr {d['learning_rate']:g}, rank 64 (the official SD3.5 run: 3000 steps, lr 5e-6, "
        "rank 64, a global batch of 64 on 8 GPUs; these are starting points, not tuned for one GPU), **bf16**, "
        "**gradient checkpointing on**.\n"
        "3. **SwD Save LoRA** writes the LoRA; the student MODEL goes straight to the sampler.\n\n"
        f"**Memory** (peak of one distillation step at 1024 px, bf16, checkpointing, one GPU; README, *make "
        f"bench-distill*): **{m1:g} GiB at batch 1, {m4:g} GiB at batch 4**, plus the CUDA context and allocator "
        "slack (about ×1.1 + 1 GiB). Lower *batch_size* when it runs out of memory.\n\n"
        "**Time**: no time per step on a GPU was measured by this project. "
        + ("An mmd step is one student update (the student's and the teacher's features)"
           if family == "sdxl" else "A full-recipe step is 5 fake-score updates and one generator update (DMD "
                                    "through the teacher and the fake score, GAN, patch loss)")
        + ": read the rate off the progress bar after the first steps and multiply by *steps*; Cancel and resume "
        "(below) split a long run.\n\n"
        "**Several GPUs**: ComfyUI runs on one. Fill *save_to* of SwD Teacher Samples (e.g. `swd/my-teacher`) "
        "so that it also writes the samples as a dataset folder in ComfyUI's output folder, then distil them from a "
        "shell with torchrun, in the pack's folder (`ComfyUI/custom_nodes/swd-comfyui`), with ComfyUI's Python; "
        "*--batch* is the global batch, split over the GPUs:\n```\nCOMFYUI_PATH=$(realpath ../..) torchrun "
        f"--nproc_per_node 8 -m swd_distill distill --teacher ../../models/{cli_teacher} --dataset "
        f"../../output/swd/my-teacher --preset \"{d['preset']}\" {cli_args} --steps 3000 --batch 64 --lr "
        f"{d['learning_rate']:g} --fake-lr {d['learning_rate']:g} --rank 64 --dtype bf16 --checkpointing true "
        "--parallel ddp --out ../../models/loras/swd/my-swd.safetensors\n```\nSee the README's *Distil your own "
        "model*.\n\n"
        f"{DISTILL_FILES}\n\n{DISTILL_RESUME}\n\n**Models** (file \u2192 ComfyUI/models/\u2026"
        + ("; FLUX.1-dev is gated: accept its license on Hugging Face" if family == "flux" else "") + ")\n"
        + models_md(*files), (40, 620 if family != "sdxl" else 280), [360, 1200])
    return g


def live_object_info() -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_harness import ComfyServer
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd-build-")))
    server.prepare()
    server.start()
    try:
        return server.object_info()
    finally:
        server.stop()


def thumbnails(names: list[str], out: Path):
    """<name>.jpg next to each workflow: the graph as the frontend draws it (the template browser shows these)."""
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_harness import ComfyServer
    from frontend_harness import QUIET_SETTINGS, Frontend, launch_chromium
    from PIL import Image, ImageChops
    workflows = {n: json.loads((out / f"{n}.json").read_text()) for n in names}
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd-thumbs-")))
    server.prepare()
    server.input_dir.mkdir(parents=True, exist_ok=True)  # LoadImage shows ComfyUI's example picture, not an error
    shutil.copy(server.comfy_dir / "input" / INPUT_IMAGE, server.input_dir / INPUT_IMAGE)
    for wf in workflows.values():  # placeholders, so that no loader is drawn as missing its file
        for node in wf["nodes"]:
            for m in node.get("properties", {}).get("models", []):
                (server.models_dir / m["directory"]).mkdir(parents=True, exist_ok=True)
                (server.models_dir / m["directory"] / m["name"]).touch()
    server.start()
    try:
        server.request("/settings", QUIET_SETTINGS)
        with launch_chromium() as browser:
            fe = Frontend(browser, server)
            fe.page.set_viewport_size({"width": 1200, "height": 800})
            fe.page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
            for name, wf in workflows.items():
                fe.open(wf, name)
                fe.fit_view()
                shot = Image.open(io.BytesIO(fe.page.screenshot())).convert("RGB").crop((0, 50, 1200, 720))
                background = Image.new("RGB", shot.size, shot.getpixel((2, 2)))
                left, top, right, bottom = ImageChops.difference(shot, background).getbbox()
                shot.crop((max(left - 16, 0), max(top - 16, 0), right + 16, bottom + 16)).save(
                    out / f"{name}.jpg", quality=75)
                print(f"wrote {out / f'{name}.jpg'}")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-info", type=Path, help="a saved /object_info JSON instead of starting ComfyUI")
    parser.add_argument("--save-object-info", type=Path, help="also write the /object_info used to this file")
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write to (default: workflows/)")
    parser.add_argument("--thumbnails", action="store_true",
                        help="also draw <name>.jpg of each workflow in the real frontend (headless Chromium)")
    args = parser.parse_args()
    oi = json.loads(args.object_info.read_text()) if args.object_info else live_object_info()
    if args.save_object_info:
        args.save_object_info.write_text(json.dumps(oi))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, graph in build(oi).items():
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(graph.to_json(), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path}")
    if args.thumbnails:
        thumbnails(list(build(oi)), args.out)


if __name__ == "__main__":
    main()
