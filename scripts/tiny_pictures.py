"""Runs the tiny demo workflows headless in real ComfyUI (CPU) and writes the README's pictures to docs/.

    .venv/bin/python scripts/tiny_pictures.py            # docs/tiny_demo.png, tiny_img2img.png, tiny_hires.png,
                                                         # tiny_inpaint.png
    .venv/bin/python scripts/tiny_pictures.py --out DIR

Each workflow in workflows/ runs as shipped (converted to an API prompt), on the tiny family in the pack's models/
folder. A picture shows the workflow's input picture (the draft it draws first) beside its result, each
nearest-upscaled to 256 px with its caption underneath; the demo shows its batch in a row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from comfy_harness import ComfyServer  # noqa: E402
from tiny_workflows import load  # noqa: E402
from workflow_to_api import to_api  # noqa: E402

PICTURES = {"swd_tiny_demo": "tiny_demo.png", "swd_tiny_img2img": "tiny_img2img.png",
            "swd_tiny_hires_2x": "tiny_hires.png", "swd_tiny_inpaint": "tiny_inpaint.png"}
PANEL, LABEL = 256, 16


def images_of(server: ComfyServer, prompt: dict, result, kind: str) -> list[Path]:
    """The files the prompt's PreviewImage or SaveImage node (kind) wrote."""
    node = next(i for i, n in prompt.items() if n["class_type"] == kind)
    return [server.base_dir / i["type"] / i.get("subfolder", "") / i["filename"]
            for i in result.outputs[node]["images"]]


def captions(prompt: dict) -> list[str]:
    """The positive captions in node order (the draft's, then the result's); the empty negative is left out."""
    texts = [n["inputs"]["text"] for _, n in sorted(prompt.items(), key=lambda kv: int(kv[0]))
             if n["class_type"] == "SwDTinyTextEncode"]
    return [line for t in texts if t for line in t.splitlines()]


def strip(paths: list[Path], labels: list[str], height: int | None = PANEL, gap: int = 4):
    """The pictures side by side, `gap` px apart, each nearest-resized to `height` px (None: as they are), with its
    label underneath."""
    from PIL import Image, ImageDraw
    panels = []
    for path in paths:
        with Image.open(path) as im:
            h = height or im.height
            panels.append(im.convert("RGB").resize((h * im.width // im.height, h), Image.NEAREST))
    tallest = max(p.height for p in panels)
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), tallest + LABEL), "white")
    draw, x = ImageDraw.Draw(out), 0
    for panel, label in zip(panels, labels):
        out.paste(panel, (x, 0))
        draw.text((x + 2, tallest + 3), label, fill="black")
        x += panel.width + gap
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder to write to (default: docs/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(Path(tempfile.mkdtemp(prefix="swd-tiny-pictures-")))
    server.prepare()
    server.start()
    try:
        object_info = server.object_info()
        for name, file in PICTURES.items():
            prompt = to_api(load(name), object_info)
            result = server.run(prompt)
            saved = images_of(server, prompt, result, "SaveImage")
            labels = captions(prompt)
            if name == "swd_tiny_demo":
                picture = strip(saved, labels)
            else:
                draft = images_of(server, prompt, result, "PreviewImage")
                picture = strip(draft + saved, [f"input: {labels[0]}", f"result: {labels[-1]}"])
            picture.save(args.out / file, optimize=True)
            print(f"wrote {args.out / file} ({(args.out / file).stat().st_size // 1024} KB)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
