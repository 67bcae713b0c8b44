"""The official recipe's data: a teacher's own samples of the training prompts, made through KSampler's code path
(comfy.sample.prepare_noise + comfy.sample.sample) for any model ComfyUI loads, and kept as safetensors shards, so
that distillation learns the teacher's distribution and not another one. Shared by `python -m swd_distill samples`
and the SwD Teacher Samples node; nothing here is ever unpickled.

A dataset folder holds:
- `dataset.json`: what made it: `teacher` ("file-name sha256", or "graph" when made by the node), `clip` (the text
  encoder files, "file-name sha256" each; empty when the teacher file holds them, for the tiny family and in a graph),
  `captions` (the prompts), `negative` (the negative prompt), `per_caption` (images per prompt), `steps`, `cfg`,
  `guidance` (the "guidance" value put on each prompt's conditioning for guidance-distilled models such as FLUX.1-dev,
  as FluxGuidance does; null for other models), `sampler`, `scheduler`, `seed`, `width`, `height` (pixels),
  `shard_prompts` (prompts per shard) and `layout` (2).
- `negative.safetensors`: the negative conditioning, `context` (1, T, D) and `pooled` (1, P) when it has one.
- `shard-NNNNN.safetensors`: shard s holds prompts s*k .. s*k+k-1 (k = shard_prompts = max(1, 64 // per_caption)), all
  images of each prompt in a row: `latents` (n, C, H, W) in ComfyUI's LATENT format (what KSampler returns);
  `context` (n, T, D) when the shard's prompts share T, else one `context.{j}` (T, D) per sample j of the shard;
  `pooled` (n, P) when the conditioning has a pooled_output; the caption of each sample as a JSON list in the metadata
  ("captions").

Seeds: the per_caption images of prompt i (counted over the whole prompt list from 0) are one batch, sampled exactly as
KSampler samples an empty latent of batch_size per_caption with seed (seed + i) mod 2**64: image j of prompt i is image
j of that KSampler batch. They do not depend on the shard size, on the device count or on which shards were made in
which run. Each shard is written to a temporary file and renamed, so an interrupted command-line run continues with
the first missing shard and never reads half a file.

Folders made before layout 2 (no "layout" in dataset.json: shards of 64 samples, sample r of prompt r mod P, shard s
sampled as one batch with seed + s, no negative.safetensors) stay readable.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

SHARD = 64
LAYOUT = 2
MANIFEST = "dataset.json"
NEGATIVE = "negative.safetensors"
GRAPH = "graph"
_SHARD_LIKE = re.compile(r"^shard[-_]?\d+", re.IGNORECASE)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")
_MAKE = "make it with `python -m swd_distill samples` or the SwD Teacher Samples node (save_to)"


class DatasetError(ValueError):
    """A dataset folder or sampling run that cannot be used; the message names the folder or file and the fix."""


@dataclass(frozen=True)
class SampleSpec:
    teacher: str  # "file-name sha256" of the teacher, or "graph"
    captions: tuple[str, ...]
    per_caption: int = 8
    steps: int = 28
    cfg: float = 3.0
    seed: int = 0
    width: int = 128
    height: int = 128
    negative: str = ""
    guidance: float | None = None
    sampler: str = "euler"
    scheduler: str = "simple"
    clip: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.captions) * self.per_caption

    @property
    def shard_prompts(self) -> int:
        return max(1, SHARD // self.per_caption)

    @property
    def shards(self) -> int:
        return -(-len(self.captions) // self.shard_prompts)

    def prompts_of(self, shard: int) -> range:
        """Indices of the prompts shard `shard` holds."""
        k = self.shard_prompts
        return range(shard * k, min((shard + 1) * k, len(self.captions)))

    def manifest(self) -> dict:
        return {**json.loads(json.dumps(asdict(self))), "shard_prompts": self.shard_prompts, "layout": LAYOUT}


def file_id(path: Path) -> str:
    """"file-name sha256" of a file (read in blocks: teachers can be tens of GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return f"{path.name} {digest.hexdigest()}"


# Sampling (KSampler's code path) ------------------------------------------------------------------------------------

def encode_prompts(clip, prompts) -> list:
    """CLIPTextEncode's CONDITIONING of each prompt: clip.tokenize, then clip.encode_from_tokens_scheduled."""
    return [clip.encode_from_tokens_scheduled(clip.tokenize(prompt)) for prompt in prompts]


def takes_guidance(model) -> bool:
    """Guidance-distilled models (FLUX.1-dev: guidance_embed) read a "guidance" value from the conditioning."""
    return bool(model.model.model_config.unet_config.get("guidance_embed"))


def with_guidance(conditioning: list, guidance: float) -> list:
    """The conditioning with "guidance" set on every entry, as ComfyUI's FluxGuidance node sets it."""
    import node_helpers
    return node_helpers.conditioning_set_values(conditioning, {"guidance": guidance})


def size_multiple(model) -> int:
    """Image sides must be multiples of this: the latent's downscale (8) times the network's patch size (2 for SD3 and
    FLUX, 1 for UNets)."""
    patch = getattr(model.get_model_object("diffusion_model"), "patch_size", 1)
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    return model.get_model_object("latent_format").spacial_downscale_ratio * patch


def prompt_seed(seed: int, prompt: int) -> int:
    return (seed + prompt) % 2 ** 64


def sample_prompts(model, positives: list, negative: list, width: int, height: int, steps: int, cfg: float,
                   sampler_name: str, scheduler: str, seed: int, per_prompt: int, first: int = 0,
                   captions=None, on_batch=None) -> torch.Tensor:
    """LATENT samples (len(positives) * per_prompt, C, height/8, width/8) of a ComfyUI MODEL (ModelPatcher): for each
    positive CONDITIONING (one per prompt; `first` is the index of positives[0] in the whole prompt list), exactly what
    KSampler gives for an empty latent of batch_size per_prompt at width x height with that conditioning, `negative`,
    steps, cfg, sampler_name, scheduler and the seed prompt_seed(seed, first + i). `on_batch(i)` runs after prompt i's
    batch (progress, interruption). Non-finite samples raise DatasetError naming the prompt."""
    import comfy.model_management
    import comfy.sample
    latent_format = model.get_model_object("latent_format")
    if latent_format.latent_dimensions != 2:
        raise DatasetError("teacher samples are made for image models (latents (B, C, H, W)); this model's latents "
                           f"have {latent_format.latent_dimensions} spatial dimensions")
    ratio = latent_format.spacial_downscale_ratio
    out = []
    for i, positive in enumerate(positives, start=first):
        latent = torch.zeros([per_prompt, latent_format.latent_channels, height // ratio, width // ratio],
                             device=comfy.model_management.intermediate_device(),
                             dtype=comfy.model_management.intermediate_dtype())
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        noise_seed = prompt_seed(seed, i)
        noise = comfy.sample.prepare_noise(latent, noise_seed)
        samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                      disable_pbar=True, seed=noise_seed)
        if not torch.isfinite(samples).all():
            name = f" ({captions[i - first]!r})" if captions is not None else ""
            raise DatasetError(f"the model gave NaN or inf values for prompt {i + 1}{name} at seed {noise_seed}: "
                               f"check the model file and its weight dtype (fp16 can overflow: try bf16 or default)")
        out.append(samples)
        if on_batch is not None:
            on_batch(i)
    return torch.cat(out)


# Writing ------------------------------------------------------------------------------------------------------------

def start_dataset(folder: Path, spec: SampleSpec, negative: list | None, resume: bool = True) -> list[int]:
    """Prepare `folder` for `spec` (a new or empty folder, or one made with the same settings) and write its
    dataset.json and negative.safetensors; returns the shards still to make (all of them unless `resume`). A folder of
    other settings, or a non-empty folder that is not a dataset, is refused."""
    manifest = folder / MANIFEST
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder} is a file, not a folder: give a folder name for the dataset")
    if manifest.exists():
        found = _read_manifest(folder)
        wanted = spec.manifest()
        differing = sorted(k for k in (found.keys() | wanted.keys()) - {"layout", "shard_prompts"}
                           if found.get(k) != wanted.get(k))
        if differing:
            raise DatasetError(f"{folder} holds samples made with other settings ({', '.join(differing)} differ): "
                               f"choose another folder or delete this one")
        if found["layout"] != LAYOUT:
            done = all((folder / name).exists() for name, _ in _shard_rows(found))
            if done and resume:
                return []
            raise DatasetError(f"{folder} was made by an earlier version of the pack (one batch of 64 per shard) and "
                               f"cannot be {'finished' if resume else 'rewritten'} in the current layout: delete it "
                               f"and run again")
    elif folder.exists() and any(p.name != NEGATIVE for p in folder.iterdir()):
        raise DatasetError(f"{folder} is not empty and is not a dataset folder (no {MANIFEST}): choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    if negative is not None:
        context, extra = _one_entry(negative, "the negative conditioning")
        tensors = {"context": context}
        if extra.get("pooled_output") is not None:
            tensors["pooled"] = extra["pooled_output"]
        _save(folder / NEGATIVE, tensors, {})
    if not manifest.exists():
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(spec.manifest(), indent=1))
        os.replace(tmp, manifest)
    return [s for s in range(spec.shards) if not resume or not (folder / _shard_name(s)).exists()]


