"""Fixtures: one real ComfyUI server per test session, with the pack and tiny seeded models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_harness import REPO, ComfyServer, comfyui_path  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> ComfyServer:
    """A running ComfyUI 0.30 (CPU) with this pack, the test-only nodes and tiny models:
    models/diffusion_models/tiny_sd3.safetensors (SD3 MMDiT) and tiny_flux.safetensors (FLUX.1-dev architecture)."""
    server = ComfyServer(tmp_path_factory.mktemp("comfy"))
    server.prepare(extra_custom_nodes=[("swd_test_nodes", TESTS / "comfy_test_nodes")])
    subprocess.run([sys.executable, str(TESTS / "tiny_models.py"), str(server.models_dir / "diffusion_models")],
                   check=True, env={**os.environ, "PYTHONPATH": str(comfyui_path())})
    server.start()
    yield server
    server.stop()
