"""Teacher-sample datasets (swd_distill/samples.py) and `python -m swd_distill samples`: the shard format round-trips,
older folders stay readable, bad folders and bad options are refused in one line naming them."""
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from swd_distill import samples
from swd_distill.samples import DatasetError, SampleSpec, load_dataset, load_samples, start_dataset, write_shard
from swd_sampler import tiny

REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "models" / "diffusion_models" / tiny.TEACHER_FILE
PROMPTS = ["red circle", "striped yellow square top left on black"]


def _cond(tokens: int, seed: int, pooled: bool = True, **extra) -> list:
    g = torch.Generator().manual_seed(seed)
    out = {"pooled_output": torch.randn(1, 6, generator=g)} if pooled else {}
    return [[torch.randn(1, tokens, 8, generator=g), {**out, **extra}]]


def _write(folder: Path, spec: SampleSpec, conds: list, seed: int = 0) -> torch.Tensor:
    """A dataset of `spec` with random latents and the given conditioning per prompt; returns all latents."""
    start_dataset(folder, spec, _cond(3, 99, pooled="pooled_output" in conds[0][0][1]))
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(spec.count, 4, 2, 3, generator=g)
    for s in range(spec.shards):
        rows = spec.prompts_of(s)
        write_shard(folder, spec, s, latents[rows.start * spec.per_caption:rows.stop * spec.per_caption],
                    conds[rows.start:rows.stop])
    return latents


