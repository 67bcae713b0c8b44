"""SwD distillation in a graph: SwD Distill LoRA (the teacher MODEL + latents + conditioning -> the student LoRA) and
SwD Save LoRA (the released PEFT format, its preset in the metadata, into the loras folder). The training code is the
command line's (swd_distill: network, distill, train); these nodes translate ComfyUI's types.

ComfyUI runs nodes under torch.inference_mode(), whose loaded weights cannot be trained through: like ComfyUI's own
TrainLoraNode, the node trains on one deep copy of the model (`clone(force_deepcopy=True)`) that carries both
adapters; the MODEL given to it is never patched. Checkpoints go to ComfyUI's output folder (swd_distill/<name>), not
to the loras folder.
"""
from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import torch

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..swd_sampler.errors import SwDError
from ..swd_sampler.schedule import CUSTOM, PRESET_NAMES, PRESETS, ScheduleError, resolve
from .lora import lora_targets, model_architecture
from .model_info import renoise_with
from .sampler import PLACEHOLDERS, TIPS

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # swd_distill imports swd_sampler as a top-level package, as on the command line
    sys.path.append(_ROOT)

DISTILL_CATEGORY = "sampling/swd/distill"
LoraModel = io.Custom("LORA_MODEL")
LossMap = io.Custom("LOSS_MAP")
RECIPES = {"full (DMD + patch + GAN)": "full", "mmd (patch loss only)": "mmd"}
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}
CHECKPOINTS = "swd_distill"


class DistillInputError(SwDError):
    """An input of SwD Distill LoRA that cannot be used; the message names it."""


class DistillOutOfMemoryError(SwDError):
    """The distillation did not fit in memory; the message names the inputs that lower its memory."""


def _first(value):
    return value[0] if isinstance(value, list) else value


def _latents(latents: list) -> torch.Tensor:
    """One (N, C, H, W) tensor of a list of LATENTs (each a batch; MakeTrainingDataset gives one per image)."""
    if not latents:
        raise DistillInputError("latents: the dataset is empty; connect SwD Teacher Samples or a training dataset")
    parts = [latent["samples"] for latent in latents]
    sizes = sorted({tuple(p.shape[1:]) for p in parts})
    if any(p.ndim != 4 for p in parts):
        raise DistillInputError(f"latents: image latents (B, C, H, W) are needed, got shapes "
                                f"{sorted({tuple(p.shape) for p in parts})}")
    if len(sizes) > 1:
        raise DistillInputError(f"latents: the dataset mixes latent sizes {sizes}; SwD trains one final size: "
                                f"resize the images to one size (or bucket them and distil one bucket)")
    return torch.cat([p.float() for p in parts])


def _split(entry) -> list:
    """A conditioning entry of a batch of b prompts (context (b, T, D), e.g. several lines of one text node) as b
    entries of one prompt each."""
    context, extra = entry
    b = context.shape[0]
    if b == 1:
        return [entry]
    return [[context[i:i + 1], {k: v[i:i + 1] if torch.is_tensor(v) and v.ndim and v.shape[0] == b else v
                                for k, v in extra.items()}] for i in range(b)]


def _positive(positive: list, count: int) -> list:
    """One conditioning entry per latent: a list of CONDITIONINGs (one entry of one or more prompts each), one per
    latent or one for all."""
    entries = [one for cond in positive for entry in cond for one in _split(entry)]
    if len(entries) == 1:
        return entries * count
    if len(entries) != count:
        raise DistillInputError(f"positive: {len(entries)} conditionings for {count} latents; give one per latent "
                                f"(in the same order) or one for all")
    return entries


class SwDDistillLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDDistillLoRA",
            display_name="SwD Distill LoRA",
            category=DISTILL_CATEGORY,
            is_input_list=True,
            description="Scale-wise distillation (SwD, the official recipe): trains a LoRA that makes the model a "
                        "few-step generator that starts small and upscales between steps. Give it the teacher, its "
                        "own samples (SwD Teacher Samples) and their prompts; wire its MODEL into SwD Scale-wise "
                        "KSampler and its LORA into SwD Save LoRA.",
            inputs=[
                io.Model.Input("model", tooltip="The teacher: SD3/SD3.5, FLUX.1 or SDXL as ComfyUI loaded it "
                                                "(LoRAs applied to it are part of the teacher). It is never changed."),
                io.Latent.Input("latents", tooltip="The training latents, one final size: the teacher's samples "
                                                   "(the official recipe) or your images' latents."),
                io.Conditioning.Input("positive", tooltip="One conditioning per latent, in the same order, or one "
                                                          "for all."),
                io.Conditioning.Input("negative", tooltip="The teacher's negative prompt for classifier-free "
                                                          "guidance inside DMD (the official: the empty prompt)."),
                io.Combo.Input("preset", options=PRESET_NAMES, default="SD3.5 Medium · 4 steps",
                               tooltip="The schedule to distil for (the student samples its scales and sigmas); "
                                       "\"custom\": the scales and sigmas below."),
                io.String.Input("scales", default="", placeholder=PLACEHOLDERS["scales"], tooltip=TIPS["scales"]),
                io.String.Input("sigmas", default="", placeholder=PLACEHOLDERS["sigmas"], tooltip=TIPS["sigmas"]),
                io.Combo.Input("recipe", options=list(RECIPES), default="full (DMD + patch + GAN)",
                               tooltip="full: DMD against an online fake score + the patch (MMD) loss + a small GAN "
                                       "term (official SD3.5). mmd: the patch loss on the teacher's features alone "
                                       "(official SDXL): one network in memory, the single-GPU recipe."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Generator steps (official: 3000)."),
                io.Int.Input("batch_size", default=4, min=1, max=1024, tooltip="Samples per step (official: 64 "
                                                                               "over 8 GPUs)."),
                io.Float.Input("learning_rate", default=1e-5, min=1e-8, max=1.0, step=1e-6, round=False,
                               tooltip="AdamW's learning rate, student and fake score (official SD3.5: 5e-6; the "
                                       "tiny demo: 3e-4)."),
                io.Int.Input("rank", default=64, min=1, max=512, tooltip="LoRA rank (official: 64)."),
                io.Float.Input("cfg", default=7.0, min=1.0, max=100.0, step=0.1,
                               tooltip="The teacher's guidance inside DMD (official: 7 for SD3.5 Medium, 4.5 for "
                                       "Large); FLUX.1-dev: the guidance value given to the teacher."),
                io.Int.Input("fake_updates", default=5, min=1, max=100,
                             tooltip="Fake-score updates per generator step (official: 5)."),
                io.Combo.Input("patch_kernel", options=["linear", "rbf", "none"], default="linear",
                               tooltip="The patch loss: linear (per-channel mean matching, the released default) or "
                                       "rbf (unbiased MMD, sigma 100); none turns it off (full recipe only)."),
                io.Float.Input("patch_weight", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="The patch loss's weight in the generator's loss (official: 1)."),
                io.Int.Input("patch_block", default=-1, min=-1, max=200,
                             tooltip="The block whose image tokens the patch loss and the GAN head see: SD3's joint "
                                     "blocks, FLUX's double blocks, a UNet's input/middle/output blocks; -1: the "
                                     "middle one (official SD3.5 Medium: 11)."),
                io.Float.Input("gan_weight", default=5e-3, min=0.0, max=1.0, step=1e-3, round=False,
                               tooltip="The generator's GAN weight (official 5e-3; 0: no discriminator head)."),
                io.Int.Input("warm_steps", default=0, min=0, max=100000,
                             tooltip="Steps that first regress the student's x0 on the data (not in the official "
                                     "code; the tiny demo uses 100)."),
                io.Int.Input("seed", default=1, min=0, max=2 ** 62, control_after_generate=False,
                             tooltip="Fixes the adapters' initialisation, the data order and every noise draw (no "
                                     "randomize control: a resume needs the same seed)."),
                io.Combo.Input("training_dtype", options=list(DTYPES), default="auto",
                               tooltip="The base network's compute dtype: auto keeps what ComfyUI loaded (bf16, "
                                       "fp16, fp8 computed in bf16); the adapters are always fp32."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="Recompute every block in the backward: much less memory, about a third "
                                         "more time."),
                io.Combo.Input("start_lora", options=["[None]", *folder_paths.get_filename_list("loras")],
                               default="[None]", tooltip="Continue a LoRA distilled from this model (same rank), "
                                                          "e.g. a released SwD LoRA."),
                io.String.Input("checkpoint_name", default="swd_distill",
                                tooltip=f"Checkpoints go to ComfyUI's output/{CHECKPOINTS}/<name>.ckpt.safetensors."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue from that checkpoint (same settings) instead of starting over; "
                                         "Cancel keeps the checkpoint last written."),
                io.Int.Input("checkpoint_every", default=100, min=1, max=100000,
                             tooltip="Write the checkpoint every N steps and at the end. Cancel stops in the middle of "
                                     "a step, which is lost: resume continues from the last checkpoint written (a "
                                     "Cancel between steps or during a preview writes that step's)."),
                io.Int.Input("preview_every", default=50, min=0, max=100000,
                             tooltip="Show the student's sample of the first prompt every N steps (0: never)."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The teacher with the distilled LoRA: wire it into SwD "
                                                              "Scale-wise KSampler with the preset output."),
                LoraModel.Output(display_name="lora", tooltip="The LoRA (PEFT keys, fp32): SwD Save LoRA writes it."),
                LossMap.Output(display_name="loss_map", tooltip="Every loss per step (for Plot Loss Graph)."),
                io.Combo.Output("preset", display_name="preset", options=PRESET_NAMES,
                                tooltip="The preset it was distilled for."),
                io.Int.Output(display_name="steps", tooltip="Steps done in all."),
            ],
        )

    @classmethod
    def execute(cls, **inputs) -> io.NodeOutput:
        latents, positive = inputs.pop("latents"), inputs.pop("positive")
        args = {k: _first(v) for k, v in inputs.items()}
        from swd_distill.adapters import AdapterError
        from swd_distill.data import DataError
        from swd_distill.train import ResumeError
        from swd_sampler.schedule import ScheduleError as CoreScheduleError  # the schedule as swd_distill imports it
        try:
            return _distill(args, latents, positive)
        except (DistillInputError, DataError, ScheduleError, CoreScheduleError, AdapterError, ResumeError) as e:
            raise DistillInputError(f"SwD Distill LoRA: {e}") from None
        except torch.OutOfMemoryError:
            failure = DistillOutOfMemoryError(_memory_advice(args))
        except comfy.model_management.InterruptProcessingException:
            failure = comfy.model_management.InterruptProcessingException()
        _release_memory()  # out of the handler: the caught error's traceback, which held the training copy, is gone
        raise failure


