"""The harness runs real ComfyUI 0.30 with the pack, and stock graphs run on every tiny model."""
import pytest

from graphs import cond_nodes, empty_latent, model_nodes, positive_ref, save_latent

PACK_NODES = {"SwDKSampler", "SwDSchedule", "SwDSampler", "SwDLatentUpscaleRenoise", "SwDLoraLoader"}


def test_comfyui_is_the_pinned_release(comfy):
    assert comfy.get("/system_stats")["system"]["comfyui_version"] == "0.30.0"


def test_pack_nodes_are_registered_with_categories_and_descriptions(comfy):
    info = comfy.object_info()
    missing = PACK_NODES - set(info)
    assert not missing, f"pack nodes not registered: {missing}"
    for name in PACK_NODES:
        assert info[name]["category"] == "sampling/swd"
        assert info[name]["description"]


@pytest.mark.parametrize("family", ["sd3", "flux", "sdxl"])
def test_stock_sampler_custom_advanced_runs_on_tiny_model(comfy, family):
    nodes, model = model_nodes(family)
    prompt = {
        **nodes, **cond_nodes(family),
        "latent": empty_latent(family, 128, 96),
        "guider": {"class_type": "BasicGuider", "inputs": {"model": model, "conditioning": positive_ref(family)}},
        "sched": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "simple", "steps": 2, "denoise": 1.0}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "sca": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                "sampler": ["sampler", 0], "sigmas": ["sched", 0], "latent_image": ["latent", 0]}},
        "save": save_latent(["sca", 0], f"stock_{family}"),
    }
    latent = comfy.run(prompt).latent("save")
    channels = 4 if family == "sdxl" else 16
    assert tuple(latent.shape) == (1, channels, 12, 16)
    assert latent.isfinite().all() and latent.std() > 0
