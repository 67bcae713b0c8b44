"""Bad inputs through real ComfyUI's /prompt API, one table row each: every one is refused with a message that names
the input (or file) and the fix, as one of the pack's own error types (or by ComfyUI's own validation, for what it
checks itself: INT conversion, min/max, combo values, missing inputs), within seconds; the server keeps serving and
the next valid prompt gives exactly the result it gave before any bad input. Prints the table (input -> message)."""
from __future__ import annotations

import json
import pickle
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from comfy_harness import PromptError
from lora_files import lora_pairs, write_peft
from test_swd_sampler import custom_sampler_prompt, swd_prompt
from swd_sampler import checks, inpaint, lora as lora_module, schedule, upscale_renoise  # noqa: F401 (errors)
from swd_sampler.tiny import TEACHER_FILE, TINY_PRESET
from swd_sampler.errors import SwDError

OURS = "ours"  # raised by the pack: an SwDError subclass at execution, or the pack's validate_inputs
COMFY = "ComfyUI validation"  # ComfyUI's own input validation (type conversion, min/max, combo values)
CUSTOM = "custom"
MARKER = "unpickled.marker"  # a pickle that is ever unpickled creates this file in the output folder


def _subclasses(cls):
    return {cls.__name__} | {n for sub in cls.__subclasses__() for n in _subclasses(sub)}


OUR_TYPES = _subclasses(SwDError)


