"""SwDKSampler (all in one), SwDSchedule and SwDSampler (for SamplerCustom / SamplerCustomAdvanced)."""
from __future__ import annotations

import logging

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..swd_sampler.checks import (check_conditioning, check_custom_schedule, check_finite, check_latent,
                                  check_latent_channels, check_mask_values, check_sampler_sigmas, check_values)
from ..swd_sampler.resize import DEFAULT_UPSCALE_METHOD, UPSCALE_METHODS
from ..swd_sampler.sampling import sample_scalewise
from ..swd_sampler.schedule import (DEFAULT_PRESET, PRESET_NAMES, ScheduleError, describe, resolve, select_steps,
                                    step_sizes)
from .checks import check_preset_for, check_step_fits, latent_for
from .model_info import model_sigmas, patch_size, renoise_with

CATEGORY = "sampling/swd"
SwDScales = io.Custom("SWD_SCALES")

TIPS = {
    "preset": "The schedule the SwD LoRA was distilled with. \"custom\" uses the scales and sigmas fields below; "
              "SwDLoraLoader's preset output can drive this input.",
    "scales": "Only for preset \"custom\": the relative size of each step, as latent side lengths ending at the "
              "final one (32, 48, 64, 80, 96, 128 = 256 px up to 1024 px) or fractions ending at 1.0. Never "
              "decreasing; one value per step.",
    "sigmas": "Only for preset \"custom\": the noise level of each step in [0, 1], strictly decreasing, ending "
              "with 0 (which may be left out). One more value than scales.",
    "upscale_method": "How x0 is resized between scales. bicubic is what SwD was trained with; nearest aliases.",
    "denoise": "1.0: text-to-image, the latent's content is ignored. Below 1 (img2img, hires, inpainting): only the "
               "steps whose sigma is at most denoise run, starting from the input latent re-noised to the first of "
               "them; lower keeps more of the input. Hires: upscale a draft latent and use 0.6-0.75.",
}
PLACEHOLDERS = {"scales": "only for preset custom, e.g. 32, 48, 64, 80, 96, 128",
                "sigmas": "only for preset custom, e.g. 1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0"}


def _schedule_inputs():
    return [
        io.Combo.Input("preset", options=PRESET_NAMES, default=DEFAULT_PRESET, tooltip=TIPS["preset"]),
        io.String.Input("scales", default="", placeholder=PLACEHOLDERS["scales"], tooltip=TIPS["scales"]),
        io.String.Input("sigmas", default="", placeholder=PLACEHOLDERS["sigmas"], tooltip=TIPS["sigmas"]),
    ]


def _denoise_input():
    """Optional and last, so that API prompts and workflows saved before it existed still load (as 1.0)."""
    return io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, optional=True, tooltip=TIPS["denoise"])


def _validate_schedule(preset, scales, sigmas):
    if preset is None or scales is None or sigmas is None:  # linked inputs are checked when the node runs
        return True
    try:
        check_custom_schedule(preset, scales, sigmas)
        resolve(preset, scales, sigmas)
    except ScheduleError as e:
        return str(e)
    return True


def swd_ksampler(scales, upscale_method: str = DEFAULT_UPSCALE_METHOD,
                 from_latent: bool = False) -> comfy.samplers.KSAMPLER:
    """A ComfyUI SAMPLER that runs the SwD loop; the final latent size comes from the latent it is given.
    `from_latent` (denoise < 1, see select_steps) starts from that latent re-noised to the first sigma."""
    return comfy.samplers.KSAMPLER(_sample_swd, extra_options={"scales": tuple(scales),
                                                                "upscale_method": upscale_method,
                                                                "from_latent": from_latent})


