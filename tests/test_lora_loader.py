"""SwDLoraLoader in real ComfyUI: tiny LoRAs shaped like the released SwD adapters patch exactly the weights they
target on the tiny SD3, FLUX and SDXL-style models, in every key format; the preset output; clear refusals."""
import pickle
import uuid

import pytest
import torch
from safetensors.torch import load_file

from comfy_harness import PromptError
from graphs import UNET_FILE, cond_nodes, empty_latent, model_nodes, positive_ref, save_latent
from lora_files import (DIFFUSERS_PREFIX, LAYERS, expected_weights, lora_pairs, targeted_keys, write_diffusers,
                        write_kohya, write_peft)

RELEASED = {"sd3": ("swd-medium-6-steps", "SD3.5 Medium · 6 steps"), "flux": ("swd_flux", "FLUX.1-dev · 4 steps"),
            "sdxl": ("swd-sdxl", "SDXL · 4 steps")}
NOT_LOADED = "lora key not loaded"


def loader(model, name, strength=1.0, allow_partial=False):
    return {"class_type": "SwDLoraLoader", "inputs": {"model": model, "lora_name": name, "strength": strength,
                                                       "allow_partial": allow_partial}}


def dump(model, tag):
    filename = f"{tag}_{uuid.uuid4().hex}.safetensors"  # a new name each time: ComfyUI's cache never skips the dump
    return {"class_type": "SwDTestDumpWeights", "inputs": {"model": model, "filename": filename}}


def show(ref):
    return {"class_type": "SwDTestShowValue", "inputs": {"value": ref}}


def weights(comfy, prompt, node):
    return load_file(str(comfy.output_dir / prompt[node]["inputs"]["filename"]))


def log_count(comfy, text):
    return comfy.log_path.read_text(errors="replace").count(text)


def assert_patched_exactly(got, expected, base, family):
    """Every targeted weight equals its expected value within 1e-5 and moved; every other weight is bit-identical."""
    targeted = targeted_keys(family)
    assert set(got) == set(base)
    for key in base:
        if key in targeted:
            assert (got[key] - expected[key]).abs().max() <= 1e-5, key
            assert (got[key] - base[key]).abs().max() > 1e-3, f"{key} was not patched"
        else:
            assert torch.equal(got[key], base[key]), f"{key} changed but no LoRA module targets it"


@pytest.fixture
def loras(comfy):
    return comfy.models_dir / "loras"


def pristine(comfy, family):
    """The weights the tiny model file holds (SDXL-style: none; its node builds the weights in memory)."""
    return load_file(str(comfy.models_dir / "diffusion_models" / UNET_FILE[family])) if family in UNET_FILE else None


@pytest.mark.parametrize("family", ["sd3", "flux", "sdxl"])
def test_released_peft_lora_patches_every_targeted_weight_and_nothing_else(comfy, loras, family):
    repo, preset = RELEASED[family]
    pairs = lora_pairs(family, seed=11)
    name = f"released_{family}/{repo}/adapter_model.safetensors"
    write_peft(loras / name, pairs, lora_alpha=4)  # the releases' adapter_config.json: lora_alpha = r
    nodes, model = model_nodes(family)
    prompt = {**nodes, "base": dump(model, f"base_{family}"), "lora": loader(model, name, strength=0.7),
              "dump": dump(["lora", 0], f"peft_{family}"), "show": show(["lora", 1])}
    before = log_count(comfy, NOT_LOADED)
    result = comfy.run(prompt)
    assert log_count(comfy, NOT_LOADED) == before
    base = weights(comfy, prompt, "base")
    if family in UNET_FILE:
        assert all(torch.equal(base[k], v) for k, v in pristine(comfy, family).items())
    expected = expected_weights(base, family, pairs, 0.7, 1.0)
    assert_patched_exactly(weights(comfy, prompt, "dump"), expected, base, family)
    report = result.outputs["lora"]["swd_lora"][0]
    assert (report["keys_loaded"], report["keys_not_loaded"]) == (2 * len(pairs), 0)
    assert report["formats"] == ["peft"] and report["preset"] == preset
    assert result.outputs["show"]["text"] == [preset]
    assert f"{2 * len(pairs)} of {2 * len(pairs)} keys loaded" in result.outputs["lora"]["text"][0]


