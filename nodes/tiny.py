"""The tiny demo family's text encoder and latent codec (swd_distill/tiny.py), so that the shipped tiny teacher and
SwD LoRA draw pictures on a CPU with no download. They serve only those models."""
from __future__ import annotations

from comfy_api.latest import io

from ..swd_distill import tiny
from ..swd_distill.scenes import GRAMMAR, CaptionError, vocabulary
from ..swd_sampler.checks import InputError, check_image, check_latent, split_lines
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
        import torch
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


def _check_latent(samples, node: str) -> None:
    check_latent(samples, "samples", f"the LATENT connected to {node}'s samples")
    if samples.shape[1] != tiny.LATENT_CHANNELS:
        raise InputError(f"{node}: samples has shape {tuple(samples.shape)}, but the tiny models' latents have "
                         f"{tiny.LATENT_CHANNELS} channels (B, 16, h, w); make it with EmptySD3LatentImage or SwD "
                         f"Tiny Encode.")


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
        _check_latent(samples["samples"], "SwD Tiny Decode")
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
        check_image(pixels, "pixels", "the IMAGE connected to SwD Tiny Encode's pixels", channels=(3, 4))
        h, w = pixels.shape[1:3]
        if h % 8 or w % 8:
            raise InputError(f"SwD Tiny Encode: pixels is {w}x{h}; width and height must be multiples of 8 (e.g. "
                             f"{max(8, (w + 4) // 8 * 8)}x{max(8, (h + 4) // 8 * 8)}): scale or crop the image first.")
        return io.NodeOutput({"samples": tiny.encode(pixels[..., :3])})  # RGBA: the alpha is dropped


TINY_NODES = [SwDTinyTextEncode, SwDTinyDecode, SwDTinyEncode]