@torch.no_grad()
def _sample_swd(model, noise, sigmas, extra_args=None, callback=None, disable=None, scales=(), upscale_method="bicubic",
                from_latent=False):
    """KSAMPLER sampler function. `model` is KSamplerX0Inpaint(x, sigma) -> x0 over the CFG guider; `noise` arrives
    noise-scaled at the FINAL size and only its shape and device are used: SwD draws its own noise per the seed
    contract, starting at the first (smallest) scale. `model.latent_image` is the input latent in model space (KSAMPLER
    sets it after process_latent_in): the img2img start and the inpainting blend read it. The noise mask, which
    KSamplerX0Inpaint would apply at the final size only, is taken out of extra_args and applied at every scale."""
    extra_args = dict(extra_args or {})
    mask = extra_args.pop("denoise_mask", None)
    guider = model.inner_model
    ms = guider.inner_model.model_sampling
    sigmas = [float(s) for s in sigmas]
    check_sampler_sigmas(scales, sigmas)
    if sigmas[0] > float(ms.sigma_max) * (1 + 1e-5):
        raise ScheduleError(f"sigmas start at {sigmas[0]:g}, above this model's largest sigma {float(ms.sigma_max):g}: "
                            f"connect the SIGMAS of SwD Schedule, which converts the schedule for this model.")
    _check_sampler_inputs(guider, noise, model.latent_image, mask, from_latent)
    batch, channels, height, width = noise.shape
    sizes = step_sizes(scales, height, width, patch_size(guider.model_patcher))
    check_step_fits(guider.model_patcher, batch, channels, sizes[-1], noise.device)
    s_in = noise.new_ones([batch])

    def denoise(x, sigma):
        return model(x, sigma * s_in, denoise_mask=None, **extra_args)

    def on_step(i, x0, x, total):
        if callback is not None:
            callback({"i": i, "denoised": x0, "x": x, "sigma": sigmas[i], "sigma_hat": sigmas[i]})

    return sample_scalewise(denoise, sigmas, sizes, batch=batch, channels=channels, seed=int(extra_args.get("seed") or 0),
                            renoise=renoise_with(ms), upscale_method=upscale_method, callback=on_step,
                            device=noise.device, latent=model.latent_image, from_latent=from_latent, mask=mask)


def _check_sampler_inputs(guider, noise, latent, mask, from_latent) -> None:
    """The checks both paths share (SwDKSampler, and SamplerCustomAdvanced with SwD Sampler, whose latent only
    arrives here): the latent's layout, channels and values (when read: img2img or a mask), the conditioning of every
    pass that runs (values, batch) and the noise mask's values. SamplerCustomAdvanced hands the sampler the mask
    already resized and repeated to the batch by ComfyUI (sampler_helpers.prepare_mask), so its batch and layout
    can only be checked where the LATENT is seen: by SwDKSampler and SwD Latent Upscale + Re-noise."""
    origin = "the LATENT given to the sampler"
    check_latent(noise, "latent_image", origin, values=False)
    check_latent_channels(noise.shape[1], guider.model_patcher.get_model_object("latent_format").latent_channels,
                          "latent_image")
    if from_latent or mask is not None:
        check_values(latent, "latent_image", origin)
    skip_negative = float(getattr(guider, "cfg", 1.0)) == 1.0  # ComfyUI runs no negative pass at cfg 1
    for name, conds in getattr(guider, "original_conds", {}).items():
        if not (name == "negative" and skip_negative):
            check_conditioning(conds, name, noise.shape[0])
    if mask is not None:
        check_mask_values(mask, "noise_mask", f"the noise mask of {origin}")


class SwDKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDKSampler",
            display_name="SwD Scale-wise KSampler",
            category=CATEGORY,
            description="Scale-wise Distillation sampling: predicts x0 at a low resolution, upscales it, re-noises it "
                        "and repeats up to the final size, in 4-6 steps. Use with an SwD LoRA (SwDLoraLoader) and "
                        "cfg 1.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model with the SwD LoRA applied."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="Only used when cfg is not 1."),
                io.Latent.Input("latent_image", tooltip="The FINAL size: an empty latent (e.g. EmptySD3LatentImage "
                                                        "1024x1024) for text-to-image, or an encoded / upscaled image "
                                                        "with denoise below 1. A noise mask (SetLatentNoiseMask, VAE "
                                                        "Encode for Inpainting) keeps the latent outside the mask."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seeds one CPU generator that draws the first noise and every re-noise, so a "
                                     "seed gives the same image on any device and batch size."),
                *_schedule_inputs(),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. SwD models are distilled for 1.0, which also skips "
                                       "the negative pass (half the work)."),
                io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default=DEFAULT_UPSCALE_METHOD,
                               tooltip=TIPS["upscale_method"]),
                _denoise_input(),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent at the final size.")],
        )

    @classmethod
    def validate_inputs(cls, preset, scales, sigmas):
        return _validate_schedule(preset, scales, sigmas)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, preset, scales, sigmas, cfg,
                upscale_method, denoise=1.0) -> io.NodeOutput:
        check_finite(cfg=cfg, denoise=denoise)
        check_custom_schedule(preset, scales, sigmas)
        check_preset_for(model, preset)
        scale_list, sigma_list = resolve(preset, scales, sigmas)
        run = select_steps(scale_list, sigma_list, denoise)
        noise_mask = latent_image.get("noise_mask")
        latent = latent_for(model, latent_image, "latent_image",
                            values=run.from_latent or noise_mask is not None)["samples"]
        model_sigma = model_sigmas(model.get_model_object("model_sampling"), run.sigmas)
        callback = latent_preview.prepare_callback(model, len(run.scales))
        samples = comfy.sample.sample_custom(
            model, torch.zeros_like(latent), cfg, swd_ksampler(run.scales, upscale_method, run.from_latent),
            model_sigma, positive, negative, latent, noise_mask=noise_mask, callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples
        text = _ran(model, run, model_sigma, latent.shape, len(scale_list), denoise)
        logging.info("SwD Scale-wise KSampler: %s", text)
        return io.NodeOutput(out, ui={"text": [text]})


def _ran(model, run, model_sigma, latent_shape, total_steps, denoise) -> str:
    """The steps a run takes, with their sizes in pixels and the model's sigmas."""
    downscale = model.get_model_object("latent_format").spacial_downscale_ratio
    sizes = step_sizes(run.scales, latent_shape[-2], latent_shape[-1], patch_size(model)) if run.scales else []
    return describe([(h * downscale, w * downscale) for h, w in sizes], model_sigma.tolist(), total_steps, denoise)


class SwDSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDSchedule",
            display_name="SwD Schedule",
            category=CATEGORY,
            description="The sigmas and scales of an SwD schedule, for SamplerCustom / SamplerCustomAdvanced with the "
                        "SwD Sampler. For SDXL-style (eps) models the sigmas are converted from DDPM times. denoise "
                        "below 1 keeps the steps whose sigma is at most denoise (img2img, hires, inpainting).",
            inputs=[io.Model.Input("model", tooltip="The model to sample (decides how sigmas are read)."),
                    *_schedule_inputs(), _denoise_input()],
            outputs=[io.Sigmas.Output(display_name="SIGMAS", tooltip="The model's sigmas, ending with 0."),
                     SwDScales.Output(display_name="SCALES", tooltip="The relative size of every step (and whether "
                                                                     "the run starts from the input latent): connect "
                                                                     "to SwD Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, preset, scales, sigmas):
        return _validate_schedule(preset, scales, sigmas)

    @classmethod
    def execute(cls, model, preset, scales, sigmas, denoise=1.0) -> io.NodeOutput:
        check_finite(denoise=denoise)
        check_custom_schedule(preset, scales, sigmas)
        check_preset_for(model, preset)
        run = select_steps(*resolve(preset, scales, sigmas), denoise)
        return io.NodeOutput(model_sigmas(model.get_model_object("model_sampling"), run.sigmas), run)


class SwDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDSampler",
            display_name="SwD Sampler",
            category=CATEGORY,
            description="A SAMPLER running Scale-wise Distillation for SamplerCustom / SamplerCustomAdvanced. The "
                        "latent given to the sampler is the final size; the seed comes from the noise input. With "
                        "SwD Schedule's denoise below 1 it starts from that latent; a noise mask is kept per scale.",
            inputs=[SwDScales.Input("scales", tooltip="From SwD Schedule."),
                    io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default=DEFAULT_UPSCALE_METHOD,
                                   tooltip=TIPS["upscale_method"])],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustom / SamplerCustomAdvanced, with SwD Schedule's "
                                                "SIGMAS and the final-size latent.")],
        )

    @classmethod
    def execute(cls, scales, upscale_method) -> io.NodeOutput:
        return io.NodeOutput(swd_ksampler(scales.scales, upscale_method, scales.from_latent))
