"""Training batches: scenes rendered on the fly from (seed, step, rank), so a run is reproducible, resumable at any
step and never repeats a batch; latents in model space (tiny.image_to_model)."""
from __future__ import annotations

import numpy as np
import torch

from .scenes import make_dataset
from .tiny import image_to_model, label_tokens

UNCOND_P, SLOT_DROP_P = 0.1, 0.05  # caption dropout (classifier-free guidance) and per-attribute dropout


def batch(seed: int, step: int, rank: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (size, 16, 16, 16), labels (size, 5)) of the scenes of this step and rank."""
    images, labels = make_dataset(size, seed=(seed * 1_000_003 + step) * 64 + rank)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return image_to_model(x), torch.from_numpy(labels)


def conditioning(labels: torch.Tensor, generator: torch.Generator | None = None,
                 dropout: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Context (B, 5, 24) and pooled (B, 24) of the labels; with dropout, whole captions (UNCOND_P) and single
    attributes (SLOT_DROP_P) are left out, so that both guidance and partial captions work."""
    keep = None
    if dropout:
        shape = labels.shape
        keep = (torch.rand(shape, generator=generator) >= SLOT_DROP_P)
        keep &= (torch.rand((shape[0], 1), generator=generator) >= UNCOND_P)
    tokens = label_tokens(labels, keep)
    return tokens, tokens.sum(1)


def uncond(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = label_tokens(torch.zeros(batch_size, 5, dtype=torch.long), torch.zeros(batch_size, 5, dtype=torch.bool))
    return tokens, tokens.sum(1)


def seeded(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.uint64(seed * 7_919 + step * 104_729 + rank)))
