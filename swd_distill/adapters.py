"""LoRA adapters on a ComfyUI diffusion model, named like the released SwD LoRAs.

One frozen base network carries several named adapters ("student", "fake"); which one a forward pass uses is chosen
per call with `Adapters.use(name)` (None: the base alone, i.e. the teacher). A layer adapted here is ComfyUI's own
linear layer (`comfy.ops`), wrapped: y = base(x) + sum over its slices k of (B_k A_k x) placed in slice k's output rows.
A fused layer (SD3's and FLUX's q/k/v in one `qkv` weight, FLUX's single-block `linear1`) gets one adapter per slice,
so each slice exports under its own diffusers name (`to_q`, `to_k`, `to_v`), as in the released files.

Which layers: the released adapters' PEFT targets, matched by the suffix of the diffusers module name: to_q, to_k,
to_v, to_out.0, ff.net.0.proj, ff.net.2 (and ff_context.*) for SD3/SD3.5 (attn2 of MMDiT-X included) and SDXL; FLUX's
release also adapts proj_out (single blocks and final) and context_embedder. The diffusers <-> ComfyUI names come from
ComfyUI's own maps (comfy.utils.mmdit_to_diffusers / flux_to_diffusers / unet_to_diffusers).

Export (`Adapters.peft_state_dict`): `base_model.model.<diffusers name>.lora_A.weight` (r, in) and `.lora_B.weight`
(out, r), alpha = rank (scale 1), PEFT's layout, as the released SwD LoRAs; the adapters are fp32 whatever the base's
dtype. Initialisation as PEFT's default: A ~ kaiming-uniform(a=sqrt 5) i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

FAMILIES = ("sd3", "flux", "sdxl")
_COMMON = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")
TARGET_SUFFIXES = {"sd3": _COMMON, "sdxl": _COMMON, "flux": (*_COMMON, "proj_out", "context_embedder")}


class AdapterError(ValueError):
    """A LoRA to continue from does not fit the model; the message names it."""


def family_of(base_model) -> str:
    """"sd3", "flux" or "sdxl" (any UNet with cross-attention) of a ComfyUI BaseModel."""
    import comfy.model_base
    if isinstance(base_model, comfy.model_base.Flux):
        return "flux"
    if isinstance(base_model, comfy.model_base.SD3):
        return "sd3"
    config = base_model.model_config.unet_config
    if "num_res_blocks" in config and config.get("context_dim"):
        return "sdxl"
    raise AdapterError(f"SwD distillation handles SD3/SD3.5, FLUX.1 and SDXL-type UNets; this model is "
                       f"{type(base_model).__name__}")


def diffusers_targets(base_model, diffusion_model: nn.Module) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """{diffusers module name: (ComfyUI module path in the diffusion model, (first output row, rows) of a fused
    layer's slice or None)} of every layer the family's SwD LoRA adapts that this model has."""
    import comfy.utils
    family = family_of(base_model)
    config = base_model.model_config.unet_config
    if family == "sd3":
        names = comfy.utils.mmdit_to_diffusers(config)
    elif family == "flux":
        names = comfy.utils.flux_to_diffusers(config)
    else:
        names = comfy.utils.unet_to_diffusers(config)
    modules = dict(diffusion_model.named_modules())
    out = {}
    for name, target in names.items():
        if not name.endswith(".weight"):
            continue
        module_name = name[:-len(".weight")]
        if not any(module_name == s or module_name.endswith("." + s) for s in TARGET_SUFFIXES[family]):
            continue
        if isinstance(target, str):
            key, part = target, None
        elif target[1] is None or target[1][0] != 0:
            continue  # a weight stored in another layout (norms), never a LoRA target
        else:
            key, part = target
        path = key[:-len(".weight")]
        layer = modules.get(path)
        if not isinstance(layer, (nn.Linear, LoRALinear)):
            continue
        out[module_name] = (path, None if part is None else (part[1], part[2]))
    return dict(sorted(out.items()))


class LoRALinear(nn.Module):
    """A frozen linear layer with named adapters, each a list of (slice, A, B); `owner.active` picks one per call."""

    def __init__(self, base: nn.Module, owner: "Adapters"):
        super().__init__()
        self.base = base
        self.owner = [owner]  # a list: not a submodule
        self.adapters = nn.ModuleDict()
        self.slices: dict[str, list[tuple[int, int]]] = {}

    def add(self, name: str, rows: tuple[int, int] | None, rank: int, generator: torch.Generator) -> nn.ParameterDict:
        first, count = rows if rows is not None else (0, self.base.out_features)
        bound = 1 / math.sqrt(self.base.in_features)
        pair = nn.ParameterDict({
            "A": nn.Parameter(torch.empty(rank, self.base.in_features).uniform_(-bound, bound, generator=generator)),
            "B": nn.Parameter(torch.zeros(count, rank))})
        if name not in self.adapters:
            self.adapters[name] = nn.ModuleList()
            self.slices[name] = []
        self.adapters[name].append(pair)
        self.slices[name].append((first, count))
        return pair

    def forward(self, x):
        y = self.base(x)
        name = self.owner[0].active
        if name is None or name not in self.adapters:
            return y
        parts = [(first, count, (x.to(pair["A"].dtype) @ pair["A"].t()) @ pair["B"].t())
                 for (first, count), pair in zip(self.slices[name], self.adapters[name])]
        if len(parts) == 1 and parts[0][1] == y.shape[-1]:
            return y + parts[0][2].to(y.dtype)
        delta = torch.zeros(*y.shape[:-1], y.shape[-1], dtype=parts[0][2].dtype, device=y.device)
        for first, count, d in parts:
            delta[..., first:first + count] += d
        return y + delta.to(y.dtype)


class Adapters:
    """The named adapters of one diffusion model (built by `attach`)."""

    def __init__(self, diffusion_model: nn.Module, targets: dict[str, tuple[str, tuple[int, int] | None]]):
        self.model = diffusion_model
        self.targets = targets
        self.active: str | None = None
        self.params: dict[str, dict[str, nn.ParameterDict]] = {}  # name -> diffusers module -> {A, B}
        for path in sorted({path for path, _ in targets.values()}):
            parent_path, _, attr = path.rpartition(".")
            parent = diffusion_model.get_submodule(parent_path) if parent_path else diffusion_model
            layer = getattr(parent, attr)
            if not isinstance(layer, LoRALinear):
                setattr(parent, attr, LoRALinear(layer, self))

    def add(self, name: str, rank: int, seed: int, dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
        """A new adapter `name` on every target (PEFT's initialisation from `seed`, drawn in fp32, kept in `dtype`:
        fp32, or fp64 for equivalence tests); returns its parameters."""
        generator = torch.Generator().manual_seed(seed)
        self.params[name] = {}
        for module, (path, rows) in self.targets.items():
            layer = self.model.get_submodule(path)
            device = layer.base.weight.device
            pair = layer.add(name, rows, rank, generator)
            self.params[name][module] = pair.to(device, dtype)
        return self.parameters(name)

    def parameters(self, name: str) -> list[nn.Parameter]:
        return [p for pair in self.params[name].values() for p in (pair["A"], pair["B"])]

    @contextlib.contextmanager
    def use(self, name: str | None):
        """Forward passes inside run with adapter `name` (None: the base network, the teacher)."""
        previous, self.active = self.active, name
        try:
            yield
        finally:
            self.active = previous

    def peft_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter `name` under the released files' PEFT keys (fp32 copies on the CPU)."""
        out = {}
        for module, pair in self.params[name].items():
            out[f"base_model.model.{module}.lora_A.weight"] = pair["A"].detach().float().cpu().clone()
            out[f"base_model.model.{module}.lora_B.weight"] = pair["B"].detach().float().cpu().clone()
        return out

    def load_peft(self, name: str, weights: dict[str, torch.Tensor], what: str) -> None:
        """Start adapter `name` from a LoRA in the PEFT form `peft_state_dict` writes (e.g. a released SwD LoRA or
        an earlier run): every module must be there with this rank and shape, else one error naming `what`."""
        mine = self.peft_state_dict(name)
        missing = sorted(mine.keys() - weights.keys())
        wrong = sorted(k for k in mine.keys() & weights.keys() if weights[k].shape != mine[k].shape)
        if missing or wrong:
            example = (wrong or missing)[0]
            detail = (f"{example} is {tuple(weights[example].shape)} there, {tuple(mine[example].shape)} here"
                      if wrong else f"e.g. {example} is missing")
            raise AdapterError(f"{what} does not fit this model and rank: {len(missing)} of its {len(mine)} LoRA "
                               f"tensors are missing and {len(wrong)} have another shape ({detail}); give a LoRA "
                               f"distilled from this model with the same rank, or none")
        with torch.no_grad():
            for module, pair in self.params[name].items():
                pair["A"].copy_(weights[f"base_model.model.{module}.lora_A.weight"])
                pair["B"].copy_(weights[f"base_model.model.{module}.lora_B.weight"])
