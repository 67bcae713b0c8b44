"""ComfyUI V3 nodes of the pack: thin wrappers that translate ComfyUI types and call swd_sampler."""
from .sampler import SwDKSampler, SwDSampler, SwDSchedule

NODES = [SwDKSampler, SwDSchedule, SwDSampler]
