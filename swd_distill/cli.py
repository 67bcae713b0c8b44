"""The distiller's command line (run from the pack's root; `make retrain-tiny`, `make eval-tiny` and `make ablate-tiny`
call it).

    python -m swd_distill teacher  [--steps N] [--resume]      rectified-flow teacher
    python -m swd_distill samples  [--teacher FILE --clip FILE... --prompts TXT --out DIR] [--per-prompt N] [--cfg C]
                                   a teacher's samples of prompts (default: the tiny teacher's seen captions; cached)
    python -m swd_distill distill  --teacher FILE --dataset DIR --preset NAME --steps N --batch GLOBAL --seed S
                                   --out LORA [--recipe full|mmd] [--parallel ddp|fsdp] [--dtype fp32|bf16|fp64]
                                   [--grad-accum K] [--resume]                   SwD distillation of any model
    python -m swd_distill eval     [--samples N]               the quality table, through real ComfyUI

`student` is an alias of `distill`. Results go to .swd_work/ unless --out says otherwise; writing over a file the
pack ships (models/) takes --replace-shipped. A run whose weights are not finite writes nothing.
Under `torchrun --nproc_per_node N -m swd_distill distill ...` the global batch is split over the processes, whose
gradients torch DDP averages (--parallel ddp) or FSDP2 shards (--parallel fsdp; train.py).
The teacher of `distill` is any file ComfyUI's loaders read (a diffusion model, or a checkpoint); the tiny family's is
the default, with its teacher samples made in .swd_work/ on first use.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
WORK = ROOT / ".swd_work"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

# the allowed range of every number (low, high; None = unbounded); settings not listed are choices or free
RANGES = {
    "steps": (1, None), "warm_steps": (0, None), "batch": (1, None), "rank": (1, 4096), "lr": (0, 1),
    "fake_lr": (0, 1), "weight_decay": (0, None), "clip": (0, None), "fake_updates": (1, 100), "cfg": (1, 100),
    "patch_weight": (0, None), "patch_block": (-1, 1000), "rbf_sigma": (0, None), "huber_c": (0, None),
    "grad_accum": (1, 4096), "guidance": (0, 100),
    "gan": (0, None), "gan_d": (0, None), "seed": (0, 2 ** 62), "checkpoint_every": (1, None),
    "warmup": (0, None), "decay_start": (0, None), "ema": (0, 1), "small_scale_p": (0, 1),
    "threads": (0, 1024), "per_caption": (1, 10_000), "samples": (16, 100_000), "sample_steps": (1, 1000),
}
POSITIVE = {"lr", "fake_lr", "clip", "rbf_sigma"}  # 0 is not allowed either
CHOICES = {"recipe": ("full", "mmd"), "patch": ("linear", "rbf", "rbf-median", "none"), "parallel": ("ddp", "fsdp"),
           "dtype": ("fp32", "bf16", "fp64")}


class UsageError(ValueError):
    """A command-line option that cannot be used; the message names it."""


def _number(name: str, kind):
    option = f"--{name.replace('_', '-')}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} takes {'an integer' if kind is int else 'a number'}, not "
                                             f"{text!r}") from None
        low, high = RANGES.get(name, (None, None))
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{option} must be a finite number, not {text!r}")
        if (low is not None and (value < low or (name in POSITIVE and value <= low))) or \
                (high is not None and value > high):
            bounds = f"{'above' if name in POSITIVE else 'at least'} {low}" + (f" and at most {high}" if high else "")
            raise argparse.ArgumentTypeError(f"{option} must be {bounds}; got {text}")
        return value
    return parse


def _boolean(name: str):
    def parse(text: str) -> bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} takes true or false, not {text!r}")
    return parse


def _schedule(name: str):
    def parse(text: str):
        from swd_sampler.schedule import ScheduleError, parse_scales, parse_sigmas
        try:
            return parse_scales(text) if name == "scales" else parse_sigmas(text)
        except ScheduleError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _add_config(parser: argparse.ArgumentParser, config_cls) -> None:
    for field in dataclasses.fields(config_cls):
        option = f"--{field.name.replace('_', '-')}"
        if field.name == "preset":
            from swd_sampler.schedule import PRESET_NAMES
            parser.add_argument(option, choices=PRESET_NAMES, default=field.default, metavar="NAME",
                                help=f"an SwD preset as SwD LoRA Loader names it: {', '.join(PRESET_NAMES)}")
        elif field.name in ("scales", "sigmas"):
            parser.add_argument(option, type=_schedule(field.name), default=field.default,
                                help="with --preset custom: comma-separated numbers")
        elif field.name in CHOICES:
            parser.add_argument(option, choices=CHOICES[field.name], default=field.default)
        elif type(field.default) is bool:
            parser.add_argument(option, type=_boolean(field.name), default=field.default, metavar="true|false")
        else:
            parser.add_argument(option, type=_number(field.name, type(field.default)), default=field.default)


def _config(args, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _check_out(out: Path, replace_shipped: bool) -> None:
    """Refuse to replace a shipped file without --replace-shipped, and an --out that cannot be written, before any
    training."""
    out = out.resolve()
    if out.is_relative_to(MODELS.resolve()) and out.exists() and not replace_shipped:
        raise UsageError(f"--out {out} is a file the pack ships: add --replace-shipped to replace it, or write "
                         f"elsewhere (the default is {WORK})")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name ending in .safetensors")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: {folder} is not writable")


def _check_batch(batch: int, accum: int = 1) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch % (world * accum):
        what = f"{world} processes" + (f" x --grad-accum {accum}" if accum > 1 else "")
        raise UsageError(f"--batch {batch} does not split over {what}: use a multiple of {world * accum}")


def main(argv=None) -> None:
    from .distill import DistillConfig
    from .teacher import TeacherConfig
    from .tiny import STUDENT_FILE, TEACHER_FILE

    parser = argparse.ArgumentParser(prog="python -m swd_distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("teacher", help="train the tiny teacher")
    _add_config(t, TeacherConfig)
    t.add_argument("--out", type=Path, default=WORK / TEACHER_FILE)
    teacher_file = MODELS / "diffusion_models" / TEACHER_FILE
    s = sub.add_parser("samples", help="make a teacher's samples of prompts (the distillation data)",
                       description="Sample the teacher on every prompt as KSampler does (prompt i: a batch of "
                                   "--per-prompt images with seed --seed + i) into a dataset folder of safetensors "
                                   "shards (swd_distill/samples.py); a folder of the same settings is finished, not "
                                   "redone. Defaults: the tiny teacher on its seen captions, 128 px, into "
                                   ".swd_work/teacher-samples-8x28-cfg3.")
    s.add_argument("--teacher", type=Path, default=teacher_file,
                   help="a diffusion model or checkpoint (safetensors) ComfyUI loads (default: the tiny teacher)")
    s.add_argument("--clip", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                   help="the teacher's text encoder files, their type taken from the teacher: SD3/SD3.5 (clip_l, "
                        "clip_g, t5xxl), FLUX (clip_l, t5xxl), SDXL (clip_l, clip_g); not needed for a checkpoint "
                        "that holds them or for the tiny teacher")
    s.add_argument("--prompts", type=Path, default=None,
                   help="a UTF-8 text file, one prompt per line (blank lines skipped); default: the tiny family's "
                        "seen captions")
    s.add_argument("--out", type=Path, default=None,
                   help="the dataset folder (default for the tiny teacher: .swd_work/teacher-samples-NxSTEPS-cfgC)")
    s.add_argument("--negative", default="", help="the negative prompt (default: empty, as the official recipe)")
    s.add_argument("--steps", type=_number("steps", int), default=28, help="sampling steps")
    s.add_argument("--cfg", type=_number("cfg", float), default=None,
                   help="KSampler's cfg (default 3; 1 for guidance-distilled teachers such as FLUX.1-dev)")
    s.add_argument("--guidance", type=_number("guidance", float), default=3.5,
                   help="guidance-distilled teachers (FLUX.1-dev): the conditioning's guidance, as FluxGuidance "
                        "sets it; other teachers ignore it")
    s.add_argument("--seed", type=_number("seed", int), default=0, help="prompt i is sampled with seed + i")
    s.add_argument("--width", type=_number("width", int), default=None,
                   help="pixels, a multiple of 16 for SD3/FLUX, 8 for SDXL (default 128 tiny, 1024 others)")
    s.add_argument("--height", type=_number("height", int), default=None, help="pixels, as --width")
    s.add_argument("--per-prompt", type=_number("per_prompt", int), default=8, help="images per prompt (1 or more)")
    s.add_argument("--sampler", default="euler", help="a ComfyUI sampler name (KSampler's list)")
    s.add_argument("--scheduler", default="simple", help="a ComfyUI scheduler name (KSampler's list)")
    d = sub.add_parser("distill", aliases=["student"], help="distil the SwD student LoRA from the teacher")
    _add_config(d, DistillConfig)
    d.add_argument("--out", type=Path, default=WORK / STUDENT_FILE)
    d.add_argument("--parallel", choices=CHOICES["parallel"], default="ddp",
                   help="under torchrun: DDP over the adapters (default), or fsdp: FSDP2 shards the base and the "
                        "adapters block by block, for models that do not fit one device")
    d.add_argument("--dtype", choices=CHOICES["dtype"], default=None,
                   help="the base network's dtype (default: bf16 on CUDA, fp32 on the CPU; fp64 for equivalence "
                        "tests); the adapters are fp32 (fp64 with fp64); the LoRA is saved in fp16 (fp64 with fp64)")
    d.add_argument("--checkpointing", type=_boolean("checkpointing"), default=False, metavar="true|false",
                   help="gradient checkpointing of every block (less memory, about a third more time)")
    for p in (d,):
        p.add_argument("--teacher", type=Path, default=teacher_file)
        p.add_argument("--dataset", type=Path, default=None,
                       help="the teacher's samples (a folder `samples` writes; default: made in .swd_work/ on first "
                            "use)")
        p.add_argument("--per-caption", type=_number("per_caption", int), default=8,
                       help="teacher samples per seen caption")
        p.add_argument("--sample-steps", type=_number("sample_steps", int), default=28,
                       help="the teacher's sampling steps")
        p.add_argument("--sample-cfg", type=_number("cfg", float), default=3.0, help="the teacher's cfg")
    e = sub.add_parser("eval", help="print the quality table (runs ComfyUI)")
    e.add_argument("--samples", type=_number("samples", int), default=240, help="images per caption split and row")
    e.add_argument("--student", type=Path, default=None, help="another student LoRA to evaluate (e.g. an ablation)")
    e.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    e.add_argument("--student-only", action="store_true", help="only the SwD student's row (for ablations)")
    for p in (t, s, d):
        p.add_argument("--work", type=Path, default=WORK, help="checkpoint and cache folder")
        p.add_argument("--threads", type=_number("threads", int), default=0, help="torch CPU threads (0: default)")
    for p in (t, d):
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work")
        p.add_argument("--replace-shipped", action="store_true", help="allow --out to replace a file in models/")
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # torchrun stops the other processes with SIGTERM when one fails
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(_stopped(args, "torchrun stopped it")))
    try:
        _run(args)
    except RuntimeError as e:
        if world == 1 or not isinstance(e, torch.distributed.DistError) and "gloo" not in str(e).lower():
            raise
        sys.exit(_stopped(args, f"a collective failed ({str(e).splitlines()[0][:200]})"))
    except KeyboardInterrupt:
        print(f"\nstopped: {args.command} was interrupted; the last checkpoint in {getattr(args, 'work', WORK)} is "
              f"kept: run the same command with --resume to continue.", file=sys.stderr)
        sys.exit(130)
    except (UsageError, ValueError, FileNotFoundError, FloatingPointError) as e:
        parser.exit(2, f"python -m swd_distill {args.command}: error: {e}\n")


def _stopped(args, why: str) -> int:
    rank = os.environ.get("RANK", "0")
    print(f"python -m swd_distill {args.command}: process {rank}: another process of the run stopped or died, so "
          f"this one stops too ({why}); the last checkpoint in {getattr(args, 'work', WORK)} is kept: run the same "
          f"command with --resume (any number of processes) to continue.", file=sys.stderr)
    return 1


def _run(args) -> None:
    from .distill import DistillConfig
    from .teacher import TeacherConfig
    if args.command == "teacher":
        from .teacher import train_teacher
        _check_out(args.out, args.replace_shipped)
        _check_batch(args.batch)
        train_teacher(args.out, _config(args, TeacherConfig), args.work / "teacher", args.resume)
    elif args.command == "samples":
        samples_command(args)
    elif args.command in ("distill", "student"):
        if args.warm_steps > args.steps:
            raise UsageError(f"--warm-steps {args.warm_steps} is more than --steps {args.steps}")
        cfg = _config(args, DistillConfig)
        _check_out(args.out, args.replace_shipped)
        _check_batch(cfg.batch, cfg.grad_accum)
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if cfg.batch_mmd and processes > 1:
            raise UsageError("--batch-mmd pools the features of the whole batch, which the processes split: "
                             "run it in one process, or turn it off")
        def tiny_samples() -> Path:  # the tiny teacher's default dataset, made on first use
            return teacher_samples(args.teacher, args.per_caption, args.sample_steps, args.sample_cfg)
        from .run import distill_files
        distill_files(args.teacher, args.dataset or tiny_samples, args.out, cfg, args.work / args.out.stem,
                      args.resume, args.parallel, args.dtype, args.checkpointing)
    else:
        from .evaluate import main as evaluate
        sys.exit(evaluate(args.samples, args.student, args.json, args.student_only))


def _is_tiny(teacher: Path) -> bool:
    """The `samples` command's default prompts and size are the tiny family's (its shipped teacher file)."""
    from .tiny import TEACHER_FILE
    return teacher.name == TEACHER_FILE or teacher.resolve() == (MODELS / "diffusion_models" / TEACHER_FILE).resolve()


def teacher_samples(teacher: Path, per_caption: int, steps: int, cfg: float, folder: Path | None = None) -> Path:
    """Make (or finish) the tiny teacher's samples of the seen captions (by default in a folder of .swd_work/ named
    after the settings, shared by every run); returns their folder."""
    from .samples import DatasetError, SampleSpec, file_id, is_tiny, load_teacher, make_samples
    from .splits import seen
    try:
        loaded = load_teacher(teacher)  # a wrong file fails here, before any sampling
    except DatasetError:
        loaded = None
    if loaded is None or loaded[1] is not None or not is_tiny(loaded[0]):
        raise UsageError(f"--teacher {teacher} is not the tiny teacher's architecture, whose seen captions these "
                         f"samples are: for another teacher make a dataset with `python -m swd_distill samples "
                         f"--teacher FILE --prompts TXT --out DIR` and pass it as --dataset")
    spec = SampleSpec(teacher=file_id(teacher), captions=tuple(seen()), per_caption=per_caption, steps=steps,
                      cfg=cfg)
    folder = folder or WORK / f"teacher-samples-{per_caption}x{steps}-cfg{cfg:g}"
    return make_samples(teacher, folder, spec, loaded=loaded)


def samples_command(args) -> Path:
    """`samples`: check the options, load the teacher (and --clip), make or finish the dataset folder."""
    from swd_sampler.checks import InputError, split_lines

    from . import samples
    from .splits import seen
    for path, option in ((args.teacher, "--teacher"), *((c, "--clip") for c in args.clip)):
        if not path.is_file():
            raise UsageError(f"{option} {path} does not exist")
    if args.prompts is None:
        if not _is_tiny(args.teacher):
            raise UsageError(f"--prompts is needed for --teacher {args.teacher} (the default, the seen captions, "
                             f"is the tiny teacher's): give a text file with one prompt per line")
        prompts = tuple(seen())
    else:
        try:
            prompts = tuple(line for line in split_lines(args.prompts.read_text(encoding="utf-8"),
                                                         f"--prompts {args.prompts}") if line.strip())
        except (OSError, UnicodeDecodeError, InputError) as e:
            raise UsageError(f"--prompts {args.prompts}: {e}") from None
        if not prompts:
            raise UsageError(f"--prompts {args.prompts} holds no prompt: write one prompt per line")
    if args.out is None and not (args.prompts is None and not args.clip):
        raise UsageError("--out is needed: the folder to write the dataset into (only the tiny teacher's seen "
                         "captions have a default)")
    if args.per_prompt < 1:
        raise UsageError(f"--per-prompt {args.per_prompt} must be at least 1")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and (value < 8 or value % 8):
            raise UsageError(f"--{name} {value} must be a positive multiple of 8 (16 for SD3/FLUX)")
    model, clip = loaded = samples.load_teacher(args.teacher, args.clip)
    tiny = clip is None and samples.is_tiny(model)
    width, height = (args.width or (128 if tiny else 1024)), (args.height or (128 if tiny else 1024))
    multiple = samples.size_multiple(model)
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            raise UsageError(f"--{name} {value} does not fit --teacher {args.teacher.name}: use a multiple of "
                             f"{multiple} (e.g. {max(multiple, round(value / multiple) * multiple)})")
    import comfy.samplers
    for option, value, names in (("--sampler", args.sampler, comfy.samplers.KSampler.SAMPLERS),
                                 ("--scheduler", args.scheduler, comfy.samplers.KSampler.SCHEDULERS)):
        if value not in names:
            raise UsageError(f"{option} {value!r} is not one of ComfyUI's: {', '.join(names)}")
    guided = samples.takes_guidance(model)
    cfg = args.cfg if args.cfg is not None else (1.0 if guided else 3.0)
    spec = samples.SampleSpec(
        teacher=samples.file_id(args.teacher), captions=prompts, per_caption=args.per_prompt, steps=args.steps,
        cfg=cfg, seed=args.seed, width=width, height=height, negative=args.negative,
        guidance=args.guidance if guided else None, sampler=args.sampler, scheduler=args.scheduler,
        clip=tuple(samples.file_id(c) for c in args.clip))
    out = args.out or WORK / f"teacher-samples-{args.per_prompt}x{args.steps}-cfg{cfg:g}"
    samples.make_samples(args.teacher, out, spec, loaded=loaded)
    print(f"{out}: {spec.count} samples of {len(prompts)} prompts", file=sys.stderr)
    return out
