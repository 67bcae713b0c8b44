"""SwDLoraLoader: applies an SwD LoRA in any key format through ComfyUI's own LoRA patcher and names its preset.

Why stock ComfyUI 0.30 drops keys (comfy.lora.model_lora_keys_unet): it adds `base_model.model.<diffusers name>` to
its key map only for SD3 (and PixArt, HunyuanDiT), not for FLUX, so every key of the FLUX PEFT file is "not loaded";
for UNets it maps diffusers names only as `lora_unet_<name with _>` and as `[unet.]<name>` with attention layers
spelled `.processor.to_q` / `.processor.to_out`, so a PEFT SDXL file loses every key and a `unet.` file its attention
keys. Here the model's layers are named from ComfyUI's own diffusers maps (comfy.utils.mmdit_to_diffusers /
flux_to_diffusers / unet_to_diffusers, fused-qkv slices included) and its state dict, whatever the file's prefix;
comfy.lora.load_lora and ModelPatcher.add_patches then apply them as for any LoRA.
"""
from __future__ import annotations

import logging

import comfy.lora
import comfy.model_base
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..swd_sampler.checks import check_finite
from ..swd_sampler.lora import Architecture, LoraError, check_architecture, plan_patches, read_lora
from ..swd_sampler.schedule import CUSTOM, PRESET_NAMES
from .sampler import CATEGORY

PREFIX = "diffusion_model."


def model_architecture(model) -> Architecture:
    """Family and width of a ComfyUI MODEL: hidden size for FLUX and SD3 (ComfyUI's 64 * depth), context width for
    UNets."""
    base = model.model
    config = base.model_config.unet_config
    if isinstance(base, comfy.model_base.Flux):
        return Architecture("flux", config["hidden_size"])
    if isinstance(base, comfy.model_base.SD3):
        return Architecture("sd3", 64 * config["depth"])
    if "num_res_blocks" in config and config.get("context_dim"):
        return Architecture("unet", config["context_dim"])
    raise LoraError(f"SwD LoRA Loader handles SD3/SD3.5, FLUX.1 and SDXL models; this model is "
                    f"{type(base).__name__}. Use ComfyUI's LoraLoader for it.")


def _diffusers_names(model, family: str) -> dict:
    """ComfyUI's diffusers -> model key map: values are a key, (key, (dim, offset, size)) for a slice of a fused
    weight, or (key, None, function) for a weight stored in another layout."""
    config = model.model.model_config.unet_config
    if family == "sd3":
        return comfy.utils.mmdit_to_diffusers(config, output_prefix=PREFIX)
    if family == "flux":
        return comfy.utils.flux_to_diffusers(config, output_prefix=PREFIX)
    return {k: PREFIX + v for k, v in comfy.utils.unet_to_diffusers(config).items()}


def lora_targets(model, family: str) -> dict[str, tuple]:
    """{layer name: (comfy.lora target, shape of the weight or slice it patches)} for every weight the model has,
    under its own name (`joint_blocks.0.x_block.attn.qkv`) and its diffusers names
    (`transformer_blocks.0.attn.to_q`)."""
    shapes = {k: tuple(v.shape) for k, v in model.model_state_dict().items()}
    targets = {k[len(PREFIX):-len(".weight")]: (k, shape) for k, shape in shapes.items()
               if k.startswith(PREFIX) and k.endswith(".weight")}
    for name, target in _diffusers_names(model, family).items():
        key = target if isinstance(target, str) else target[0]
        if not name.endswith(".weight") or key not in shapes:
            continue
        shape = shapes[key]
        if not isinstance(target, str) and target[1] is not None:
            dim, _, size = target[1]
            shape = shape[:dim] + (size,) + shape[dim + 1:]
        targets[name[:-len(".weight")]] = (target, shape)
    return targets


class SwDLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDLoraLoader",
            display_name="SwD LoRA Loader",
            category=CATEGORY,
            description="Applies a Scale-wise Distillation LoRA (SD3.5 Medium/Large, FLUX.1-dev, SDXL) to the "
                        "diffusion model, in PEFT (base_model.model.*), diffusers (transformer.*/unet.*) or kohya "
                        "(lora_unet_*) form, and outputs the SwD preset the LoRA was distilled for. Refuses files that "
                        "are not safetensors, damaged files, LoRAs for another model and keys that match no layer.",
            inputs=[
                io.Model.Input("model", tooltip="The SD3.5, FLUX.1-dev or SDXL diffusion model to patch (it is "
                                                "cloned, never changed)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="The SwD LoRA in the loras folder (.safetensors). Keep the released name, e.g. "
                                       "swd-large-4-steps.safetensors or swd-medium-6-steps/adapter_model.safetensors, "
                                       "so that the preset output can name its schedule."),
                io.Float.Input("strength", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="Multiplies the LoRA update: W + strength * alpha/r * (B @ A). SwD LoRAs are "
                                       "distilled for 1.0."),
                io.Boolean.Input("allow_partial", default=False,
                                 tooltip="Off: refuse a LoRA of which any key matches no layer of the model. On: load "
                                         "the layers that match and report how many keys were left out."),
            ],
            outputs=[
                io.Model.Output(tooltip="A copy of the model with the LoRA applied."),
                io.Combo.Output("preset", display_name="preset", options=PRESET_NAMES,
                                tooltip="The SwD preset this LoRA was made for (from its file name, metadata or "
                                        "architecture), or \"custom\" when it cannot tell: connect it to SwD "
                                        "Scale-wise KSampler's or SwD Schedule's preset."),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name, strength, allow_partial) -> io.NodeOutput:
        check_finite(strength=strength)
        lora = read_lora(folder_paths.get_full_path_or_raise("loras", lora_name), lora_name)
        architecture = model_architecture(model)
        check_architecture(lora, architecture)
        plan = plan_patches(lora, lora_targets(model, architecture.family), allow_partial)
        patches = comfy.lora.load_lora(plan.state_dict, plan.to_load)
        patched = model.clone()
        applied = patched.add_patches(patches, strength)
        match = lora.preset()
        report = {"preset": match.preset or CUSTOM, "preset_reason": match.reason, "formats": list(lora.formats),
                  "lora_architecture": lora.architecture.name if lora.architecture else None,
                  "model_architecture": architecture.name, "alpha": lora.alpha_source,
                  "layers_patched": len(applied), "keys_loaded": lora.key_count - len(plan.unmatched),
                  "keys_not_loaded": len(plan.unmatched), "not_loaded": list(plan.unmatched)}
        text = (f"{lora_name}: {report['keys_loaded']} of {lora.key_count} keys loaded into {len(applied)} layers of "
                f"{architecture.name} ({', '.join(lora.formats)} keys; alpha: {lora.alpha_source}). "
                f"Preset: {report['preset']} ({match.reason}).")
        if plan.unmatched:
            logging.warning("SwD LoRA Loader: %s: %d keys not loaded: %s", lora_name, len(plan.unmatched),
                            ", ".join(plan.unmatched))
        if match.preset is None:
            logging.warning("SwD LoRA Loader: %s", match.reason)
        return io.NodeOutput(patched, report["preset"], ui={"text": [text], "swd_lora": [report]})
