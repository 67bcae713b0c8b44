"""swd_sampler.lora without ComfyUI: safe reading, formats, architecture, alpha, key conversion, preset."""
import ast
import json
import math
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import swd_sampler.lora as L
from lora_files import LAYERS, lora_pairs, write_diffusers, write_kohya, write_peft
from swd_sampler.schedule import PRESETS

REPO = Path(__file__).resolve().parents[2]


def sd3_targets(hidden=128):
    """Targets as the node builds them for the tiny SD3 model: diffusers names -> (target, shape of the slice)."""
    return {m: ((key, (0, first, rows)), (rows, inp)) for m, (key, first, rows, inp) in LAYERS["sd3"].items()}


def test_core_never_imports_comfy():
    tree = ast.parse((REPO / "swd_sampler" / "lora.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("comfy", "folder_paths", "comfy_api", "nodes")]


@pytest.mark.parametrize("writer, key_format", [
    (lambda p, pairs: write_peft(p, pairs), "peft"),
    (lambda p, pairs: write_diffusers(p, pairs, "transformer."), "diffusers"),
    (lambda p, pairs: write_kohya(p, pairs), "kohya"),
])
def test_every_format_gives_the_same_modules(tmp_path, writer, key_format):
    pairs = lora_pairs("sd3")
    lora = L.read_lora(writer(tmp_path / "x.safetensors", pairs))
    assert lora.formats == (key_format,)
    assert lora.unrecognised == ()
    assert len(lora.modules) == len(pairs)
    for module in lora.modules.values():
        name = module.name if key_format != "kohya" else next(m for m in pairs if m.replace(".", "_") == module.name)
        assert torch.equal(module.down, pairs[name][0]) and torch.equal(module.up, pairs[name][1])
        assert module.rank == 4 and module.scale == 1.0


@pytest.mark.parametrize("writer", [
    lambda p, pairs: write_peft(p, pairs), lambda p, pairs: write_diffusers(p, pairs, "transformer."),
    lambda p, pairs: write_kohya(p, pairs)])
def test_plan_maps_every_format_to_the_same_targets(tmp_path, writer):
    pairs = lora_pairs("sd3")
    plan = L.plan_patches(L.read_lora(writer(tmp_path / "x.safetensors", pairs)), sd3_targets())
    assert plan.unmatched == ()
    assert sorted(plan.to_load.values()) == sorted(t for t, _ in sd3_targets().values())
    for name, target in plan.to_load.items():
        assert plan.state_dict[f"{name}.lora_A.weight"].shape[0] == 4
        assert plan.state_dict[f"{name}.alpha"].item() == 4.0
        assert len(plan.state_dict) == 3 * len(pairs)


def test_module_shape_and_scale():
    module = L.LoraModule("m", "peft", torch.zeros(4, 6, 2, 2), torch.zeros(5, 4, 1, 1), alpha=2.0, keys=())
    assert (module.rank, module.scale, module.shape) == (4, 0.5, (5, 24))


# alpha -------------------------------------------------------------------------------------------------------------

def test_peft_without_config_has_scale_one(tmp_path):
    lora = L.read_lora(write_peft(tmp_path / "a" / "x.safetensors", lora_pairs("sd3")))
    assert {m.scale for m in lora.modules.values()} == {1.0}
    assert "default" in lora.alpha_source


def test_adapter_config_beside_the_file_sets_alpha(tmp_path):
    lora = L.read_lora(write_peft(tmp_path / "a" / "adapter_model.safetensors", lora_pairs("sd3"), lora_alpha=8))
    assert {m.scale for m in lora.modules.values()} == {2.0}
    assert lora.alpha_source == "lora_alpha from adapter_config.json"


def test_diffusers_metadata_sets_alpha(tmp_path):
    lora = L.read_lora(write_diffusers(tmp_path / "x.safetensors", lora_pairs("sd3"), "transformer.", lora_alpha=2))
    assert {m.scale for m in lora.modules.values()} == {0.5}
    assert lora.alpha_source == "lora_alpha from file metadata"


def test_kohya_alpha_tensors_set_alpha(tmp_path):
    lora = L.read_lora(write_kohya(tmp_path / "x.safetensors", lora_pairs("sd3"), alpha=1.0))
    assert {m.scale for m in lora.modules.values()} == {0.25}


def test_rslora_alpha_pattern_and_rank_pattern_follow_peft(tmp_path):
    pairs = lora_pairs("sd3")
    pairs["transformer_blocks.0.attn.to_q"] = (torch.randn(2, 128), torch.randn(128, 2))
    path = write_peft(tmp_path / "a" / "adapter_model.safetensors", pairs, lora_alpha=8)
    config = json.loads((path.parent / "adapter_config.json").read_text())
    config |= {"r": 4, "use_rslora": True, "alpha_pattern": {"ff.net.2": 16}, "rank_pattern": {"0.attn.to_q": 2}}
    (path.parent / "adapter_config.json").write_text(json.dumps(config))
    modules = L.read_lora(path).modules
    assert modules["transformer_blocks.0.attn.to_q"].scale == pytest.approx(8 / math.sqrt(2))
    assert modules["transformer_blocks.1.attn.to_q"].scale == pytest.approx(8 / 2)
    assert modules["transformer_blocks.1.ff.net.2"].scale == pytest.approx(16 / 2)


def test_adapter_config_of_another_rank_is_refused(tmp_path):
    path = write_peft(tmp_path / "a" / "adapter_model.safetensors", lora_pairs("sd3"), lora_alpha=64)
    (path.parent / "adapter_config.json").write_text(json.dumps({"r": 64, "lora_alpha": 64}))
    with pytest.raises(L.LoraError, match=r"says r = 64 .* has rank 4.*adapter_config.json"):
        L.read_lora(path)


# architecture ------------------------------------------------------------------------------------------------------

def _arch(tmp_path, pairs):
    return L.read_lora(write_peft(tmp_path / "x.safetensors", pairs)).architecture


@pytest.mark.parametrize("family, width, name", [("sd3", 1536, "SD3/SD3.5 Medium"), ("sd3", 2432, "SD3.5 Large"),
                                                 ("flux", 3072, "FLUX.1"), ("sdxl", 2048, "SDXL")])
def test_architecture_from_names_and_widths_of_released_models(tmp_path, family, width, name):
    module = {"sd3": "transformer_blocks.3.attn.to_k", "flux": "single_transformer_blocks.9.attn.to_k",
              "sdxl": "down_blocks.2.attentions.1.transformer_blocks.4.attn2.to_k"}[family]
    pairs = {module: (torch.zeros(1, width), torch.zeros(8, 1)), "transformer_blocks.0.ff.net.2": (torch.zeros(1, 4),
                                                                                                  torch.zeros(8, 1))}
    assert _arch(tmp_path, pairs).name == name


def test_flux_double_block_names_are_told_from_sd3_by_width(tmp_path):
    pairs = {"transformer_blocks.0.attn.to_q": (torch.zeros(1, 3072), torch.zeros(8, 1))}
    assert _arch(tmp_path, pairs) == L.Architecture("flux", 3072)


@pytest.mark.parametrize("family, expected", [("sd3", L.Architecture("sd3", 128)),
                                              ("flux", L.Architecture("flux", 128)),
                                              ("sdxl", L.Architecture("unet", 64))])
def test_architecture_of_the_tiny_loras(tmp_path, family, expected):
    assert _arch(tmp_path, lora_pairs(family)) == expected


def test_wrong_architecture_names_both(tmp_path):
    lora = L.read_lora(write_peft(tmp_path / "swd_flux.safetensors", lora_pairs("flux")))
    with pytest.raises(L.ArchitectureMismatchError) as e:
        L.check_architecture(lora, L.Architecture("sd3", 1536))
    assert "swd_flux.safetensors is a LoRA for FLUX.1-architecture with hidden size 128" in str(e.value)
    assert "the model is SD3/SD3.5 Medium" in str(e.value)


def test_wrong_width_names_both(tmp_path):
    lora = L.read_lora(write_peft(tmp_path / "x.safetensors", {"transformer_blocks.0.attn.to_q": (
        torch.zeros(1, 2432), torch.zeros(2432, 1))}))
    with pytest.raises(L.ArchitectureMismatchError, match="LoRA for SD3.5 Large, but the model is SD3/SD3.5 Medium"):
        L.check_architecture(lora, L.Architecture("sd3", 1536))


def test_layer_of_another_size_is_an_architecture_error(tmp_path):
    pairs = lora_pairs("sd3")
    pairs["transformer_blocks.0.ff.net.2"] = (torch.zeros(4, 256), torch.zeros(128, 4))
    lora = L.read_lora(write_peft(tmp_path / "x.safetensors", pairs))
    with pytest.raises(L.ArchitectureMismatchError, match=r"1 of its layers .*ff\.net\.2: LoRA 128x256, model 128x512"):
        L.plan_patches(lora, sd3_targets())


# unmatched keys ----------------------------------------------------------------------------------------------------

def _with_strays(tmp_path):
    pairs = lora_pairs("sd3") | {f"transformer_blocks.{i}.attn.to_q": (torch.zeros(4, 128), torch.zeros(128, 4))
                                 for i in (7, 8, 9)}
    path = write_peft(tmp_path / "x.safetensors", pairs)
    tensors = L.read_safetensors(path, "x")[0] | {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight":
                                                  torch.zeros(4, 8)}
    save_file(tensors, str(path))
    return L.read_lora(path)


def test_unmatched_keys_are_refused_with_count_and_examples(tmp_path):
    lora = _with_strays(tmp_path)
    with pytest.raises(L.UnmatchedKeysError) as e:
        L.plan_patches(lora, sd3_targets())
    message = str(e.value)
    assert f"7 of its {2 * len(LAYERS['sd3']) + 7} keys match no layer" in message
    assert "base_model.model.transformer_blocks.7.attn.to_q.lora_A.weight" in message
    assert "allow_partial" in message


def test_partial_load_keeps_the_matching_layers_and_lists_the_rest(tmp_path):
    plan = L.plan_patches(_with_strays(tmp_path), sd3_targets(), allow_partial=True)
    assert len(plan.to_load) == len(LAYERS["sd3"])
    assert len(plan.unmatched) == 7
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight" in plan.unmatched


# reading -----------------------------------------------------------------------------------------------------------

class _Trap:
    """Unpickling this creates the file `path`."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    for name in ("evil.pt", "evil.safetensors"):
        (tmp_path / name).write_bytes(pickle.dumps({"w": _Trap(str(marker))}, protocol=4))
        with pytest.raises(L.NotSafetensorsError, match=f"{name} is not a safetensors file: it is a Python pickle"):
            L.read_lora(tmp_path / name)
    assert not marker.exists()


def test_torch_zip_checkpoint_is_refused(tmp_path):
    torch.save({"x.lora_A.weight": torch.zeros(1)}, tmp_path / "x.ckpt")
    with pytest.raises(L.NotSafetensorsError, match=r"zip archive .*never unpickles.*\.safetensors"):
        L.read_lora(tmp_path / "x.ckpt")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_refused(tmp_path, keep):
    path = write_peft(tmp_path / "x.safetensors", lora_pairs("sd3"))
    data = path.read_bytes()
    header = 8 + struct.unpack("<Q", data[:8])[0]
    cut = int(header * keep) if keep < 0.9 else header + (len(data) - header) // 2
    path.write_bytes(data[:cut])
    with pytest.raises(L.CorruptLoraError, match=rf"x.safetensors is truncated: it is {cut} bytes .*download the file"):
        L.read_lora(path)


@pytest.mark.parametrize("data, match", [
    (b"", "empty or cut off"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!!", "damaged safetensors header"),
    (b"\x00" * 8 + b"{}", "damaged safetensors header"),
    (b"hello world, not a tensor file", "is not a safetensors file: it is not in the safetensors layout"),
])
def test_garbage_is_refused(tmp_path, data, match):
    (tmp_path / "x.safetensors").write_bytes(data)
    with pytest.raises(L.LoraError, match=match):
        L.read_lora(tmp_path / "x.safetensors")


def test_header_length_that_starts_like_a_pickle_still_reads(tmp_path):
    """A header of 0x..80 bytes makes the file start with the pickle opcode byte 0x80."""
    path = tmp_path / "x.safetensors"
    pairs = lora_pairs("sd3")
    for pad in range(512):
        write_peft(path, pairs, metadata={"pad": "p" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert len(L.read_lora(path).modules) == len(pairs)


def test_safetensors_without_lora_pairs_is_refused(tmp_path):
    save_file({"joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(3, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(L.CorruptLoraError, match="holds no LoRA weights"):
        L.read_lora(tmp_path / "model.safetensors")


def test_lora_errors_are_value_errors():
    for cls in (L.NotSafetensorsError, L.CorruptLoraError, L.ArchitectureMismatchError, L.UnmatchedKeysError):
        assert issubclass(cls, L.LoraError) and issubclass(cls, ValueError)


# preset ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, preset", [
    ("swd-medium-6-steps.safetensors", "SD3.5 Medium · 6 steps"),
    ("swd-medium-4-steps.safetensors", "SD3.5 Medium · 4 steps"),
    ("swd-large-4-steps.safetensors", "SD3.5 Large · 4 steps"),
    ("swd-large-6-steps.safetensors", "SD3.5 Large · 6 steps (older release)"),
    ("swd_flux.safetensors", "FLUX.1-dev · 4 steps"),
    ("swd-sdxl.safetensors", "SDXL · 4 steps"),
    ("SwD/swd-large-4-steps_fp16.safetensors", "SD3.5 Large · 4 steps"),
    ("swd_medium_6_steps", "SD3.5 Medium · 6 steps"),
    ("SwD-Large-6steps-v2.sft", "SD3.5 Large · 6 steps (older release)"),
    ("swd-flux.safetensors", "FLUX.1-dev · 4 steps"),
    ("loras\\yresearch-swd-sdxl-lora.safetensors", "SDXL · 4 steps"),
    ("swd-medium-6-steps/adapter_model.safetensors", "SD3.5 Medium · 6 steps"),
    ("models--yresearch--swd_flux/snapshots/0123abc/adapter_model.safetensors", "FLUX.1-dev · 4 steps"),
])
def test_preset_from_released_names(name, preset):
    assert L.recognise_preset(name).preset == preset


@pytest.mark.parametrize("name", ["my_lora.safetensors", "swd-flux2.safetensors", "swd-large-44-steps.safetensors",
                                  "notswd-sdxl.safetensors", "swd-medium.safetensors"])
def test_preset_is_not_guessed_from_other_names(name):
    match = L.recognise_preset(name)
    assert match.preset is None and "cannot tell" in match.reason and "Rename the file" in match.reason


def test_preset_of_every_release_is_a_preset_name():
    for repo in {p.lora for p in PRESETS.values()}:
        assert L.recognise_preset(repo.split("/")[-1] + ".safetensors").preset in PRESETS


def test_preset_from_metadata():
    match = L.recognise_preset("adapter_model.safetensors", {"base_model_name_or_path": "yresearch/swd-large-4-steps"})
    assert match.preset == "SD3.5 Large · 4 steps" and "base_model_name_or_path" in match.reason


def test_preset_from_architecture_only_where_there_is_one_release():
    assert L.recognise_preset("x.safetensors", {}, L.Architecture("flux", 3072)).preset == "FLUX.1-dev · 4 steps"
    assert L.recognise_preset("x.safetensors", {}, L.Architecture("unet", 2048)).preset == "SDXL · 4 steps"
    large = L.recognise_preset("x.safetensors", {}, L.Architecture("sd3", 2432))
    assert large.preset is None
    assert "SD3.5 Large · 4 steps, SD3.5 Large · 6 steps (older release)" in large.reason
    assert "Medium" not in large.reason.split("presets are:")[1]
    tiny = L.recognise_preset("x.safetensors", {}, L.Architecture("flux", 128))
    assert tiny.preset is None and "cannot tell" in tiny.reason


def test_name_of_a_release_for_another_architecture_is_not_believed():
    match = L.recognise_preset("swd_flux.safetensors", {}, L.Architecture("sd3", 1536))
    assert match.preset is None and "points at FLUX.1-dev · 4 steps, a release for another model" in match.reason


def test_preset_of_a_read_file_uses_its_folder_and_config(tmp_path):
    path = write_peft(tmp_path / "swd-large-6-steps" / "adapter_model.safetensors", lora_pairs("sd3"), lora_alpha=4)
    lora = L.read_lora(path, "swd-large-6-steps/adapter_model.safetensors")
    assert lora.preset().preset == "SD3.5 Large · 6 steps (older release)"


def test_kohya_names_of_the_models_own_layers_resolve(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.zeros(4, 128),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": torch.zeros(384, 4),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha": torch.tensor(2.0)}, str(path))
    lora = L.read_lora(path)
    assert lora.architecture == L.Architecture("sd3", 128)
    key = "diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    targets = {"joint_blocks.0.x_block.attn.qkv": (key, (384, 128))}
    plan = L.plan_patches(lora, targets)
    assert plan.to_load == {"joint_blocks_0_x_block_attn_qkv": key}
    assert plan.state_dict["joint_blocks_0_x_block_attn_qkv.alpha"].item() == 2.0