def write_shard(folder: Path, spec: SampleSpec, shard: int, latents: torch.Tensor, positives: list) -> Path:
    """Write shard `shard` of `spec`: `latents` (n, C, H, W) of its prompts (spec.prompts_of(shard)) in order, and
    `positives`, one CONDITIONING per prompt of the shard."""
    prompts = spec.prompts_of(shard)
    if len(positives) != len(prompts) or len(latents) != len(prompts) * spec.per_caption:
        raise ValueError(f"shard {shard} holds {len(prompts)} prompts x {spec.per_caption} images; got "
                         f"{len(positives)} conditionings and {len(latents)} latents")
    entries = [_one_entry(c, f"the conditioning of prompt {i + 1}") for i, c in zip(prompts, positives)]
    contexts = [context for context, _ in entries for _ in range(spec.per_caption)]
    tensors = {"latents": latents}
    if len({tuple(c.shape) for c in contexts}) == 1:
        tensors["context"] = torch.cat(contexts)
    else:
        tensors.update({f"context.{j}": c[0].clone() for j, c in enumerate(contexts)})  # images of a prompt
    pooled = [extra.get("pooled_output") for _, extra in entries]
    if any(p is not None for p in pooled):
        if any(p is None for p in pooled):
            raise DatasetError("some prompts' conditionings have a pooled_output and some not: encode all prompts "
                               "with the same CLIP")
        tensors["pooled"] = torch.cat([p for p in pooled for _ in range(spec.per_caption)])
    captions = [spec.captions[i] for i in prompts for _ in range(spec.per_caption)]
    path = folder / _shard_name(shard)
    _save(path, tensors, {"captions": json.dumps(captions)})
    return path


