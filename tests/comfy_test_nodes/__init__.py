"""Test-only ComfyUI nodes (never shipped): stand-ins for what the tests cannot download.

Loaded by the test server from its temporary custom_nodes folder next to the pack itself.
"""
import json
import os

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import folder_paths

SDXL_TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_middle": 1,
    "transformer_depth_output": [0, 0, 1, 1], "use_linear_in_transformer": True, "context_dim": 64,
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


def tiny_sdxl_state_dict(seed=2):
    """The diffusion_model state dict of the tiny SDXL-architecture UNet (for LoRA tests)."""
    return build_tiny_sdxl(seed).model.diffusion_model.state_dict()


def build_tiny_sdxl(seed=2):
    config = comfy.supported_models.SDXL(dict(SDXL_TINY_UNET))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    _seeded_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


class SwDTestTinySDXL:
    """An eps-prediction UNet of ComfyUI's SDXL class (SDXL detection only recognises full-size files)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 2, "min": 0, "max": 2**31})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing/swd"

    def load(self, seed):
        return (build_tiny_sdxl(seed),)


class SwDTestConditioning:
    """Seeded random text conditioning of any width, with a pooled output (and FLUX guidance when > 0)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_dim": ("INT", {"default": 64, "min": 1, "max": 8192}),
            "pooled_dim": ("INT", {"default": 32, "min": 1, "max": 8192}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
        }}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing/swd"

    def make(self, context_dim, pooled_dim, tokens, seed):
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=g)
        pooled = torch.randn((1, pooled_dim), generator=g)
        return ([[cond, {"pooled_output": pooled}]],)


class SwDTestCallLog:
    """Wraps the model so that every diffusion-model call is logged to output/<filename> as JSON lines:
    the input shape, the sigma (ComfyUI passes sigma here; the model converts it to its timestep) and how many
    conditionings (cond/uncond passes) were batched into the call."""
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
            with open(path, "a") as f:
                f.write(json.dumps({"shape": list(x.shape), "sigma": float(t.flatten()[0]),
                                    "passes": len(args["cond_or_uncond"])}) + "\n")
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
        from safetensors.torch import save_file
        comfy.model_management.load_models_gpu([model], force_full_load=True)
        sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
              for k, v in model.model.diffusion_model.state_dict().items()}
        save_file(sd, os.path.join(folder_paths.get_output_directory(), filename))
        return {"ui": {"text": [filename]}}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (SwDTestTinySDXL, SwDTestConditioning, SwDTestCallLog, SwDTestDumpWeights)}


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
        import itertools

        from safetensors.torch import save_file
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


NODE_CLASS_MAPPINGS["SwDTestCaptureCalls"] = SwDTestCaptureCalls
