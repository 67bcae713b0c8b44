"""The teacher as ComfyUI loaded it, with the student's and the fake score's adapters on one frozen base.

Everything model-specific comes from ComfyUI's model object (`comfy.model_base.BaseModel`): x0 is
`model_sampling.calculate_denoised(sigma, diffusion_model(calculate_input(sigma, x), timestep(sigma), conds), x)`,
noising is `model_sampling.noise_scaling(sigma, eps, x0)` (flow: (1 - s) x0 + s eps; eps models: x0 + s eps), the
conditioning tensors come from the model's `extra_conds` (SDXL's size embedding, FLUX's guidance), latents enter model
space through `process_latent_in`. These are the steps of ComfyUI's own `BaseModel._apply_model`, taken one by one
so that the result keeps the training dtype (ComfyUI casts the output to fp32).

SwD's schedules are written in [0, 1] units: flow models use them as sigmas; eps models (SDXL) read them as DDPM times
t = 1000 s (`model_sigmas`), like the sampler nodes.

Patch-loss and GAN features: the image tokens (B, N, D) a block outputs, taken by a forward hook on the block given by
index into `blocks`: SD3's joint blocks, FLUX's double blocks, a UNet's input, middle and output blocks (in that
order; a UNet block's (B, C, H, W) output is read as H*W tokens of C channels).

Gradient checkpointing wraps each block's forward (FLUX: the single blocks too) in torch.utils.checkpoint, on copies
of the block's inputs (FLUX's blocks add to their input in place, which would otherwise change what the recomputation
starts from); the adapter active when the block ran is restored while it is recomputed, so a backward through
several networks recomputes each with its own adapter.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.utils.checkpoint

from .adapters import Adapters, diffusers_targets, family_of


class _FeaturesTaken(Exception):
    """Raised by the feature hook to end a forward pass that was run only for a block's features."""


def _cloned(args: tuple, kwargs: dict) -> tuple[list, dict]:
    """Copies of the floating-point tensors among a call's arguments."""
    def copy(v):
        return v.clone() if torch.is_tensor(v) and v.is_floating_point() else v
    return [copy(v) for v in args], {k: copy(v) for k, v in kwargs.items()}


def _clone_input(module, args):
    """FLUX's blocks normalise their input, then add to it in place (`img += ...`), which would change the tensor the
    norm saved for its backward: the norm is given a copy while gradients are recorded."""
    if torch.is_grad_enabled() and args[0].requires_grad:
        return (args[0].clone(), *args[1:])
    return None


def _own_inputs(block: nn.Module) -> None:
    """While gradients are recorded the block runs on copies of its inputs: FLUX's blocks add to them in place, which
    autograd forbids on the views FSDP2 hands a sharded block, and a checkpointed block must not change what its
    recomputation starts from. Done in `forward`, after every hook (FSDP2's included) has run."""
    forward = block.forward

    def run(*args, **kwargs):
        if torch.is_grad_enabled():
            args, kwargs = _cloned(args, kwargs)
        return forward(*args, **kwargs)
    block.forward = run


def block_list(diffusion_model: nn.Module, family: str) -> list[nn.Module]:
    if family == "sd3":
        return list(diffusion_model.joint_blocks)
    if family == "flux":
        return list(diffusion_model.double_blocks)
    return [*diffusion_model.input_blocks, diffusion_model.middle_block, *diffusion_model.output_blocks]


def image_tokens(output, family: str) -> torch.Tensor:
    if family == "sd3":
        return output[1]  # JointBlock: (context, x)
    if family == "flux":
        return output[0]  # DoubleStreamBlock: (img, txt)
    return output.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)


