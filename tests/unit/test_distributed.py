"""`python -m swd_distill distill` under torchrun on the CPU (gloo, --dtype fp64): 2 processes x batch 4 give the
LoRA of 1 process x batch 8 (DDP; FSDP2 is refused until its backward works), a 2-process run resumed in 1 process ends where an uninterrupted run
does, gradient accumulation changes nothing, and a killed process fails the run instead of hanging it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "models" / "diffusion_models" / "swd-tiny-teacher.safetensors"
COMMON = ["--preset", "Tiny demo · 4 steps", "--batch", "8", "--seed", "3", "--rank", "4", "--fake-updates", "2",
          "--warm-steps", "1", "--dtype", "fp64", "--checkpoint-every", "1", "--threads", "1"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "SWD_DIST_TIMEOUT": "60", "PYTHONPATH": str(REPO)}


def _distill(args, processes=1, timeout=600):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else []
    return subprocess.run([sys.executable, *launcher, "-m", "swd_distill", "distill", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    prompts = folder / "prompts.txt"
    prompts.write_text("solid red circle top left on blue\nstriped yellow square bottom right on green\n")
    result = subprocess.run([sys.executable, "-m", "swd_distill", "samples", "--prompts", str(prompts), "--out",
                             str(folder / "set"), "--steps", "4", "--per-prompt", "3", "--threads", "1"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "set"


def _run(tmp_path, name, dataset, steps, processes=1, extra=()):
    out = tmp_path / f"{name}.safetensors"
    result = _distill([*COMMON, "--dataset", str(dataset), "--steps", str(steps), "--out", str(out),
                       "--work", str(tmp_path / "work"), *extra], processes)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out))


def _close(a, b, rel=1e-9):
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].dtype == torch.float64
        scale = a[k].abs().max().clamp_min(1e-12)
        assert (a[k] - b[k]).abs().max() / scale <= rel, k


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one"), "one", dataset, 5)


def test_two_processes_of_batch_4_equal_one_of_batch_8_under_ddp(dataset, one_process, tmp_path):
    two = _run(tmp_path, "two", dataset, 5, processes=2, extra=["--parallel", "ddp"])
    _close(one_process, two)
    assert any(v.abs().max() > 0 for k, v in two.items() if "lora_B" in k)  # it trained


def test_gradient_accumulation_equals_the_whole_batch(dataset, one_process, tmp_path):
    _close(one_process, _run(tmp_path, "accum", dataset, 5, extra=["--grad-accum", "2"]))


def test_batch_mmd_is_refused_with_several_processes(dataset, tmp_path):
    result = _distill([*COMMON, "--dataset", str(dataset), "--steps", "2", "--batch-mmd", "true", "--out",
                       str(tmp_path / "o.safetensors"), "--work", str(tmp_path / "w")], processes=2, timeout=120)
    assert result.returncode != 0 and "--batch-mmd pools the features of the whole batch" in result.stderr


def _children(pid):
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += [int(child), *_children(int(child))]
    return out


def test_a_killed_process_fails_the_run_with_a_message_instead_of_hanging(dataset, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "swd_distill", "distill", *COMMON, "--dataset", str(dataset), "--steps", "100000",
                             "--out", str(tmp_path / "o.safetensors"), "--work", str(tmp_path / "w")],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "w" / "o" / "student.ckpt.safetensors"
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert checkpoint.exists(), proc.communicate()[1][-3000:]
    rank1 = [p for p in _children(proc.pid)
             if b"RANK=1\0" in Path(f"/proc/{p}/environ").read_bytes() and b"swd_distill" in
             Path(f"/proc/{p}/cmdline").read_bytes()]
    assert rank1
    killed = time.monotonic()
    os.kill(rank1[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - killed < 90
    assert "another process of the run stopped" in err or "exitcode  : -9" in err, err[-3000:]
    assert checkpoint.exists() and not (tmp_path / "o.safetensors").exists()
