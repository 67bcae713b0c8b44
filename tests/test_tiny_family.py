"""The shipped tiny family in real ComfyUI: found by stock UNETLoader and SwD LoRA Loader with no copying, its text
and codec nodes, and the quality gate (>= 200 samples judged by a classifier trained on the renderer)."""
import numpy as np
import torch
import pytest
from PIL import Image

from comfy_harness import PromptError
from swd_distill.evaluate import evaluate_row, sampler_nodes, split_labels
from swd_distill.judge import to_tensor, train_judge
from swd_distill.scenes import make_dataset
from swd_sampler.tiny import STUDENT_FILE, TEACHER_FILE, TINY_PRESET

SAMPLES = 208  # 13 batches of 16


def test_the_shipped_files_appear_in_the_loaders_lists(comfy):
    info = comfy.object_info()
    assert TEACHER_FILE in info["UNETLoader"]["input"]["required"]["unet_name"][0]
    lora_names = info["SwDLoraLoader"]["input"]["required"]["lora_name"]
    assert STUDENT_FILE in (lora_names[1]["options"] if lora_names[0] == "COMBO" else lora_names[0])


def test_the_loader_names_the_tiny_preset_and_loads_every_key(comfy):
    nodes = sampler_nodes("swd")
    result = comfy.run({"unet": nodes["unet"], "lora": nodes["lora"],
                        "show": {"class_type": "SwDTestShowValue", "inputs": {"value": ["lora", 1]}}})
    report = result.outputs["lora"]["swd_lora"][0]
    assert report["preset"] == TINY_PRESET and report["keys_not_loaded"] == 0 and report["keys_loaded"] == 28
    assert result.outputs["show"]["text"] == [TINY_PRESET]


@pytest.mark.parametrize("text, expected", [
    ("purple circle", "the word 'purple' is not in the tiny models' vocabulary"),
    ("red circle\nred circle top", "line 2: text: the word 'top'"),
])
def test_the_text_node_refuses_unknown_words_with_the_vocabulary(comfy, text, expected):
    with pytest.raises(PromptError) as e:
        comfy.run({"t": {"class_type": "SwDTinyTextEncode", "inputs": {"text": text}},
                   "lat": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128,
                                                                           "batch_size": 1}},
                   "s": {"class_type": "KSampler", "inputs": {
                       "model": ["u", 0], "positive": ["t", 0], "negative": ["t", 0], "latent_image": ["lat", 0],
                       "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                       "denoise": 1.0}},
                   "u": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}},
                   "o": {"class_type": "SaveLatent", "inputs": {"samples": ["s", 0], "filename_prefix": "bad_text"}}})
    assert expected in e.value.message and "colour: red, yellow, white, magenta, cyan" in e.value.message


def test_encode_then_decode_gives_the_image_back(comfy):
    result = comfy.run({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 64, "batch_size": 1, "color": 0x3080F0}},
        "enc": {"class_type": "SwDTinyEncode", "inputs": {"pixels": ["img", 0]}},
        "dec": {"class_type": "SwDTinyDecode", "inputs": {"samples": ["enc", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "roundtrip"}}})
    with Image.open(result.images("save")[0]) as im:
        assert im.size == (128, 64)
        pixels = np.asarray(im.convert("RGB"))
    assert (np.abs(pixels.astype(int) - [0x30, 0x80, 0xF0]) <= 1).all()


def test_encode_refuses_a_size_that_is_not_a_multiple_of_8(comfy):
    with pytest.raises(PromptError) as e:
        comfy.run({"img": {"class_type": "EmptyImage", "inputs": {"width": 100, "height": 64, "batch_size": 1,
                                                                  "color": 0}},
                   "enc": {"class_type": "SwDTinyEncode", "inputs": {"pixels": ["img", 0]}},
                   "o": {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "bad"}}})
    assert "pixels is 100x64; width and height must be multiples of 8 (e.g. 104x64)" in e.value.message