def _one_entry(conditioning: list, what: str) -> tuple[torch.Tensor, dict]:
    """(context (1, T, D), dict) of a CONDITIONING of one entry that the shards can hold."""
    if len(conditioning) != 1:
        raise DatasetError(f"{what} has {len(conditioning)} entries (scheduled CLIP hooks?); the dataset holds one "
                           f"per prompt: remove the CLIP hooks, or leave save_to empty and use the outputs")
    context, extra = conditioning[0]
    other = sorted(k for k, v in extra.items() if v is not None and k not in ("pooled_output", "guidance"))
    if other or context.ndim != 3 or context.shape[0] != 1:
        raise DatasetError(f"{what} carries {', '.join(other) or f'a text tensor of shape {tuple(context.shape)}'}, "
                           f"which the dataset's shards do not hold (context (1, T, D) and pooled_output only): leave "
                           f"save_to empty and use the outputs")
    return context, extra


def _save(path: Path, tensors: dict, metadata: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


# Reading ------------------------------------------------------------------------------------------------------------

def load_dataset(folder: Path) -> tuple[torch.Tensor, list, list[str]]:
    """(latents (N, C, H, W) in ComfyUI's LATENT format, one conditioning entry per latent
    [context (1, T, D), {"pooled_output": (1, P)} (when stored), "guidance": g (when the samples were made with it)],
    captions) of a complete dataset folder. `[entry]` is the CONDITIONING the sample was made with."""
    manifest, shards = _read(Path(folder))
    extra = {} if manifest.get("guidance") is None else {"guidance": manifest["guidance"]}
    latents, entries, captions = [], [], []
    for tensors, shard_captions in shards:
        n = len(tensors["latents"])
        for j in range(n):
            context = tensors["context"][j:j + 1] if "context" in tensors else tensors[f"context.{j}"][None]
            pooled = {"pooled_output": tensors["pooled"][j:j + 1]} if "pooled" in tensors else {}
            entries.append([context, {**pooled, **extra}])
        latents.append(tensors["latents"])
        captions += shard_captions
    return torch.cat(latents), entries, captions


def load_samples(folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(latents (N, C, H, W) in ComfyUI's LATENT format, context (N, T, D), pooled (N, P), captions) of a complete
    dataset folder whose samples all share T and have a pooled output (the tiny family's)."""
    folder = Path(folder)
    _, shards = _read(folder)
    if any("context" not in t or "pooled" not in t for t, _ in shards) or \
            len({tuple(t["context"].shape[1:]) for t, _ in shards}) != 1:
        raise DatasetError(f"{folder} holds conditionings of different lengths or without a pooled output: read it "
                           f"with load_dataset")
    return (*(torch.cat([t[k] for t, _ in shards]) for k in ("latents", "context", "pooled")),
            [c for _, captions in shards for c in captions])


def _read(folder: Path) -> tuple[dict, list[tuple[dict, list[str]]]]:
    """(manifest, [(tensors, captions) of each shard]) of a complete, valid dataset folder."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} {'is not a folder' if folder.exists() else 'does not exist'}: give a dataset "
                           f"folder ({_MAKE})")
    manifest = _read_manifest(folder)
    rows = _shard_rows(manifest)
    expected = {name for name, _ in rows}
    for path in sorted(folder.iterdir()):
        if _SHARD_LIKE.match(path.name) and path.name not in expected and not path.name.endswith(".tmp"):
            kind = "a pickle-format file, which is never loaded" if path.suffix.lower() in _PICKLE_SUFFIXES else \
                "not one of its shards"
            raise DatasetError(f"{path} is {kind} ({MANIFEST} lists shard-00000 .. {_shard_name(len(rows) - 1)}): "
                               f"remove it from the dataset folder")
    shards, shape = [], None
    for name, captions in rows:
        path = folder / name
        if not path.exists():
            raise DatasetError(f"{folder} is incomplete ({name} is missing): run `python -m swd_distill samples` "
                               f"again with the same settings to finish it (or the node again)")
        tensors, stored = _read_shard(path)
        if stored != captions:
            raise DatasetError(f"{path} holds other captions than {MANIFEST} lists for it: it belongs to another "
                               f"dataset; delete it and run the samples command again to remake it")
        latents = tensors.get("latents")
        if latents is None or latents.ndim != 4 or len(latents) != len(captions):
            raise DatasetError(f"{path} has no latents (n, C, H, W) of its {len(captions)} samples: delete it and run "
                               f"the samples command again to remake it")
        if shape is not None and tuple(latents.shape[1:]) != shape:
            raise DatasetError(f"{path} holds latents of shape {tuple(latents.shape[1:])}, the other shards "
                               f"{shape}: it belongs to another dataset; delete it and remake it")
        shape = tuple(latents.shape[1:])
        bad = (~torch.isfinite(latents.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad:
            raise DatasetError(f"{path}: latent {bad[0]} (and {len(bad) - 1} more) holds NaN or inf values: delete "
                               f"this shard and run the samples command again to remake it")
        if "context" not in tensors and any(f"context.{j}" not in tensors for j in range(len(captions))):
            raise DatasetError(f"{path} lacks the conditioning (context) of its samples: delete it and remake it")
        shards.append((tensors, captions))
    return manifest, shards


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES]
        hint = (f" It holds {pickles[0]}: ComfyUI's Save Training Dataset writes pickles, which this pack never "
                f"loads; connect Make/Load Training Dataset's outputs to the node instead, or") if pickles else ""
        raise DatasetError(f"{folder} is not a dataset folder (no {MANIFEST}).{hint} {_MAKE}")
    try:
        manifest = json.loads(path.read_text())
        spec = SampleSpec(**{k: tuple(v) if k in ("captions", "clip") else v for k, v in manifest.items()
                             if k not in ("layout", "shard_prompts")})
        if not spec.captions or spec.per_caption < 1 or manifest.get("shard_prompts", 1) < 1:
            raise ValueError("no captions, or counts below 1")
    except (ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path} is not a dataset description this pack wrote ({e}): {_MAKE} again") from None
    return {**spec.manifest(), "layout": manifest.get("layout", 1),
            "shard_prompts": manifest.get("shard_prompts", spec.shard_prompts)}


def _shard_rows(manifest: dict) -> list[tuple[str, list[str]]]:
    """(file name, caption of each sample) of every shard the manifest promises."""
    captions, per = manifest["captions"], manifest["per_caption"]
    if manifest["layout"] == LAYOUT:
        k = manifest["shard_prompts"]
        return [(_shard_name(s), [c for c in captions[s * k:(s + 1) * k] for _ in range(per)])
                for s in range(-(-len(captions) // k))]
    count = len(captions) * per  # layout 1: sample r is caption r mod len(captions)
    return [(_shard_name(s), [captions[r % len(captions)] for r in range(s * SHARD, min((s + 1) * SHARD, count))])
            for s in range(-(-count // SHARD))]


def _read_shard(path: Path) -> tuple[dict, list[str]]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head == b"PK\x03\x04":
        raise DatasetError(f"{path} is a pickle (torch.save) file named like a shard; pickles are never loaded: "
                           f"delete it and run the samples command again to remake it")
    try:
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            captions = json.loads((f.metadata() or {}).get("captions", "null"))
    except (SafetensorError, OSError, ValueError) as e:
        raise DatasetError(f"{path} is not a readable safetensors file ({e}): delete it and run the samples command "
                           f"again to remake it") from None
    if not isinstance(captions, list):
        raise DatasetError(f"{path} has no captions in its metadata: it was not written by this pack; delete it")
    return tensors, captions


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.safetensors"


# The command line (`python -m swd_distill samples`) -----------------------------------------------------------------

CLIP_TYPES = {"sd3": "SD3", "flux": "FLUX", "sdxl": "STABLE_DIFFUSION"}


def model_family(model) -> str | None:
    """"sd3", "flux", "sdxl" or None (another model ComfyUI knows) of a ModelPatcher."""
    import comfy.model_base
    base = model.model
    for family, cls in (("flux", comfy.model_base.Flux), ("sd3", comfy.model_base.SD3),
                        ("sdxl", comfy.model_base.SDXL)):
        if isinstance(base, cls):
            return family
    return None


def is_tiny(model) -> bool:
    """The pack's tiny teacher: an SD3 MMDiT reading the tiny encoder's 24-wide caption tokens."""
    from swd_sampler.tiny import CONTEXT_DIM
    dm = model.get_model_object("diffusion_model")
    return model_family(model) == "sd3" and getattr(dm.context_embedder, "in_features", None) == CONTEXT_DIM


def load_teacher(teacher: Path, clip_files=()) -> tuple[object, object | None]:
    """(ModelPatcher, CLIP or None) of a diffusion-model or checkpoint file (safetensors only, read through the
    distiller's validator) and its text encoder files. The CLIP type of `clip_files` comes from the teacher's family:
    SD3/SD3.5 -> sd3 (clip-l, clip-g, t5 in any subset ComfyUI accepts), FLUX -> flux (clip-l, t5), SDXL ->
    stable_diffusion (clip-l + clip-g: ComfyUI recognises SDXL from the pair). Without clip_files a checkpoint's own
    text encoders are used; the tiny teacher needs none (its encoder is swd_sampler.tiny)."""
    from .model import import_comfy
    from .runner import read_weights
    weights, metadata = read_weights(teacher, f"--teacher {teacher}")
    import_comfy()
    import comfy.sd
    import comfy.utils
    clip = None
    try:
        model = comfy.sd.load_diffusion_model_state_dict(weights, metadata=metadata)
        if model is None:
            model, clip = (comfy.sd.load_state_dict_guess_config(weights, output_vae=False,
                                                                 output_clip=not clip_files, metadata=metadata)
                           or (None, None))[:2]
    except Exception as e:  # ComfyUI's loaders raise many kinds for files they do not recognise
        raise DatasetError(f"--teacher {teacher} is not a diffusion model or checkpoint ComfyUI recognises ({e})") \
            from None
    if model is None:
        raise DatasetError(f"--teacher {teacher} is not a diffusion model or checkpoint ComfyUI recognises")
    if clip_files:
        family = model_family(model)
        if family is None:
            raise DatasetError(f"--clip: the text encoder type is guessed for SD3/SD3.5, FLUX.1 and SDXL teachers "
                               f"only, and --teacher {teacher} is {type(model.model).__name__}: use the SwD Teacher "
                               f"Samples node with ComfyUI's CLIP loader of that model")
        state_dicts = []
        for path in clip_files:
            sd, meta = read_weights(Path(path), f"--clip {path}")
            state_dicts.append(comfy.utils.convert_old_quants(sd, model_prefix="", metadata=meta)[0])
        try:
            clip = comfy.sd.load_text_encoder_state_dicts(
                state_dicts, clip_type=getattr(comfy.sd.CLIPType, CLIP_TYPES[family]))
        except Exception as e:
            raise DatasetError(f"--clip {' '.join(map(str, clip_files))}: not text encoders ComfyUI can use for a "
                               f"{family} model ({e})") from None
    return model, clip


def make_samples(teacher: Path, out: Path, spec: SampleSpec, progress: bool = True, clip_files=(),
                 loaded=None) -> Path:
    """Sample what `spec` asks for into `out` (missing shards only) with the teacher file (and text encoder files;
    see load_teacher, or `loaded` = its result); returns `out`. The tiny teacher's prompts are encoded with the tiny
    encoder; guidance-distilled teachers get spec.guidance on each prompt's conditioning."""
    from tqdm import tqdm
    model, clip = loaded or load_teacher(teacher, clip_files)
    import comfy.model_management
    if clip is None and not is_tiny(model):
        raise DatasetError(f"--clip is needed: --teacher {teacher} holds no text encoder; give the model's text "
                           f"encoder files (e.g. clip_l, clip_g and t5xxl for SD3.5)")
    if clip is None:
        from swd_sampler import tiny
        for n, caption in enumerate(spec.captions):  # all of them before any sampling: it costs nothing here
            try:
                tiny.parse_caption(caption)
            except tiny.CaptionError as e:
                raise DatasetError(f"prompt {n + 1} ({caption!r}) is not a caption of the tiny teacher: {e}") \
                    from None

        def encode(prompts):
            return [[[c, {"pooled_output": p}]] for c, p in map(tiny.encode_text, prompts)]
    else:
        def encode(prompts):
            return encode_prompts(clip, prompts)
    negative = encode([spec.negative])[0]
    missing = start_dataset(out, spec, negative)
    todo = sum(len(spec.prompts_of(s)) for s in missing)
    bar = tqdm(total=len(spec.captions), initial=len(spec.captions) - todo, desc="teacher samples", unit="prompt",
               disable=not progress or not missing)
    for s in missing:
        prompts = spec.prompts_of(s)
        captions = [spec.captions[i] for i in prompts]
        positives = encode(captions)
        if spec.guidance is not None:
            positives = [with_guidance(p, spec.guidance) for p in positives]
        latents = sample_prompts(model, positives, negative, spec.width, spec.height, spec.steps, spec.cfg,
                                 spec.sampler, spec.scheduler, spec.seed, spec.per_caption, first=prompts.start,
                                 captions=captions, on_batch=lambda i: bar.update())
        write_shard(out, spec, s, latents, positives)
        comfy.model_management.soft_empty_cache()
    bar.close()
    return out