class _Payload:
    """Unpickling this calls open(path, "w"): the file it leaves proves that a loader unpickled it."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


# Builders -----------------------------------------------------------------------------------------------------------

def ks(**kw):
    """SwDKSampler on the tiny SD3 model unless family= says otherwise."""
    return lambda env: swd_prompt(**{"tag": "bad", **kw})


def ks_set(inputs: dict, family="sd3", preset="SD3.5 Medium · 6 steps"):
    def build(env):
        prompt = swd_prompt(family, preset, tag="bad")
        prompt["swd"]["inputs"].update(inputs)
        return prompt
    return build


def custom(scales, sigmas):
    return ks(preset=CUSTOM, scales=scales, sigmas=sigmas)


def with_latent(latent_node: dict, family="sd3", preset="SD3.5 Medium · 6 steps"):
    def build(env):
        prompt = swd_prompt(family, preset, tag="bad")
        prompt["latent"] = latent_node
        return prompt
    return build


def noise_latent(channels, batch=1, width=128, height=128):
    return {"class_type": "SwDTestRandomLatent", "inputs": {"channels": channels, "width": width, "height": height,
                                                              "batch_size": batch, "seed": 3}}


def schedule_node(inputs: dict, family="sd3"):
    def build(env):
        prompt = custom_sampler_prompt(family)
        prompt["sched"]["inputs"].update(inputs)
        return prompt
    return build


def sampler_sigmas(node: dict):
    """SamplerCustomAdvanced with SwD Sampler, its SIGMAS from `node` instead of SwD Schedule."""
    def build(env):
        prompt = custom_sampler_prompt()
        prompt["othersigmas"] = node
        prompt["sca"]["inputs"]["sigmas"] = ["othersigmas", 0]
        return prompt
    return build


def custom_sampler_latent(latent_node):
    def build(env):
        prompt = custom_sampler_prompt()
        prompt["latent"] = latent_node
        return prompt
    return build


def upscale(family="sd3", samples=None, mask_batch=None, **inputs):
    """SwDLatentUpscaleRenoise; defaults to a valid 2x upscale at sigma 0.5 on a 16-channel noise latent."""
    def build(env):
        model = ({"class_type": "SwDTestTinyUNet", "inputs": {"family": "sdxl", "tag": ""}} if family == "sdxl" else
                 {"class_type": "UNETLoader", "inputs": {"unet_name": f"tiny_{family}.safetensors",
                                                          "weight_dtype": "default"}})
        prompt = {"model": model, "lat": samples or noise_latent(4 if family == "sdxl" else 16)}
        source = ["lat", 0]
        if mask_batch:
            prompt |= {"mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}},
                       "img": {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}},
                       "rep": {"class_type": "RepeatImageBatch", "inputs": {"image": ["img", 0], "amount": mask_batch}},
                       "masks": {"class_type": "ImageToMask", "inputs": {"image": ["rep", 0], "channel": "red"}},
                       "masked": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": source,
                                                                                 "mask": ["masks", 0]}}}
            source = ["masked", 0]
        prompt["up"] = {"class_type": "SwDLatentUpscaleRenoise", "inputs": {
            "model": ["model", 0], "samples": source, "width": 0, "height": 0, "scale_factor": 2.0, "sigma": 0.5,
            "seed": 1, "upscale_method": "bicubic", **inputs}}
        prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["up", 0], "filename_prefix": "bad_up"}}
        return prompt
    return build


def tensor(shape="1,16,16,16", value="randn", poke="", mask_shape="", mask_value="1", mask_poke=""):
    """SwDTestTensor: a LATENT (slot 0, with a raw noise_mask when mask_shape is set), IMAGE (1) and MASK (2)."""
    return {"class_type": "SwDTestTensor", "inputs": {"shape": shape, "value": value, "poke": poke, "seed": 3,
                                                      "mask_shape": mask_shape, "mask_value": mask_value,
                                                      "mask_poke": mask_poke}}


def ks_latent(latent_node: dict, denoise=0.75):
    """SwDKSampler (tiny SD3, 6 steps) on `latent_node` at `denoise`."""
    def build(env):
        prompt = swd_prompt(tag="bad")
        prompt["latent"] = latent_node
        prompt["swd"]["inputs"]["denoise"] = denoise
        return prompt
    return build


def sca_latent(latent_node: dict, denoise=0.75):
    """SwD Schedule (denoise) + SwD Sampler in SamplerCustomAdvanced on `latent_node`."""
    def build(env):
        prompt = custom_sampler_prompt()
        prompt["latent"] = latent_node
        prompt["sched"]["inputs"]["denoise"] = denoise
        return prompt
    return build


def _poked_cond(node: str, poke="nan", cfg=1.0):
    """SwDKSampler text-to-image with a NaN (or inf) in the text tensor of conditioning `node`."""
    def build(env):
        prompt = swd_prompt(tag="bad", cfg=cfg)
        prompt[node]["inputs"]["poke"] = poke
        return prompt
    return build


def tiny_codec(node_type: str, source: dict, slot: int):
    """SwD Tiny Encode (IMAGE, slot 1) or SwD Tiny Decode (LATENT, slot 0) of a SwDTestTensor."""
    def build(env):
        encode = node_type == "SwDTinyEncode"
        return {"t": source, "n": {"class_type": node_type, "inputs": {"pixels" if encode else "samples": ["t", slot]}},
                "o": ({"class_type": "SaveLatent", "inputs": {"samples": ["n", 0], "filename_prefix": "bad_tiny"}}
                      if encode else {"class_type": "PreviewImage", "inputs": {"images": ["n", 0]}})}
    return build


def tiny_text(text: str, batch: int = 1):
    """The shipped tiny teacher sampled by SwDKSampler with SwD Tiny Text Encode's conditioning."""
    def build(env):
        return {"u": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}},
                "t": {"class_type": "SwDTinyTextEncode", "inputs": {"text": text}},
                "lat": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128,
                                                                        "batch_size": batch}},
                "swd": {"class_type": "SwDKSampler", "inputs": {
                    "model": ["u", 0], "positive": ["t", 0], "negative": ["t", 0], "latent_image": ["lat", 0],
                    "seed": 0, "preset": TINY_PRESET, "scales": "", "sigmas": "", "cfg": 1.0,
                    "upscale_method": "bicubic"}},
                "o": {"class_type": "SaveLatent", "inputs": {"samples": ["swd", 0], "filename_prefix": "bad_text"}}}
    return build