@pytest.fixture(scope="module")
def judged(comfy):
    judge = train_judge()
    labels = make_dataset(SAMPLES, 4242)[1]
    real = judge.predict(to_tensor(make_dataset(2000, 99)[0]))[1]
    held_out = split_labels("held-out", 96)
    held_out_real = judge.predict(to_tensor(make_dataset(1000, 98, np.unique(held_out, axis=0))[0]))[1]
    rows = {}

    def row(name, nodes, split="random"):
        if (name, split) not in rows:
            rows[name, split] = (evaluate_row(comfy, judge, name, nodes, labels, real) if split == "random" else
                                 evaluate_row(comfy, judge, name, nodes, held_out, held_out_real, timed=False))
            r = rows[name, split]
            print(f"{name} ({split}): accuracy {r.accuracy:.3f}, FD {r.fd:.2f}, {r.ms_per_image:.1f} ms/image, "
                  f"{r.ms_per_prompt:.0f} ms/prompt")
        return rows[name, split]
    return row


def test_quality_gate_the_swd_student_draws_its_captions(judged):
    student = judged("student", sampler_nodes("swd"))
    assert student.samples >= 200
    assert student.accuracy >= 0.85


def test_quality_gate_the_student_is_close_to_the_28_step_teacher(judged):
    student = judged("student", sampler_nodes("swd"))
    teacher = max(judged(f"teacher28_cfg{cfg:g}", sampler_nodes("ksampler", 28, cfg)).accuracy for cfg in (1.0, 3.0))
    assert student.accuracy >= teacher - 0.05


def test_quality_gate_the_student_beats_the_teacher_at_the_same_compute(judged):
    student = judged("student", sampler_nodes("swd"))
    two_steps = judged("teacher2", sampler_nodes("ksampler", 2, 3.0))
    assert student.accuracy > two_steps.accuracy and student.fd < two_steps.fd


def tiny_sampler_prompt(text: str, batch: int, tag: str) -> dict:
    """The shipped tiny teacher with its preset in SwDKSampler, prompted through SwD Tiny Text Encode."""
    return {"u": {"class_type": "UNETLoader", "inputs": {"unet_name": TEACHER_FILE, "weight_dtype": "default"}},
            "t": {"class_type": "SwDTinyTextEncode", "inputs": {"text": text}},
            "lat": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": batch}},
            "swd": {"class_type": "SwDKSampler", "inputs": {
                "model": ["u", 0], "positive": ["t", 0], "negative": ["t", 0], "latent_image": ["lat", 0],
                "seed": 3, "preset": TINY_PRESET, "scales": "", "sigmas": "", "cfg": 1.0,
                "upscale_method": "bicubic"}},
            "o": {"class_type": "SaveLatent", "inputs": {"samples": ["swd", 0], "filename_prefix": tag}}}


def test_captions_split_at_newlines_and_windows_line_endings_give_the_same_batch(comfy):
    unix = comfy.run(tiny_sampler_prompt("red circle\nyellow square top left", 2, "lf")).latent("o")
    windows = comfy.run(tiny_sampler_prompt("red circle\r\nyellow square top left\r\n", 2, "crlf")).latent("o")
    assert unix.shape == (2, 16, 16, 16) and torch.equal(unix, windows)
    assert (unix[0] - unix[1]).abs().max() > 0.1  # two captions, two pictures


def test_encode_takes_rgba_and_drops_the_alpha(comfy):
    def encoded(channels):
        return comfy.run({
            "img": {"class_type": "SwDTestTensor", "inputs": {"shape": f"1,64,64,{channels}", "value": "0.25",
                                                              "poke": "", "seed": 0, "mask_shape": "",
                                                              "mask_value": "1", "mask_poke": ""}},
            "enc": {"class_type": "SwDTinyEncode", "inputs": {"pixels": ["img", 1]}},
            "o": {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": f"rgba{channels}"}}
        }).latent("o")
    rgb, rgba = encoded(3), encoded(4)
    assert rgb.shape == (1, 16, 8, 8) and torch.equal(rgb, rgba)


def test_a_batch_of_1000_tiny_images_runs_as_the_stock_sampler_does(comfy):
    """ComfyUI's estimate for this batch is 60 GiB (the measured peak of a pass is 0.9 GB): above the free memory it
    is a warning, not a refusal (README, Troubleshooting)."""
    latent = comfy.run(tiny_sampler_prompt("red circle", 1000, "batch1000"), timeout=600).latent("o")
    assert latent.shape == (1000, 16, 16, 16) and latent.isfinite().all()


def test_quality_gate_the_student_draws_captions_it_never_saw_in_distillation(judged):
    """The 48 held-out captions (swd_distill/heldout.json) were never made into distillation data."""
    student = judged("student", sampler_nodes("swd"), "held-out")
    assert student.samples == 96 and student.accuracy >= 0.85