@pytest.mark.parametrize("family", ["sd3", "flux", "sdxl"])
def test_diffusers_and_kohya_names_load_to_the_same_weights_as_peft(comfy, loras, family):
    """alpha 8 with r 4 (scale 2), given as adapter_config.json (PEFT), lora_adapter_metadata (diffusers) and alpha
    tensors (kohya)."""
    pairs = lora_pairs(family, seed=12)
    folder = loras / f"formats_{family}"
    files = {"peft": write_peft(folder / "peft" / "adapter_model.safetensors", pairs, lora_alpha=8),
             "diffusers": write_diffusers(folder / "diffusers.safetensors", pairs, DIFFUSERS_PREFIX[family],
                                          lora_alpha=8),
             "kohya": write_kohya(folder / "kohya.safetensors", pairs, alpha=8)}
    nodes, model = model_nodes(family)
    prompt = {**nodes, "base": dump(model, f"base_{family}")}
    for fmt, path in files.items():
        prompt[f"lora_{fmt}"] = loader(model, path.relative_to(loras).as_posix())
        prompt[f"dump_{fmt}"] = dump([f"lora_{fmt}", 0], f"{fmt}_{family}")
    result = comfy.run(prompt)
    base = weights(comfy, prompt, "base")
    expected = expected_weights(base, family, pairs, 1.0, 2.0)
    peft = weights(comfy, prompt, "dump_peft")
    assert_patched_exactly(peft, expected, base, family)
    for fmt in ("diffusers", "kohya"):
        got = weights(comfy, prompt, f"dump_{fmt}")
        assert all(torch.equal(got[k], peft[k]) for k in peft), fmt
        report = result.outputs[f"lora_{fmt}"]["swd_lora"][0]
        assert report["formats"] == [fmt] and report["keys_not_loaded"] == 0


@pytest.mark.parametrize("family", ["flux", "sdxl"])
def test_stock_lora_loader_drops_the_peft_keys_that_swd_loader_loads(comfy, loras, family):
    """The bug this node exists for: ComfyUI 0.30 maps base_model.model.* only for SD3."""
    pairs = lora_pairs(family, seed=13)
    name = f"stock_{family}/adapter_model.safetensors"
    write_peft(loras / name, pairs)
    nodes, model = model_nodes(family)
    prompt = {**nodes, "base": dump(model, f"base_{family}"),
              "stock": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": name,
                                                                         "strength_model": 1.0}},
              "dump_stock": dump(["stock", 0], f"stock_{family}"),
              "swd": loader(model, name), "dump_swd": dump(["swd", 0], f"swd_{family}")}
    before = log_count(comfy, f"{NOT_LOADED}: base_model.model.")
    comfy.run(prompt)
    assert log_count(comfy, f"{NOT_LOADED}: base_model.model.") - before == 2 * len(pairs)
    base = weights(comfy, prompt, "base")
    stock = weights(comfy, prompt, "dump_stock")
    assert all(torch.equal(stock[k], base[k]) for k in base)
    assert_patched_exactly(weights(comfy, prompt, "dump_swd"), expected_weights(base, family, pairs, 1.0, 1.0), base,
                           family)


def test_sd3_peft_lora_gives_the_same_weights_as_stock_lora_loader(comfy, loras):
    pairs = lora_pairs("sd3", seed=14)
    name = "stock_sd3/adapter_model.safetensors"
    write_peft(loras / name, pairs)
    nodes, model = model_nodes("sd3")
    prompt = {**nodes, "stock": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": name,
                                                                                 "strength_model": 0.5}},
              "dump_stock": dump(["stock", 0], "stock_sd3"), "swd": loader(model, name, strength=0.5),
              "dump_swd": dump(["swd", 0], "swd_sd3")}
    comfy.run(prompt)
    stock, swd = weights(comfy, prompt, "dump_stock"), weights(comfy, prompt, "dump_swd")
    assert all(torch.equal(stock[k], swd[k]) for k in stock)


