"""ComfyUI V3 nodes of the pack: thin wrappers that translate ComfyUI types and call swd_sampler."""
from .distill import DISTILL_NODES
from .lora import SwDLoraLoader
from .sampler import SwDKSampler, SwDSampler, SwDSchedule
from .tiny import TINY_NODES
from .upscale_renoise import SwDLatentUpscaleRenoise

NODES = [SwDKSampler, SwDSchedule, SwDSampler, SwDLatentUpscaleRenoise, SwDLoraLoader, *TINY_NODES, *DISTILL_NODES]