def lora(filename: str, family="sd3", strength=1.0, preset_from_lora=False, scales="", sigmas=""):
    """SwDLoraLoader on the tiny model, then SwDKSampler (whose preset may come from the loader)."""
    def build(env):
        prompt = swd_prompt(family, {"sd3": "SD3.5 Medium · 4 steps", "flux": "FLUX.1-dev · 4 steps"}[family],
                            tag="bad", scales=scales, sigmas=sigmas)
        prompt["lora"] = {"class_type": "SwDLoraLoader", "inputs": {"model": ["model", 0], "lora_name": filename,
                                                                   "strength": strength, "allow_partial": False}}
        prompt["swd"]["inputs"]["model"] = ["lora", 0]
        if preset_from_lora:
            prompt["swd"]["inputs"]["preset"] = ["lora", 1]
        return prompt
    return build


# LoRA files ---------------------------------------------------------------------------------------------------------

def _header_file(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def write_bad_loras(folder, output_dir):
    """The bad LoRA files of the table, in loras/bad/."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_peft(folder / "good_source.safetensors", lora_pairs("sd3", seed=5))
    data = good.read_bytes()
    files = {
        "zero.safetensors": b"",
        "truncated.safetensors": data[: len(data) // 2],
        "random.safetensors": b"\x13\x37" + bytes((i * 97 + 11) % 256 for i in range(4094)),
        "pickle.safetensors": pickle.dumps(_Payload(str(output_dir / MARKER))),
        "huge_header.safetensors": _header_file({"w.lora_A.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                                                                     "data_offsets": [0, 4 << 40]}}, b"\0" * 64),
        "broken_header.safetensors": struct.pack("<Q", 20) + b"{not json at all!!!}",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    torch.save({"lora": torch.zeros(4)}, str(folder / "torch_zip.safetensors"))
    write_peft(folder / "flux_arch.safetensors", lora_pairs("flux", seed=6))
    a, b = lora_pairs("sd3", seed=7)["transformer_blocks.0.attn.to_q"]
    save_file({"base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight": a,
               "base_model.model.transformer_blocks.0.attn.to_q.lora_B.weight": b[:, :3].contiguous()},
              str(folder / "ranks.safetensors"))
    for bad, value in (("nan", float("nan")), ("inf", float("inf"))):
        pairs = lora_pairs("sd3", seed=8)
        pairs["transformer_blocks.1.attn.to_k"][1][0, 0] = value
        write_peft(folder / f"{bad}_weights.safetensors", pairs)
    pairs = lora_pairs("sd3", seed=9) | {"vision_tower.blocks.0.fc": (torch.ones(4, 8), torch.ones(8, 4))}
    write_peft(folder / "unknown_keys.safetensors", pairs)
    save_file({"joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(384, 128)}, str(folder / "not_lora.safetensors"))
    write_peft(folder / "mystery_adapter.safetensors", lora_pairs("sd3", seed=10))
    # a FLUX-architecture LoRA of no released width: the loader cannot tell its preset and says "custom"
    write_peft(folder / "mystery_flux_adapter.safetensors", lora_pairs("flux", seed=13))
    bad_config = folder / "bad_config" / "swd-medium-4-steps.safetensors"
    write_peft(bad_config, lora_pairs("sd3", seed=12))
    (bad_config.parent / "adapter_config.json").write_text("{r: 4,")


# The table ----------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    build: Callable
    expect: tuple[str, ...]  # substrings of the message: the input (or file) and the fix
    by: str = OURS


MEDIUM6 = "SD3.5 Medium · 6 steps"
CASES = [
    # schedules
    Case("scales empty", custom("", "1.0, 0.5, 0"), ("scales is empty", "e.g. 32, 48")),
    Case("sigmas not numeric", custom("64, 128", "1.0, half, 0"), ("sigmas: 'half' is not a number", "e.g.")),
    Case("sigmas NaN", custom("64, 128", "1.0, nan, 0"), ("sigmas: 'nan' is not a finite number", "e.g.")),
    Case("scales infinite", custom("64, inf", "1.0, 0.5, 0"), ("scales: 'inf' is not a finite number",)),
    Case("counts do not match", custom("64, 80, 96, 128", "1.0, 0.8, 0"),
         ("scales and sigmas do not match", "len(scales) = len(sigmas) - 1")),
    Case("scales decrease", custom("64, 96, 80, 128", "1.0, 0.9, 0.8, 0.6, 0"), ("80 follows 96", "never decrease")),
    Case("sigmas increase", custom("64, 128", "0.5, 0.9, 0"), ("sigmas must strictly decrease", "0.9 follows 0.5")),
    Case("negative scale", custom("-64, 128", "1.0, 0.5, 0"), ("scales must all be positive",)),
    Case("negative sigma", custom("64, 128", "1.0, -0.5, 0"), ("sigmas must lie in [0, 1]",)),
    Case("sigma above 1", custom("64, 128", "1.5, 0.5, 0"), ("sigmas must lie in [0, 1]",)),
    Case("scale larger than the final", custom("64, 160, 128", "1.0, 0.8, 0.6, 0"),
         ("128 follows 160", "none may be larger")),
    Case("too many steps", custom(", ".join(str(32 + i) for i in range(100)), "1.0, 0"),
         ("scales has 100 values", "at most 64 steps")),
    Case("decimal commas", custom("64, 128", "1,0; 0,6; 0"), ("decimal commas", "'1.0, 0.6, 0'")),
    Case("full-width comma", custom("64\uff0c128", "1.0, 0.6, 0"), ("FULLWIDTH COMMA", "type ','")),
    Case("Unicode minus", custom("64, 128", "1.0, \u22120.5, 0"), ("MINUS SIGN", "type '-'")),
    Case("full-width digit", custom("\uff16\uff14, 128", "1.0, 0.6, 0"), ("FULLWIDTH DIGIT SIX", "type '6'")),
    Case("SwDSchedule bad sigmas", schedule_node({"preset": CUSTOM, "scales": "64, 128", "sigmas": "1.0, x, 0"}),
         ("sigmas: 'x' is not a number",)),
    Case("custom preset, empty fields", custom("", ""), ("preset is \"custom\"", "rename the LoRA")),
    Case("SwD Sampler fed a stock scheduler", sampler_sigmas(
        {"class_type": "BasicScheduler", "inputs": {"model": ["model", 0], "scheduler": "simple", "steps": 20,
                                                    "denoise": 1.0}}),
         ("SwD Sampler got 21 sigmas for 6 scales", "SwD Schedule")),
    Case("SwD Sampler sigmas above the model's", sampler_sigmas(
        {"class_type": "ManualSigmas", "inputs": {"sigmas": "1.5, 1.2, 0.9, 0.8, 0.7, 0.6, 0.0"}}),
         ("above this model's largest sigma", "SwD Schedule")),
    # presets of another family
    Case("SDXL preset on SD3", ks(preset="SDXL · 4 steps"), ("'SDXL · 4 steps' is for an eps model", "flow model")),
    Case("flow preset on SDXL", ks(family="sdxl", preset="FLUX.1-dev · 4 steps"),
         ("is for a flow model", "this model is an eps model", "SDXL · 4 steps")),
    Case("SDXL preset in SwDSchedule on FLUX", schedule_node({"preset": "SDXL · 4 steps"}, family="flux"),
         ("is for an eps model",)),
    # sizes
    Case("size not a patch multiple", ks(width=1000, height=1000), ("125x125", "patch size 2", "divisible by 16")),
    Case("size beyond the position table", ks(width=2048, height=2048), ("position table", "at most 1024 px")),
    # 4 x 1,905 GiB by ComfyUI's estimate: more than 128 times (its largest measured overestimate) the free memory
    Case("huge size (16384 px, batch 4, on FLUX)", ks(family="flux", preset="FLUX.1-dev · 4 steps", width=16384,
                                                     height=16384, batch=4),
         ("GiB", "free", "128 times less", "Lower the width and height")),
    # latents
    Case("4-channel latent with content on SD3", with_latent(noise_latent(4)),
         ("latent_image has 4 channels", "have 16", "EmptySD3LatentImage")),
    Case("16-channel latent with content on SDXL", with_latent(noise_latent(16), "sdxl", "SDXL · 4 steps"),
         ("latent_image has 16 channels", "have 4", "EmptyLatentImage")),
    Case("4-channel latent into SwD Sampler", custom_sampler_latent(noise_latent(4)), ("has 4 channels", "VAE")),
    # NaN / inf through the API
    Case("cfg NaN", ks_set({"cfg": float("nan")}), ("cfg is nan", "finite")),
    Case("cfg inf", ks_set({"cfg": float("inf")}), ("cfg", "bigger than max"), COMFY),
    Case("seed NaN", ks_set({"seed": float("nan")}), ("seed", "INT"), COMFY),
    Case("strength NaN", lora("bad/mystery_adapter.safetensors", strength=float("nan")), ("strength is nan",)),
    Case("strength -inf", lora("bad/mystery_adapter.safetensors", strength=float("-inf")),
         ("strength", "smaller than min"), COMFY),
    Case("upscale sigma NaN", upscale(sigma=float("nan")), ("sigma is nan",)),
    Case("upscale scale_factor NaN", upscale(scale_factor=float("nan")), ("scale_factor is nan",)),
    Case("upscale scale_factor inf", upscale(scale_factor=float("inf")), ("scale_factor", "bigger than max"), COMFY),
    Case("upscale width NaN", upscale(width=float("nan")), ("width", "INT"), COMFY),
    # SwDLatentUpscaleRenoise targets, sigmas, masks, channels
    Case("upscale without a target", upscale(scale_factor=0.0), ("no target size", "scale_factor")),
    Case("upscale with two targets", upscale(width=512, height=512), ("conflicting target sizes",)),
    Case("upscale to a zero size", upscale(scale_factor=0.001), ("shrinks", "use a factor of at least")),
    Case("upscale width not a multiple", upscale(scale_factor=0.0, width=1000, height=512),
         ("width 1000 and height 512 must be multiples of 16 pixels",)),
    Case("upscale sigma 1 on flow", upscale(sigma=1.0), ("sigma 1 re-noises to pure noise", "sigma < 1")),
    Case("upscale sigma above the eps range", upscale("sdxl", sigma=20.0), ("sigma must be in [0, 14.6",)),
    Case("upscale mask batch 3 for 2 latents", upscale(samples=noise_latent(16, batch=2), mask_batch=3),
         ("noise mask has a batch of 3 masks but the latent a batch of 2", "one per image")),
    Case("upscale 4-channel latent on SD3", upscale(samples=noise_latent(4)), ("samples has 4 channels",)),
    # tensors: NaN / inf, empty, layout (the values are read: denoise < 1, a mask, the re-noise, the tiny codec)
    Case("NaN in the latent, denoise 0.75", ks_latent(tensor(poke="nan")),
         ("latent_image holds 1 NaN value of 4096", "index [0, 15, 15, 15]", "came from the LATENT connected to "
                                                                           "latent_image")),
    Case("inf in the latent, denoise 0.5", ks_latent(tensor(poke="inf"), 0.5), ("latent_image holds 1 infinite",)),
    Case("NaN latent under a mask, denoise 1", ks_latent(tensor(value="nan", mask_shape="1,16,16"), 1.0),
         ("latent_image holds 4096 NaN values",)),
    Case("NaN in the noise mask", ks_latent(tensor(mask_shape="1,16,16", mask_poke="nan")),
         ("noise_mask holds 1 NaN value", "the noise mask of the LATENT connected to latent_image")),
    Case("noise mask of 2", ks_latent(tensor(mask_shape="1,16,16", mask_value="2")),
         ("noise_mask has values from 2 to 2, outside [0, 1]", "Clamp the mask")),
    Case("negative noise mask", ks_latent(tensor(mask_shape="1,1,16,16", mask_value="0.5", mask_poke="-1"), 1.0),
         ("noise_mask has values from -1 to 0.5",)),
    Case("noise mask per channel, batch 1", ks_latent(tensor(mask_shape="1,16,16,16")),
         ("noise_mask is attached per channel", "(1, 16, 16, 16) holds 16 masks per image", "one mask per image")),
    Case("noise mask per channel, batch 16", ks_latent(tensor("16,16,16,16", mask_shape="1,16,16,16")),
         ("noise_mask is attached per channel",)),
    Case("noise mask of 5 dimensions", ks_latent(tensor(mask_shape="1,1,1,16,16")),
         ("noise_mask has shape (1, 1, 1, 16, 16)", "SetLatentNoiseMask")),
    Case("empty latent batch", ks_latent(tensor("0,16,16,16"), 1.0), ("latent_image is empty", "(0, 16, 16, 16)")),
    Case("0 x 0 latent", ks_latent(tensor("1,16,0,0"), 1.0), ("latent_image is empty", "(1, 16, 0, 0)")),
    Case("5-d latent", ks_latent(tensor("1,16,1,16,16"), 1.0), ("latent_image has shape (1, 16, 1, 16, 16)",
                                                                "(batch, channels, height, width)")),
    Case("empty noise mask", ks_latent(tensor(mask_shape="1,0,0")), ("noise_mask is empty",)),
    Case("SwD Sampler: NaN in the latent", sca_latent(tensor(poke="nan")), ("latent_image holds 1 NaN value",)),
    Case("SwD Sampler: NaN in the noise mask", sca_latent(tensor(mask_shape="1,16,16", mask_poke="nan")),
         ("noise_mask holds", "NaN")),
    Case("SwD Sampler: noise mask of 2", sca_latent(tensor(mask_shape="1,16,16", mask_value="2")),
         ("noise_mask has values from 2 to 2",)),
    Case("SwD Sampler: empty latent batch", sca_latent(tensor("0,16,16,16"), 1.0), ("latent_image is empty",)),
    Case("SwD Sampler: 5-d latent", sca_latent(tensor("1,16,1,16,16"), 1.0), ("latent_image has shape",)),
    Case("NaN in the negative prompt at cfg 2", _poked_cond("neg", cfg=2.0),
         ("negative holds 1 NaN value", "the text of the conditioning connected to negative")),
    Case("inf in the positive prompt", _poked_cond("pos", poke="inf"), ("positive holds 1 infinite value",)),
    Case("re-noise: NaN in samples", upscale(samples=tensor(poke="nan")), ("samples holds 1 NaN value",)),
    Case("re-noise: empty samples", upscale(samples=tensor("0,16,16,16")), ("samples is empty",)),
    Case("re-noise: 0 x 0 samples", upscale(samples=tensor("1,16,0,0")), ("samples is empty",)),
    Case("re-noise: mask of 2", upscale(samples=tensor(mask_shape="1,16,16", mask_value="2")),
         ("noise_mask has values from 2 to 2",)),
    Case("re-noise: mask per channel", upscale(samples=tensor(mask_shape="1,16,16,16")), ("attached per channel",)),
    Case("re-noise: 0 x 0 match_latent", lambda env: _with_match(upscale(scale_factor=0.0)(env), tensor("1,16,0,0")),
         ("match_latent is empty",)),
    Case("tiny encode: NaN pixel", tiny_codec("SwDTinyEncode", tensor("1,128,128,3", "0.5", "nan"), 1),
         ("pixels holds 1 NaN value", "the IMAGE connected to SwD Tiny Encode's pixels")),
    Case("tiny encode: 1-channel image", tiny_codec("SwDTinyEncode", tensor("1,128,128,1", "0.5"), 1),
         ("pixels has 1 channel per pixel", "3 (RGB) or 4 (RGBA")),
    Case("tiny encode: empty image batch", tiny_codec("SwDTinyEncode", tensor("0,128,128,3", "0.5"), 1),
         ("pixels is empty",)),
    Case("tiny encode: 0 x 0 image", tiny_codec("SwDTinyEncode", tensor("1,0,0,3", "0.5"), 1), ("pixels is empty",)),
    Case("tiny decode: inf in the latent", tiny_codec("SwDTinyDecode", tensor(poke="inf"), 0),
         ("samples holds 1 infinite value",)),
    Case("tiny decode: empty latent", tiny_codec("SwDTinyDecode", tensor("0,16,16,16"), 0), ("samples is empty",)),
    Case("tiny text: 3 captions for 2 images", tiny_text("red circle\nblue square\nyellow triangle", batch=2),
         ("positive has a batch of 3 prompts", "latent a batch of 2 images")),
    Case("tiny text: 2 captions for 3 images", tiny_text("red circle\nblue square", batch=3),
         ("positive has a batch of 2 prompts", "latent a batch of 3 images")),
    Case("tiny text: U+2028 inside a caption", tiny_text("red circle\u2028blue square"),
         ("line 1 holds a U+2028 LINE SEPARATOR", "new lines (\\n) only")),
    Case("tiny text: a lone carriage return", tiny_text("red circle\rblue square"),
         ("U+000D CARRIAGE RETURN",)),
    # LoRA files
    Case("LoRA zero bytes", lora("bad/zero.safetensors"), ("zero.safetensors is empty", "download the file again")),
    Case("LoRA truncated", lora("bad/truncated.safetensors"), ("truncated.safetensors is truncated", "download")),
    Case("LoRA random bytes", lora("bad/random.safetensors"), ("random.safetensors is not a safetensors file",)),
    Case("LoRA pickle renamed", lora("bad/pickle.safetensors"), ("is not a safetensors file", "pickle",
                                                                 "never unpickles")),
    Case("LoRA torch.save zip renamed", lora("bad/torch_zip.safetensors"), ("zip archive", "safetensors.torch")),
    Case("LoRA header declares huge tensors", lora("bad/huge_header.safetensors"),
         ("huge_header.safetensors is truncated", "header describes")),
    Case("LoRA broken header", lora("bad/broken_header.safetensors"), ("damaged safetensors header",)),
    Case("LoRA for another architecture", lora("bad/flux_arch.safetensors"),
         ("flux_arch.safetensors is a LoRA for FLUX", "pick the LoRA made for")),
    Case("LoRA mismatched ranks", lora("bad/ranks.safetensors"), ("has rank 4 but", "has rank 3")),
    Case("LoRA NaN weights", lora("bad/nan_weights.safetensors"), ("NaN or infinite", "to_k.lora_B.weight")),
    Case("LoRA inf weights", lora("bad/inf_weights.safetensors"), ("inf_weights.safetensors", "NaN or infinite")),
    Case("LoRA unknown keys", lora("bad/unknown_keys.safetensors"), ("match no layer", "vision_tower",
                                                                     "allow_partial")),
    Case("LoRA without LoRA tensors", lora("bad/not_lora.safetensors"), ("holds no LoRA weights",)),
    Case("LoRA with a broken adapter_config.json", lora("bad/bad_config/swd-medium-4-steps.safetensors"),
         ("adapter_config.json", "not valid JSON", "fix or remove it")),
    Case("unidentified LoRA, empty schedule", lora("bad/mystery_flux_adapter.safetensors", "flux",
                                                   preset_from_lora=True),
         ("preset is \"custom\"", "could not identify the LoRA", "README")),
    # workflows saved by an older version
    Case("old workflow: renamed preset", ks(preset="SD3.5 Medium 6 steps"),
         ("preset 'SD3.5 Medium 6 steps' is unknown", "choose one of: SD3.5 Medium · 6 steps")),
    Case("old workflow: input it lacks", lambda env: _without(swd_prompt(tag="bad"), "upscale_method"),
         ("upscale_method", "missing"), COMFY),
]


def _with_match(prompt, latent_node):
    prompt["match"] = latent_node
    prompt["up"]["inputs"]["match_latent"] = ["match", 0]
    return prompt


def _without(prompt, name):
    del prompt["swd"]["inputs"][name]
    return prompt


# The test -----------------------------------------------------------------------------------------------------------

def valid_prompt():
    """A LoRA + SwDKSampler prompt; the unique call-log wrapper makes ComfyUI run it again instead of reusing its
    cache, so every call proves the server still computes the same result."""
    prompt = swd_prompt("sd3", "SD3.5 Medium · 4 steps", seed=5, width=128, height=128,
                        call_log=f"valid_{uuid.uuid4().hex}.jsonl", tag="valid")
    prompt["lora"] = {"class_type": "SwDLoraLoader", "inputs": {"model": ["model", 0], "strength": 1.0,
                                                               "lora_name": "valid/swd-medium-4-steps.safetensors",
                                                               "allow_partial": False}}
    prompt["calllog"]["inputs"]["model"] = ["lora", 0]
    return prompt


@pytest.fixture(scope="module")
def env(comfy):
    loras = comfy.models_dir / "loras"
    write_peft(loras / "valid" / "swd-medium-4-steps.safetensors", lora_pairs("sd3", seed=4))
    write_bad_loras(loras / "bad", comfy.output_dir)
    reference = comfy.run(valid_prompt()).latent("save")
    return {"reference": reference, "rows": []}


def refusal(comfy, prompt) -> tuple[str, str]:
    """(who refused, message) of a prompt that must be refused."""
    with pytest.raises(PromptError) as e:
        comfy.run(prompt, timeout=60)
    details = e.value.details
    if "exception_type" in details:  # execution error
        kind = details["exception_type"].rsplit(".", 1)[-1]
        assert kind in OUR_TYPES, f"raw {details['exception_type']}: {details.get('exception_message')}"
        assert ".swd_sampler." in details["exception_type"]
        return f"{OURS} ({kind})", details["exception_message"].strip()
    errors = [(node["class_type"], err) for node in (details.get("node_errors") or {}).values()
              for err in node["errors"]]
    assert errors, e.value.message
    types = {err["type"] for _, err in errors}
    if types == {"custom_validation_failed"}:  # one copy per input of the node's validate_inputs: show it once
        return f"{OURS} (validate_inputs)", " ".join(dict.fromkeys(f"{node}: {err['details'].split(' - ', 1)[-1]}"
                                                                    for node, err in errors))
    return f"{COMFY} ({', '.join(types)})", " ".join(f"{node}: {err['message']}: {err['details']}"
                                                      for node, err in errors)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_the_server_keeps_serving(comfy, env, case):
    start = time.monotonic()
    by, message = refusal(comfy, case.build(env))
    elapsed = time.monotonic() - start
    env["rows"].append((case.id, by, message))
    assert by.startswith(case.by), f"{case.id}: refused by {by}, expected {case.by}: {message}"
    for text in case.expect:
        assert text in message, f"{case.id}: {text!r} not in {message!r}"
    assert elapsed < 30, f"{case.id}: the refusal took {elapsed:.0f} s"
    assert not (comfy.output_dir / MARKER).exists(), "a pickle was unpickled"
    assert torch.equal(comfy.run(valid_prompt()).latent("save"), env["reference"])


def test_the_table_has_at_least_40_rows_refused_by_the_pack(env, capsys):
    """Runs after the table's rows; prints the table (input -> who refused it: message)."""
    rows = env["rows"]
    with capsys.disabled():
        print(f"\nBad inputs: {len(rows)} refused (input -> refused by: message)")
        for case, by, message in rows:
            print(f"- {case} -> {by}: {' '.join(message.split())}")
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.by == OURS for c in CASES) >= 40  # each case's test checks who refused it
