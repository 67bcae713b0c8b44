"""`make demo` (scripts/demo.py) end to end with the shipped tiny family: grids, per-scale pictures and the timing
table (its wall time is printed, not asserted: timings are figures, never test conditions)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from comfy_harness import REPO


def test_demo_draws_the_tiny_family_and_reports_grids_scales_and_timings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWD_")}
    env["SWD_DEMO_OUTPUT"] = str(tmp_path)
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], env=env, capture_output=True, text=True,
                          timeout=600)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "TINY FAMILY" in out and "SwD student (SwDKSampler)" in out and "x SwD's time" in out
    captions = (tmp_path / "tiny_captions.txt").read_text().splitlines()
    assert len(captions) == 16
    for name in ("tiny_swd_grid.png", "tiny_teacher_28_grid.png", "tiny_teacher_2_grid.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (4 * 128 + 12, 4 * 128 + 12)
            tiles = np.asarray(im.convert("RGB"), dtype=float)
        assert tiles.std() > 20  # pictures, not a flat colour
        assert str(tmp_path / name) in out
    for i, side in enumerate((64, 80, 96, 128), start=1):
        with Image.open(tmp_path / f"tiny_swd_scale_{i}_{side}x{side}.png") as im:
            assert im.size == (side, side)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert len(timings["median_s"]) == 3 and all(t > 0 for t in timings["median_s"].values())
    print(f"make demo took {elapsed:.0f} s (reported, never asserted)")
