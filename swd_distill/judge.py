"""The quality judge of the tiny family: a small CNN trained on the renderer that names a scene's five attributes,
and the Frechet distance on its 128-d features.

Images are judged at 32x32 (ComfyUI's 128x128 outputs are area-averaged first, as the data card says). The judge
is trained in about a minute from a fixed seed (so evaluation needs no shipped classifier), on clean scenes plus
mild Gaussian noise, and must reach 99 % all-attribute accuracy on fresh scenes before it judges anything.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from swd_sampler.tiny_captions import ATTRIBUTES

from .model import import_comfy, torch_default_init
from .scenes import SIDE, make_dataset

CLASSES = [len(v) for v in ATTRIBUTES.values()]


class Judge(nn.Module):
    """Layers from ComfyUI's comfy.ops (the ecosystem's convention), initialised as torch's own layers are."""

    def __init__(self):
        super().__init__()
        import_comfy(cpu=True)
        import comfy.ops
        ops = comfy.ops.disable_weight_init

        def conv(cin, cout, stride=1):
            return [ops.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
        self.body = nn.Sequential(*conv(3, 16), *conv(16, 32, 2), *conv(32, 32), *conv(32, 64, 2), *conv(64, 128))
        # positions need where, not only what: pool to 2x2 cells (the four quadrants) before the features
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), ops.Linear(512, 128), nn.GELU())
        self.heads = nn.ModuleList(ops.Linear(128, n) for n in CLASSES)
        torch_default_init(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [0, 1] -> (B, 128)."""
        return self.features(self.body(images * 2 - 1))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        f = self.embed(images)
        return [head(f) for head in self.heads]

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, 5), features (B, 128)), in batches."""
        self.eval()
        labels, feats = [], []
        for chunk in images.split(256):
            f = self.embed(chunk)
            feats.append(f)
            labels.append(torch.stack([head(f).argmax(-1) for head in self.heads], -1))
        return torch.cat(labels), torch.cat(feats)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, 32, 32) in [0, 1], area-averaged when larger than 32x32."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(SIDE, SIDE), mode="area") if x.shape[-1] != SIDE else x


def train_judge(seed: int = 1234, count: int = 10000, epochs: int = 6) -> Judge:
    torch.manual_seed(seed)
    images, labels = make_dataset(count, seed)
    x, y = to_tensor(images), torch.from_numpy(labels)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3)
    steps = epochs * (count // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in range(epochs):
        order = torch.randperm(count, generator=g)
        for k in range(count // 128):
            idx = order[k * 128:(k + 1) * 128]
            batch = (x[idx] + 0.03 * torch.randn(x[idx].shape, generator=g)).clamp(0, 1)
            loss = sum(F.cross_entropy(out, y[idx, a]) for a, out in enumerate(judge(batch)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    test_images, test_labels = make_dataset(2000, seed + 1)
    accuracy = attribute_accuracy(judge.predict(to_tensor(test_images))[0], torch.from_numpy(test_labels))
    per = (judge.predict(to_tensor(test_images))[0] == torch.from_numpy(test_labels)).float().mean(0)
    print("judge per attribute:", per.tolist(), file=sys.stderr)
    if accuracy < 0.99:
        raise RuntimeError(f"the judge reached only {accuracy:.3f} all-attribute accuracy on real scenes")
    return judge


def cached_judge(path) -> Judge:
    """train_judge() once; later calls load its weights from `path` (safetensors)."""
    from safetensors.torch import load_file, save_file
    if path.exists():
        judge = Judge()
        judge.load_state_dict(load_file(str(path)))
        return judge.eval()
    judge = train_judge()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(path))
    return judge


def attribute_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images with all five attributes right."""
    return float((predicted == labels).all(-1).float().mean())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, d), in float64."""
    a, b = a.double(), b.double()
    mu = (a.mean(0) - b.mean(0)).square().sum()
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, PSD)
    va, ua = torch.linalg.eigh(sa)
    root_a = ua @ torch.diag(va.clamp(min=0).sqrt()) @ ua.T
    cross = torch.linalg.eigvalsh(root_a @ sb @ root_a).clamp(min=0).sqrt().sum()
    return float(mu + sa.trace() + sb.trace() - 2 * cross)
