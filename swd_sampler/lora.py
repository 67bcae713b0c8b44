"""SwD LoRA files: safe reading, key formats, architecture, alpha, key conversion and the preset they were made for.

A LoRA module patches one weight W of shape (out, in) (or (out, in, kh, kw)) of the diffusion model:

    W' = W + strength * scale * (B @ A),   A = lora_A / lora_down: (r, in),  B = lora_B / lora_up: (out, r)
    scale = alpha / r

alpha comes from the file (a per-module `alpha` tensor, kohya), else from a PEFT LoraConfig stored in the file's
metadata (diffusers' `lora_adapter_metadata`) or in an `adapter_config.json` beside it (scale = lora_alpha / r, or
lora_alpha / sqrt(r) with use_rslora; alpha_pattern / rank_pattern per module), else alpha = r (scale 1, PEFT's
convention for the released SwD adapters).

Key formats (module names are diffusers names, e.g. `transformer_blocks.0.attn.to_q`, or the model's own names):
    peft       base_model.model.<module>.lora_A.weight / .lora_B.weight        (the released SwD adapters)
    diffusers  transformer.<module>.lora_A.weight, unet.<module>.lora_A.weight
    kohya      lora_unet_<module with "." -> "_">.lora_down.weight / .lora_up.weight / .alpha
    comfyui    diffusion_model.<module>.lora_A.weight (or lora_down/lora_up)
    plain      <module>.lora_A.weight

This module never imports ComfyUI: the caller gives the model's layer names (`targets`) and gets back a state dict
and a key map in the form `comfy.lora.load_lora` takes.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Mapping

import torch
from safetensors import safe_open

from .errors import SwDError
from .schedule import PRESETS

ADAPTER_CONFIG = "adapter_config.json"
SHOWN = 5  # how many offending keys an error lists

_PREFIXES = (("base_model.model.", "peft"), ("transformer.", "diffusers"), ("unet.", "diffusers"),
             ("diffusion_model.", "comfyui"), ("lora_unet_", "kohya"), ("lora_transformer_", "kohya"))
_PARTS = (("lora_A.weight", "down"), ("lora_down.weight", "down"), ("lora_B.weight", "up"),
          ("lora_up.weight", "up"), ("alpha", "alpha"))


class LoraError(SwDError):
    """A LoRA file that cannot be applied; the message names the file and the fix."""


class NotSafetensorsError(LoraError):
    """The file is not in the safetensors format (for example a pickled PyTorch checkpoint)."""


class CorruptLoraError(LoraError):
    """The file is truncated, damaged, or its tensors do not form LoRA pairs."""


class ArchitectureMismatchError(LoraError):
    """The LoRA was made for another model than the one it is applied to."""


class UnmatchedKeysError(LoraError):
    """Some keys of the file patch no layer of the model (strict mode)."""


@dataclass(frozen=True)
class LoraModule:
    """One low-rank update: down = A (r, in, ...), up = B (out, r, ...); `keys` are the file's keys it came from."""
    name: str
    key_format: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float
    keys: tuple[str, ...]

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in) of the weight it patches, conv kernels flattened into `in`."""
        return self.up.shape[0], math.prod(self.down.shape[1:])


_RELEASED = {("sd3", 128): "the pack's tiny SD3 demo model", ("sd3", 1536): "SD3/SD3.5 Medium",
             ("sd3", 2432): "SD3.5 Large", ("flux", 3072): "FLUX.1",
             ("unet", 2048): "SDXL", ("unet", 768): "SD1.x", ("unet", 1024): "SD2.x"}
_FAMILIES = {"sd3": "SD3/SD3.5 (MMDiT)", "flux": "FLUX.1-architecture", "unet": "SD/SDXL UNet"}
_WIDTH_OF = {"sd3": "hidden size", "flux": "hidden size", "unet": "cross-attention width"}


@dataclass(frozen=True)
class Architecture:
    """A model family ("sd3", "flux" or "unet") and its width: the transformer hidden size for SD3 and FLUX, the
    cross-attention (text context) width for UNets. width None: unknown."""
    family: str
    width: int | None = None

    @property
    def name(self) -> str:
        if (self.family, self.width) in _RELEASED:
            return _RELEASED[self.family, self.width]
        if self.width is None:
            return _FAMILIES[self.family]
        return f"{_FAMILIES[self.family]} with {_WIDTH_OF[self.family]} {self.width}"


@dataclass(frozen=True)
class SwDLora:
    """A parsed LoRA file. `modules` is keyed by module name (format prefix removed; kohya names keep their "_")."""
    path: Path
    display_name: str
    modules: dict[str, LoraModule]
    unrecognised: tuple[str, ...]
    metadata: dict[str, str]
    config: dict | None
    alpha_source: str
    architecture: Architecture | None

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(sorted({m.key_format for m in self.modules.values()}))

    @property
    def key_count(self) -> int:
        return sum(len(m.keys) for m in self.modules.values()) + len(self.unrecognised)

    def preset(self) -> PresetMatch:
        """The SwD preset this file was made for, from its name (display_name, a path in the loras folder), its
        metadata and adapter config, or its architecture."""
        fields = {**{k: v for k, v in (self.config or {}).items() if isinstance(v, str)}, **self.metadata}
        return recognise_preset(self.display_name, fields, self.architecture)


@dataclass(frozen=True)
class Plan:
    """What to hand to `comfy.lora.load_lora(state_dict, to_load)`: state_dict holds `<name>.lora_A.weight`,
    `<name>.lora_B.weight` and `<name>.alpha` for every matched module, to_load maps `<name>` to the caller's target.
    `unmatched` lists the file's keys that patch nothing (empty unless partial loading was allowed)."""
    state_dict: dict[str, torch.Tensor]
    to_load: dict[str, Any]
    unmatched: tuple[str, ...] = ()


