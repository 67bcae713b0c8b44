"""SwD distillation in a graph: SwD Teacher Samples (the teacher's own samples of your prompts, the official recipe's
data, as Make Training Dataset's lists and optionally a safetensors dataset folder). The data code is the command
line's (swd_distill/samples.py); these nodes translate ComfyUI's types.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # swd_distill imports swd_sampler as a top-level package, as on the command line
    sys.path.append(_ROOT)

DISTILL_CATEGORY = "sampling/swd/distill"


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


DISTILL_NODES = [SwDTeacherSamples]
