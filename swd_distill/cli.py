"""The distiller's command line (run from the pack's root; `make retrain-tiny` and `make eval-tiny` call it).

    python -m swd_distill teacher  [--steps N] [--resume]     rectified-flow teacher -> models/diffusion_models/
    python -m swd_distill student  [--steps N] [--resume]     SwD distillation -> models/loras/
    python -m swd_distill eval     [--samples N]              the quality table, through real ComfyUI

Under `torchrun --nproc_per_node N -m swd_distill ...` training is data parallel (runner.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
WORK = ROOT / ".swd_work"


def _add_config(parser: argparse.ArgumentParser, config_cls) -> None:
    for field in dataclasses.fields(config_cls):
        kind = type(field.default)
        if kind is bool:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                                default=field.default)
        else:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default)


def _config(args, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def main(argv=None) -> None:
    from .distill import DistillConfig
    from .teacher import TeacherConfig
    from .tiny import STUDENT_FILE, TEACHER_FILE

    parser = argparse.ArgumentParser(prog="python -m swd_distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("teacher", help="train the tiny teacher")
    _add_config(t, TeacherConfig)
    t.add_argument("--out", type=Path, default=MODELS / "diffusion_models" / TEACHER_FILE)
    s = sub.add_parser("student", help="distil the SwD student LoRA from the teacher")
    _add_config(s, DistillConfig)
    s.add_argument("--teacher", type=Path, default=MODELS / "diffusion_models" / TEACHER_FILE)
    s.add_argument("--out", type=Path, default=MODELS / "loras" / STUDENT_FILE)
    e = sub.add_parser("eval", help="print the quality table (runs ComfyUI)")
    e.add_argument("--samples", type=int, default=240)
    e.add_argument("--student", type=Path, default=None, help="another student LoRA to evaluate (e.g. an ablation)")
    e.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    e.add_argument("--student-only", action="store_true", help="only the SwD student's row (for ablations)")
    for p in (t, s):
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work")
        p.add_argument("--work", type=Path, default=WORK, help="checkpoint folder")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.command == "teacher":
        from .teacher import train_teacher
        train_teacher(args.out, _config(args, TeacherConfig), args.work / "teacher", args.resume)
    elif args.command == "student":
        from .distill import distill
        distill(args.teacher, args.out, _config(args, DistillConfig), args.work / args.out.stem, args.resume)
    else:
        from .evaluate import main as evaluate
        sys.exit(evaluate(args.samples, args.student, args.json, args.student_only))
