"""The tiny teacher network (ComfyUI's own SD3 MMDiT class, so its state dict is ComfyUI's key format) and the LoRA
adapters that make the student and the fake score.

The network predicts the flow velocity v = eps - x0 at timestep t = 1000 * sigma (ComfyUI's SD3 model sampling),
so x0 = x - sigma * v, exactly what ComfyUI computes when it samples the saved file.

LoRA: each adapted nn.Linear W gets named adapters {name: (A (r, in), B (out, r))}; with adapter `name` active,
y = W x + b + (alpha / r) * B A x. One frozen base thus serves as the teacher (no adapter), the student ("student")
and the fake score ("fake"), as the official training keeps one transformer with several PEFT adapters. Adapted
layers: the PEFT targets of the released SwD LoRAs (to_q, to_k, to_v, to_out.0, net.0.proj, net.2) in ComfyUI's
names: x_block.attn.qkv (to_q/k/v are slices of it), x_block.attn.proj, x_block.mlp.fc1/fc2 and
context_block.mlp.fc1/fc2 (ff_context.net.*).
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.nn as nn

from .tiny import MMDIT


def import_comfy(cpu: bool | None = None):
    """Put ComfyUI (COMFYUI_PATH, or the tree `make setup` made) on sys.path; cpu=None: CPU unless CUDA works."""
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    path = os.environ.get("COMFYUI_PATH") or (root / ".comfyui" / "comfyui_path").read_text().strip()
    if path not in sys.path:
        sys.path.insert(0, path)
    if "comfy.model_management" not in sys.modules:
        from comfy.cli_args import args
        args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu


def torch_default_init(module: nn.Module) -> nn.Module:
    """Give the comfy.ops layers of `module` (which skip initialisation) torch's own default initialisation."""
    for layer in module.modules():
        for kind in (nn.Conv2d, nn.Linear, nn.LayerNorm):
            if isinstance(layer, kind):
                kind.reset_parameters(layer)
    return module


def build_mmdit(seed: int) -> nn.Module:
    """The teacher's MMDiT (SD3 class, depth 2, hidden 128) with DiT's initialisation from `seed`: xavier linear
    layers, zero modulation and output layers (so it starts as the identity of its blocks), SD3's fixed 2-D sin-cos
    position table."""
    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT, get_2d_sincos_pos_embed_torch
    torch.manual_seed(seed)
    size = MMDIT["pos_embed_max_size"]
    net = MMDiT(patch_size=MMDIT["patch_size"], in_channels=MMDIT["in_channels"], out_channels=MMDIT["out_channels"],
                depth=MMDIT["depth"], adm_in_channels=MMDIT["adm_in_channels"], qk_norm="rms",
                context_embedder_config={"target": "torch.nn.Linear", "params": {
                    "in_features": MMDIT["context_dim"], "out_features": 64 * MMDIT["depth"]}},
                pos_embed_max_size=size, num_patches=size * size, operations=comfy.ops.disable_weight_init)
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            nn.init.xavier_uniform_(p.view(p.shape[0], -1))
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)  # RMSNorm weights
    for module in net.modules():
        if hasattr(module, "adaLN_modulation"):
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)
    nn.init.zeros_(net.final_layer.linear.weight)
    for mlp in (net.t_embedder.mlp, net.y_embedder.mlp):
        nn.init.normal_(mlp[0].weight, std=0.02)
        nn.init.normal_(mlp[2].weight, std=0.02)
    with torch.no_grad():
        net.pos_embed.copy_(get_2d_sincos_pos_embed_torch(net.hidden_size, size, size).reshape(1, size * size, -1))
    return net


def predict_x0(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
               pooled: torch.Tensor) -> torch.Tensor:
    """x0 = x - sigma * v(x, 1000 sigma); sigma is (B,)."""
    v = net(x, sigma * 1000.0, y=pooled, context=context)
    return x - sigma.view(-1, 1, 1, 1) * v


def predict_x0_cfg(net, x, sigma, context, pooled, uncond_context, uncond_pooled, cfg: float) -> torch.Tensor:
    """Classifier-free guidance in x0: uncond + cfg * (cond - uncond), both passes in one batch."""
    if cfg == 1.0:
        return predict_x0(net, x, sigma, context, pooled)
    both = predict_x0(net, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([context, uncond_context]),
                      torch.cat([pooled, uncond_pooled]))
    cond, uncond = both.chunk(2)
    return uncond + cfg * (cond - uncond)


# LoRA ------------------------------------------------------------------------------------------------------------

LORA_LAYERS = {  # ComfyUI layer (within joint_blocks.i) -> the diffusers names it exports to (qkv: three slices)
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block.attn.proj": ("attn.to_out.0",),
    "x_block.mlp.fc1": ("ff.net.0.proj",),
    "x_block.mlp.fc2": ("ff.net.2",),
    "context_block.mlp.fc1": ("ff_context.net.0.proj",),
    "context_block.mlp.fc2": ("ff_context.net.2",),
}


