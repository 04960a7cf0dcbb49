"""gcv-train: split, loaders, the files of a run, checkpoints, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from garmentcv.data.layouts import load_dataset
from garmentcv.errors import CheckpointError, DatasetError, GarmentCVError, OutputPathError, WeightsError
from garmentcv.image import load_input
from garmentcv.models import MODELS, default_preprocessing
from garmentcv.train import loop
from garmentcv.train.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig
from garmentcv.train.data import EvalImages, build_loaders, split_dataset

TINY = {"image_size": 32, "weights": "none", "batch_size": 4, "epochs": 1}


def test_split_is_stratified_disjoint_and_reproducible(make_lamoda) -> None:
    ds = load_dataset(make_lamoda(classes=("a", "b", "c"), per_class=10))
    one, two = split_dataset(ds, 0.2, seed=1), split_dataset(ds, 0.2, seed=1)
    assert one == two
    assert not {s.path for s in one.train} & {s.path for s in one.val}
    assert len(one.train) + len(one.val) == 30
    assert sorted(s.label for s in one.val) == ["a", "a", "b", "b", "c", "c"]
    assert split_dataset(ds, 0.2, seed=2).val != one.val


def test_split_refuses_classes_too_small_to_split(make_lamoda) -> None:
    ds = load_dataset(make_lamoda(per_class=1))
    with pytest.raises(DatasetError, match="fewer than 2 images"):
        split_dataset(ds, 0.2, 0)


def test_validation_uses_the_shared_inference_preprocessing(make_lamoda) -> None:
    """The identity that makes validation figures hold for the exported model."""
    ds = load_dataset(make_lamoda(per_class=2))
    pp = default_preprocessing("resnet18", 32)
    val = EvalImages(ds.samples, ds.classes, pp)
    for i, sample in enumerate(ds.samples):
        tensor, target = val[i]
        assert np.array_equal(tensor.numpy(), load_input(sample.path, pp))
        assert target == ds.classes.index(sample.label)


def test_a_last_batch_of_one_is_dropped(make_lamoda, tmp_path: Path) -> None:
    ds = load_dataset(make_lamoda(per_class=5))
    split = split_dataset(ds, 0.2, 0)  # 8 train images
    cfg = TrainConfig(data=tmp_path, out=tmp_path, batch_size=7, **{k: v for k, v in TINY.items() if k != "batch_size"})
    train_loader, _ = build_loaders(split, ds.classes, default_preprocessing("resnet18", 32), cfg, 0)
    assert [len(t) for _, t in train_loader] == [7]
    cfg = dataclasses.replace(cfg, batch_size=3)
    train_loader, _ = build_loaders(split, ds.classes, default_preprocessing("resnet18", 32), cfg, 0)
    assert [len(t) for _, t in train_loader] == [3, 3, 2]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_arch_trains_on_a_batch_ending_in_one_image(arch: str, make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(classes=("a", "b", "c"), per_class=4)  # 9 train images: batches of 8 and 1
    cfg = TrainConfig(data=data, out=tmp_path / "run", archs=(arch,), **{**TINY, "batch_size": 8})
    result = loop.train(cfg, progress=False)
    (only,) = result.archs
    assert only.arch == arch and len(only.history) == 1
    ckpt = load_checkpoint(tmp_path / "run" / arch / "best.pt")
    assert ckpt["classes"] == ["a", "b", "c"]
    assert ckpt["state_dict"][f"{MODELS[arch].head}.weight"].shape[0] == 3


def test_run_folder_holds_exactly_the_promised_files(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=5)
    out = tmp_path / "run"
    result = loop.train(
        TrainConfig(data=data, out=out, archs=("resnet18", "resnet34"), **{**TINY, "epochs": 2}), progress=False
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    per_arch = ["best.pt", "confusion_matrix.png", "curves.png", "last.pt", "metrics.json"]
    assert files == [
        "comparison.md",
        "config.json",
        *[f"{a}/{f}" for a in ("resnet18", "resnet34") for f in per_arch],
        "train.csv",
        "val.csv",
    ]

    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == result_config(result, data, out)
    assert (out / "val.csv").read_text().splitlines()[0] == "path,label"
    assert (
        len((out / "train.csv").read_text().splitlines()) == 1 + 8
        and len((out / "val.csv").read_text().splitlines()) == 1 + 2
    )

    metrics = json.loads((out / "resnet18" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [round(h["lr"], 6) for h in metrics["history"]] == [0.01, 0.008]  # x0.8 per epoch
    assert set(metrics["history"][0]) >= {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "confusion_matrix",
    }
    assert sum(map(sum, metrics["history"][0]["confusion_matrix"])) == 2

    ckpt = torch.load(out / "resnet18" / "best.pt", weights_only=True)  # plain types only
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["arch"] == "resnet18"
    assert ckpt["classes"] == ["bluzy", "bryuki"]
    assert ckpt["preprocessing"] == default_preprocessing("resnet18", 32).to_dict()
    assert ckpt["weights_source"] == "none (random init)"
    assert ckpt["epoch"] == metrics["best_epoch"]
    assert set(ckpt["versions"]) == {"garmentcv", "torch", "torchvision"}
    assert "optimizer" in torch.load(out / "resnet18" / "last.pt", weights_only=True)

    table = (out / "comparison.md").read_text().splitlines()
    assert table[-2].startswith("| resnet18 | ") and table[-1].startswith("| resnet34 | ")


def result_config(result, data: Path, out: Path) -> TrainConfig:
    return TrainConfig(data=data, out=out, archs=("resnet18", "resnet34"), **{**TINY, "epochs": 2})


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_resume_ends_where_an_uninterrupted_run_would(
    make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_lamoda(per_class=5)
    settings = {**TINY, "epochs": 3}
    loop.train(TrainConfig(data=data, out=tmp_path / "straight", **settings), progress=False)

    real = loop.train_one_epoch
    calls = {"n": 0}

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        loop.train(TrainConfig(data=data, out=tmp_path / "broken", **settings), progress=False)
    assert load_checkpoint(tmp_path / "broken" / "resnet18" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(loop, "train_one_epoch", real)
    loop.train(TrainConfig(data=data, out=tmp_path / "broken", resume=True, **settings), progress=False)

    straight = _final_weights(tmp_path / "straight" / "resnet18" / "last.pt")
    resumed = _final_weights(tmp_path / "broken" / "resnet18" / "last.pt")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    history = lambda run: json.loads((tmp_path / run / "resnet18" / "metrics.json").read_text())["history"]  # noqa: E731
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert strip(history("straight")) == strip(history("broken"))


def test_resume_refuses_changed_settings(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    loop.train(TrainConfig(data=data, out=tmp_path / "run", **TINY), progress=False)
    with pytest.raises(CheckpointError, match=r"lr: 0.01 -> 0.1"):
        loop.train(TrainConfig(data=data, out=tmp_path / "run", resume=True, **{**TINY, "lr": 0.1}), progress=False)
    with pytest.raises(CheckpointError, match="no config.json"):
        loop.train(TrainConfig(data=data, out=tmp_path / "new", resume=True, **TINY), progress=False)


def test_checkpoints_are_validated(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a GarmentCV checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "new.pt", {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_checkpoint(tmp_path / "new.pt")
    save_checkpoint(tmp_path / "partial.pt", {"arch": "resnet18"})
    with pytest.raises(CheckpointError, match="checkpoint lacks"):
        load_checkpoint(tmp_path / "partial.pt")


def test_cli_trains_and_prints_the_summary(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=4)
    args = [str(data), "--out", str(tmp_path / "run"), "--weights", "none", "--image-size", "32", "--epochs", "1", "-q"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert "| resnet18 | 1 |" in result.output
    assert f"resnet18: best epoch 1 -> {tmp_path / 'run' / 'resnet18' / 'best.pt'}" in result.output


def test_cli_errors_have_meaningful_exit_codes(tmp_path: Path, make_lamoda, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    data = make_lamoda(per_class=3)
    unknown = runner.invoke(train_main, [str(data), "--arch", "resnet19"])
    assert (
        unknown.exit_code == 2
        and "Invalid value for '--arch': unknown arch 'resnet19'; choose one of" in unknown.output
    )
    too_small = runner.invoke(train_main, [str(data), "--arch", "vit_b_16", "--image-size", "32", "--weights", "none",
                                           "--out", str(tmp_path / "vit")])
    assert too_small.exit_code == 1 and "vit_b_16 cannot take 32 px input" in too_small.output
    assert not (tmp_path / "vit").exists()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    missing = runner.invoke(train_main, [str(data), "--out", str(tmp_path / "r"), "-q"])
    assert missing.exit_code == 1
    assert "Error: cannot get ImageNet weights for resnet18" in missing.output and "--weights none" in missing.output
    resume = runner.invoke(train_main, [str(data), "--resume"])
    assert resume.exit_code == 2 and "--resume needs --out" in resume.output


def test_help_shows_every_default() -> None:
    text = " ".join(CliRunner().invoke(train_main, ["--help"]).output.split())
    for expected in (
        "--epochs INTEGER RANGE Passes over the training split. [default: 5; x>=1]",
        "[default: 0.01; x>0]",
        "[default: 0.8; 0<x<=1]",
        "(at least 2: BatchNorm cannot train on one). [default: 32; x>=2]",
        "[default: 0.2; 0<x<1]",
        "[default: imagenet]",
        "[default: resnet18]",
        "[default: auto]",
    ):
        assert expected in text, expected


def _dataset_of(counts: dict[str, int], tmp_path: Path):
    from tests.conftest import write_image

    root, number = tmp_path / "uneven", 0
    for label, n in counts.items():
        for _ in range(n):
            number += 1
            write_image(root / f"{number:04d}_{label}.jpg", (8, 8), seed=number)
    return load_dataset(root)


def test_split_gives_every_class_of_two_or_more_a_validation_image(tmp_path: Path) -> None:
    ds = _dataset_of({"big": 100, "small": 2}, tmp_path)
    split = split_dataset(ds, 0.2, seed=0)
    assert sorted(set(s.label for s in split.val)) == ["big", "small"]
    assert sum(s.label == "small" for s in split.val) == 1 and sum(s.label == "small" for s in split.train) == 1
    assert len(split.train) + len(split.val) == 102 and not {s.path for s in split.train} & {s.path for s in split.val}
    assert split.no_val_classes == ()
    assert split == split_dataset(ds, 0.2, seed=0)


@pytest.mark.parametrize(("counts", "fraction"), [({"a": 3, "b": 3, "c": 3}, 0.2), ({"a": 2, "b": 2}, 0.9)])
def test_split_of_few_images_per_class_still_puts_every_class_on_both_sides(
        tmp_path: Path, counts: dict[str, int], fraction: float) -> None:
    """sklearn refuses a test (or train) side with fewer images than classes; the split must not."""
    ds = _dataset_of(counts, tmp_path)
    split = split_dataset(ds, fraction, seed=0)
    for name, n in counts.items():
        in_val = sum(s.label == name for s in split.val)
        assert 1 <= in_val <= n - 1, (name, in_val)
    assert len(split.train) + len(split.val) == sum(counts.values())


def test_split_keeps_a_one_image_class_for_training_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _dataset_of({"big": 10, "lone": 1}, tmp_path)
    split = split_dataset(ds, 0.2, seed=0)
    assert split.no_val_classes == ("lone",)
    assert [s.label for s in split.train].count("lone") == 1 and all(s.label == "big" for s in split.val)
    assert "lone" in caplog.text and "no validation image" in caplog.text


def test_a_damaged_checkpoint_gets_a_plain_message_without_torchs_code(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"arch": "resnet18"})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a zip without its central directory
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(cut)
    message = str(info.value)
    assert message.startswith(f"{cut}: not a readable checkpoint") and "truncated or corrupt" in message
    assert "(105)" not in message and "central directory" not in message
    assert "best.pt or last.pt" in message
    assert "central directory" in str(info.value.__cause__)  # the raw error stays chained for --debug


def test_quiet_cli_prints_no_download_line_and_one_epoch_is_singular(
    make_lamoda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cache"))
    progress_args = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        progress_args.append(progress)
        torch.manual_seed(0)
        torch.save(MODELS["resnet18"].builder(weights=None, num_classes=1000).state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    data = make_lamoda(per_class=4)
    args = [str(data), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1", "-q"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert progress_args == [False]
    assert "Downloading" not in result.output
    header = (tmp_path / "run" / "comparison.md").read_text()
    assert "), 1 epoch, image size 32 px" in header


def test_cli_refuses_batch_size_one_with_the_reason(make_lamoda) -> None:
    result = CliRunner().invoke(train_main, [str(make_lamoda(per_class=3)), "--batch-size", "1", "--weights", "none"])
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size'" in result.output
    assert "BatchNorm needs at least 2 images per training batch" in result.output


def test_library_refuses_batch_size_one(make_lamoda, tmp_path: Path) -> None:
    cfg = TrainConfig(data=make_lamoda(per_class=3), out=tmp_path / "run", **{**TINY, "batch_size": 1})
    with pytest.raises(GarmentCVError, match="batch size must be at least 2"):
        loop.train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_batches_of_one_at_the_1x1_stage_train_and_validate(make_lamoda, tmp_path: Path) -> None:
    """At 32 px resnet18's last stage is 1x1: a training batch of one would crash BatchNorm."""
    data = make_lamoda(classes=("a", "b", "c"), per_class=4)  # 9 train (batches 2,2,2,2 + 1 dropped), 3 val (2 + 1)
    cfg = TrainConfig(data=data, out=tmp_path / "run", **{**TINY, "batch_size": 2})
    split = split_dataset(load_dataset(data), 0.2, 0)
    train_loader, val_loader = build_loaders(split, ("a", "b", "c"), default_preprocessing("resnet18", 32), cfg, 0)
    assert [len(t) for _, t in train_loader] == [2, 2, 2, 2] and [len(t) for _, t in val_loader] == [2, 1]
    (only,) = loop.train(cfg, progress=False).archs
    assert sum(map(sum, only.best["confusion_matrix"])) == 3


