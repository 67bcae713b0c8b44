"""swd_distill: the renderer of the data card, captions, the tiny codec and text tokens, the judge's Frechet
distance, and short training runs (loss goes down, reproducible from the seed, 2 processes stay identical)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from swd_distill import scenes
from swd_distill.judge import frechet_distance
from swd_sampler import tiny

REPO = Path(__file__).resolve().parents[2]


def _background(scene):
    grad = np.linspace(1.15, 0.60, scenes.DRAW)[:, None, None]
    rgb = np.array(scenes.BACKGROUND_RGB[scene.background], float)
    big = np.clip(rgb * grad, 0, 255) * np.ones((1, scenes.DRAW, 1))
    return big.reshape(32, 4, 32, 4, 3).mean((1, 3))


@pytest.mark.parametrize("seed", range(40))
def test_every_shape_lies_inside_its_quadrant_in_its_colour(seed):
    scene = scenes.random_scene(np.random.default_rng(seed))
    image = scenes.render(scene).astype(float)
    assert image.shape == (32, 32, 3)
    shape = np.abs(image - _background(scene)).max(-1) > 40
    ys, xs = np.nonzero(shape)
    cx, cy = scenes.POSITION_XY[scene.position]
    assert abs(xs.mean() / 32 - cx) < 0.1 and abs(ys.mean() / 32 - cy) < 0.1
    side = np.sqrt(shape.sum()) / 32  # a square of that area; a circle or triangle covers less
    assert 0.15 < side < 0.42
    solid = image[shape & (np.abs(image - np.array(scenes.COLOUR_RGB[scene.colour])).max(-1) < 12)]
    assert len(solid) > 0  # the exact colour appears (stripes darken the other rows)


def test_gradient_and_background_follow_the_card():
    scene = scenes.Scene("solid", "red", "circle", "bottom right", "blue", size=0.3)
    image = scenes.render(scene).astype(float)
    top, bottom = image[0, 0], image[-1, 0]
    blue = np.array(scenes.BACKGROUND_RGB["blue"], float)
    assert np.allclose(top, blue * np.linspace(1.15, 0.60, 128)[:4].mean(), atol=1)
    assert np.allclose(bottom, blue * np.linspace(1.15, 0.60, 128)[-4:].mean(), atol=1)


def test_stripes_have_a_four_pixel_period():
    scene = scenes.Scene("striped", "white", "square", "top left", "black", size=0.4)
    column = scenes.render(scene)[:, 9].astype(float).mean(-1)  # through the square (x 0.28 * 32 = 9)
    rows = [y for y in range(6, 14)]
    bright = [column[y] > 200 for y in rows]
    assert bright == [(y // 2) % 2 == 0 for y in rows]


def test_dataset_is_seeded_and_captions_parse_back_to_the_attributes():
    a_img, a_lab = scenes.make_dataset(64, 3)
    b_img, b_lab = scenes.make_dataset(64, 3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, scenes.make_dataset(64, 4)[0])
    for labels in a_lab:
        scene = scenes.scene_of(labels)
        assert tiny.parse_caption(scene.caption) == {a: getattr(scene, a) for a in tiny.ATTRIBUTES}
    assert len({tuple(x) for x in scenes.make_dataset(3000, 0)[1]}) == 480  # every combination occurs


def test_partial_and_empty_captions():
    assert tiny.parse_caption("") == {}
    assert tiny.parse_caption("Yellow  Square, on green") == {"colour": "yellow", "shape": "square",
                                                             "background": "green"}


@pytest.mark.parametrize("text, words", [
    ("purple circle", ["'purple'", "texture: solid, striped", "background: blue, green, gray, black"]),
    ("red circle top", ["'top'", "two words"]),
    ("red yellow circle", ["colour is given twice", "'red'", "'yellow'"]),
])
def test_unknown_words_are_refused_with_the_vocabulary(text, words):
    with pytest.raises(tiny.CaptionError) as e:
        tiny.parse_caption(text)
    assert all(w in str(e.value) for w in words)


def test_text_tokens_one_hot_per_slot_and_unconditional():
    context, pooled = tiny.encode_text("striped red circle top left on blue")
    assert context.shape == (1, 5, tiny.CONTEXT_DIM) and pooled.shape == (1, tiny.CONTEXT_DIM)
    values = context[0, :, :len(tiny.VALUES)]
    assert values.sum().item() == 5 and values.sum(-1).tolist() == [1] * 5
    assert [tiny.VALUES[i] for i in values.argmax(-1)] == ["striped", "red", "circle", "top left", "blue"]
    empty, _ = tiny.encode_text("")
    assert empty[0, :, :len(tiny.VALUES)].abs().sum() == 0
    assert torch.equal(empty[0, :, len(tiny.VALUES):], context[0, :, len(tiny.VALUES):])
    labels = torch.tensor([scenes.Scene("striped", "red", "circle", "top left", "blue").labels()])
    assert torch.equal(tiny.label_tokens(labels), context)


def test_encode_decode_round_trip_is_exact_at_the_native_size():
    images, _ = scenes.make_dataset(4, 1)
    x = torch.from_numpy(images).float() / 255
    shown = torch.nn.functional.interpolate(x.movedim(-1, 1), scale_factor=4, mode="nearest").movedim(1, -1)
    latent = tiny.encode(shown)
    assert latent.shape == (4, 16, 16, 16)
    assert torch.allclose(tiny.decode(latent), shown, atol=1e-5)
    z = (latent - tiny.SD3_SHIFT) * tiny.SD3_SCALE  # model space: 12 content channels in [-1, 1], 4 zero
    assert z[:, 12:].abs().max() < 1e-5 and z[:, :12].abs().max() <= 1 + 1e-5


def test_latent_format_constants_are_comfyuis_sd3():
    sys.path.insert(0, (REPO / ".comfyui" / "comfyui_path").read_text().strip())
    from comfy.latent_formats import SD3
    assert (SD3().scale_factor, SD3().shift_factor) == (tiny.SD3_SCALE, tiny.SD3_SHIFT)


def test_frechet_distance_against_a_formula_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 3, generator=g), torch.randn(4000, 3, generator=g) * 2 + 1
    # both Gaussian with diagonal covariances: ||mu||^2 + sum (s_a - s_b)^2 over the std devs
    expected = 3 * 1.0 + 3 * (1 - 2) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_teacher_training_lowers_the_loss_and_is_reproducible(tmp_path):
    from swd_distill.teacher import TeacherConfig, train_teacher
    torch.set_num_threads(1)
    cfg = TeacherConfig(steps=40, batch=16, warmup=5, checkpoint_every=20)
    losses = train_teacher(tmp_path / "a.safetensors", cfg, tmp_path / "wa")
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    train_teacher(tmp_path / "b.safetensors", cfg, tmp_path / "wb")
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same bytes too: safetensors writes metadata in hash order, save_weights sorts it
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    # a run stopped at step 20 and resumed ends exactly where the uninterrupted run ended
    train_teacher(tmp_path / "c.safetensors", TeacherConfig(steps=20, batch=16, warmup=5, checkpoint_every=20),
                  tmp_path / "wc")
    train_teacher(tmp_path / "c.safetensors", cfg, tmp_path / "wc", resume=True)
    c = load_file(str(tmp_path / "c.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def _tiny_teacher_and_samples(tmp_path, captions=8):
    """A 5-step teacher and its 28-step samples of `captions` seen captions (one shard)."""
    from swd_distill.samples import SampleSpec, file_id, make_samples
    from swd_distill.splits import seen
    from swd_distill.teacher import TeacherConfig, train_teacher
    torch.set_num_threads(1)
    teacher = tmp_path / "t.safetensors"
    train_teacher(teacher, TeacherConfig(steps=5, batch=8, warmup=2), tmp_path / "w")
    spec = SampleSpec(teacher=file_id(teacher), captions=tuple(seen()[:captions]), per_caption=1)
    return teacher, make_samples(teacher, tmp_path / "samples", spec, progress=False)


def _distill_api(teacher, samples, **settings):
    """The command line's path in-process: (run, losses per step, the student LoRA)."""
    from swd_distill import samples as sample_files
    from swd_distill.data import Dataset
    from swd_distill.distill import DistillConfig, Distiller
    from swd_distill.network import Network
    from swd_distill.run import load_model, negative_of
    from swd_distill.train import distill
    net = Network(load_model(teacher, torch.device("cpu"), torch.float32))
    latents, entries, _ = sample_files.load_dataset(samples)
    conds = [net.encode(e, tuple(latents.shape[1:])) for e in entries]
    cfg = DistillConfig(**settings)
    negative = negative_of(samples, net, tuple(latents.shape[1:]))
    lora, steps, history = distill(net, Dataset(latents, conds, cfg.seed), negative, cfg)
    return net, history, lora


