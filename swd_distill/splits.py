"""The tiny family's caption splits (480 combinations, TINY_DATA.md):

- held-out: a fixed, seeded 10 % (48 captions), listed in `heldout.json`; never used to make distillation data, so
  the evaluation's held-out rows measure captions the student never saw;
- seen: the other 432, the captions distillation data is made of;
- validation: a fixed, seeded 48 of the seen captions, on which cfg, patch kernel and recipe are chosen (the held-out
  captions only report).
"""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import numpy as np

from swd_sampler.tiny_captions import ATTRIBUTES, GRAMMAR, parse_caption

from .scenes import Scene

HELDOUT_FILE = Path(__file__).with_name("heldout.json")
HELDOUT_SEED, VALIDATION_SEED, SPLIT_SIZE = 16, 17, 48


def all_captions() -> list[str]:
    """The 480 captions in ATTRIBUTES order (texture varies slowest)."""
    return [GRAMMAR.format(**dict(zip(ATTRIBUTES, values))) for values in itertools.product(*ATTRIBUTES.values())]


def make_heldout() -> list[str]:
    """How heldout.json was made: the first 48 of a permutation of all captions seeded with HELDOUT_SEED."""
    captions = all_captions()
    return [captions[i] for i in np.random.default_rng(HELDOUT_SEED).permutation(len(captions))[:SPLIT_SIZE]]


@functools.cache
def heldout() -> tuple[str, ...]:
    return tuple(json.loads(HELDOUT_FILE.read_text(encoding="utf-8")))


def seen() -> list[str]:
    excluded = set(heldout())
    return [c for c in all_captions() if c not in excluded]


def validation() -> list[str]:
    captions = seen()
    return [captions[i] for i in np.random.default_rng(VALIDATION_SEED).permutation(len(captions))[:SPLIT_SIZE]]


def labels_of(captions: list[str]) -> np.ndarray:
    """(N, 5) class indices of full captions (scenes.Scene.labels)."""
    return np.array([Scene(**parse_caption(c)).labels() for c in captions], dtype=np.int64)
