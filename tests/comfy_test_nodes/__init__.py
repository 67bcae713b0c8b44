"""Test-only ComfyUI nodes (never shipped): stand-ins for what the tests cannot download.

Loaded by the test server from its temporary custom_nodes folder next to the pack itself.
"""
import itertools
import json
import os
import sys
import zlib

import torch
from safetensors.torch import save_file

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import folder_paths

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # tests/, for tiny_models
from tiny_models import COND, SDXL_CONTEXT, UNET_FILE  # noqa: E402

from . import distill_faults, faults  # noqa: E402

SDXL_TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_middle": 1,
    "transformer_depth_output": [0, 0, 1, 1], "use_linear_in_transformer": True, "context_dim": SDXL_CONTEXT,
    "num_head_channels": 32, "adm_in_channels": 2816, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
}


def _seeded_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(torch.ones(p.shape))
            elif p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def build_tiny_sdxl(seed=2):
    config = comfy.supported_models.SDXL(dict(SDXL_TINY_UNET))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    _seeded_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


class SwDTestConditioning:
    """Seeded random text conditioning of any width, with a pooled output (and FLUX guidance when > 0)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_dim": ("INT", {"default": 64, "min": 1, "max": 8192}),
            "pooled_dim": ("INT", {"default": 32, "min": 1, "max": 8192}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
        }, "optional": {"poke": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing/swd"

    def make(self, context_dim, pooled_dim, tokens, seed, poke=""):
        """`poke` ("nan", "inf") is written into the text tensor's last value."""
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=g)
        pooled = torch.randn((1, pooled_dim), generator=g)
        if poke:
            cond[0, -1, -1] = float(poke)
        return ([[cond, {"pooled_output": pooled}]],)


class SwDTestRandomLatent:
    """A seeded N(0, 1) latent of (batch, channels, height / 8, width / 8): an "encoded image" for img2img tests."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 256, "min": 16, "max": 8192, "step": 16}),
            "height": ("INT", {"default": 256, "min": 16, "max": 8192, "step": 16}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            "channels": ("INT", {"default": 16, "min": 1, "max": 64}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
        }}
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing/swd"

    def make(self, width, height, batch_size, channels, seed):
        g = torch.Generator().manual_seed(seed)
        return ({"samples": torch.randn((batch_size, channels, height // 8, width // 8), generator=g)},)


def _shape(text):
    return [int(n) for n in text.split(",") if n.strip()]


def _filled(shape, value, poke, g):
    t = torch.randn(shape, generator=g) if value == "randn" else torch.full(shape, float(value))
    if poke and t.numel():
        t.view(-1)[-1] = float(poke)
    return t


class SwDTestTensor:
    """A hostile tensor: any `shape` (comma-separated; 0 allowed) of seeded N(0, 1) or of the constant `value`
    ("nan", "2", ...), with `poke` ("nan", "inf", "" for none) written at its last element. Returned as a LATENT (with
    a noise_mask of `mask_shape` built the same way and attached as is, no reshaping, when mask_shape is set), an
    IMAGE and a MASK of the same tensor."""
    @classmethod
    def INPUT_TYPES(cls):
        text = ("STRING", {"default": ""})
        return {"required": {"shape": ("STRING", {"default": "1,16,16,16"}), "value": ("STRING", {"default": "randn"}),
                             "poke": text, "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "mask_shape": text, "mask_value": ("STRING", {"default": "1"}), "mask_poke": text}}
    RETURN_TYPES = ("LATENT", "IMAGE", "MASK")
    FUNCTION = "make"
    CATEGORY = "testing/swd"

    def make(self, shape, value, poke, seed, mask_shape, mask_value, mask_poke):
        g = torch.Generator().manual_seed(seed)
        t = _filled(_shape(shape), value, poke, g)
        latent = {"samples": t}
        if mask_shape:
            latent["noise_mask"] = _filled(_shape(mask_shape), mask_value, mask_poke, g)
        return (latent, t, t)


class SwDTestCallLog:
    """Wraps the model so that every diffusion-model call is logged to output/<filename> as JSON lines:
    the input shape, the sigma (ComfyUI passes sigma here; the model converts it to its timestep), how many
    conditionings (cond/uncond passes) were batched into the call and, for models with a vector conditioning "y"
    (SDXL's pooled text + size embeddings), its last 1536 values (SDXL's six size embeddings) of the first row."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "filename": ("STRING", {"default": "calls.jsonl"})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "testing/swd"

    def wrap(self, model, filename):
        path = os.path.join(folder_paths.get_output_directory(), filename)
        open(path, "w").close()

        def wrapper(apply_model, args):
            x, t = args["input"], args["timestep"]
            entry = {"shape": list(x.shape), "sigma": float(t.flatten()[0]), "passes": len(args["cond_or_uncond"])}
            if args["c"].get("y") is not None:
                entry["y_size"] = args["c"]["y"][0, -1536:].tolist()
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            return apply_model(x, t, **args["c"])

        m = model.clone()
        m.set_model_unet_function_wrapper(wrapper)
        return (m,)


