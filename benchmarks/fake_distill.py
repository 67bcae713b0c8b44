"""Peak memory of one SwD distillation step of a real-size model, measured without its memory: the real ComfyUI
model class (SD3.5 Medium / Large, FLUX.1-dev, SDXL) built in bf16 under torch's FakeTensorMode, and this pack's own
Network, Distiller and Engine running `Engine.step` on it. Used by bench_distill.py (one process per setting):

    .venv/bin/python benchmarks/fake_distill.py MODEL BATCH [--recipe full|mmd] [--fake-updates 1] [--fsdp-path]

Prints one JSON line. Nothing here allocates the model's memory: every tensor is a FakeTensor (shape, dtype, device,
no data), so a 12 B-parameter FLUX step runs on a laptop in about a minute.

The model: `unet_config` below is checked against ComfyUI itself: the model is first built on the meta device, its
state dict (keys and shapes, as in a released checkpoint) goes through `comfy.model_detection.detect_unet_config` and
`model_config_from_unet_config`, and the fake model is built from what detection returns, by the supported model's
own `get_model` (`set_inference_dtype(bfloat16)`: bf16 weights, ComfyUI's own layers). Attention is ComfyUI's
`attention_pytorch` (torch SDPA), what ComfyUI picks on NVIDIA GPUs; on fake CPU tensors SDPA dispatches to the flash
kernel (saves the output and a logsumexp, no L x L matrix), as flash / memory-efficient SDPA do on a GPU.

The step: `Network(base, dtype=bf16, checkpointing=True)`, `Distiller` (rank-64 fp32 adapters, the official recipe:
DMD with the teacher's cfg, 5e-3 GAN head, linear patch loss; or `mmd`), `Engine(run, Split())` one process, and
`engine.step(3)`: scale index 3 of the 4-step presets, the 128 x 128 latent (1024 px). Before it, the state a previous
step leaves is put in place (AdamW's exp_avg / exp_avg_sq of both optimizers, the student's gradients, which the
Engine keeps until its next update); the measured step is then the steady state. `--fsdp-path` runs the code path an
FSDP2 process runs, minus the sharding (`run.stop_early = False`: every feature pass runs all blocks; the fake score's
adapters keep requiring gradients in the generator update); bench_distill.py models the sharding on top of it.

The tracker (`LiveBytes`, a TorchDispatchMode inside the FakeTensorMode): every tensor an operator returns has its
storage counted once (views share it) with its byte size, and a weakref callback subtracts it when the storage dies;
parameters, buffers, gradients (post-accumulate-grad hooks), optimizer states are labelled as such, everything else
is "activations" (saved tensors, checkpoint inputs, temporaries). It keeps the peak of the total, the labels at that
moment and the phase (fake-score or generator update), and, for FSDP, the peak over time of
activations + buffers + (weights + adapters + gradients + optimizer) / N for N = 1, 2, 4, 8.
What it does not model: the caching allocator (block rounding, fragmentation, cached free blocks), kernels'
workspaces (cuBLAS, flash attention), the CUDA context (about 0.5-1 GB per process), NCCL buffers, torch.compile.

Two things FakeTensorMode cannot do and this file works around (neither changes what is allocated):
- `nn.Module.to` swaps FakeTensor parameters with `torch.utils.swap_tensors`, which refuses a tensor FakeTensorMode
  holds a weak reference to; `Adapters.add` and the Distiller call `.to(device, float32)` on fp32 CPU tensors, a no-op,
  so the swap of a tensor with a view of itself is skipped.
- `discriminator_head` reads its widths with `torch.linspace(...).tolist()`, data a fake tensor does not have; the
  head (3 M parameters) is built from real tensors and its parameters then made fake.
`comfy.model_management.in_training` is set, as `swd_distill.train.distill` sets it around its loop.
`.item()` of a fake loss gives a symbolic float (FakeTensorMode with a ShapeEnv allowing scalar outputs), so the
Engine's loss logging runs unchanged.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.utils._pytree as pytree  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

GB = 1e9
WORLDS = (1, 2, 4, 8)
CATEGORIES = ("weights", "buffers", "adapters", "grads", "optimizer", "activations")
SHARDED = ("weights", "adapters", "grads", "optimizer")  # what FSDP2 shards; buffers and activations it does not

# Diffusion-model configs as comfy.model_detection.detect_unet_config reads them from the released checkpoints
# (re-derived from the built model's state dict in `model_config`, so a wrong value here would show).
SD35_MEDIUM = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
               "adm_in_channels": 2048, "num_patches": 384 * 384, "pos_embed_max_size": 384, "qk_norm": "rms",
               "context_embedder_config": {"target": "torch.nn.Linear",
                                           "params": {"in_features": 4096, "out_features": 1536}},
               "pos_embed_scaling_factor": None, "x_block_self_attn_layers": list(range(13))}
SD35_LARGE = {**SD35_MEDIUM, "depth": 38, "num_patches": 192 * 192, "pos_embed_max_size": 192,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 2432}},
              "x_block_self_attn_layers": []}
FLUX_DEV = {"image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
            "out_channels": 16, "qkv_bias": True, "txt_ids_dims": [], "in_channels": 16, "hidden_size": 3072,
            "context_in_dim": 4096, "patch_size": 2, "vec_in_dim": 768, "depth": 19, "depth_single_blocks": 38,
            "guidance_embed": True, "yak_mlp": False, "txt_norm": False}
SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False}

# name: (config, SwD preset, text conditioning as the real encoders give it, teacher cfg, latent (C, H, W) at 1024 px)
MODELS = {
    "sd3.5-medium": (SD35_MEDIUM, "SD3.5 Medium · 4 steps", {"context": (154, 4096), "pooled": 2048}, 7.0,
                     (16, 128, 128)),
    "sd3.5-large": (SD35_LARGE, "SD3.5 Large · 4 steps", {"context": (154, 4096), "pooled": 2048}, 4.5,
                    (16, 128, 128)),
    "flux.1-dev": (FLUX_DEV, "FLUX.1-dev · 4 steps", {"context": (256, 4096), "pooled": 768, "guidance": 3.5}, 3.5,
                   (16, 128, 128)),
    "sdxl": (SDXL, "SDXL · 4 steps", {"context": (77, 2048), "pooled": 1280, "width": 1024, "height": 1024}, 7.0,
             (4, 128, 128)),
}
MEASURED_STEP = 3  # scale index 3 of the 4-step presets: the final latent (128 x 128 at 1024 px)


class LiveBytes(TorchDispatchMode):
    """Live bytes of the storages operators return, by label; the peak total and the FSDP peaks (module doc)."""

    def __init__(self):
        super().__init__()
        self.entries: dict[int, list] = {}  # id(storage) -> [bytes, label, weakref]
        self.live = dict.fromkeys(CATEGORIES, 0)
        self.phase = "setup"
        self.reset_peak()

    def reset_peak(self) -> None:
        self.peak, self.at_peak, self.peak_phase = 0, dict(self.live), self.phase
        self.fsdp_peak = {n: (0, dict(self.live), self.phase) for n in WORLDS}
        self._note()

    def _note(self) -> None:
        total = sum(self.live.values())
        if total > self.peak:
            self.peak, self.at_peak, self.peak_phase = total, dict(self.live), self.phase
        sharded = sum(self.live[c] for c in SHARDED)
        for n in WORLDS:
            value = total - sharded + sharded / n
            if value > self.fsdp_peak[n][0]:
                self.fsdp_peak[n] = (value, dict(self.live), self.phase)

    def track(self, t: torch.Tensor, label: str = "activations") -> None:
        st = t.untyped_storage()
        key, size = id(st), st.nbytes()
        entry = self.entries.get(key)
        if entry is None:
            ref = weakref.ref(st, lambda _r, key=key: self._free(key))
            self.entries[key] = [size, label, ref]
            self.live[label] += size
        elif entry[0] != size:  # resized in place
            self.live[entry[1]] += size - entry[0]
            entry[0] = size
        else:
            return
        self._note()

    def label(self, t: torch.Tensor, label: str) -> None:
        self.track(t, label)
        entry = self.entries[id(t.untyped_storage())]
        if entry[1] != label:
            self.live[entry[1]] -= entry[0]
            self.live[label] += entry[0]
            entry[1] = label

    def _free(self, key: int) -> None:
        size, label, _ = self.entries.pop(key)
        self.live[label] -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def _workarounds(mode, tracker: LiveBytes) -> None:
    """The two FakeTensorMode gaps of the module doc."""
    import swd_distill.distill as distill
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    swap = torch.utils.swap_tensors

    def swap_unless_same(t1, t2):
        if (t1.untyped_storage()._cdata == t2.untyped_storage()._cdata and t1.dtype == t2.dtype
                and t1.shape == t2.shape and t1.stride() == t2.stride()):
            return None  # Module.to with nothing to convert
        return swap(t1, t2)
    torch.utils.swap_tensors = swap_unless_same

    head = distill.discriminator_head

    def fake_head(*args, **kwargs):
        with unset_fake_temporarily():
            module = head(*args, **kwargs)
        for layer in module.modules():
            for name, p in list(layer._parameters.items()):
                fake = mode.from_tensor(p)
                tracker.track(fake)
                layer._parameters[name] = torch.nn.Parameter(fake, requires_grad=p.requires_grad)
        return module
    distill.discriminator_head = fake_head


def _as_distill() -> None:
    """What `swd_distill.train.distill` sets around its loop (the bench calls `Engine.step` itself), as ComfyUI's
    TrainLoraNode does: ComfyUI's models take their differentiable code paths (FLUX's RoPE without comfy_kitchen)."""
    import comfy.model_management
    comfy.model_management.in_training = True


def model_config(name: str):
    """ComfyUI's supported-model config of `name`, by detection from the model's own state dict (module doc)."""
    import comfy.model_detection
    config = MODELS[name][0]
    first = comfy.model_detection.model_config_from_unet_config(dict(config))
    first.set_inference_dtype(torch.bfloat16, None)
    meta = first.get_model({}, "", device=torch.device("meta"))
    detected = comfy.model_detection.detect_unet_config(meta.diffusion_model.state_dict(), "")
    differing = {k: (v, detected.get(k)) for k, v in config.items() if detected.get(k) != v}
    if differing:
        raise AssertionError(f"{name}: ComfyUI detects another config from this model's keys: {differing}")
    detected_config = comfy.model_detection.model_config_from_unet_config(detected)
    if type(detected_config) is not type(first):
        raise AssertionError(f"{name}: detected as {type(detected_config).__name__}, not {type(first).__name__}")
    detected_config.set_inference_dtype(torch.bfloat16, None)
    return detected_config


def conditioning(name: str) -> list:
    """A ComfyUI conditioning entry [context, {pooled_output, ...}] with the real encoders' shapes (zeros)."""
    text = MODELS[name][2]
    extra = {k: v for k, v in text.items() if k not in ("context", "pooled")}
    return [torch.zeros(1, *text["context"]), {"pooled_output": torch.zeros(1, text["pooled"]), **extra}]