class LoRALinear(nn.Module):
    """A frozen linear layer plus named low-rank adapters; `active` selects one (None: the base layer alone)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.scales: dict[str, float] = {}
        self.active: str | None = None

    def add(self, name: str, rank: int, alpha: float, generator: torch.Generator) -> None:
        adapter = nn.ParameterDict({
            "A": nn.Parameter(torch.randn(rank, self.base.in_features, generator=generator)
                              / math.sqrt(self.base.in_features)),
            "B": nn.Parameter(torch.zeros(self.base.out_features, rank))})  # PEFT's init: B = 0, W unchanged
        self.adapters[name] = adapter
        self.scales[name] = alpha / rank

    def forward(self, x):
        y = self.base(x)
        if self.active is None:
            return y
        a = self.adapters[self.active]
        return y + (x @ a["A"].t() @ a["B"].t()) * self.scales[self.active]


def add_lora(net: nn.Module, name: str, rank: int, alpha: float, seed: int) -> list[nn.Parameter]:
    """Give every LORA_LAYERS layer of `net` an adapter `name`; returns its parameters."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for i, block in enumerate(net.joint_blocks):
        for path in LORA_LAYERS:
            parent_path, _, attr = path.rpartition(".")
            try:
                parent = block.get_submodule(parent_path)
            except AttributeError:
                continue  # the last block's context stream has no MLP (pre_only)
            layer = getattr(parent, attr, None)
            if layer is None:
                continue
            if not isinstance(layer, LoRALinear):
                layer = LoRALinear(layer)
                setattr(parent, attr, layer)
            layer.add(name, rank, alpha, generator)
            params += [layer.adapters[name]["A"], layer.adapters[name]["B"]]
    return params


def lora_layers(net: nn.Module):
    """(ComfyUI layer name, LoRALinear) of every adapted layer."""
    for i, block in enumerate(net.joint_blocks):
        for path in LORA_LAYERS:
            try:
                layer = block.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(layer, LoRALinear):
                yield f"joint_blocks.{i}.{path}", layer


@contextlib.contextmanager
def adapter(net: nn.Module, name: str | None):
    """Run `net` with adapter `name` (None: the teacher)."""
    layers = [layer for _, layer in lora_layers(net)]
    previous = [layer.active for layer in layers]
    for layer in layers:
        layer.active = name
    try:
        yield net
    finally:
        for layer, p in zip(layers, previous):
            layer.active = p


def base_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The base network's weights under ComfyUI's keys (adapters left out)."""
    out = {}
    for key, value in net.state_dict().items():
        if ".adapters." in key:
            continue
        out[key.replace(".base.", ".")] = value
    return out


def peft_state_dict(net: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Adapter `name` in the released SwD LoRAs' PEFT form: base_model.model.transformer_blocks.i.<diffusers
    layer>.lora_A.weight / .lora_B.weight (to_q/to_k/to_v share A and split B's rows of the fused qkv)."""
    out = {}
    for layer_name, layer in lora_layers(net):
        block, path = layer_name.split(".", 2)[1], layer_name.split(".", 2)[2]
        a, b = layer.adapters[name]["A"].detach(), layer.adapters[name]["B"].detach()
        targets = LORA_LAYERS[path]
        rows = b.shape[0] // len(targets)
        for k, target in enumerate(targets):
            prefix = f"base_model.model.transformer_blocks.{block}.{target}"
            out[f"{prefix}.lora_A.weight"] = a.clone()
            out[f"{prefix}.lora_B.weight"] = b[k * rows:(k + 1) * rows] * layer.scales[name]  # alpha = r: scale 1
    return out


class _FeaturesTaken(Exception):
    """Raised by the feature hook to end a forward pass that was run only for a block's features."""


@contextlib.contextmanager
def block_output(net: nn.Module, block: int, stop: bool):
    """Inside the `with`, every forward of `net` records the image tokens (B, tokens, hidden) that joint block
    `block` outputs in the yielded dict under "h" (a forward hook on the block, not a re-implemented forward); with
    stop=True the forward ends there (call it through `features`)."""
    taken: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        taken["h"] = output[1]  # JointBlock returns (context, x)
        if stop:
            raise _FeaturesTaken

    handle = net.joint_blocks[block].register_forward_hook(hook)
    try:
        yield taken
    finally:
        handle.remove()


def features(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
             block: int) -> torch.Tensor:
    """The image tokens after joint block `block` (the blocks after it do not run)."""
    with block_output(net, block, stop=True) as taken:
        try:
            predict_x0(net, x, sigma, context, pooled)
        except _FeaturesTaken:
            pass
    return taken["h"]


def discriminator_head(hidden: int, seed: int, layers: int = 4) -> nn.Module:
    """The official GAN head: `layers` x [LayerNorm, GELU, Linear], widths falling linearly from `hidden` to 1
    (torch.linspace(hidden, 1, layers + 1) cast to int: 128 -> 96 -> 64 -> 32 -> 1), on the token mean of the fake
    score's block features; comfy.ops layers with torch's default initialisation from `seed`."""
    import comfy.ops
    ops = comfy.ops.disable_weight_init
    widths = torch.linspace(hidden, 1, layers + 1, dtype=torch.int64).tolist()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Sequential(*(nn.Sequential(ops.LayerNorm(a), nn.GELU(), ops.Linear(a, b))
                               for a, b in zip(widths, widths[1:])))
        return torch_default_init(head)
