"""Test-only node for the robustness tests: a model wrapper that injects a fault at a given diffusion-model call."""
import torch

import comfy.model_management

FAULTS = ["interrupt", "exception", "oom"]


class SwDTestFault:
    """At diffusion-model call `at_call` (counted from 0 per run of the wrapped model): "interrupt" sets ComfyUI's
    interrupt flag exactly as POST /interrupt does and lets the call finish; "exception" raises a RuntimeError;
    "oom" raises the out-of-memory exception ComfyUI handles (torch.cuda.OutOfMemoryError)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "fault": (FAULTS,), "at_call": ("INT", {"default": 0, "min": 0}),
                             "tag": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "testing/swd"

    def wrap(self, model, fault, at_call, tag):
        calls = iter(range(1 << 30))

        def wrapper(apply_model, args):
            n = next(calls)
            if n == at_call:
                if fault == "exception":
                    raise RuntimeError(f"injected fault at model call {n}")
                if fault == "oom":
                    raise comfy.model_management.OOM_EXCEPTION(f"simulated out of memory at model call {n}")
                comfy.model_management.interrupt_current_processing(True)
            return apply_model(args["input"], args["timestep"], **args["c"])

        m = model.clone()
        m.set_model_unet_function_wrapper(wrapper)
        return (m,)


NODE_CLASS_MAPPINGS = {"SwDTestFault": SwDTestFault}