PRESET_FILES = [
    ("sd3", "presets/swd-medium-6-steps.safetensors", "SD3.5 Medium · 6 steps"),
    ("sd3", "presets/SwD/swd-large-4-steps_fp16.safetensors", "SD3.5 Large · 4 steps"),
    ("sd3", "presets/swd_large_6_steps/adapter_model.safetensors", "SD3.5 Large · 6 steps (older release)"),
    ("sd3", "presets/swd-medium-4-steps-v1.safetensors", "SD3.5 Medium · 4 steps"),
    ("sd3", "presets/my_sd3_lora.safetensors", "Tiny demo · 4 steps"),  # hidden 128: the pack's tiny family
    ("flux", "presets/my_flux_lora.safetensors", "custom"),  # FLUX.1 is 3072 wide: no release fits hidden 128
    ("flux", "presets/swd_flux.safetensors", "FLUX.1-dev · 4 steps"),
    ("flux", "presets/renamed_flux.safetensors", "FLUX.1-dev · 4 steps"),  # named in its metadata
    ("sdxl", "presets/yresearch-swd-sdxl.safetensors", "SDXL · 4 steps"),
]


def test_preset_output_names_the_release_the_file_is_named_after(comfy, loras):
    prompt = {"m_sd3": model_nodes("sd3")[0]["model"], "m_flux": model_nodes("flux")[0]["model"],
              "m_sdxl": model_nodes("sdxl")[0]["model"]}
    for i, (family, name, _) in enumerate(PRESET_FILES):
        write_peft(loras / name, lora_pairs(family, seed=20 + i),
                   metadata={"ss_output_name": "swd_flux"} if "renamed" in name else None)
        prompt[f"lora{i}"] = loader([f"m_{family}", 0], name)
        prompt[f"show{i}"] = show([f"lora{i}", 1])
    result = comfy.run(prompt)
    for i, (_, name, preset) in enumerate(PRESET_FILES):
        assert result.outputs[f"show{i}"]["text"] == [preset], name
    tiny_reason = result.outputs["lora4"]["swd_lora"][0]["preset_reason"]
    assert "from its architecture (the pack's tiny SD3 demo model)" in tiny_reason
    reason = result.outputs["lora5"]["swd_lora"][0]["preset_reason"]
    assert "cannot tell which SwD schedule my_flux_lora.safetensors was made for" in reason


def test_preset_output_drives_the_swd_ksampler(comfy, loras):
    name = "drive/swd-medium-4-steps.safetensors"
    write_peft(loras / name, lora_pairs("sd3", seed=30))
    nodes, model = model_nodes("sd3")

    def sampler(preset):
        return {"class_type": "SwDKSampler", "inputs": {
            "model": ["lora", 0], "positive": positive_ref("sd3"), "negative": ["neg", 0],
            "latent_image": ["latent", 0], "seed": 5, "preset": preset, "scales": "", "sigmas": "", "cfg": 1.0,
            "upscale_method": "bicubic"}}

    prompt = {**nodes, **cond_nodes("sd3"), "latent": empty_latent("sd3", 64, 64), "lora": loader(model, name),
              "linked": sampler(["lora", 1]), "typed": sampler("SD3.5 Medium · 4 steps"),
              "save_linked": save_latent(["linked", 0], "lora_linked"),
              "save_typed": save_latent(["typed", 0], "lora_typed")}
    result = comfy.run(prompt)
    assert torch.equal(result.latent("save_linked"), result.latent("save_typed"))


