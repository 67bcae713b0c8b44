"""The tiny demo family's text encoder and latent codec (swd_sampler/tiny.py), as nodes and as a CLIP and a VAE for
ComfyUI's stock nodes, so that the shipped tiny teacher and SwD LoRA draw pictures on a CPU with no download. They
serve only those models."""
from __future__ import annotations

from types import SimpleNamespace

import torch

import comfy.sd
from comfy_api.latest import io

from ..swd_sampler import tiny
from ..swd_sampler.checks import InputError, check_image, check_latent, split_lines
from ..swd_sampler.tiny import GRAMMAR, CaptionError, vocabulary
from .sampler import CATEGORY

TINY_CATEGORY = f"{CATEGORY}/tiny demo"
ONLY = "Only for the pack's tiny demo models (swd-tiny-teacher + swd-tiny-4-steps); it does nothing useful for others."


class SwDTinyTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDTinyTextEncode",
            display_name="SwD Tiny Text Encode",
            category=TINY_CATEGORY,
            description=f"Turns captions of the tiny demo scenes into conditioning. {ONLY}",
            inputs=[io.String.Input(
                "text", multiline=True, default="striped red circle top left on blue",
                tooltip=f"A caption \"{GRAMMAR}\", any part of it (e.g. \"yellow square\"), or nothing for the "
                        f"unconditional prompt. Several lines make a batch, one caption per line: give the latent "
                        f"the same batch size (the SwD samplers refuse other counts). Words: {vocabulary()}.")],
            outputs=[io.Conditioning.Output(tooltip=ONLY)],
        )

    @classmethod
    def validate_inputs(cls, text):
        if text is None:
            return True
        try:
            _captions(text)
        except InputError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        pairs = [tiny.encode_text(line) for line in _captions(text)]
        context = torch.cat([c for c, _ in pairs])
        pooled = torch.cat([p for _, p in pairs])
        return io.NodeOutput([[context, {"pooled_output": pooled}]])


def _captions(text: str) -> list[str]:
    """One caption per line, split at "\\n" only (blank lines at either end ignored). Whether their count fits the
    latent's batch is checked by the sampler, where conditioning and latent meet (checks.check_conditioning)."""
    lines = split_lines(text, "text")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    lines = lines or [""]
    for n, line in enumerate(lines):
        try:
            tiny.parse_caption(line)
        except CaptionError as e:
            raise InputError(f"line {n + 1}: {e}" if len(lines) > 1 else str(e)) from None
    return lines


def _check_latent(samples, node: str, origin: str) -> None:
    check_latent(samples, "samples", origin)
    if samples.shape[1] != tiny.LATENT_CHANNELS:
        raise InputError(f"{node}: samples has shape {tuple(samples.shape)}, but the tiny models' latents have "
                         f"{tiny.LATENT_CHANNELS} channels (B, 16, h, w); make it with EmptySD3LatentImage or SwD "
                         f"Tiny Encode.")


def _check_pixels(pixels, node: str, origin: str) -> None:
    check_image(pixels, "pixels", origin, channels=(3, 4))
    h, w = pixels.shape[1:3]
    if h % 8 or w % 8:
        raise InputError(f"{node}: pixels is {w}x{h}; width and height must be multiples of 8 (e.g. "
                         f"{max(8, (w + 4) // 8 * 8)}x{max(8, (h + 4) // 8 * 8)}): scale or crop the image first.")


class SwDTinyDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDTinyDecode",
            display_name="SwD Tiny Decode",
            category=TINY_CATEGORY,
            description=f"Latent -> image for the tiny demo models (no VAE: their latent is the picture's pixels "
                        f"rearranged). A 16x16 latent gives a 128x128 image of 32x32 content. {ONLY}",
            inputs=[io.Latent.Input("samples", tooltip="A latent sampled with the tiny models.")],
            outputs=[io.Image.Output(tooltip="8 pixels per latent cell; each content pixel is shown as 4x4.")],
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        _check_latent(samples["samples"], "SwD Tiny Decode", "the LATENT connected to SwD Tiny Decode's samples")
        return io.NodeOutput(tiny.decode(samples["samples"]))


class SwDTinyEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDTinyEncode",
            display_name="SwD Tiny Encode",
            category=TINY_CATEGORY,
            description=f"Image -> latent for the tiny demo models (img2img, inpainting): the image is area-averaged "
                        f"to a quarter of its size and rearranged into 16 channels. {ONLY}",
            inputs=[io.Image.Input("pixels", tooltip="RGB or RGBA (the alpha is dropped); width and height must be "
                                                     "multiples of 8 (128x128 is native).")],
            outputs=[io.Latent.Output(tooltip="A latent of 1/8 the image size, as EmptySD3LatentImage makes.")],
        )

    @classmethod
    def execute(cls, pixels) -> io.NodeOutput:
        _check_pixels(pixels, "SwD Tiny Encode", "the IMAGE connected to SwD Tiny Encode's pixels")
        return io.NodeOutput({"samples": tiny.encode(pixels[..., :3])})  # RGBA: the alpha is dropped