def _memory_advice(args) -> str:
    batch, checkpointing, dtype = args["batch_size"], args["gradient_checkpointing"], args["training_dtype"]
    full = RECIPES[args["recipe"]] == "full"
    tips = [tip for tip, useful in (("lower batch_size", batch > 1),
                                    ("turn gradient_checkpointing on", not checkpointing),
                                    ("set training_dtype to bf16", dtype != "bf16"),
                                    ("use the mmd recipe (no fake score)", full)) if useful]
    return (f"SwD Distill LoRA: out of memory with batch_size {batch}, gradient_checkpointing "
            f"{'on' if checkpointing else 'off'}, training_dtype {dtype}: "
            + ("; ".join(tips) if tips else "these are the lowest settings: use a smaller model or more memory")
            + f". The teacher is unchanged; checkpoints already written stay in output/{CHECKPOINTS}/.")


def _release_memory() -> None:
    """Free the training copy: its patched blocks hold reference cycles, which only the collector frees."""
    gc.collect()
    comfy.model_management.soft_empty_cache()


def _config(args):
    from swd_distill.distill import DistillConfig
    preset = args["preset"]
    scales, sigmas = resolve(preset, args["scales"], args["sigmas"])
    try:
        return DistillConfig(
            preset=preset, scales=scales if preset == CUSTOM else (), sigmas=sigmas if preset == CUSTOM else (),
            steps=args["steps"], warm_steps=args["warm_steps"], batch=args["batch_size"], rank=args["rank"],
            lr=args["learning_rate"], fake_lr=args["learning_rate"], recipe=RECIPES[args["recipe"]],
            fake_updates=args["fake_updates"], cfg=args["cfg"], patch=args["patch_kernel"],
            patch_weight=args["patch_weight"], patch_block=args["patch_block"], gan=args["gan_weight"],
            seed=args["seed"], checkpoint_every=args["checkpoint_every"])
    except ValueError as e:
        raise DistillInputError(str(e)) from None