def _cli(*argv):
    return _run(["-m", "swd_distill", "distill", "--threads", "1", *argv])


def test_distillation_on_teacher_samples_exports_a_peft_lora_the_loader_reads(tmp_path):
    from swd_sampler.lora import read_lora
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    _, history, _ = _distill_api(teacher, samples, steps=6, warm_steps=2, batch=8, rank=4, fake_updates=2)
    assert [sorted(h) for h in history] == [["warm"]] * 2 + [["d", "dmd", "fake", "gan", "patch"]] * 4
    assert all(np.isfinite(v) for h in history for v in h.values())
    # softplus losses of an untrained head start near log 2 (generator) and 2 log 2 (discriminator)
    assert abs(history[2]["gan"] - np.log(2)) < 0.2 and abs(history[2]["d"] - 2 * np.log(2)) < 0.4
    out = tmp_path / "swd-tiny-4-steps.safetensors"
    result = _cli("--teacher", str(teacher), "--dataset", str(samples), "--steps", "2", "--warm-steps", "1",
                  "--batch", "8", "--rank", "4", "--fake-updates", "1", "--out", str(out), "--work", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    lora = read_lora(out)
    assert lora.formats == ("peft",) and {m.rank for m in lora.modules.values()} == {4}
    assert lora.architecture.family == "sd3" and lora.architecture.width == 128
    assert lora.preset().preset == tiny.TINY_PRESET
    # the released SwD LoRAs' target modules: q, k, v, out, both feed-forward layers (image and text stream)
    names = {m.split(".", 2)[2] for m in lora.modules}
    assert names == {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.0.proj", "ff.net.2",
                     "ff_context.net.0.proj", "ff_context.net.2"}


def test_the_mmd_recipe_trains_the_patch_loss_alone_with_one_network(tmp_path):
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    net, history, _ = _distill_api(teacher, samples, steps=3, batch=4, rank=4, recipe="mmd")
    assert [sorted(h) for h in history] == [["patch"]] * 3 and all(h["patch"] > 0 for h in history)
    assert set(net.adapters.params) == {"student"}  # one network: no fake score, no head


def test_a_resumed_run_ends_bit_identical_and_checks_its_settings(tmp_path):
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    base = ["--teacher", str(teacher), "--dataset", str(samples), "--warm-steps", "1", "--batch", "8", "--rank", "4",
            "--fake-updates", "2", "--checkpoint-every", "3"]
    assert _cli(*base, "--steps", "5", "--out", str(tmp_path / "a.safetensors"), "--work", str(tmp_path)).returncode == 0
    assert _cli(*base, "--steps", "3", "--out", str(tmp_path / "b.safetensors"), "--work", str(tmp_path)).returncode == 0
    assert _cli(*base, "--steps", "5", "--out", str(tmp_path / "b.safetensors"), "--work", str(tmp_path),
                "--resume").returncode == 0
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = _cli(*[("8" if v == "4" and base[i - 1] == "--rank" else v) for i, v in enumerate(base)], "--steps", "6",
                 "--out", str(tmp_path / "b.safetensors"), "--work", str(tmp_path), "--resume")
    assert other.returncode == 2 and "other settings: rank 4 there, 8 now" in other.stderr
    missing = _cli(*base, "--steps", "6", "--out", str(tmp_path / "c.safetensors"), "--work", str(tmp_path),
                   "--resume")
    assert missing.returncode == 2 and "there is no checkpoint" in missing.stderr


def test_the_noise_grid_is_the_official_28_step_grid_holding_the_preset_sigmas():
    from swd_distill.distill import DMD_INDICES, PATCH_INDICES, noise_grid
    grid = noise_grid()
    assert len(grid) == 28 and grid[0] == 1.0
    # the preset sigmas are grid points 4, 7, 12, 14, 18; DMD draws from [12, 28), the patch loss from [18, 28)
    for index, sigma in ((4, 0.9454), (7, 0.8959), (12, 0.7904), (14, 0.7371), (18, 0.6022)):
        assert abs(grid[index].item() - sigma) < 1e-4
    assert DMD_INDICES == (12, 28) and PATCH_INDICES == (18, 28)
    # the last point: 1/1000 shifted twice by 3 (diffusers' set_timesteps on the shifted table)
    once = 3e-3 / (1 + 2e-3)
    assert abs(grid[-1].item() - 3 * once / (1 + 2 * once)) < 1e-7


def test_held_out_captions_are_fixed_and_never_made_into_distillation_data(tmp_path):
    import json
    from swd_distill import splits
    from swd_distill.samples import load_samples
    held = splits.heldout()
    assert list(held) == splits.make_heldout() and len(set(held)) == 48
    assert json.loads(splits.HELDOUT_FILE.read_text()) == list(held)
    assert set(held).isdisjoint(splits.seen()) and len(splits.seen()) == 432
    assert set(splits.validation()) <= set(splits.seen()) and len(splits.validation()) == 48
    _, samples = _tiny_teacher_and_samples(tmp_path, captions=432)  # all seen captions, one sample each
    captions = load_samples(samples)[3]
    assert len(captions) == 432 and set(captions).isdisjoint(held)


@pytest.mark.parametrize("argv, message", [
    (["--out", "models/loras/swd-tiny-4-steps.safetensors"], "add --replace-shipped"),
    (["--patch", "linaer"], "invalid choice: 'linaer'"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--cfg", "nan"], "--cfg must be a finite number"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--dmd", "maybe"], "--dmd takes true or false, not 'maybe'"),
    (["--warm-steps", "50", "--steps", "10"], "--warm-steps 50 is more than --steps 10"),
    (["--recipe", "mmd", "--patch", "none"], "the mmd recipe is the patch loss alone"),
])
def test_the_distill_command_refuses_bad_options_before_any_work(argv, message, capsys):
    from swd_distill.cli import main
    with pytest.raises(SystemExit) as e:
        main(["distill", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_two_processes_train_the_teacher_with_ddp(tmp_path):
    result = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swd_distill",
                   "teacher", "--steps", "3", "--batch", "8", "--warmup", "1", "--threads", "1",
                   "--out", str(tmp_path / "t.safetensors"), "--work", str(tmp_path / "w")])
    assert result.returncode == 0, result.stderr[-3000:]
    shipped = load_file(str(tmp_path / "t.safetensors"))
    shipped_keys = load_file(str(REPO / "models" / "diffusion_models" / "swd-tiny-teacher.safetensors")).keys()
    assert shipped.keys() == shipped_keys and all(torch.isfinite(v).all() for v in shipped.values())