class TinyTokenizer:
    """comfy.sd.CLIP's tokenizer: a caption becomes ComfyUI's token lists {"tiny": [[(value index, 1.0), ...]]}, one
    token per attribute it names (swd_sampler.tiny.VALUES); a caption outside the grammar raises CaptionError."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        pass

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs) -> dict:
        ids = [tiny.VALUES.index(value) for value in tiny.parse_caption(text).values()]
        return {"tiny": [[(i, 1.0, n + 1) if return_word_ids else (i, 1.0) for n, i in enumerate(ids)]]}

    def state_dict(self) -> dict:
        return {}


class TinyTextEncoder(torch.nn.Module):
    """comfy.sd.CLIP's text model: no weights, the fixed tokens of swd_sampler.tiny (context (1, 5, 24), pooled
    (1, 24)). A module so that CLIP's ModelPatcher can hold it like any text encoder."""

    def __init__(self, device=None, dtype=None, model_options={}):
        super().__init__()
        self.dtypes = set()

    def set_clip_options(self, options):
        pass

    def reset_clip_options(self):
        pass

    def encode_token_weights(self, token_weight_pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """TinyTokenizer's tokens -> (context, pooled), as tiny.encode_text gives them for the caption."""
        named = {tiny.VALUES[int(token[0])] for token in token_weight_pairs["tiny"][0]}
        attributes = {a: value for a, values in tiny.ATTRIBUTES.items() for value in values if value in named}
        context = tiny.caption_tokens(attributes)[None]
        return context, context.sum(1)


class TinyVAE:
    """What ComfyUI's VAE nodes call on a VAE (VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled,
    VAEEncodeForInpaint), over the tiny codec: comfy.sd.VAE is built from a learned autoencoder's state dict and has
    no place for a weightless codec. Inputs are checked as SwD Tiny Decode / Encode check them; tiling changes
    nothing (the codec works per pixel)."""

    latent_channels = tiny.LATENT_CHANNELS
    downscale_ratio = upscale_ratio = tiny.PIXELS_PER_LATENT

    def throw_exception_if_invalid(self):
        pass

    def spacial_compression_decode(self) -> int:
        return self.upscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio

    def temporal_compression_decode(self):
        return None

    def decode(self, samples_in: torch.Tensor, vae_options={}) -> torch.Tensor:
        _check_latent(samples_in, "SwD Tiny VAE", "the LATENT decoded with SwD Tiny CLIP & VAE's VAE")
        return tiny.decode(samples_in)

    def decode_tiled(self, samples: torch.Tensor, **tiles) -> torch.Tensor:
        return self.decode(samples)

    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        _check_pixels(pixel_samples, "SwD Tiny VAE", "the IMAGE encoded with SwD Tiny CLIP & VAE's VAE")
        return tiny.encode(pixel_samples[..., :3])  # RGBA: the alpha is dropped

    def encode_tiled(self, pixel_samples: torch.Tensor, **tiles) -> torch.Tensor:
        return self.encode(pixel_samples)


class SwDTinyLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SwDTinyLoader",
            display_name="SwD Tiny CLIP & VAE",
            category=TINY_CATEGORY,
            description=f"The tiny demo models' text encoder as a CLIP and their codec as a VAE, for the stock nodes: "
                        f"CLIP Text Encode (one caption per node), VAE Decode and VAE Encode (also Tiled and for "
                        f"Inpainting). They give exactly what SwD Tiny Text Encode, Decode and Encode give. {ONLY}",
            inputs=[],
            outputs=[io.Clip.Output(tooltip=f"For CLIP Text Encode: a caption \"{GRAMMAR}\", any part of it, or "
                                            f"nothing for the unconditional prompt. Words: {vocabulary()}."),
                     io.Vae.Output(tooltip="For VAE Decode / Encode: a 16x16 latent is a 128x128 image of 32x32 "
                                           "content; image sides must be multiples of 8.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        clip = comfy.sd.CLIP(SimpleNamespace(params={}, clip=TinyTextEncoder, tokenizer=TinyTokenizer))
        return io.NodeOutput(clip, TinyVAE())


TINY_NODES = [SwDTinyTextEncode, SwDTinyDecode, SwDTinyEncode, SwDTinyLoader]