def _check_preset(cfg, family: str, latent_shape, channels: int) -> None:
    if latent_shape[0] != channels:
        raise DistillInputError(f"latents have {latent_shape[0]} channels but this model's have {channels}: they "
                                f"were made with another model family; make them with this model's VAE or sampler")
    if cfg.preset in PRESETS:
        flow = PRESETS[cfg.preset].family == "flow"
        if flow != (family != "sdxl"):
            raise DistillInputError(f"preset {cfg.preset!r} is for {'flow' if flow else 'eps'} models "
                                    f"({PRESETS[cfg.preset].family}), this model is {family}: pick a preset of its "
                                    f"family or custom")


def _distill(args, latents_in, positive_in):
    from swd_distill.data import Dataset
    from swd_distill.network import Network
    from swd_distill.runner import checkpoint_path, read_weights
    from swd_distill.train import distill

    model = args["model"]
    cfg = _config(args)
    family = model_architecture(model).family
    family = "sdxl" if family == "unet" else family
    latents = _latents(latents_in)
    entries = _positive(positive_in, len(latents))
    negative_in = args["negative"]
    folder = Path(folder_paths.get_output_directory()) / CHECKPOINTS
    name = args["checkpoint_name"].strip()
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise DistillInputError(f"checkpoint_name {name!r}: give a plain file name, e.g. swd_distill")
    checkpoint = checkpoint_path(folder, name)
    if args["resume"] and not checkpoint.exists():
        raise DistillInputError(f"resume: there is no checkpoint {checkpoint}; turn resume off to start at step 0")
    start = None
    if args["start_lora"] != "[None]":
        start = read_weights(Path(folder_paths.get_full_path_or_raise("loras", args["start_lora"])),
                             f"start_lora {args['start_lora']}")[0]
    pbar = comfy.utils.ProgressBar(cfg.steps)
    loss_map: dict[str, list[float]] = {}
    with torch.inference_mode(False):
        patcher = trainable_copy(model)
        comfy.model_management.load_models_gpu([patcher], memory_required=1e20, force_full_load=True)
        base = patcher.model
        dtype = DTYPES[args["training_dtype"]]
        if dtype is not None:
            base.diffusion_model.to(dtype)
            base.diffusion_model.dtype = dtype
            base.manual_cast_dtype = None
        elif base.get_dtype_inference() not in (torch.float32, torch.bfloat16, torch.float16):
            dtype = torch.bfloat16  # fp8 weights: computed in bf16 by ComfyUI's casting layers
        net = Network(base, dtype, args["gradient_checkpointing"])
        _check_preset(cfg, net.family, tuple(latents.shape[1:]), net.latent_channels)
        shape = tuple(latents.shape[1:])
        conds = [net.encode(entry, shape) for entry in entries]
        negative = net.encode(negative_in[0], shape) if negative_in else None
        data = Dataset(latents, conds, cfg.seed, what="latents")
        previewer = _Preview(net, conds[0], cfg, shape, args["preview_every"], args["seed"])

        def on_step(step, logs):
            for key, value in logs.items():
                loss_map.setdefault(key, []).append(value)
            try:  # a Cancel raised here (the progress hook, the preview's layers) comes after a whole step: the
                # loop is to stop and write its checkpoint (one raised by the layers inside a step loses that step)
                pbar.update_absolute(step, cfg.steps, previewer(step))
            except comfy.model_management.InterruptProcessingException:
                comfy.model_management.interrupt_current_processing(True)

        try:
            lora, steps, history = distill(net, data, negative, cfg, checkpoint=checkpoint, resume=args["resume"],
                                           start_lora=start, on_step=on_step,
                                           should_stop=comfy.model_management.processing_interrupted)
        finally:
            del net, base, patcher, previewer  # on an error its traceback holds them: execute releases them then
            _release_memory()
    comfy.model_management.throw_exception_if_processing_interrupted()  # Cancel between steps: checkpoint written
    student = apply_lora(model, lora, family)
    text = f"{steps} steps; last losses: " + ", ".join(f"{k} {v:.4g}" for k, v in (history[-1] if history else
                                                                                   {}).items())
    logging.info("SwD Distill LoRA: %s (checkpoint %s)", text, checkpoint)
    loss_map.setdefault("loss", [sum(h.values()) for h in history])
    return io.NodeOutput(student, lora, loss_map, cfg.preset, steps, ui={"text": [text]})