def test_a_used_run_folder_is_refused_without_resume(make_lamoda, tmp_path: Path) -> None:
    data, out = make_lamoda(per_class=3), tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY), progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(OutputPathError) as info:
        loop.train(TrainConfig(data=data, out=out, **{**TINY, "seed": 1}), progress=False)
    message = str(info.value)
    assert (
        str(out) in message and "already holds" in message and "choose a new --out" in message and "--resume" in message
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    result = CliRunner().invoke(train_main, [str(data), "--out", str(out), "--weights", "none", "--image-size", "32"])
    assert result.exit_code == 1 and "choose a new --out" in result.output
    (tmp_path / "empty").mkdir()
    loop.train(TrainConfig(data=data, out=tmp_path / "empty", **TINY), progress=False)  # an empty folder is fine
    assert (tmp_path / "empty" / "resnet18" / "best.pt").is_file()


def test_a_failed_run_leaves_no_run_folder(tmp_path: Path, make_lamoda, monkeypatch: pytest.MonkeyPatch) -> None:
    one_class = make_lamoda(classes=("bluzy",), per_class=3)
    with pytest.raises(DatasetError):
        loop.train(TrainConfig(data=one_class, out=tmp_path / "runs" / "a", **TINY), progress=False)
    assert not (tmp_path / "runs" / "a").exists()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    data = make_lamoda(per_class=3, name="two")
    with pytest.raises(WeightsError):
        loop.train(
            TrainConfig(data=data, out=tmp_path / "runs" / "b", **{**TINY, "weights": "imagenet"}), progress=False
        )
    assert not (tmp_path / "runs" / "b").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == []


def test_an_unwritable_out_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_lamoda
) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: pytest.fail("read the data before checking --out"))
    with pytest.raises(OutputPathError, match=r"--out .*file is not a folder but a file; choose another place"):
        loop.train(TrainConfig(data=tmp_path, out=tmp_path / "file" / "run", **TINY), progress=False)
    result = CliRunner().invoke(
        train_main, [str(tmp_path), "--out", str(tmp_path / "file" / "run"), "--weights", "none"]
    )
    assert result.exit_code == 1 and "is not a folder but a file" in result.output and "Traceback" not in result.output


