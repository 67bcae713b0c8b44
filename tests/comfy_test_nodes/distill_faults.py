"""Test-only nodes for SwD Distill LoRA's fault tests: a fault at a given call of the model's x0 computation, and a
count of the models alive in the server.

SwD Distill LoRA does not run the diffusion model through ComfyUI's apply_model (so SwDTestFault's unet function
wrapper never sees its calls): it trains a deep copy of the model and calls the diffusion model itself, between
`model_sampling.calculate_input` and `calculate_denoised` (swd_distill/network.py, Network.x0). The fault therefore
rides on an object patch of "model_sampling", which ComfyUI's clone (also `clone(force_deepcopy=True)`) carries and
applies to the copy when it is loaded; ComfyUI's samplers call calculate_input once per model call too.
"""
import copy
import gc

import torch

import comfy.model_management

FAULTS = ["interrupt", "oom"]


class SwDTestModelSamplingFault:
    """At call `at_call` (from 0, counted over every model loaded from this node's output) of
    model_sampling.calculate_input: "interrupt" sets ComfyUI's interrupt flag exactly as POST /interrupt does and
    lets the call go on; "oom" raises torch.OutOfMemoryError. The math is the model's own."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "fault": (FAULTS,), "at_call": ("INT", {"default": 0, "min": 0}),
                             "tag": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "testing/swd"

    def wrap(self, model, fault, at_call, tag):
        sampling = model.get_model_object("model_sampling")
        calls = iter(range(1 << 30))

        class Faulty(type(sampling)):
            def calculate_input(self, sigma, noise):
                n = next(calls)
                if n == at_call:
                    if fault == "oom":
                        raise torch.OutOfMemoryError(f"simulated out of memory at model call {n}")
                    comfy.model_management.interrupt_current_processing(True)
                return super().calculate_input(sigma, noise)

        with torch.inference_mode(False):
            faulty = copy.deepcopy(sampling)
        faulty.__class__ = Faulty
        m = model.clone()
        m.add_object_patch("model_sampling", faulty)
        return (m,)


class SwDTestLiveModels:
    """Shows how many ComfyUI models (comfy.model_base.BaseModel) are alive in the server, without collecting
    garbage first: a model that only reference cycles keep alive counts. `keep` (any output, unused) keeps the
    nodes it comes from in the prompt, and so in ComfyUI's cache."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""})}, "optional": {"keep": ("*", {})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "count"
    CATEGORY = "testing/swd"

    def count(self, tag, keep=None):
        import comfy.model_base
        return {"ui": {"text": [str(sum(isinstance(o, comfy.model_base.BaseModel) for o in gc.get_objects()))]}}


NODE_CLASS_MAPPINGS = {"SwDTestModelSamplingFault": SwDTestModelSamplingFault, "SwDTestLiveModels": SwDTestLiveModels}