def _bad_teacher(tmp_path, kind):
    from safetensors.torch import save_file
    path = tmp_path / f"{kind}.safetensors"
    if kind == "pickle":
        path.write_bytes(b"\x80\x04\x95" + bytes(64))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        save_file({"w": torch.zeros(64, 64)}, str(path))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "architecture":
        save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 3)}, str(path))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("empty", "is empty or cut off"),
    ("pickle", "is not a safetensors file: it is a Python pickle"),
    ("random", "is not a safetensors file"),
    ("truncated", "is truncated"),
    ("architecture", "is not a diffusion model or checkpoint ComfyUI recognises"),
])
def test_a_bad_teacher_file_is_refused_in_one_line_naming_it(tmp_path, capsys, kind, message):
    from swd_distill.cli import main
    teacher = tmp_path / "missing.safetensors" if kind == "missing" else _bad_teacher(tmp_path, kind)
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and f"--teacher {teacher}" in err and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.safetensors").exists()


def test_a_bad_checkpoint_is_refused_naming_it(tmp_path):
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "student.ckpt.safetensors").write_bytes(b"\x80\x04\x95" + bytes(64))
    result = _cli("--teacher", str(teacher), "--dataset", str(samples), "--steps", "2", "--batch", "4", "--rank", "4",
                  "--recipe", "mmd", "--out", str(tmp_path / "o.safetensors"), "--work", str(tmp_path), "--resume")
    assert result.returncode == 2
    assert "the checkpoint" in result.stderr and "is not a safetensors file: it is a Python pickle" in result.stderr


