"""SwD Tiny CLIP & VAE in real ComfyUI: stock CLIP Text Encode and the stock VAE nodes give exactly the tensors, and the
same errors, as SwD Tiny Text Encode, Decode and Encode."""
import pytest
import torch
from safetensors import safe_open

from comfy_harness import PromptError
from graphs import save_latent
from swd_sampler.tiny import CaptionError, parse_caption

LOADER = {"class_type": "SwDTinyLoader", "inputs": {}}


def saved(comfy, result, node_id: str) -> tuple[dict, dict]:
    """(tensors, metadata) a SwDTestSaveTensors node wrote."""
    with safe_open(str(comfy.output_dir / result.outputs[node_id]["text"][0]), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def save(source: list, filename: str) -> dict:
    return {"class_type": "SwDTestSaveTensors", "inputs": {"value": source, "filename": filename}}


def hostile(shape: str, poke: str = "") -> dict:
    return {"class_type": "SwDTestTensor", "inputs": {"shape": shape, "value": "randn", "poke": poke, "seed": 0,
                                                      "mask_shape": "", "mask_value": "1", "mask_poke": ""}}


@pytest.mark.parametrize("text", ["striped red circle top left on blue", "Yellow square, on green", ""])
def test_clip_text_encode_with_the_tiny_clip_equals_swd_tiny_text_encode(comfy, text):
    tag = text.replace(" ", "_").replace(",", "") or "empty"
    result = comfy.run({"load": LOADER,
                        "clip": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 0], "text": text}},
                        "ours": {"class_type": "SwDTinyTextEncode", "inputs": {"text": text}},
                        "a": save(["clip", 0], f"clip_{tag}.safetensors"),
                        "b": save(["ours", 0], f"ours_{tag}.safetensors")})
    (clip, clip_meta), (ours, ours_meta) = saved(comfy, result, "a"), saved(comfy, result, "b")
    assert clip_meta == ours_meta == {"count": "1", "keys_0": "pooled_output"}
    assert clip["cond_0"].shape == (1, 5, 24) and clip["pooled_output_0"].shape == (1, 24)
    assert torch.equal(clip["cond_0"], ours["cond_0"]) and torch.equal(clip["pooled_output_0"], ours["pooled_output_0"])
    assert clip["cond_0"][0, :, :18].sum() == len(parse_caption(text))  # one value token per attribute named


def test_clip_text_encode_refuses_an_unknown_word_as_swd_tiny_text_encode_does(comfy):
    with pytest.raises(CaptionError) as caption_error:
        parse_caption("purple circle")
    expected = str(caption_error.value)
    messages = []
    for node in ({"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 0], "text": "purple circle"}},
                 {"class_type": "SwDTinyTextEncode", "inputs": {"text": "purple circle"}}):
        with pytest.raises(PromptError) as e:
            comfy.run({"load": LOADER, "t": node, "o": save(["t", 0], "never.safetensors")})
        messages.append(e.value.message)
    assert all(expected in m for m in messages), messages
    assert "the word 'purple' is not in the tiny models' vocabulary" in expected and "colour: red, yellow" in expected


def test_the_stock_vae_nodes_with_the_tiny_vae_equal_swd_tiny_decode_and_encode(comfy):
    vae, tiles = ["load", 1], {"tile_size": 64, "overlap": 0, "temporal_size": 64, "temporal_overlap": 8}
    result = comfy.run({
        "load": LOADER, "latent": hostile("2,16,16,8"),
        "dec": {"class_type": "VAEDecode", "inputs": {"vae": vae, "samples": ["latent", 0]}},
        "dec_tiled": {"class_type": "VAEDecodeTiled", "inputs": {"vae": vae, "samples": ["latent", 0], **tiles}},
        "ours_dec": {"class_type": "SwDTinyDecode", "inputs": {"samples": ["latent", 0]}},
        "enc": {"class_type": "VAEEncode", "inputs": {"vae": vae, "pixels": ["ours_dec", 0]}},
        "enc_tiled": {"class_type": "VAEEncodeTiled", "inputs": {"vae": vae, "pixels": ["ours_dec", 0], **tiles}},
        "ours_enc": {"class_type": "SwDTinyEncode", "inputs": {"pixels": ["ours_dec", 0]}},
        **{f"s_{n}": save([n, 0], f"{n}.safetensors") for n in ("dec", "dec_tiled", "ours_dec")},
        **{f"s_{n}": save_latent([n, 0], n) for n in ("enc", "enc_tiled", "ours_enc")}})
    image, tiled, ours = (saved(comfy, result, f"s_{n}")[0]["image"] for n in ("dec", "dec_tiled", "ours_dec"))
    assert image.shape == (2, 128, 64, 3) and image.std() > 0.1
    assert torch.equal(image, ours) and torch.equal(tiled, ours)
    latent, tiled, ours = (result.latent(f"s_{n}") for n in ("enc", "enc_tiled", "ours_enc"))
    assert latent.shape == (2, 16, 16, 8) and torch.equal(latent, ours) and torch.equal(tiled, ours)


@pytest.mark.parametrize("stock, ours, source, expected", [
    ("VAEDecode", "SwDTinyDecode", hostile("1,4,16,16"),
     "samples has shape (1, 4, 16, 16), but the tiny models' latents have 16 channels (B, 16, h, w)"),
    ("VAEDecode", "SwDTinyDecode", hostile("1,16,8,8", poke="nan"),
     "samples holds 1 NaN value of 1024 (the first at index [0, 15, 7, 7] of shape (1, 16, 8, 8))"),
    ("VAEEncode", "SwDTinyEncode", hostile("1,60,64,3"),
     "pixels is 64x60; width and height must be multiples of 8 (e.g. 64x64)"),
    ("VAEEncode", "SwDTinyEncode", hostile("1,64,64,2"), "pixels has 2 channels per pixel"),
], ids=["4 channels", "NaN", "size not a multiple of 8", "2 colour channels"])
def test_the_tiny_vae_refuses_what_the_tiny_codec_nodes_refuse(comfy, stock, ours, source, expected):
    slot, name = (0, "samples") if stock == "VAEDecode" else (1, "pixels")
    messages = []
    for node in ({"class_type": stock, "inputs": {"vae": ["load", 1], name: ["src", slot]}},
                 {"class_type": ours, "inputs": {name: ["src", slot]}}):
        with pytest.raises(PromptError) as e:
            comfy.run({"load": LOADER, "src": source, "n": node, "o": save(["n", 0], "never.safetensors")})
        messages.append(e.value.message)
    assert all(expected in m for m in messages), messages