def _with_a_corrupt_image(make_lamoda) -> tuple[Path, Path]:
    data = make_lamoda(per_class=5)
    bad = data / "0003_bluzy.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return data, bad


@pytest.mark.parametrize("workers", [0, 1])
def test_an_undecodable_image_stops_training_up_front_with_its_name(workers: int, make_lamoda, tmp_path: Path) -> None:
    data, bad = _with_a_corrupt_image(make_lamoda)
    cfg = TrainConfig(data=data, out=tmp_path / "run", **{**TINY, "workers": workers})
    with pytest.raises(DatasetError) as info:
        loop.train(cfg, progress=False)
    message = str(info.value)
    assert "1 image cannot be decoded" in message and str(bad) in message
    assert "fix or remove" in message and "--skip-bad-images" in message
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(train_main, [str(data), "--out", str(tmp_path / "cli"), "--weights", "none",
                                             "--image-size", "32", "--workers", str(workers), "-q"])
    assert result.exit_code == 1 and str(bad) in result.output and "RuntimeError" not in result.output


def test_skip_bad_images_trains_without_them_and_records_them(
    make_lamoda, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, bad = _with_a_corrupt_image(make_lamoda)
    out = tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, skip_bad_images=True, **TINY), progress=False)
    split_paths = [
        line.split(",")[0] for name in ("train.csv", "val.csv") for line in (out / name).read_text().splitlines()[1:]
    ]
    assert len(split_paths) == 9 and str(bad.resolve()) not in split_paths
    rows = (out / "skipped_images.csv").read_text().splitlines()
    assert rows[0] == "path,reason" and len(rows) == 2 and rows[1].startswith(f"{bad.resolve()},")
    assert f"skipping 1 image that cannot be decoded: {bad}" in caplog.text
    assert json.loads((out / "config.json").read_text())["skip_bad_images"] is True