def trainable_copy(model):
    """One copy of the MODEL whose weights can be trained through, its patches included: TrainLoraNode's
    `clone(force_deepcopy=True)`, or, for a model made without a loader (no recipe to reload it from), a new
    model of its config with its weights copied."""
    import comfy.model_patcher
    if getattr(model, "cached_patcher_init", None) is not None:
        patcher = model.clone(force_deepcopy=True)
    else:
        source = model.model
        base = source.model_config.get_model(source.state_dict(), "diffusion_model.", device=model.offload_device)
        base.diffusion_model.load_state_dict({k: v.clone() for k, v in source.diffusion_model.state_dict().items()})
        patcher = comfy.model_patcher.ModelPatcher(base, model.load_device, model.offload_device)
        patcher.patches = {k: v[:] for k, v in model.patches.items()}
    patcher.model._apply(lambda t: t.clone() if t.is_inference() else t)
    return patcher


def apply_lora(model, lora: dict[str, torch.Tensor], family: str):
    """A clone of `model` patched with a PEFT LoRA (alpha = rank) through ComfyUI's LoRA patcher."""
    targets = lora_targets(model, "unet" if family == "sdxl" else family)
    state, to_load = {}, {}
    for key, value in lora.items():
        if key.endswith(".lora_A.weight"):
            module = key[len("base_model.model."):-len(".lora_A.weight")]
            state[f"{module}.lora_A.weight"] = value
            state[f"{module}.lora_B.weight"] = lora[key.replace("lora_A", "lora_B")]
            state[f"{module}.alpha"] = torch.tensor(float(value.shape[0]))
            to_load[module] = targets[module][0]
    patched = model.clone()
    patched.add_patches(comfy.lora.load_lora(state, to_load, log_missing=False), 1.0)
    return patched


