"""The tiny family's data: captioned 32x32 scenes drawn by code, exactly as the data card (TINY_DATA.md) says.

A scene is a background (one of 4 colours times a vertical gradient 1.15 -> 0.60), and one shape (circle, square
or triangle; side 0.30-0.40 of the image) of one of 5 colours, solid or striped, centred near one of 4 quadrant
centres (0.28 / 0.72 of the side, +- 0.05 jitter). It is drawn at 128x128 (4x supersampling) and reduced to 32x32
with a box filter, which anti-aliases the shape's edge. Its caption is
"{texture} {colour} {shape} {position} on {background}": 2 * 5 * 3 * 4 * 4 = 480 combinations.

The caption grammar (the words, parse_caption) is the tiny family's runtime and lives in swd_sampler/tiny_captions.py;
this module adds what is drawn for each word. It is light (numpy and PIL only).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from swd_sampler.tiny_captions import ATTRIBUTES, GRAMMAR

SIDE, DRAW = 32, 128  # image side, drawing side (4x supersampling)

COLOUR_RGB = {"red": (230, 40, 40), "yellow": (240, 220, 40), "white": (245, 245, 245), "magenta": (220, 50, 220),
              "cyan": (40, 220, 230)}
POSITION_XY = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
               "bottom right": (0.72, 0.72)}  # centres, fractions of the side
BACKGROUND_RGB = {"blue": (30, 60, 170), "green": (30, 140, 60), "gray": (120, 120, 120), "black": (15, 15, 15)}


@dataclass(frozen=True)
class Scene:
    texture: str
    colour: str
    shape: str
    position: str
    background: str
    size: float = 0.35  # side of the shape, as a fraction of the image side
    dx: float = 0.0  # jitter of the centre, fractions of the side
    dy: float = 0.0

    @property
    def caption(self) -> str:
        return GRAMMAR.format(**{a: getattr(self, a) for a in ATTRIBUTES})

    def labels(self) -> tuple[int, ...]:
        """Class index of each attribute, in ATTRIBUTES order."""
        return tuple(values.index(getattr(self, a)) for a, values in ATTRIBUTES.items())


def random_scene(rng: np.random.Generator, allowed: np.ndarray | None = None) -> Scene:
    """A scene of any of the 480 combinations, or of one of the `allowed` label rows (N, 5), with random size and
    jitter."""
    if allowed is None:
        pick = {a: values[rng.integers(len(values))] for a, values in ATTRIBUTES.items()}
    else:
        row = allowed[rng.integers(len(allowed))]
        pick = {a: values[int(k)] for (a, values), k in zip(ATTRIBUTES.items(), row)}
    return Scene(**pick, size=float(rng.uniform(0.30, 0.40)), dx=float(rng.uniform(-0.05, 0.05)),
                 dy=float(rng.uniform(-0.05, 0.05)))


_GRADIENT = np.linspace(1.15, 0.60, DRAW, dtype=np.float32)[:, None, None]
_STRIPES = ((np.arange(DRAW) // 8) % 2 == 1)[:, None, None]  # rows darkened to 0.35 (a 4 px period at 32 px)
_SS = DRAW // SIDE  # supersampling factor


def _box(image: np.ndarray) -> np.ndarray:
    """PIL's Image.BOX reduction by the supersampling factor, unrounded: (4h, 4w, 3) -> (h, w, 3)."""
    h, w = image.shape[0] // _SS, image.shape[1] // _SS
    return image.reshape(h, _SS, w, _SS, 3).mean(axis=(1, 3))


@functools.cache
def _background(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A background drawn at 128x128 and its 32x32 reduction (float32)."""
    drawn = np.broadcast_to(np.clip(np.array(BACKGROUND_RGB[name], np.float32) * _GRADIENT, 0, 255), (DRAW, DRAW, 3))
    return drawn, _box(drawn)


def render(scene: Scene) -> np.ndarray:
    """The scene as a (32, 32, 3) uint8 RGB array. Only the 4-aligned window around the shape is composited at
    128x128; the rest is the reduced background (the same numbers as reducing the whole drawing)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 (PIL only when drawing)

    background, reduced = _background(scene.background)
    colour = np.array(COLOUR_RGB[scene.colour], np.float32)
    cx, cy = POSITION_XY[scene.position]
    cx, cy, half = (cx + scene.dx) * DRAW, (cy + scene.dy) * DRAW, scene.size * DRAW / 2
    mask = Image.new("L", (DRAW, DRAW), 0)
    draw = ImageDraw.Draw(mask)
    box = (cx - half, cy - half, cx + half, cy + half)
    if scene.shape == "circle":
        draw.ellipse(box, fill=255)
    elif scene.shape == "square":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=255)
    # the window: the shape's box plus 2 px of margin for PIL's rasterisation, widened to whole output pixels
    x0, y0 = (max(0, (int(v - half) - 2) // _SS * _SS) for v in (cx, cy))
    x1, y1 = (min(DRAW, (int(v + half) + 2 + _SS) // _SS * _SS) for v in (cx, cy))
    alpha = np.asarray(mask, np.float32)[y0:y1, x0:x1, None] / 255.0
    fill = colour[None, None]
    if scene.texture == "striped":
        fill = np.where(_STRIPES[y0:y1], colour * 0.35, colour)
    reduced = reduced.copy()
    reduced[y0 // _SS:y1 // _SS, x0 // _SS:x1 // _SS] = _box(background[y0:y1, x0:x1] * (1 - alpha) + fill * alpha)
    return np.clip(reduced + 0.5, 0, 255).astype(np.uint8)


def make_dataset(count: int, seed: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` random scenes (of the `allowed` label rows only, if given): images (count, 32, 32, 3) uint8 and
    labels (count, 5) int64, from one seeded numpy generator (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIDE, SIDE, 3), np.uint8)
    labels = np.empty((count, len(ATTRIBUTES)), np.int64)
    for n in range(count):
        scene = random_scene(rng, allowed)
        images[n] = render(scene)
        labels[n] = scene.labels()
    return images, labels


def scene_of(labels) -> Scene:
    """The scene (at its mean size, no jitter) of a label tuple."""
    return Scene(**{a: values[int(k)] for (a, values), k in zip(ATTRIBUTES.items(), labels)})

