"""The tiny family's runtime (swd_sampler/tiny.py) stands without the trainer: neither it nor the pack's nodes, as
ComfyUI imports them, load swd_distill."""
import json
import subprocess
import sys
from pathlib import Path

from comfy_harness import comfyui_path

ROOT = Path(__file__).resolve().parents[2]

PACK_IN_COMFYUI = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args
args.cpu = True
spec = importlib.util.spec_from_file_location("swd_pack", "__init__.py", submodule_search_locations=["."])
pack = importlib.util.module_from_spec(spec)
sys.modules["swd_pack"] = pack
spec.loader.exec_module(pack)
print(json.dumps({"tiny": "swd_pack.nodes.tiny" in sys.modules, "nodes": [n.__name__ for n in pack.NODES],
                  "distill": sorted(m for m in sys.modules if "swd_distill" in m)}))
"""


def _run(*args) -> str:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_the_tiny_runtime_imports_neither_the_trainer_nor_comfyui():
    code = ("import sys, swd_sampler.tiny; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('swd_distill', 'comfy', 'comfy_api')))")
    assert _run("-c", code).strip() == "[]"


def test_the_packs_nodes_import_no_training_code_in_comfyui():
    loaded = json.loads(_run("-c", PACK_IN_COMFYUI, str(comfyui_path())).strip().splitlines()[-1])
    assert loaded["tiny"] and "SwDTinyLoader" in loaded["nodes"]
    assert loaded["distill"] == []