class _Preview:
    """The student's SwD sample of the first prompt every `every` steps (ComfyUI's latent previewer)."""

    def __init__(self, net, cond, cfg, shape, every: int, seed: int):
        self.net, self.cond, self.every, self.seed = net, cond, every, seed
        self.cfg, self.shape = cfg, shape
        self.previewer = None
        if every:
            import latent_preview
            self.previewer = latent_preview.get_previewer(net.device, net.base.latent_format)

    def __call__(self, step: int):
        if self.previewer is None or step % self.every:
            return None
        from swd_sampler.sampling import sample_scalewise
        from swd_sampler.schedule import step_sizes
        net, cfg = self.net, self.cfg
        scales, sigmas = cfg.schedule()
        patch = getattr(net.dm, "patch_size", 1)
        sizes = step_sizes(scales, *self.shape[1:], int(patch[0] if isinstance(patch, (list, tuple)) else patch))
        conds = net.conds([self.cond])
        model_sigma = [float(s) for s in net.model_sigmas(list(sigmas) + [0.0])]
        with torch.no_grad():
            x0 = sample_scalewise(lambda x, s: net.x0(x, torch.full((1,), s, device=x.device), conds, "student"),
                                  model_sigma, sizes, batch=1, channels=self.shape[0], seed=self.seed,
                                  renoise=renoise_with(net.ms), device=net.device)
        return self.previewer.decode_latent_to_preview_image("JPEG", net.base.process_latent_out(x0))


class SwDSaveLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDSaveLoRA",
            display_name="SwD Save LoRA",
            category=DISTILL_CATEGORY,
            is_output_node=True,
            description="Writes a distilled SwD LoRA in the released format (PEFT keys) with its preset in the "
                        "metadata into your loras folder, so SwD LoRA Loader lists it (after a refresh) and picks its "
                        "schedule whatever the file is called.",
            inputs=[
                LoraModel.Input("lora", tooltip="From SwD Distill LoRA."),
                io.Combo.Input("preset", options=PRESET_NAMES, default="SD3.5 Medium · 4 steps",
                               tooltip="The schedule it was distilled for (SwD Distill LoRA's preset output)."),
                io.String.Input("filename_prefix", default="swd/my-swd-lora",
                                tooltip="Inside the loras folder; a counter is added (my-swd-lora_00001_)."),
                io.String.Input("scales", default="", optional=True, placeholder=PLACEHOLDERS["scales"],
                                tooltip="Only for preset custom: stored in the metadata."),
                io.String.Input("sigmas", default="", optional=True, placeholder=PLACEHOLDERS["sigmas"],
                                tooltip="Only for preset custom: stored in the metadata."),
            ],
            outputs=[io.String.Output(display_name="lora_name", tooltip="The name SwD LoRA Loader lists it under.")],
        )

    @classmethod
    def execute(cls, lora, preset, filename_prefix, scales="", sigmas="") -> io.NodeOutput:
        import json

        from safetensors.torch import save_file
        scale_list, sigma_list = resolve(preset, scales or "", sigmas or "")
        pairs = [k for k in lora if k.startswith("base_model.model.") and k.endswith(".lora_A.weight")]
        if not pairs or any(k.replace("lora_A", "lora_B") not in lora for k in pairs):
            raise ValueError("SwD Save LoRA: lora is not an SwD LoRA in PEFT form (base_model.model.*.lora_A/B); "
                             "connect SwD Distill LoRA's lora output")
        bad = [k for k, v in lora.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"SwD Save LoRA: lora has non-finite weights ({bad[0]}); nothing was written")
        folder = save_folder()
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder)
        name = f"{filename}_{counter:05}_.safetensors"
        rank = lora[pairs[0]].shape[0]
        metadata = {"swd_preset": preset, "format": "pt",
                    "lora_adapter_metadata": json.dumps({"r": rank, "lora_alpha": rank, "target_modules": sorted(
                        k[len("base_model.model."):-len(".lora_A.weight")] for k in pairs)})}
        if preset == CUSTOM:
            metadata["swd_scales"] = ", ".join(f"{s:g}" for s in scale_list)
            metadata["swd_sigmas"] = ", ".join(f"{s:g}" for s in sigma_list)
        path = Path(full_folder) / name
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().to(torch.float16).contiguous().cpu() for k, v in lora.items()}, str(tmp),
                  metadata=metadata)
        tmp.replace(path)
        lora_name = str(Path(subfolder) / name) if subfolder else name
        return io.NodeOutput(lora_name, ui={"text": [f"saved {path}"]})


