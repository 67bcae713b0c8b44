"""SwDKSampler (all in one), SwDSchedule and SwDSampler (for SamplerCustom / SamplerCustomAdvanced)."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..swd_sampler.resize import DEFAULT_UPSCALE_METHOD, UPSCALE_METHODS
from ..swd_sampler.sampling import sample_scalewise
from ..swd_sampler.checks import check_custom_schedule, check_finite, check_latent_channels, check_sampler_sigmas
from ..swd_sampler.schedule import DEFAULT_PRESET, PRESET_NAMES, ScheduleError, resolve, step_sizes
from .checks import check_preset_for, check_step_fits
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
}


def _schedule_inputs():
    return [
        io.Combo.Input("preset", options=PRESET_NAMES, default=DEFAULT_PRESET, tooltip=TIPS["preset"]),
        io.String.Input("scales", default="32, 48, 64, 80, 96, 128", tooltip=TIPS["scales"]),
        io.String.Input("sigmas", default="1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0", tooltip=TIPS["sigmas"]),
    ]


def _validate_schedule(preset, scales, sigmas):
    if preset is None or scales is None or sigmas is None:  # linked inputs are checked when the node runs
        return True
    try:
        check_custom_schedule(preset, scales, sigmas)
        resolve(preset, scales, sigmas)
    except ScheduleError as e:
        return str(e)
    return True


def swd_ksampler(scales, upscale_method: str = DEFAULT_UPSCALE_METHOD) -> comfy.samplers.KSAMPLER:
    """A ComfyUI SAMPLER that runs the SwD loop; the final latent size comes from the latent it is given."""
    return comfy.samplers.KSAMPLER(_sample_swd, extra_options={"scales": tuple(scales),
                                                                "upscale_method": upscale_method})


@torch.no_grad()
def _sample_swd(model, noise, sigmas, extra_args=None, callback=None, disable=None, scales=(), upscale_method="bicubic"):
    """KSAMPLER sampler function. `model` is KSamplerX0Inpaint(x, sigma) -> x0 over the CFG guider; `noise` arrives
    noise-scaled at the FINAL size and only its shape and device are used: SwD draws its own noise per the seed
    contract, starting at the first (smallest) scale."""
    extra_args = extra_args or {}
    if extra_args.get("denoise_mask") is not None:
        raise ValueError("SwD samplers do not support a noise mask (inpainting): the latent changes size between "
                         "steps. Remove SetLatentNoiseMask / the mask from the latent.")
    guider = model.inner_model
    ms = guider.inner_model.model_sampling
    sigmas = [float(s) for s in sigmas]
    check_sampler_sigmas(scales, sigmas)
    if sigmas[0] > float(ms.sigma_max) * (1 + 1e-5):
        raise ScheduleError(f"sigmas start at {sigmas[0]:g}, above this model's largest sigma {float(ms.sigma_max):g}: "
                            f"connect the SIGMAS of SwD Schedule, which converts the schedule for this model.")
    batch, channels, height, width = noise.shape
    check_latent_channels(channels, guider.model_patcher.get_model_object("latent_format").latent_channels,
                          "latent_image")
    sizes = step_sizes(scales, height, width, patch_size(guider.model_patcher))
    check_step_fits(guider.model_patcher, batch, channels, sizes[-1], noise.device)
    s_in = noise.new_ones([batch])

    def denoise(x, sigma):
        return model(x, sigma * s_in, **extra_args)

    def on_step(i, x0, x, total):
        if callback is not None:
            callback({"i": i, "denoised": x0, "x": x, "sigma": sigmas[i], "sigma_hat": sigmas[i]})

    return sample_scalewise(denoise, sigmas, sizes, batch=batch, channels=channels, seed=int(extra_args.get("seed") or 0),
                            renoise=renoise_with(ms), upscale_method=upscale_method, callback=on_step,
                            device=noise.device)


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
                io.Latent.Input("latent_image", tooltip="An empty latent of the FINAL size (e.g. EmptySD3LatentImage "
                                                        "1024x1024); only its size and batch size are used."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seeds one CPU generator that draws the first noise and every re-noise, so a "
                                     "seed gives the same image on any device and batch size."),
                *_schedule_inputs(),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. SwD models are distilled for 1.0, which also skips "
                                       "the negative pass (half the work)."),
                io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default=DEFAULT_UPSCALE_METHOD,
                               tooltip=TIPS["upscale_method"]),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent at the final size.")],
        )

    @classmethod
    def validate_inputs(cls, preset, scales, sigmas):
        return _validate_schedule(preset, scales, sigmas)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, preset, scales, sigmas, cfg,
                upscale_method) -> io.NodeOutput:
        check_finite(cfg=cfg)
        check_custom_schedule(preset, scales, sigmas)
        check_preset_for(model, preset)
        scale_list, sigma_list = resolve(preset, scales, sigmas)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        model_sigma = model_sigmas(model.get_model_object("model_sampling"), sigma_list)
        callback = latent_preview.prepare_callback(model, len(scale_list))
        samples = comfy.sample.sample_custom(
            model, torch.zeros_like(latent), cfg, swd_ksampler(scale_list, upscale_method), model_sigma, positive,
            negative, latent, noise_mask=latent_image.get("noise_mask"), callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples
        return io.NodeOutput(out)


class SwDSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDSchedule",
            display_name="SwD Schedule",
            category=CATEGORY,
            description="The sigmas and scales of an SwD schedule, for SamplerCustom / SamplerCustomAdvanced with the "
                        "SwD Sampler. For SDXL-style (eps) models the sigmas are converted from DDPM times.",
            inputs=[io.Model.Input("model", tooltip="The model to sample (decides how sigmas are read)."),
                    *_schedule_inputs()],
            outputs=[io.Sigmas.Output(display_name="SIGMAS", tooltip="The model's sigmas, ending with 0."),
                     SwDScales.Output(display_name="SCALES", tooltip="The relative size of every step: connect to "
                                                                     "SwD Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, preset, scales, sigmas):
        return _validate_schedule(preset, scales, sigmas)

    @classmethod
    def execute(cls, model, preset, scales, sigmas) -> io.NodeOutput:
        check_custom_schedule(preset, scales, sigmas)
        check_preset_for(model, preset)
        scale_list, sigma_list = resolve(preset, scales, sigmas)
        return io.NodeOutput(model_sigmas(model.get_model_object("model_sampling"), sigma_list), scale_list)


class SwDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDSampler",
            display_name="SwD Sampler",
            category=CATEGORY,
            description="A SAMPLER running Scale-wise Distillation for SamplerCustom / SamplerCustomAdvanced. The "
                        "latent given to the sampler is the final size; the seed comes from the noise input.",
            inputs=[SwDScales.Input("scales", tooltip="From SwD Schedule."),
                    io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default=DEFAULT_UPSCALE_METHOD,
                                   tooltip=TIPS["upscale_method"])],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustom / SamplerCustomAdvanced, with SwD Schedule's "
                                                "SIGMAS and the final-size latent.")],
        )

    @classmethod
    def execute(cls, scales, upscale_method) -> io.NodeOutput:
        return io.NodeOutput(swd_ksampler(scales, upscale_method))