def test_shards_round_trip_with_prompts_of_different_lengths_and_the_guidance(tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "SHARD", 4)  # 2 prompts of 2 images per shard: 3 shards, the last one short
    captions = ("a", "b", "c", "d", "e")
    spec = SampleSpec(teacher=samples.GRAPH, captions=captions, per_caption=2, guidance=4.0)
    conds = [_cond(3 if i != 3 else 5, i, guidance=4.0) for i in range(5)]  # prompt 3 is longer: shard 1 per-sample
    latents = _write(tmp_path / "ds", spec, conds)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "dataset.json", "negative.safetensors", "shard-00000.safetensors", "shard-00001.safetensors",
        "shard-00002.safetensors"]
    assert set(load_file(str(tmp_path / "ds" / "shard-00000.safetensors"))) == {"latents", "context", "pooled"}
    assert set(load_file(str(tmp_path / "ds" / "shard-00001.safetensors"))) == {
        "latents", "pooled", "context.0", "context.1", "context.2", "context.3"}
    got, entries, got_captions = load_dataset(tmp_path / "ds")
    assert torch.equal(got, latents) and got_captions == [c for c in captions for _ in range(2)]
    for k, (context, extra) in enumerate(entries):
        want_context, want_extra = conds[k // 2][0]
        assert torch.equal(context, want_context) and torch.equal(extra["pooled_output"], want_extra["pooled_output"])
        assert extra["guidance"] == 4.0 and set(extra) == {"pooled_output", "guidance"}
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert manifest["teacher"] == "graph" and manifest["guidance"] == 4.0 and manifest["shard_prompts"] == 2
    with pytest.raises(DatasetError, match="different lengths or without a pooled output: read it with load_dataset"):
        load_samples(tmp_path / "ds")


def test_a_conditioning_without_pooled_output_is_stored_without_it(tmp_path):
    spec = SampleSpec(teacher=samples.GRAPH, captions=("a", "b"), per_caption=1)
    _write(tmp_path / "ds", spec, [_cond(3, i, pooled=False) for i in range(2)])
    _, entries, _ = load_dataset(tmp_path / "ds")
    assert [extra for _, extra in entries] == [{}, {}]
    assert set(load_file(str(tmp_path / "ds" / "negative.safetensors"))) == {"context"}


def _legacy(folder: Path, captions, per_caption: int) -> torch.Tensor:
    """A folder as the first release wrote it: no layout, 64 samples per shard, sample r of caption r mod P."""
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({
        "teacher": "t.safetensors 00", "captions": list(captions), "per_caption": per_caption, "steps": 28,
        "cfg": 3.0, "seed": 0, "width": 128, "height": 128}))
    count = len(captions) * per_caption
    latents = torch.randn(count, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    for s in range(-(-count // 64)):
        rows = range(s * 64, min(count, s * 64 + 64))
        pairs = [tiny.encode_text(captions[r % len(captions)]) for r in rows]
        save_file({"latents": latents[rows.start:rows.stop], "context": torch.cat([c for c, _ in pairs]),
                   "pooled": torch.cat([p for _, p in pairs])}, str(folder / f"shard-{s:05d}.safetensors"),
                  metadata={"captions": json.dumps([captions[r % len(captions)] for r in rows])})
    return latents


def test_folders_of_the_first_release_stay_readable_and_count_as_done(tmp_path):
    captions = tuple(f"red circle{' on blue' if i % 2 else ''}" for i in range(40))
    latents = _legacy(tmp_path / "old", captions, 2)  # 80 samples: 2 shards
    got, context, pooled, got_captions = load_samples(tmp_path / "old")
    assert torch.equal(got, latents) and got_captions == [captions[r % 40] for r in range(80)]
    assert torch.equal(context[41], tiny.encode_text(captions[1])[0][0])
    _, entries, _ = load_dataset(tmp_path / "old")
    assert torch.equal(entries[41][1]["pooled_output"], pooled[41:42])
    spec = SampleSpec(teacher="t.safetensors 00", captions=captions, per_caption=2)
    assert start_dataset(tmp_path / "old", spec, None) == []  # the same settings: nothing left to make
    assert not (tmp_path / "old" / "negative.safetensors").exists()
    (tmp_path / "old" / "shard-00001.safetensors").unlink()
    with pytest.raises(DatasetError, match="made by an earlier version .* cannot be finished .* delete it"):
        start_dataset(tmp_path / "old", spec, None)


def _good(tmp_path) -> Path:
    _write(tmp_path / "ds", SampleSpec(teacher=samples.GRAPH, captions=("a", "b"), per_caption=1),
           [_cond(3, 0), _cond(3, 1)])
    return tmp_path / "ds"


def _nan_latents(folder):
    data = load_file(str(folder / "shard-00000.safetensors"))
    data["latents"][1, 0, 0, 0] = float("nan")
    save_file(data, str(folder / "shard-00000.safetensors"), metadata={"captions": json.dumps(["a", "b"])})


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.rename(f.with_name("gone")), "ds does not exist: give a dataset folder (make it with `python -m "
                                              "swd_distill samples` or the SwD Teacher Samples node"),
    (lambda f: (f / "dataset.json").unlink(), "ds is not a dataset folder (no dataset.json)"),
    (lambda f: [(f / "dataset.json").unlink(), (f / "shard_0000.pkl").write_bytes(pickle.dumps({"x": 1}))],
     "It holds shard_0000.pkl: ComfyUI's Save Training Dataset writes pickles, which this pack never loads"),
    (lambda f: (f / "dataset.json").write_text("{not json"), "dataset.json is not a dataset description this pack "
                                                               "wrote"),
    (lambda f: (f / "shard-00000.safetensors").unlink(), "ds is incomplete (shard-00000.safetensors is missing): run "
                                                         "`python -m swd_distill samples` again with the same settings"),
    (lambda f: (f / "shard-00000.safetensors").write_bytes(pickle.dumps({"latents": 1})),
     "shard-00000.safetensors is a pickle (torch.save) file named like a shard; pickles are never loaded"),
    (lambda f: (f / "shard-00000.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage!}" * 3),
     "shard-00000.safetensors is not a readable safetensors file"),
    (lambda f: (f / "shard-00001.pt").write_bytes(b"PK\x03\x04"),
     "shard-00001.pt is a pickle-format file, which is never loaded (dataset.json lists shard-00000 .. "
     "shard-00000.safetensors): remove it"),
    (_nan_latents, "shard-00000.safetensors: latent 1 (and 0 more) holds NaN or inf values: delete this shard"),
])
def test_a_bad_folder_is_refused_naming_the_folder_or_file_and_the_fix(tmp_path, damage, message):
    folder = _good(tmp_path)
    damage(folder)
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert message in str(e.value)


def test_a_folder_of_other_settings_or_a_foreign_folder_is_never_written_over(tmp_path):
    folder = _good(tmp_path)
    with pytest.raises(DatasetError, match=r"other settings \(per_caption, seed differ\): choose another folder"):
        start_dataset(folder, SampleSpec(teacher=samples.GRAPH, captions=("a", "b"), per_caption=2, seed=1), None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="is not empty and is not a dataset folder"):
        start_dataset(tmp_path / "mine", SampleSpec(teacher=samples.GRAPH, captions=("a",)), None)