class Network:
    def __init__(self, base_model, dtype: torch.dtype | None = None, checkpointing: bool = False):
        self.base = base_model
        self.dm = base_model.diffusion_model
        self.ms = base_model.model_sampling
        self.family = family_of(base_model)
        self.dtype = dtype or base_model.get_dtype_inference()
        self.dm.requires_grad_(False)
        self.adapters = Adapters(self.dm, diffusers_targets(base_model, self.dm))
        self.blocks = block_list(self.dm, self.family)
        self.guided = self.family == "flux" and bool(getattr(self.dm.params, "guidance_embed", False))
        every_block = self.blocks
        if self.family == "sdxl":  # ComfyUI runs a UNet block's layers one by one, never the block's own forward
            every_block = [layer for block in self.blocks for layer in block]
        if self.family == "flux":
            every_block = [*self.dm.double_blocks, *self.dm.single_blocks]
            for block in every_block:
                for module in block.modules():
                    if isinstance(module, nn.LayerNorm):
                        module.register_forward_pre_hook(_clone_input)
        self.units = every_block  # the modules ComfyUI calls whole: what checkpointing wraps and FSDP2 shards
        if checkpointing or self.family == "flux":
            for block in every_block:
                _own_inputs(block)
        if checkpointing:
            for block in every_block:
                self._checkpoint(block)

    @property
    def latent_channels(self) -> int:
        return self.base.latent_format.latent_channels

    @property
    def device(self) -> torch.device:
        return next(p.device for p in self.dm.parameters())

    def _checkpoint(self, block: nn.Module) -> None:
        forward, adapters = block.forward, self.adapters

        def run(*args, **kwargs):
            name = adapters.active

            def again(*a, **k):  # `forward` copies its inputs (_own_inputs) in the forward and the recomputation
                with adapters.use(name):
                    return forward(*a, **k)
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(again, *args, use_reentrant=False, **kwargs)
        block.forward = run

    # conditioning ------------------------------------------------------------------------------------------------

    def encode(self, entry, latent_shape) -> dict:
        """The model's condition objects of one ComfyUI conditioning entry [tensor, {pooled_output, ...}] for a
        latent of `latent_shape` (C, H, W) (SDXL's size embedding is read from it)."""
        import comfy.sampler_helpers
        import comfy.samplers
        conds = comfy.sampler_helpers.convert_cond([entry])
        noise = torch.zeros((1, *latent_shape))
        conds = comfy.samplers.encode_model_conds(self.base.extra_conds, conds, noise, torch.device("cpu"),
                                                  "positive")
        return conds[0]["model_conds"]

    def conds(self, encoded: list[dict], device=None) -> dict[str, torch.Tensor]:
        """One batch of condition tensors from per-sample `encode` results."""
        import comfy.samplers
        return {k: v.to(device or self.device) for k, v in comfy.samplers.cond_cat(encoded).items()}

    # the model ---------------------------------------------------------------------------------------------------

    def model_sigmas(self, values) -> torch.Tensor:
        """Sigmas of this model for schedule values in SwD's [0, 1] units (eps models: DDPM times t = 1000 s)."""
        import comfy.model_sampling
        values = torch.as_tensor(values, dtype=torch.float64)
        if isinstance(self.ms, comfy.model_sampling.CONST):
            return values
        t = (values * 1000.0).clamp(max=999.0)
        return torch.where(values > 0, self.ms.sigma(t.float()).double(), torch.zeros_like(values))

    def latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        """ComfyUI LATENT samples -> model space."""
        return self.base.process_latent_in(latent)

    def noised(self, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.ms.noise_scaling(sigma.to(x0.dtype), eps, x0, max_denoise=False)

    def x0(self, x: torch.Tensor, sigma: torch.Tensor, conds: dict[str, torch.Tensor],
           adapter: str | None) -> torch.Tensor:
        """The x0 prediction of the base (adapter None: the teacher) or of adapter `adapter`; sigma is (B,)."""
        sigma = sigma.to(x.dtype)
        extra = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in conds.items()}
        context = extra.pop("c_crossattn", None)
        xc = self.ms.calculate_input(sigma, x).to(self.dtype)
        t = self.base.process_timestep(self.ms.timestep(sigma).float(), x=x, **extra)
        with self.adapters.use(adapter):
            out = self.dm(xc, t, context=context, transformer_options={}, **extra)
        return self.ms.calculate_denoised(sigma, out.to(x.dtype), x)

    def teacher(self, x, sigma, conds, negative, cfg: float) -> torch.Tensor:
        """The teacher's guided x0: with a guidance-distilled model (FLUX.1-dev) one pass at guidance `cfg`, else
        classifier-free guidance uncond + cfg (cond - uncond) against the `negative` conds."""
        if self.guided:
            return self.x0(x, sigma, {**conds, "guidance": torch.full_like(conds["guidance"], cfg)}, None)
        cond = self.x0(x, sigma, conds, None)
        if cfg == 1.0:
            return cond
        uncond = self.x0(x, sigma, negative, None)
        return uncond + cfg * (cond - uncond)

    @contextlib.contextmanager
    def block_output(self, block: int, stop: bool):
        """Inside the `with`, each forward records the image tokens block `block` outputs in the yielded dict under
        "h"; with stop=True the forward ends there (use `features`)."""
        taken: dict[str, torch.Tensor] = {}
        family = self.family

        def hook(module, args, output):
            taken["h"] = image_tokens(output, family)
            if stop:
                raise _FeaturesTaken

        module = self.blocks[block]
        if self.family == "sdxl":
            module = module[-1]  # its last layer's output is the block's
        handle = module.register_forward_hook(hook)
        try:
            yield taken
        finally:
            handle.remove()

    def features(self, x, sigma, conds, adapter: str | None, block: int, stop: bool = True) -> torch.Tensor:
        """Image tokens after block `block` (with stop, the blocks after it do not run)."""
        with self.block_output(block, stop) as taken:
            try:
                self.x0(x, sigma, conds, adapter)
            except _FeaturesTaken:
                pass
        return taken["h"]