class _Trap:
    """Unpickling this creates the file `path`: proof that a file was unpickled."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _bad_files(loras, marker):
    bad = loras / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    trap = pickle.dumps({"transformer_blocks.0.attn.to_q.lora_A.weight": _Trap(str(marker))}, protocol=4)
    (bad / "evil.pt").write_bytes(trap)
    (bad / "evil_renamed.safetensors").write_bytes(trap)
    torch.save({"transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 128)}, bad / "torch_save.ckpt")
    data = write_peft(bad / "whole.safetensors", lora_pairs("sd3")).read_bytes()
    (bad / "truncated.safetensors").write_bytes(data[:len(data) * 2 // 3])
    (bad / "garbage.safetensors").write_bytes(b"this is not a tensor file at all " * 4)
    write_peft(bad / "swd_flux_on_sd3.safetensors", lora_pairs("flux"))
    wide = {m: (torch.zeros(4, 256), torch.zeros(256, 4)) for m in LAYERS["sd3"] if "attn.to_" in m}
    write_peft(bad / "wider_sd3.safetensors", wide)
    strays = lora_pairs("sd3") | {f"transformer_blocks.{i}.attn.to_q": (torch.ones(4, 128), torch.ones(128, 4))
                                  for i in (2, 3, 4)}
    write_peft(bad / "strays.safetensors", strays)


BAD = [
    ("bad/evil.pt", "bad/evil.pt is not a safetensors file: it is a Python pickle", "never unpickles"),
    ("bad/evil_renamed.safetensors", "is not a safetensors file: it is a Python pickle", "Download the .safetensors"),
    ("bad/torch_save.ckpt", "is not a safetensors file: it is a zip archive", "convert this file"),
    ("bad/truncated.safetensors", "bad/truncated.safetensors is truncated", "download the file again"),
    ("bad/garbage.safetensors", "is not a safetensors file: it is not in the safetensors layout", "never unpickles"),
    ("bad/swd_flux_on_sd3.safetensors", "is a LoRA for FLUX.1-architecture with hidden size 128, but the model is "
                                        "the pack's tiny SD3 demo model", "pick the LoRA made for"),
    ("bad/wider_sd3.safetensors", "is a LoRA for SD3/SD3.5 (MMDiT) with hidden size 256, but the model is the pack's "
                                  "tiny SD3 demo model", "Load it onto"),
    ("bad/strays.safetensors", f"6 of its {2 * len(LAYERS['sd3']) + 6} keys match no layer of this model, e.g. "
                               "base_model.model.transformer_blocks.2.attn.to_q.lora_A.weight", "Set allow_partial"),
]


@pytest.mark.parametrize("name, what, fix", BAD, ids=[b[0].split("/")[1] for b in BAD])
def test_bad_file_gives_one_clear_error_and_leaves_the_model_untouched(comfy, loras, tmp_path, name, what, fix):
    marker = tmp_path / "unpickled"
    _bad_files(loras, marker)
    nodes, model = model_nodes("sd3")
    with pytest.raises(PromptError) as e:
        comfy.run({**nodes, "lora": loader(model, name), "dump": dump(["lora", 0], "bad")})
    message = e.value.message
    assert message.startswith("SwDLoraLoader: ") and what in message and fix in message
    assert "Traceback" not in message
    assert not marker.exists()
    after = {**nodes, "base": dump(model, "after_bad")}
    comfy.run(after)
    got = weights(comfy, after, "base")
    assert all(torch.equal(got[k], v) for k, v in pristine(comfy, "sd3").items())


def test_allow_partial_loads_the_layers_that_match_and_reports_the_rest(comfy, loras, tmp_path):
    _bad_files(loras, tmp_path / "unpickled")
    pairs = lora_pairs("sd3")
    nodes, model = model_nodes("sd3")
    prompt = {**nodes, "lora": loader(model, "bad/strays.safetensors", allow_partial=True),
              "dump": dump(["lora", 0], "partial")}
    result = comfy.run(prompt)
    base = pristine(comfy, "sd3")
    assert_patched_exactly(weights(comfy, prompt, "dump"), expected_weights(base, "sd3", pairs, 1.0, 1.0), base, "sd3")
    report = result.outputs["lora"]["swd_lora"][0]
    assert report["keys_not_loaded"] == 6
    assert report["not_loaded"][0] == "base_model.model.transformer_blocks.2.attn.to_q.lora_A.weight"


def test_node_schema_has_tooltips_description_and_preset_output(comfy):
    info = comfy.object_info("SwDLoraLoader")["SwDLoraLoader"]
    assert info["display_name"] == "SwD LoRA Loader" and info["category"] == "sampling/swd" and info["description"]
    required = info["input"]["required"]
    assert list(required) == ["model", "lora_name", "strength", "allow_partial"]
    assert all(spec[1].get("tooltip") for spec in required.values())
    assert required["strength"][1]["default"] == 1.0 and required["allow_partial"][1]["default"] is False
    assert info["output"] == ["MODEL", "COMBO"] and info["output_name"][1] == "preset"
    assert all(info["output_tooltips"])
