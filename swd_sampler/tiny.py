"""The tiny demo family's runtime: its text encoder and latent codec, and its caption grammar (tiny_captions.py)
re-exported. Pure torch, no ComfyUI import: the pack's SwDTiny* nodes and SwD Tiny CLIP & VAE call it, and so does
the trainer (swd_distill).

Latent codec (no learned VAE). A 32x32 RGB scene x in [0, 1] is, in model space,

    z = pixel_unshuffle(2x - 1, 2)  -> 12 channels at 16x16, plus 4 zero channels = SD3's 16 channels

and ComfyUI's SD3 latent format maps model space to the stored latent: latent = z / 1.5305 + 0.0609 (model space
= (latent - 0.0609) * 1.5305, what ComfyUI's process_latent_in does). ComfyUI's 8x convention holds: the native
16x16 latent (what EmptySD3LatentImage makes for 128x128) decodes to a 128x128 image, each content pixel shown as
4x4 (nearest). Decoding is exact: decode(encode(x)) == x for 32x32 content.

Text: a caption names up to five attributes (texture, colour, shape, position, background). It becomes
5 context tokens, one per attribute slot in that order, each [one-hot of its value (18) | one-hot of the slot (5) |
1]; a slot the caption leaves out keeps only its slot and constant parts. The pooled vector is the sum of the
tokens. The empty caption (every slot left out) is the unconditional prompt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .tiny_captions import (ATTRIBUTES, BACKGROUNDS, COLOURS, GRAMMAR, POSITIONS, SHAPES, TEXTURES,  # noqa: F401
                            CaptionError, parse_caption, vocabulary)

SD3_SCALE, SD3_SHIFT = 1.5305, 0.0609  # comfy.latent_formats.SD3 (checked by a test)
LATENT_CHANNELS, CONTENT_CHANNELS = 16, 12
NATIVE_LATENT = 16  # latent side of a 32x32 scene (128 px in ComfyUI's 8x convention)
PIXELS_PER_LATENT = 8  # ComfyUI image pixels per latent cell
CONTENT_PER_LATENT = 2  # scene pixels per latent cell

VALUES = [v for values in ATTRIBUTES.values() for v in values]  # 18 attribute values, caption order
SLOTS = list(ATTRIBUTES)
TOKENS = len(SLOTS)
CONTEXT_DIM = len(VALUES) + len(SLOTS) + 1  # 24

# The teacher: ComfyUI's SD3 MMDiT with depth 2 (hidden 128, 2 heads), patch 2, this context and pooled width.
MMDIT = {"depth": 2, "patch_size": 2, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
         "adm_in_channels": CONTEXT_DIM, "context_dim": CONTEXT_DIM, "pos_embed_max_size": 32}
TINY_PRESET = "Tiny demo · 4 steps"  # swd_sampler.schedule.PRESETS
TEACHER_FILE = "swd-tiny-teacher.safetensors"
STUDENT_FILE = "swd-tiny-4-steps.safetensors"


class TinyInputError(ValueError):
    """A latent or image the tiny codec cannot use; the message names the input and the fix."""


def caption_tokens(attributes: dict[str, str]) -> torch.Tensor:
    """(5, 24) context tokens of parsed attributes ({} = unconditional)."""
    tokens = torch.zeros(TOKENS, CONTEXT_DIM)
    for slot, name in enumerate(SLOTS):
        tokens[slot, len(VALUES) + slot] = 1.0
        tokens[slot, -1] = 1.0
        if name in attributes:
            tokens[slot, VALUES.index(attributes[name])] = 1.0
    return tokens


def label_tokens(labels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Batched caption_tokens from class indices (B, 5) (swd_distill.scenes.Scene.labels); keep (B, 5) bool drops
    slots."""
    batch = labels.shape[0]
    offsets = torch.tensor([0, *torch.tensor([len(v) for v in ATTRIBUTES.values()]).cumsum(0)[:-1].tolist()])
    tokens = torch.zeros(batch, TOKENS, CONTEXT_DIM)
    value = F.one_hot(labels + offsets, len(VALUES)).float()
    if keep is not None:
        value = value * keep[..., None].float()
    tokens[..., :len(VALUES)] = value
    tokens[..., len(VALUES):len(VALUES) + TOKENS] = torch.eye(TOKENS)
    tokens[..., -1] = 1.0
    return tokens


def encode_text(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI conditioning tensors of a caption: context (1, 5, 24) and pooled (1, 24)."""
    tokens = caption_tokens(parse_caption(text))[None]
    return tokens, tokens.sum(1)


def image_to_model(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], H and W even -> model-space latent (B, 16, H/2, W/2)."""
    z = F.pixel_unshuffle(image * 2 - 1, CONTENT_PER_LATENT)
    return F.pad(z, (0, 0, 0, 0, 0, LATENT_CHANNELS - CONTENT_CHANNELS))


def model_to_image(z: torch.Tensor) -> torch.Tensor:
    """Model-space latent (B, 16, h, w) -> (B, 3, 2h, 2w) in [0, 1] (the 4 padding channels are ignored)."""
    return ((F.pixel_shuffle(z[:, :CONTENT_CHANNELS], CONTENT_PER_LATENT) + 1) / 2).clamp(0, 1)


def encode(image: torch.Tensor) -> torch.Tensor:
    """A ComfyUI IMAGE (B, H, W, 3) in [0, 1], H and W multiples of 8 -> LATENT samples (B, 16, H/8, W/8): the
    image is area-averaged to the content resolution (H/4, W/4) first."""
    x = image.movedim(-1, 1).float()
    h, w = x.shape[-2] // 4, x.shape[-1] // 4
    x = F.interpolate(x, size=(h, w), mode="area")
    return image_to_model(x) / SD3_SCALE + SD3_SHIFT


def decode(latent: torch.Tensor) -> torch.Tensor:
    """LATENT samples (B, 16, h, w) -> ComfyUI IMAGE (B, 8h, 8w, 3): content pixels shown as 4x4 blocks."""
    x = model_to_image((latent.float() - SD3_SHIFT) * SD3_SCALE)
    x = F.interpolate(x, scale_factor=PIXELS_PER_LATENT // CONTENT_PER_LATENT, mode="nearest")
    return x.movedim(1, -1)