def save_folder() -> str:
    """The first loras folder of folder_paths that is not the pack's own models/ (never the pack)."""
    pack = Path(_ROOT).resolve()
    for folder in folder_paths.get_folder_paths("loras"):
        if not Path(folder).resolve().is_relative_to(pack):
            return folder
    raise ValueError("SwD Save LoRA: ComfyUI has no loras folder outside this pack; add one in extra_model_paths")


class SwDTeacherSamples(io.ComfyNode):
    """The teacher's own samples of your prompts (the official recipe's data) through KSampler's code path, as the
    lists ComfyUI's Make Training Dataset outputs; optionally also written as a safetensors dataset folder
    (swd_distill/samples.py) for `python -m swd_distill distill --dataset`."""

    @classmethod
    def define_schema(cls):
        import comfy.samplers
        return io.Schema(
            node_id="SwDTeacherSamples",
            display_name="SwD Teacher Samples",
            category=DISTILL_CATEGORY,
            description="Samples the teacher on every prompt, exactly as KSampler does (prompt i: an empty latent "
                        "of batch images_per_prompt at width x height, seed + i) and encodes the prompts as CLIP Text "
                        "Encode does: the data SwD distils on (the official recipe trains on the teacher's own "
                        "samples). Outputs one latent and one conditioning per image, like Make Training Dataset, for "
                        "SwD Distill LoRA; save_to also writes them as safetensors shards with a dataset.json.",
            inputs=[
                io.Model.Input("model", tooltip="The teacher as ComfyUI loaded it (LoRAs applied are part of it)."),
                io.Clip.Input("clip", tooltip="The teacher's text encoder (for the tiny demo models: SwD Tiny CLIP "
                                              "& VAE)."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="One prompt per line; blank lines are skipped."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="The negative prompt of every image (used when cfg is above 1; the official "
                                        "recipe: empty)."),
                io.Int.Input("width", default=1024, min=16, max=16384, step=8,
                             tooltip="Image width in pixels: a multiple of 16 for SD3/FLUX, 8 for SDXL."),
                io.Int.Input("height", default=1024, min=16, max=16384, step=8,
                             tooltip="Image height in pixels: a multiple of 16 for SD3/FLUX, 8 for SDXL."),
                io.Int.Input("steps", default=28, min=1, max=10000, tooltip="The teacher's sampling steps."),
                io.Float.Input("cfg", default=4.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance, as KSampler's cfg. FLUX: put the guidance with "
                                       "FluxGuidance on the prompt's conditioning and leave cfg at 1 (here: the "
                                       "guidance input does it)."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Guidance-distilled models (FLUX.1-dev): the guidance set on every prompt's "
                                       "conditioning, as FluxGuidance sets it (its default is 3.5); keep cfg at 1 "
                                       "for them. Other models ignore it and their conditioning stays CLIP Text "
                                       "Encode's."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="KSampler's sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="KSampler's scheduler."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Prompt i (from 0) is sampled with seed + i: its images are exactly KSampler's "
                                     "batch for that seed."),
                io.Int.Input("images_per_prompt", default=1, min=1, max=4096,
                             tooltip="Images of each prompt, sampled as one batch."),
                io.String.Input("save_to", default="", optional=True,
                                tooltip="Empty: write nothing. A folder name (e.g. swd/sd35-teacher) inside ComfyUI's "
                                        "output folder: also write the dataset there (dataset.json, "
                                        "negative.safetensors, shard-NNNNN.safetensors) for `python -m swd_distill "
                                        "distill --dataset`. A folder of other settings is never overwritten."),
            ],
            outputs=[
                io.Latent.Output(display_name="latents", is_output_list=True,
                                 tooltip="One LATENT per image (batch 1), prompt by prompt, as Make Training Dataset "
                                         "outputs them."),
                io.Conditioning.Output(display_name="positive", is_output_list=True,
                                       tooltip="One CONDITIONING per latent: its prompt's, as CLIP Text Encode gives "
                                               "it (with the guidance for FLUX)."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt's CONDITIONING."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompts=None, save_to=None):
        from ..swd_sampler.checks import InputError
        try:
            if prompts is not None:
                _prompt_lines(prompts)
            if save_to is not None:
                _samples_folder(save_to)
        except InputError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, clip, prompts, negative_prompt, width, height, steps, cfg, guidance, sampler_name,
                scheduler, seed, images_per_prompt, save_to="") -> io.NodeOutput:
        from swd_distill import samples

        from ..swd_sampler.checks import InputError, check_finite
        check_finite(cfg=cfg, guidance=guidance)
        captions = _prompt_lines(prompts)
        folder = _samples_folder(save_to)
        if clip is None:
            raise InputError("SwD Teacher Samples: clip is empty (the checkpoint holds no text encoder): load the "
                             "teacher's text encoder with a CLIP loader")
        multiple = samples.size_multiple(model)
        for name, value in (("width", width), ("height", height)):
            if value % multiple:
                raise InputError(f"SwD Teacher Samples: {name} {value} does not fit this model: it must be a "
                                 f"multiple of {multiple} (e.g. {max(multiple, round(value / multiple) * multiple)})")
        positives = samples.encode_prompts(clip, captions)
        negative = samples.encode_prompts(clip, [negative_prompt])[0]
        guided = samples.takes_guidance(model)
        if guided:
            positives = [samples.with_guidance(p, guidance) for p in positives]
        spec = samples.SampleSpec(teacher=samples.GRAPH, captions=tuple(captions), per_caption=images_per_prompt,
                                  steps=steps, cfg=cfg, seed=seed, width=width, height=height,
                                  negative=negative_prompt, guidance=guidance if guided else None,
                                  sampler=sampler_name, scheduler=scheduler)
        pbar = comfy.utils.ProgressBar(len(captions))

        def on_batch(i):
            pbar.update(1)
            comfy.model_management.throw_exception_if_processing_interrupted()

        parts = []
        try:
            if folder is not None:
                samples.start_dataset(folder, spec, negative, resume=False)
            for shard in range(spec.shards):
                rows = spec.prompts_of(shard)
                x = samples.sample_prompts(model, positives[rows.start:rows.stop], negative, width, height, steps,
                                           cfg, sampler_name, scheduler, seed, images_per_prompt, first=rows.start,
                                           captions=captions[rows.start:rows.stop], on_batch=on_batch)
                if folder is not None:
                    samples.write_shard(folder, spec, shard, x, positives[rows.start:rows.stop])
                parts.append(x)
        except samples.DatasetError as e:
            raise InputError(f"SwD Teacher Samples: {e}") from None
        latents = torch.cat(parts)
        return io.NodeOutput([{"samples": latents[k:k + 1]} for k in range(len(latents))],
                             [positives[k // images_per_prompt] for k in range(len(latents))], negative)


def _prompt_lines(text: str) -> list[str]:
    from ..swd_sampler.checks import InputError, split_lines
    lines = [line for line in split_lines(text, "SwD Teacher Samples: prompts") if line.strip()]
    if not lines:
        raise InputError("SwD Teacher Samples: prompts is empty: write one prompt per line")
    return lines


def _samples_folder(save_to: str) -> Path | None:
    """The dataset folder save_to names inside ComfyUI's output folder; None when save_to is empty."""
    from ..swd_sampler.checks import InputError
    name = (save_to or "").strip()
    if not name:
        return None
    output = Path(folder_paths.get_output_directory()).resolve()
    folder = (output / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or folder == output or not folder.is_relative_to(output):
        raise InputError(f"SwD Teacher Samples: save_to {save_to!r} must name a folder inside ComfyUI's output "
                         f"folder, e.g. swd/my-teacher-samples (no absolute path, no ..)")
    return folder


DISTILL_NODES = [SwDDistillLoRA, SwDSaveLoRA, SwDTeacherSamples]
