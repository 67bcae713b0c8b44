"""SwDLatentUpscaleRenoise: upscale a denoised latent and re-noise it, so that a stock sampler continues SwD."""
from __future__ import annotations

from comfy_api.latest import io

from ..swd_sampler.checks import check_finite, check_latent
from ..swd_sampler.resize import DEFAULT_UPSCALE_METHOD, UPSCALE_METHODS
from ..swd_sampler.upscale_renoise import (resize_mask, sampler_input, target_size, upscale_renoise,
                                           validate_sigma)
from .checks import latent_for
from .model_info import is_flow, patch_size
from .sampler import CATEGORY, TIPS


class SwDLatentUpscaleRenoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDLatentUpscaleRenoise",
            display_name="SwD Latent Upscale + Re-noise",
            category=CATEGORY,
            description="One scale-wise step by hand: resizes a denoised latent x0 and re-noises it to sigma with "
                        "fresh seeded noise, (1 - sigma) * x0 + sigma * noise for flow models (x0 + sigma * noise "
                        "for eps models). Continue with a stock sampler whose noise is off and whose sigmas start "
                        "at the same sigma (SamplerCustomAdvanced + DisableNoise, or KSamplerAdvanced with "
                        "add_noise disabled); the output is pre-divided by 1 - sigma for flow models, because "
                        "the sampler multiplies by it. Set exactly one target: match_latent, width/height or "
                        "scale_factor.",
            inputs=[
                io.Model.Input("model", tooltip="The model that samples next: its type decides how noise is mixed "
                                                 "in (flow or eps) and its patch size which sizes are allowed."),
                io.Latent.Input("samples", tooltip="The clean or denoised latent x0, e.g. the denoised_output of "
                                                   "SamplerCustomAdvanced."),
                io.Int.Input("width", default=0, min=0, max=16384, step=8,
                             tooltip="Target width in pixels (with height); 0 = unset. A multiple of 8 times the "
                                     "model's patch size (16 for SD3 and FLUX)."),
                io.Int.Input("height", default=0, min=0, max=16384, step=8,
                             tooltip="Target height in pixels (with width); 0 = unset."),
                io.Float.Input("scale_factor", default=0.0, min=0.0, max=16.0, step=0.0001,
                               tooltip="Target size as a multiple of the input size, each side rounded to the "
                                       "nearest multiple of the patch size (e.g. 1.5 takes 32 to 48); 0 = unset."),
                io.Float.Input("sigma", default=0.0, min=0.0, max=1000.0, step=0.0001,
                               tooltip="The noise level to re-noise to: the first sigma of the sampler that "
                                       "continues. 0 = upscale only. Flow models (SD3.5, FLUX): below 1. eps "
                                       "models (SDXL): the model's sigma, up to its largest (about 14.6)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seeds a CPU generator that draws the noise at the target size, so a graph "
                                     "gives the same result on any device."),
                io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default=DEFAULT_UPSCALE_METHOD,
                               tooltip=TIPS["upscale_method"]),
                io.Latent.Input("match_latent", optional=True,
                                tooltip="Resize to this latent's size instead of width/height or scale_factor "
                                        "(only its size is used)."),
            ],
            outputs=[io.Latent.Output(tooltip="The re-noised latent at the target size, for a sampler with noise "
                                              "disabled that starts at sigma. A noise mask is resized with it.")],
        )

    @classmethod
    def execute(cls, model, samples, width, height, scale_factor, sigma, seed, upscale_method,
                match_latent=None) -> io.NodeOutput:
        check_finite(scale_factor=scale_factor, sigma=sigma)
        samples = latent_for(model, samples, "samples", values=True)
        if match_latent is not None:
            check_latent(match_latent["samples"], "match_latent", "the LATENT connected to match_latent", values=False)
        model_sampling = model.get_model_object("model_sampling")
        flow = is_flow(model_sampling)
        x = samples["samples"]
        size = tuple(x.shape[-2:])
        new_size = target_size(size, match=None if match_latent is None else match_latent["samples"].shape[-2:],
                               width=width, height=height, scale_factor=scale_factor,
                               downscale=model.get_model_object("latent_format").spacial_downscale_ratio,
                               patch=patch_size(model))
        validate_sigma(sigma, flow=flow, sigma_max=float(model_sampling.sigma_max))
        x = upscale_renoise(model.model.process_latent_in(x.float()), new_size, sigma, seed, flow=flow,
                            method=upscale_method)
        out = samples.copy()
        out["samples"] = model.model.process_latent_out(sampler_input(x, sigma, flow=flow))
        if "noise_mask" in samples:
            out["noise_mask"] = resize_mask(samples["noise_mask"], size, new_size)
        return io.NodeOutput(out)