def test_weights_that_are_not_finite_are_never_written(tmp_path):
    from safetensors.torch import load_file as load, save_file
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    base = ["--dataset", str(samples), "--steps", "2", "--batch", "4", "--rank", "4", "--recipe", "mmd",
            "--work", str(tmp_path)]
    with pytest.raises(FloatingPointError, match="not finite|non-finite"):
        _distill_api(teacher, samples, steps=2, warm_steps=2, batch=4, rank=4, recipe="mmd", lr=1e30)
    weights = load(str(teacher))
    weights["final_layer.linear.weight"][0, 0] = float("nan")
    save_file(weights, str(tmp_path / "nan.safetensors"))
    result = _cli("--teacher", str(tmp_path / "nan.safetensors"), *base, "--out", str(tmp_path / "p.safetensors"))
    assert result.returncode == 2 and "nan.safetensors" in result.stderr and "NaN or infinite" in result.stderr


def test_a_half_written_checkpoint_is_cleared_before_the_next_run(tmp_path):
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    work = tmp_path / "work" / "o"
    work.mkdir(parents=True)
    (work / "student.ckpt.tmp").write_bytes(b"half a checkpoint")
    result = _cli("--teacher", str(teacher), "--dataset", str(samples), "--steps", "1", "--warm-steps", "1",
                  "--batch", "4", "--rank", "4", "--recipe", "mmd", "--out", str(tmp_path / "o.safetensors"),
                  "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in work.iterdir()) == ["student.ckpt.safetensors"]


def test_teacher_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    from swd_distill.cli import main
    with pytest.raises(SystemExit) as e:
        main(["teacher", "--resume", "--steps", "2", "--work", str(tmp_path), "--out", str(tmp_path / "t.safetensors")])
    assert e.value.code == 2 and "--resume: no checkpoint in" in capsys.readouterr().err


def test_ctrl_c_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    import signal
    import time
    teacher, samples = _tiny_teacher_and_samples(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "swd_distill", "distill", "--recipe", "mmd",
                             "--teacher", str(teacher), "--dataset", str(samples), "--batch", "4", "--rank", "4", "--steps", "100000", "--checkpoint-every", "1",
                             "--threads", "1", "--out", str(tmp_path / "o.safetensors"), "--work", str(tmp_path)],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True,
                            # a shell started in the background ignores SIGINT for its children: give it back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint = tmp_path / "o" / "student.ckpt.safetensors"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stopped: distill was interrupted")
    assert "--resume" in err and checkpoint.exists() and not (tmp_path / "o.safetensors").exists()
