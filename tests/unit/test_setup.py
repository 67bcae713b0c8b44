"""make setup's chromium decision (scripts/chromium.sh) in its three cases, with a fake `id` and `apt-get` first on
PATH, and CI's entry point: the README's command and no install step of its own."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_system(tmp_path):
    """A bin folder with `id` (uid from $FAKE_UID) and `apt-get` (logs its arguments), and no chromium."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text('#!/bin/sh\necho "$FAKE_UID"\n')
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/apt.log\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return tmp_path


def run(function, system, uid, chromium):
    env = {**os.environ, "PATH": f"{system / 'bin'}:{os.environ['PATH']}", "FAKE_UID": str(uid),
           "SWD_CHROMIUM": str(chromium)}
    return subprocess.run(["bash", "-c", f"source scripts/chromium.sh && {function}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)


def apt_calls(system):
    log = system / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_chromium_present_is_left_alone(fake_system):
    chromium = fake_system / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    assert run("chromium_plan", fake_system, 0, chromium).stdout.strip() == "present"
    run("chromium_setup", fake_system, 0, chromium)
    assert apt_calls(fake_system) == []


def test_chromium_absent_as_root_is_installed_with_apt_get_saying_so(fake_system):
    assert run("chromium_plan", fake_system, 0, fake_system / "none").stdout.strip() == "install"
    result = run("chromium_setup", fake_system, 0, fake_system / "none")
    assert apt_calls(fake_system) == ["update -qq", "install -y -qq chromium"]
    assert "installing Debian's chromium" in result.stderr


def test_chromium_absent_without_root_prints_the_exact_command(fake_system):
    assert run("chromium_plan", fake_system, 1000, fake_system / "none").stdout.strip() == "missing"
    result = run("chromium_setup", fake_system, 1000, fake_system / "none")
    assert apt_calls(fake_system) == []
    assert "sudo apt-get update && sudo apt-get install -y chromium" in result.stderr


def test_setup_runs_the_chromium_step_and_ci_only_the_readme_command():
    assert 'source "$ROOT/scripts/chromium.sh"' in (ROOT / "scripts" / "setup.sh").read_text()
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
    assert "make test" in (ROOT / "README.md").read_text()