# Reading ----------------------------------------------------------------------------------------------------------

_SIGNATURES = ((b"PK\x03\x04", "a zip archive (a PyTorch .pt/.ckpt checkpoint saved with torch.save)"),
               (b"\x80", "a Python pickle (a PyTorch .pt/.ckpt/.bin checkpoint)"),
               (b"GGUF", "a GGUF file"))
_MAX_HEADER = 100 * 1024 * 1024


LORA_ADVICE = ("SwD LoRA Loader only reads .safetensors and never unpickles files, since a pickle can run code. "
               "Download the .safetensors release of the LoRA (the Hugging Face repository's "
               "adapter_model.safetensors) or convert this file in a trusted environment with "
               "safetensors.torch.save_file.")


def _not_safetensors(name: str, what: str, advice: str) -> NotSafetensorsError:
    return NotSafetensorsError(f"{name} is not a safetensors file: it is {what}. {advice}")


def _truncated(name: str, size: int, needed: int) -> CorruptLoraError:
    return CorruptLoraError(
        f"{name} is truncated: it is {size} bytes but its header describes {needed} bytes. The download or copy "
        f"was cut off; download the file again.")


def read_safetensors(path: Path, name: str, advice: str = LORA_ADVICE) -> tuple[dict[str, torch.Tensor],
                                                                               dict[str, str]]:
    """Tensors and metadata of a safetensors file, after checking its layout: 8 bytes little-endian header length N,
    N bytes of JSON {tensor: {dtype, shape, data_offsets}} (so byte 8 is "{"), then the data. Nothing is ever
    unpickled. `advice` ends the message about a file that is not safetensors."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        if head[8:9] != b"{":
            if len(head) < 9:
                raise CorruptLoraError(f"{name} is empty or cut off ({size} bytes); download the file again.")
            what = next((w for sig, w in _SIGNATURES if head.startswith(sig)), "not in the safetensors layout")
            raise _not_safetensors(name, what, advice)
        (n,) = struct.unpack("<Q", head[:8])
        if n > _MAX_HEADER:
            raise _not_safetensors(name, "not in the safetensors layout (its header length is impossible)", advice)
        if 8 + n > size:
            raise _truncated(name, size, 8 + n)
        raw = (head[8:] + f.read(max(n - 1, 0)))[:n]
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        needed = 8 + n + max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CorruptLoraError(f"{name} has a damaged safetensors header ({e}); download the file again.") from None
    if needed > size:
        raise _truncated(name, size, needed)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError / OSError variants
        raise CorruptLoraError(f"{name} could not be read as safetensors ({e}); download the file again.") from None


def read_lora(path: str | Path, display_name: str | None = None) -> SwDLora:
    """Read and parse a LoRA file, with the PEFT config from its metadata or from an adapter_config.json beside it."""
    path = Path(path)
    name = display_name or path.name
    tensors, metadata = read_safetensors(path, name)
    check_finite_weights(tensors, name)
    config, config_source = _peft_config(path, metadata, name)
    parts, unrecognised = _group(tensors)
    modules, alpha_sources = {}, set()
    for (key_format, module), found in parts.items():
        if "down" not in found or "up" not in found:
            unrecognised.extend(k for k, _ in found.values())
            continue
        (down_key, down), (up_key, up) = found["down"], found["up"]
        if down.shape[0] != up.shape[1]:
            raise CorruptLoraError(f"{name}: {down_key} has rank {down.shape[0]} but {up_key} has rank {up.shape[1]}; "
                                   f"the file is damaged. Download it again.")
        if module in modules:
            raise CorruptLoraError(f"{name}: the layer {module} appears twice (as {modules[module].keys[0]} and "
                                   f"{down_key}); keep one copy of the LoRA in the file.")
        alpha, source = _alpha(module, down.shape[0], found.get("alpha"), config, config_source, name)
        alpha_sources.add(source)
        keys = tuple(k for k, _ in found.values())
        modules[module] = LoraModule(module, key_format, down, up, alpha, keys)
    if not modules:
        raise CorruptLoraError(f"{name} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up pairs among its "
                               f"{len(tensors)} tensors); pick a LoRA file.")
    return SwDLora(path, name, modules, tuple(sorted(unrecognised)), metadata, config,
                   ", ".join(sorted(alpha_sources)), detect_architecture(modules.values()))


def check_finite_weights(tensors: Mapping[str, torch.Tensor], name: str) -> None:
    """Refuse NaN or infinite values: applied, they turn every image black or into noise without a word."""
    bad = sorted(k for k, t in tensors.items()
                 if t.is_floating_point() and not torch.isfinite(t if t.element_size() > 1 else t.float()).all())
    if bad:
        raise CorruptLoraError(f"{name}: {len(bad)} of its {len(tensors)} tensors hold NaN or infinite values, e.g. "
                               f"{', '.join(bad[:SHOWN])}; applied, they would make every image black or noise. The "
                               f"file is damaged or comes from a training run that diverged: download it again or use "
                               f"another checkpoint.")


def _group(tensors: Mapping[str, torch.Tensor]):
    """{(key format, module name): {"down"|"up"|"alpha": (key, tensor)}} and the keys that fit no LoRA pattern."""
    parts: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}
    unrecognised = []
    for key, tensor in tensors.items():
        part = next(((suffix, role) for suffix, role in _PARTS if key.endswith("." + suffix)), None)
        if part is None:
            unrecognised.append(key)
            continue
        module = key[:-len(part[0]) - 1]
        key_format = "plain"
        for prefix, fmt in _PREFIXES:
            if module.startswith(prefix):
                module, key_format = module[len(prefix):], fmt
                break
        parts.setdefault((key_format, module), {})[part[1]] = (key, tensor)
    return parts, unrecognised


def _peft_config(path: Path, metadata: Mapping[str, str], name: str) -> tuple[dict | None, str]:
    """The LoraConfig dict from the file's `lora_adapter_metadata` (diffusers; a pipeline's save_lora_weights
    prefixes each field with its component, "transformer.r", "unet.lora_alpha") or from adapter_config.json beside
    the file; None when there is neither."""
    if "lora_adapter_metadata" in metadata:
        try:
            raw = json.loads(metadata["lora_adapter_metadata"])
        except ValueError as e:
            raise CorruptLoraError(f"{name}: its lora_adapter_metadata is not valid JSON ({e}); re-save the "
                                   f"LoRA.") from None
        if any("." in k for k in raw):
            raw = {k.split(".", 1)[1]: v for k, v in raw.items() if k.startswith(("transformer.", "unet."))}
        return raw, "file metadata"
    sidecar = path.parent / ADAPTER_CONFIG
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text()), ADAPTER_CONFIG
        except ValueError as e:
            raise LoraError(f"{sidecar} beside {name} is not valid JSON ({e}); fix or remove it.") from None
    return None, ""


def _pattern_value(patterns: Mapping[str, Any] | None, module: str):
    """PEFT's per-module override: a pattern matches a module name it ends (at a "." boundary) or fully matches."""
    for pattern, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return value
    return None