def test_the_image_check_decodes_each_image_once(make_lamoda, monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentcv.train import data as train_data

    data, bad = _with_a_corrupt_image(make_lamoda)
    ds = load_dataset(data)
    seen: list[Path] = []
    real = train_data.decode_image
    monkeypatch.setattr(train_data, "decode_image", lambda p: (seen.append(Path(p)), real(p))[1])
    found = train_data.find_bad_images(ds.samples, progress=False)
    assert sorted(seen) == sorted(s.path for s in ds.samples)
    assert [(b.sample.path, "cannot decode" not in b.reason) for b in found] == [(bad, True)]


def test_a_file_name_that_is_not_utf8_round_trips_through_the_split_files(make_lamoda, tmp_path: Path) -> None:
    import csv
    import os
    import shutil

    data = make_lamoda(per_class=4)
    odd = os.path.join(os.fsencode(data), b"0009\xff_bluzy.jpg")
    shutil.copyfile(data / "0001_bluzy.jpg", odd)
    out = tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY), progress=False)
    rows = []
    for name in ("train.csv", "val.csv"):
        with open(out / name, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows += [row["path"] for row in csv.DictReader(handle)]
    assert len(rows) == 9
    (named,) = [r for r in rows if "0009" in r]
    assert os.fsencode(named) == os.path.realpath(odd) and os.path.isfile(named)


def test_resume_refuses_a_dataset_that_changed(make_lamoda, tmp_path: Path) -> None:
    from tests.conftest import write_image

    data, out = make_lamoda(per_class=4), tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY), progress=False)
    added = write_image(data / "0100_bryuki.jpg", seed=100)
    with pytest.raises(CheckpointError) as info:
        loop.train(TrainConfig(data=data, out=out, resume=True, **TINY), progress=False)
    message = str(info.value)
    assert "dataset changed" in message and "1 file added (" in message and "0100_bryuki.jpg" in message
    assert "removed" not in message and "new --out" in message
    added.unlink()
    (data / "0002_bluzy.jpg").unlink()
    (data / "0003_bluzy.jpg").unlink()
    with pytest.raises(CheckpointError, match=r"2 files removed \(.*0002_bluzy.jpg, .*0003_bluzy.jpg\)"):
        loop.train(TrainConfig(data=data, out=out, resume=True, **TINY), progress=False)


def test_resume_refuses_other_workers(make_lamoda, tmp_path: Path) -> None:
    data, out = make_lamoda(per_class=3), tmp_path / "run"
    loop.train(TrainConfig(data=data, out=out, **TINY), progress=False)
    with pytest.raises(CheckpointError, match=r"workers: 0 -> 1"):
        loop.train(TrainConfig(data=data, out=out, resume=True, **{**TINY, "workers": 1}), progress=False)
    loop.train(
        TrainConfig(data=data, out=out, resume=True, **TINY), progress=False
    )  # the same data and settings resume


def test_a_class_without_validation_images_is_named_in_the_run_reports(tmp_path: Path) -> None:
    ds = _dataset_of({"big": 10, "lone": 1, "mid": 5}, tmp_path)
    out = tmp_path / "run"
    loop.train(TrainConfig(data=ds.root, out=out, **TINY), progress=False)
    best = json.loads((out / "resnet18" / "metrics.json").read_text())["history"][0]
    assert best["macro_classes"] == [0, 2] and best["absent_classes"] == [1]
    assert "No validation image for class lone: its figures are absent" in (out / "comparison.md").read_text()