def _unit_bytes(modules, dtype_bytes: int = 2) -> tuple[int, int]:
    """(bytes of the modules' parameters all-gathered in bf16, trainable parameters' count)."""
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    return (sum(p.numel() for p in params) * dtype_bytes, sum(p.numel() for p in params if p.requires_grad))


def measure(name: str, batch: int, recipe: str, fake_updates: int, fsdp_path: bool, px: int = 1024) -> dict:
    from swd_distill.model import import_comfy
    import_comfy(cpu=True)
    from comfy.cli_args import args
    args.use_pytorch_cross_attention = True  # ComfyUI's choice on NVIDIA GPUs (attention_pytorch: SDPA)
    import comfy.ldm.modules.attention as attention
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    from swd_distill.data import Dataset
    from swd_distill.distill import DistillConfig, Distiller, Split
    from swd_distill.network import Network
    from swd_distill.train import Engine

    assert attention.optimized_attention is attention.attention_pytorch, attention.optimized_attention
    _, preset, _, cfg_value, latent_shape = MODELS[name]
    latent_shape = (latent_shape[0], px // 8, px // 8)
    t0 = time.time()
    _as_distill()
    config = model_config(name)
    mode = FakeTensorMode(allow_non_fake_inputs=True, static_shapes=True,
                          shape_env=ShapeEnv(allow_scalar_outputs=True))
    tracker = LiveBytes()
    _workarounds(mode, tracker)

    class Latents(Dataset):
        """The dataset of one real (zero) latent and its conditioning; a draw's rows are not data-dependent."""

        def get(self, positions):
            n = len(positions)
            return self.latents.expand(n, *self.latents.shape[1:]), [self.conds[0]] * n

    with mode, tracker:
        base = config.get_model({}, "")
        for p in base.parameters():
            tracker.label(p, "weights")
        for b in base.buffers():
            tracker.label(b, "buffers")
        net = Network(base, dtype=torch.bfloat16, checkpointing=True)
    entry = conditioning(name)
    encoded = net.encode(entry, latent_shape)  # real tensors, outside the fake mode (the data loader's side)
    dataset = Latents(torch.zeros(1, *latent_shape), [encoded], 1)
    negative = None if net.guided else encoded
    cfg = DistillConfig(preset=preset, batch=batch, rank=64, recipe=recipe, fake_updates=fake_updates,
                        cfg=cfg_value, steps=MEASURED_STEP + 1)
    with mode, tracker:
        run = Distiller(net, dataset, negative, cfg, Split())
        engine = Engine(run, Split())
        trained = run.student.params + (run.fake.params if run.fake is not None else [])
        for p in trained:
            tracker.label(p, "adapters")
            p.register_post_accumulate_grad_hook(lambda p: tracker.label(p.grad, "grads"))
        # the state a previous step leaves: both optimizers' AdamW moments, the student's gradients
        for opt, params in engine.groups().values():
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
            for state in opt.state.values():
                for v in state.values():
                    if torch.is_tensor(v):
                        tracker.label(v, "optimizer")
        for p in trained:
            tracker.label(p.grad, "grads")
        if run.fake is not None:
            for p in run.fake.params:
                p.grad = None
        if fsdp_path:
            run.stop_early = False
            engine.parallel = "fsdp"  # only Engine.step reads it after __init__: the fake side is not frozen
        update = engine._update

        def phased(loss_fn, optimizer, group, args):
            tracker.phase = "generator update" if optimizer is engine.opt else "fake-score update"
            return update(loss_fn, optimizer, group, args)
        engine._update = phased
        before = dict(tracker.live)
        tracker.reset_peak()
        t1 = time.time()
        engine.step(MEASURED_STEP)
        step_s = time.time() - t1

    units = [_unit_bytes([u]) for u in net.units]  # the Engine's FSDP units ("blocks" in the JSON)
    in_units = {id(p) for u in net.units for p in u.parameters()}
    root = [p for p in net.dm.parameters() if id(p) not in in_units]
    largest = max(units)
    out = {
        "model": name, "batch": batch, "recipe": recipe, "fake_updates": fake_updates, "fsdp_path": fsdp_path,
        "latent": list(latent_shape), "preset": preset, "family": net.family,
        "params": {"base": sum(p.numel() for p in net.dm.parameters() if not p.requires_grad),
                   "student": sum(p.numel() for p in run.student.params),
                   "fake": sum(p.numel() for p in run.fake.params) if run.fake is not None else 0},
        "before_step": before,
        "peak": tracker.peak, "at_peak": tracker.at_peak, "peak_phase": tracker.peak_phase,
        "fsdp_peaks": {str(n): {"bytes": v, "at_peak": at, "phase": ph}
                       for n, (v, at, ph) in tracker.fsdp_peak.items()},
        "units": {"blocks": len(units), "largest_block_bf16": largest[0], "largest_block_trainable": largest[1],
                  "root_bf16": sum(p.numel() for p in root) * 2,
                  "root_modules": sorted({n.split(".")[0] for n, p in net.dm.named_parameters()
                                          if id(p) not in in_units})},
        "seconds": {"build": round(t1 - t0, 1), "step": round(step_s, 1)},
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(MODELS))
    parser.add_argument("batch", type=int)
    parser.add_argument("--recipe", choices=("full", "mmd"), default="full")
    parser.add_argument("--fake-updates", type=int, default=5)
    parser.add_argument("--fsdp-path", action="store_true")
    parser.add_argument("--px", type=int, default=1024, help="image side (latent side px / 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(args.model, args.batch, args.recipe, args.fake_updates, args.fsdp_path, args.px)),
          flush=True)


if __name__ == "__main__":
    main()