def _alpha(module: str, rank: int, alpha_entry, config, config_source: str, name: str) -> tuple[float, str]:
    """alpha such that scale = alpha / rank, and where it came from."""
    if alpha_entry is not None:
        return float(alpha_entry[1].float().item()), "alpha tensors in the file"
    if config is None or "lora_alpha" not in config:
        return float(rank), "default (alpha = r, scale 1)"
    r = _pattern_value(config.get("rank_pattern"), module) or config.get("r", rank)
    if int(r) != rank:
        raise LoraError(f"{config_source} of {name} says r = {r} but the file's {module} has rank {rank}: the config "
                        f"belongs to another adapter. Put the matching {ADAPTER_CONFIG} beside the file or remove it.")
    alpha = float(_pattern_value(config.get("alpha_pattern"), module) or config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return scale * rank, f"lora_alpha from {config_source}"


# Architecture ------------------------------------------------------------------------------------------------------

_FAMILY_MARKERS = (("unet", ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "middle_block")),
                   ("flux", ("single_transformer_blocks", "single_blocks", "double_blocks")),
                   ("sd3", ("transformer_blocks", "joint_blocks")))
_WIDTH_LAYERS = {"sd3": ("attn_to_q", "attn_to_k", "attn_to_v", "attn_qkv"),
                 "flux": ("attn_to_q", "attn_to_k", "attn_to_v", "attn_qkv"),
                 "unet": ("attn2_to_k", "attn2_to_v")}