class SwDTestDumpWeights:
    """Saves the model's diffusion-model weights, with every patch (LoRA) applied, to output/<filename>."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "filename": ("STRING", {"default": "weights.safetensors"})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "dump"
    CATEGORY = "testing/swd"

    def dump(self, model, filename):
        comfy.model_management.load_models_gpu([model], force_full_load=True)
        sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
              for k, v in model.model.diffusion_model.state_dict().items()}
        save_file(sd, os.path.join(folder_paths.get_output_directory(), filename))
        return {"ui": {"text": [filename]}}


class SwDTestCaptureCalls:
    """Wraps the model so that call n of the diffusion model (counted from 0 over the wrapped model's lifetime)
    saves output/<prefix>_<n>.safetensors with its model-space input "x", its "sigma" and its prediction "x0"."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "prefix": ("STRING", {"default": "calls"})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "testing/swd"

    def wrap(self, model, prefix):
        calls = itertools.count()

        def wrapper(apply_model, args):
            x0 = apply_model(args["input"], args["timestep"], **args["c"])
            tensors = {"x": args["input"], "sigma": args["timestep"], "x0": x0}
            save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
                      os.path.join(folder_paths.get_output_directory(), f"{prefix}_{next(calls)}.safetensors"))
            return x0

        m = model.clone()
        m.set_model_unet_function_wrapper(wrapper)
        return (m,)


# Stand-ins for the loaders of the shipped workflows (tests/test_workflows.py and `make demo` swap them in).
# Every one takes a `tag` that only enters ComfyUI's cache key, so that each workflow run executes its own chain.
TINY_LATENT_CHANNELS = {"sd3": 16, "flux": 16, "sdxl": 4}


class _TinyCLIP:
    """Duck-types comfy.sd.CLIP for the stock CLIPTextEncode: each text gives its own seeded conditioning."""

    def __init__(self, family):
        self.context_dim, self.pooled_dim = COND[family]

    def tokenize(self, text, **kwargs):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict=None, show_pbar=True):
        g = torch.Generator().manual_seed(zlib.crc32(tokens["text"].encode()))
        cond = torch.randn((1, 8, self.context_dim), generator=g)
        pooled = torch.randn((1, self.pooled_dim), generator=g)
        return [[cond, {"pooled_output": pooled, **(add_dict or {})}]]


def build_tiny_vae(family, seed=3):
    """A real comfy.sd.VAE (AutoencoderKL, 8x down, the family's latent channels) with 32 channels, seeded."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL
    channels = TINY_LATENT_CHANNELS[family]
    params = {"embed_dim": channels, "ddconfig": {
        "double_z": True, "z_channels": channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
        "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}
    module = AutoencoderKL(**params)
    _seeded_(module, seed)
    vae = comfy.sd.VAE(sd=module.state_dict(), config={"params": params})
    vae.latent_channels = channels
    return vae


def _tiny_model(family):
    if family == "sdxl":
        return build_tiny_sdxl()
    import comfy.sd
    return comfy.sd.load_diffusion_model(folder_paths.get_full_path_or_raise("diffusion_models", UNET_FILE[family]))


def _family_inputs():
    return {"family": (list(COND),), "tag": ("STRING", {"default": ""})}


class SwDTestTinyCheckpoint:
    """CheckpointLoaderSimple's stand-in: the tiny model of the family, a tiny CLIP and a tiny VAE."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _family_inputs()}
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing/swd"

    def load(self, family, tag):
        return (_tiny_model(family), _TinyCLIP(family), build_tiny_vae(family))


class SwDTestTinyUNet:
    """UNETLoader's stand-in: the tiny model of the family."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _family_inputs()}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing/swd"

    def load(self, family, tag):
        return (_tiny_model(family),)


class SwDTestTinyCLIP:
    """The text encoder loaders' stand-in (TripleCLIPLoader, DualCLIPLoader, CLIPLoader)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _family_inputs()}
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing/swd"

    def load(self, family, tag):
        return (_TinyCLIP(family),)


class SwDTestTinyVAE:
    """VAELoader's stand-in."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _family_inputs()}
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing/swd"

    def load(self, family, tag):
        return (build_tiny_vae(family),)


class SwDTestShowValue:
    """Shows any linked value (a STRING or COMBO output such as SwDLoraLoader's preset) as UI text."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "show"
    CATEGORY = "testing/swd"

    def show(self, value):
        return {"ui": {"text": [str(value)]}}


class SwDTestSaveTensors:
    """Saves an IMAGE (as "image") or a CONDITIONING (each entry n as "cond_n" and its dict's tensors as "<key>_n"; the
    count and every dict's keys in the metadata) to output/<filename>, exactly."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {}), "filename": ("STRING", {"default": "tensors.safetensors"})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "testing/swd"

    def save(self, value, filename):
        tensors, metadata = {}, {}
        if isinstance(value, torch.Tensor):
            tensors["image"] = value
        else:
            metadata["count"] = str(len(value))
            for n, (cond, extra) in enumerate(value):
                tensors[f"cond_{n}"] = cond
                metadata[f"keys_{n}"] = ",".join(sorted(extra))
                tensors.update({f"{k}_{n}": v for k, v in extra.items() if isinstance(v, torch.Tensor)})
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  os.path.join(folder_paths.get_output_directory(), filename), metadata)
        return {"ui": {"text": [filename]}}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (
    SwDTestConditioning, SwDTestRandomLatent, SwDTestTensor, SwDTestCallLog, SwDTestCaptureCalls, SwDTestDumpWeights,
    SwDTestTinyCheckpoint, SwDTestTinyUNet, SwDTestTinyCLIP, SwDTestTinyVAE, SwDTestShowValue,
    SwDTestSaveTensors)} | faults.NODE_CLASS_MAPPINGS | distill_faults.NODE_CLASS_MAPPINGS