# The command line ---------------------------------------------------------------------------------------------------

def _cli(argv, capsys):
    from swd_distill.cli import main
    main(["samples", "--threads", "1", *argv])
    return capsys.readouterr().err


def test_the_samples_command_on_the_tiny_teacher_writes_a_folder_as_ksampler_samples(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    out = tmp_path / "ds"
    argv = ["--prompts", str(tmp_path / "prompts.txt"), "--out", str(out), "--steps", "2", "--per-prompt", "2",
            "--seed", "5"]
    assert f"{out}: 4 samples of 2 prompts" in _cli(argv, capsys)
    latents, entries, captions = load_dataset(out)
    assert latents.shape == (4, 16, 16, 16) and captions == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["teacher"] == samples.file_id(TEACHER) and manifest["cfg"] == 3.0 and manifest["guidance"] is None
    # prompt i is KSampler's batch for seed + i: comfy.sample.sample of prepare_noise(seed + i)
    import comfy.sample
    import comfy.sd
    model = comfy.sd.load_diffusion_model(str(TEACHER))
    context, pooled = tiny.encode_text(PROMPTS[1])
    empty, empty_pooled = tiny.encode_text("")
    latent = torch.zeros(2, 16, 16, 16)
    want = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 6), 2, 3.0, "euler", "simple",
                               [[context, {"pooled_output": pooled}]], [[empty, {"pooled_output": empty_pooled}]],
                               latent, seed=6)
    assert torch.equal(latents[2:], want)
    assert torch.equal(entries[3][0], context) and torch.equal(entries[3][1]["pooled_output"], pooled)
    negative = load_file(str(out / "negative.safetensors"))
    assert torch.equal(negative["context"], empty) and torch.equal(negative["pooled"], empty_pooled)
    # run again: the folder is complete, nothing is sampled or rewritten
    stamp = (out / "shard-00000.safetensors").stat().st_mtime_ns
    assert f"{out}: 4 samples of 2 prompts" in _cli(argv, capsys)
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "nowhere.safetensors"], "--teacher nowhere.safetensors does not exist"),
    (["--clip", "nowhere.safetensors"], "--clip nowhere.safetensors does not exist"),
    (["--prompts", "{tmp}/none.txt", "--out", "{tmp}/ds"], "none.txt: [Errno 2] No such file"),
    (["--prompts", "{tmp}/empty.txt", "--out", "{tmp}/ds"], "empty.txt holds no prompt: write one prompt per line"),
    (["--prompts", "{tmp}/p.txt"], "--out is needed: the folder to write the dataset into"),
    (["--width", "100"], "--width 100 must be a positive multiple of 8"),
    (["--height", "120"], "--height 120 does not fit --teacher swd-tiny-teacher.safetensors: use a multiple of 16 "
                          "(e.g. 128)"),
    (["--per-prompt", "0"], "--per-prompt 0 must be at least 1"),
    (["--sampler", "eulr"], "--sampler 'eulr' is not one of ComfyUI's: euler, "),
    (["--prompts", "{tmp}/bad.txt", "--out", "{tmp}/ds"], "prompt 2 ('purple circle') is not a caption of the tiny "
                                                          "teacher: text: the word 'purple'"),
])
def test_bad_samples_options_are_refused_in_one_line_naming_the_option(tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "p.txt").write_text("red circle\n")
    (tmp_path / "bad.txt").write_text("red circle\npurple circle\n")
    with pytest.raises(SystemExit) as e:
        _cli([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_another_teacher_needs_prompts_and_its_text_encoders(tmp_path, capsys):
    from tiny_models import build_sd3  # a random SD3 MMDiT: ComfyUI loads it as SD3, with no text encoder
    teacher = tmp_path / "sd3.safetensors"
    save_file(build_sd3(), str(teacher))
    (tmp_path / "p.txt").write_text("a fox\n")
    for argv, message in (
            ([], f"--prompts is needed for --teacher {teacher}"),
            (["--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "ds")],
             f"--clip is needed: --teacher {teacher} holds no text encoder"),
            (["--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "ds"), "--clip", str(TEACHER)],
             f"--clip {TEACHER}: not text encoders ComfyUI can use for a sd3 model")):
        with pytest.raises(SystemExit) as e:
            _cli(["--teacher", str(teacher), *argv], capsys)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