def detect_architecture(modules) -> Architecture | None:
    """Family from the layer names; width from the in-features of a layer whose input is that width (attention
    q/k/v of the transformer stream for SD3/FLUX, cross-attention k/v for UNets). None: no known layer name."""
    modules = list(modules)
    names = [m.name.replace(".", "_") for m in modules]
    for family, markers in _FAMILY_MARKERS:
        if any(marker in n for n in names for marker in markers):
            widths = [m.down.shape[1] for m, n in zip(modules, names) if n.endswith(_WIDTH_LAYERS[family])]
            width = max(set(widths), key=widths.count) if widths else None
            if family == "sd3" and width == 3072:  # FLUX double blocks share SD3's diffusers names; FLUX.1 is wider
                family = "flux"
            return Architecture(family, width)
    return None


def check_architecture(lora: SwDLora, model: Architecture) -> None:
    """Raise ArchitectureMismatchError when the LoRA's family or width differs from the model's."""
    arch = lora.architecture
    if arch is None:
        return
    if arch.family != model.family or (arch.width and model.width and arch.width != model.width):
        raise ArchitectureMismatchError(
            f"{lora.display_name} is a LoRA for {arch.name}, but the model is {model.name}. Load it onto a "
            f"{arch.name} model, or pick the LoRA made for {model.name}.")


# Key conversion ----------------------------------------------------------------------------------------------------

def plan_patches(lora: SwDLora, targets: Mapping[str, tuple[Any, tuple[int, ...]]],
                 allow_partial: bool = False) -> Plan:
    """Match every module to a layer of the model.

    `targets` maps layer names (dotted diffusers or model names, no ".weight") to (target, shape): target is passed
    through to `to_load` untouched; shape is that of the weight (slice) the target patches, (out, in, ...). kohya
    names ("_" for ".") match the target whose name with "." -> "_" equals them. A module whose (out, in) differs
    from its target's shape means another architecture; keys that match no layer raise UnmatchedKeysError unless
    allow_partial.
    """
    underscored = {name.replace(".", "_"): name for name in targets}
    matched, unmatched, wrong_shape = {}, list(lora.unrecognised), []
    for module in lora.modules.values():
        name = module.name if module.key_format != "kohya" else underscored.get(module.name)
        if name not in targets:
            unmatched.extend(module.keys)
            continue
        shape = targets[name][1]
        if module.shape != (shape[0], math.prod(shape[1:])):
            wrong_shape.append(f"{module.name}: LoRA {module.shape[0]}x{module.shape[1]}, model "
                               f"{shape[0]}x{math.prod(shape[1:])}")
        matched[module.name] = (name, module)
    if wrong_shape:
        raise ArchitectureMismatchError(
            f"{lora.display_name} does not fit this model: {len(wrong_shape)} of its layers have other sizes than the "
            f"model's ({'; '.join(wrong_shape[:SHOWN])}). It was made for another model size; pick the LoRA made for "
            f"this model.")
    if unmatched and not allow_partial:
        raise UnmatchedKeysError(
            f"{lora.display_name}: {len(unmatched)} of its {lora.key_count} keys match no layer of this model, e.g. "
            f"{', '.join(sorted(unmatched)[:SHOWN])}. The LoRA may be for another model version, or use key names "
            f"this loader does not know. Set allow_partial to load the {len(matched)} layers that do match.")
    state_dict, to_load = {}, {}
    for key, (name, module) in matched.items():
        state_dict[f"{key}.lora_A.weight"] = module.down
        state_dict[f"{key}.lora_B.weight"] = module.up
        state_dict[f"{key}.alpha"] = torch.tensor(module.alpha)
        to_load[key] = targets[name][0]
    return Plan(state_dict, to_load, tuple(sorted(unmatched)))


