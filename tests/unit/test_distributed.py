"""`python -m swd_distill distill` under torchrun on the CPU (gloo, --dtype fp64): 2 processes x batch 4 give the
LoRA of 1 process x batch 8 under DDP and under FSDP2 (with and without gradient checkpointing), a 2-process run
resumed in 1 process ends where an uninterrupted run does, gradient accumulation changes nothing, and a killed process
fails the run instead of hanging it. On a tiny FLUX (fp32: ComfyUI's rope takes no fp64), whose blocks add to their
inputs in place, FSDP2 trains and stays near the 1-process run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comfy_harness import comfyui_path
from swd_distill.samples import SampleSpec, start_dataset, write_shard

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
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


def test_two_processes_of_batch_4_equal_one_of_batch_8_under_fsdp2(dataset, one_process, tmp_path):
    _close(one_process, _run(tmp_path, "fsdp", dataset, 5, processes=2, extra=["--parallel", "fsdp"]))


def test_fsdp2_with_gradient_checkpointing_changes_nothing(dataset, one_process, tmp_path):
    _close(one_process, _run(tmp_path, "fsdp_ckpt", dataset, 5, processes=2,
                             extra=["--parallel", "fsdp", "--checkpointing", "true"]))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_two_process_run_resumed_in_one_process_ends_where_an_uninterrupted_run_does(dataset, one_process, tmp_path,
                                                                                      parallel):
    _run(tmp_path, "resumed", dataset, 3, processes=2, extra=["--parallel", parallel])
    assert (tmp_path / "work" / "resumed" / "student.ckpt.safetensors").exists()
    _close(one_process, _run(tmp_path, "resumed", dataset, 5, extra=["--resume"]))


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


def _flux_dataset(out: Path) -> None:
    """8 random latents of 64 px (16 x 8 x 8) with random FLUX conditioning (T5 tokens, pooled, guidance 3.5)."""
    g = torch.Generator().manual_seed(0)
    spec = SampleSpec(teacher="graph", captions=("a", "b"), per_caption=4, width=64, height=64, guidance=3.5)

    def cond():
        return [[torch.randn(1, 8, 64, generator=g), {"pooled_output": torch.randn(1, 32, generator=g),
                                                      "guidance": 3.5}]]
    for shard in start_dataset(out, spec, cond()):
        n = len(spec.prompts_of(shard))
        write_shard(out, spec, shard, torch.randn(n * 4, 16, 8, 8, generator=g), [cond() for _ in range(n)])


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """A tiny FLUX.1-dev teacher (tests/tiny_models.py) and 8 random latents of 64 px with FLUX conditioning."""
    folder = tmp_path_factory.mktemp("flux")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(comfyui_path())])}
    result = subprocess.run([sys.executable, str(TESTS / "tiny_models.py"), str(folder)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    _flux_dataset(folder / "set")
    return folder / "tiny_flux.safetensors", folder / "set"


def _flux_args(flux, tmp_path, name, dtype):
    teacher, dataset = flux
    return ["--teacher", str(teacher), "--dataset", str(dataset), "--preset", "custom", "--scales", "4,8",
            "--sigmas", "1.0,0.5,0", "--steps", "2", "--batch", "4", "--rank", "4", "--fake-updates", "1", "--seed",
            "3", "--threads", "1", "--dtype", dtype, "--out", str(tmp_path / f"{name}.safetensors"), "--work",
            str(tmp_path / "work")]


def test_fsdp2_trains_flux_whose_blocks_add_in_place(flux, tmp_path):
    one = _distill(_flux_args(flux, tmp_path, "one", "fp32"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _distill([*_flux_args(flux, tmp_path, "two", "fp32"), "--parallel", "fsdp"], processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one.safetensors")), load_file(str(tmp_path / "two.safetensors"))
    assert a.keys() == b.keys() and "base_model.model.single_transformer_blocks.0.proj_out.lora_B.weight" in a
    assert all(v.isfinite().all() for v in b.values())
    assert any(v.abs().max() > 0 for k, v in b.items() if "lora_B" in k)
    # fp32 sums in another order: Adam's first steps (about lr x sign(g)) amplify the last bits of near-zero
    # gradients, so the two runs agree to a few percent, not to the bit (measured: 4.7e-2 at most over 28 tensors)
    for k in a:
        diff = (a[k].double() - b[k].double()).norm() / a[k].double().norm().clamp_min(1e-12)
        assert diff < 0.2, k


def test_fp64_is_refused_for_flux_with_the_reason(flux, tmp_path):
    result = _distill(_flux_args(flux, tmp_path, "o", "fp64"), timeout=120)
    assert result.returncode != 0
    assert "--dtype fp64 does not run FLUX: ComfyUI's rotary-embedding kernel takes fp16, bf16 or fp32 only; use " \
           "--dtype fp32" in result.stderr
    assert not (tmp_path / "o.safetensors").exists()
