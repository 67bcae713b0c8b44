"""Training data, latents in model space (tiny.image_to_model). The teacher's batches (teacher.py): scenes rendered
on the fly from (seed, step, rank), so a run is reproducible, resumable at any step and never repeats a batch.
Distillation's (distill.py): any model's latents and conditioning (`Dataset`), drawn as below."""
from __future__ import annotations

import numpy as np
import torch

from swd_sampler.tiny import SD3_SCALE, SD3_SHIFT, image_to_model, label_tokens

from .scenes import make_dataset

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


# Distillation data ------------------------------------------------------------------------------------------------
# A distillation run draws batches by number (draw k = generator step k's batch or one of its fake-score batches).
# Sample j of draw k (j counts over the GLOBAL batch) is fixed by (seed, k, j) alone: its data row and all its noise
# and sigma indices come from its own generator, so the numbers do not depend on how the batch is split.


class DataError(ValueError):
    """Training data that cannot be used; the message names the input and the fix."""


class Dataset:
    """Latents (N, C, H, W) in ComfyUI's LATENT format with the model's condition objects of each (network.encode;
    one for all is allowed), drawn through one seeded permutation per epoch."""

    def __init__(self, latents: torch.Tensor, conds: list[dict], seed: int, captions: list[str] | None = None,
                 what: str = "latents"):
        if latents.ndim != 4 or len(latents) == 0:
            raise DataError(f"{what}: the dataset is empty or not a batch of image latents (shape "
                            f"{tuple(latents.shape)}); give at least one (B, C, H, W) latent")
        bad = (~torch.isfinite(latents.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad:
            raise DataError(f"{what}: latent {bad[0]} (and {len(bad) - 1} more) holds NaN or inf values; remake or "
                            f"drop it")
        if len(conds) not in (1, len(latents)):
            raise DataError(f"{what}: {len(latents)} latents but {len(conds)} conditionings; give one conditioning "
                            f"per latent, or one for all")
        self.latents, self.seed, self.captions = latents, seed, captions
        self.conds = conds if len(conds) == len(latents) else conds * len(latents)
        self._epochs: dict[int, torch.Tensor] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.latents.shape[1:])

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        n = len(self.latents)
        out = torch.empty_like(positions)
        for k, p in enumerate(positions.tolist()):
            epoch = p // n
            if epoch not in self._epochs:
                self._epochs = {epoch: torch.randperm(n, generator=torch.Generator().manual_seed(
                    self.seed * 1_000_003 + epoch))}
            out[k] = self._epochs[epoch][p % n]
        return out

    def get(self, positions: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """(LATENT samples (B, C, H, W), condition objects) of stream positions."""
        rows = self.rows(positions)
        return self.latents[rows], [self.conds[r] for r in rows.tolist()]


def sample_generators(seed: int, draw: int, slots: range) -> list[torch.Generator]:
    """One generator per global batch slot of a draw."""
    return [torch.Generator().manual_seed(int(np.uint64(seed * 7_919 + draw * 104_729 + j * 15_485_863)))
            for j in slots]


def randn(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """(len(generators), *shape): one sample's noise from each generator."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def randint(generators: list[torch.Generator], low: int, high: int) -> torch.Tensor:
    return torch.cat([torch.randint(low, high, (1,), generator=g) for g in generators])