# Preset ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PresetMatch:
    """The SwD preset a LoRA was distilled for (None: cannot tell) and how that was decided, in words."""
    preset: str | None
    reason: str


_RELEASE_MODELS = (("flux", Architecture("flux", 3072)), ("sdxl", Architecture("unet", 2048)),
                   ("large", Architecture("sd3", 2432)), ("medium", Architecture("sd3", 1536)),
                   ("tiny", Architecture("sd3", 128)))


def _release_model(repo: str) -> Architecture | None:
    """The model a released SwD LoRA was distilled from, read from its repository name."""
    return next((arch for word, arch in _RELEASE_MODELS if word in repo.lower()), None)


def _releases() -> list[tuple[re.Pattern, str, Architecture | None]]:
    """(pattern of the repository name, its first preset, its model) per released LoRA. "swd-large-4-steps" matches
    "swd_large_4_steps" and "SwD-Large-4steps"; letters or digits may not touch it."""
    out, seen = [], set()
    for preset in PRESETS.values():
        repo = preset.lora.split("/")[-1].lower().replace("_", "-")
        if repo not in seen:
            seen.add(repo)
            body = "-?".join(re.escape(part) for part in repo.split("-"))
            out.append((re.compile(rf"(?<![a-z0-9]){body}(?![a-z0-9])"), preset.name, _release_model(repo)))
    return out


def recognise_preset(lora_name: str, metadata: Mapping[str, Any] | None = None,
                     architecture: Architecture | None = None) -> PresetMatch:
    """The preset of a released SwD LoRA, from (in order) the file name, the folders of its path, the string values
    of its metadata / adapter config, or its architecture: FLUX.1 and SDXL have one SwD release each, SD3.5 Medium and
    Large two each, which the architecture cannot tell apart. A name that points at a release for another model
    family than the file's is not believed. swd-medium-4-steps gives its current schedule, not the 2025 README's."""
    path = PurePath(lora_name.replace("\\", "/"))
    family = architecture.family if architecture else None
    sources = [(path.name, "the file name"),
               *((part, f"the folder name {part!r}") for part in reversed(path.parts[:-1])),
               *((v, f"the metadata field {k!r}") for k, v in (metadata or {}).items() if isinstance(v, str))]
    named_preset = (metadata or {}).get("swd_preset")
    if named_preset in PRESETS:
        return PresetMatch(named_preset, "from the metadata field 'swd_preset'")
    releases = _releases()
    conflicts = []
    for text, where in sources:
        text = re.sub(r"[\s_.]+", "-", text.lower())
        named = [(preset, model) for pattern, preset, model in releases if pattern.search(text)]
        fitting = [preset for preset, model in named if family in (None, model and model.family)]
        conflicts += [preset for preset, model in named if preset not in fitting]
        if len(fitting) == 1:
            return PresetMatch(fitting[0], f"from {where}")
        if len(fitting) > 1:
            return PresetMatch(None, f"{where} names several SwD releases ({', '.join(fitting)}); rename the file "
                                     f"after the one it is, e.g. swd-large-4-steps.safetensors.")
    note = f" (its name points at {', '.join(conflicts)}, a release for another model)" if conflicts else ""
    fitting = [preset for _, preset, model in releases if architecture and model and model.family == family
               and architecture.width in (None, model.width)]
    if len(fitting) == 1:
        return PresetMatch(fitting[0], f"from its architecture ({architecture.name}){note}")
    hint = f" It is a LoRA for {architecture.name}; its SwD presets are: {', '.join(fitting)}." if fitting else ""
    return PresetMatch(None, f"cannot tell which SwD schedule {path.name} was made for{note}.{hint} Rename the file "
                             f"after its Hugging Face repository (e.g. swd-medium-6-steps.safetensors) or choose the "
                             f"preset by hand.")
