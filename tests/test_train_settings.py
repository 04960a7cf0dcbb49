"""gcv-train's settings: one source (TrainConfig), --config reruns, command-line overrides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from click.testing import CliRunner

from garmentcv.train.cli import main as train_main
from garmentcv.train.config import TrainConfig

#: Fields that are not options with a default of their own: DATA is the argument, --out defaults to a new folder.
NOT_OPTIONS = {"data", "out"}


def _options() -> dict[str, object]:
    return {p.name: p for p in train_main.params}


def test_every_config_field_is_an_option_with_the_same_default() -> None:
    params = _options()
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_OPTIONS:
            continue
        assert f.name in params, f"TrainConfig.{f.name} has no gcv-train option"
        assert params[f.name].default == f.default, f.name
        assert params[f.name].help == f.metadata["help"], f.name


def test_help_shows_the_default_of_every_option() -> None:
    params = _options()
    ctx = train_main.make_context("gcv-train", ["--help"], resilient_parsing=True)
    assert "[default: 5; x>=1]" in " ".join(CliRunner().invoke(train_main, ["--help"]).output.split())
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_OPTIONS or f.default is None or f.default is True:
            continue
        shown = ", ".join(f.default) if isinstance(f.default, tuple) else "(off)" if f.default is False else f.default
        _, text = params[f.name].get_help_record(ctx)
        assert f"[default: {shown}" in text, f.name


def test_a_rerun_from_config_json_writes_the_same_config(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    first = [str(data), "--out", str(tmp_path / "a"), "--weights", "none", "--image-size", "32", "--epochs", "1",
             "--batch-size", "4", "--lr", "0.003", "--seed", "7", "--jitter", "0", "-q"]
    assert CliRunner().invoke(train_main, first).exit_code == 0
    again = ["--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"), "-q"]
    result = CliRunner().invoke(train_main, again)
    assert result.exit_code == 0, result.output
    one, two = (json.loads((tmp_path / run / "config.json").read_text()) for run in ("a", "b"))
    assert one.pop("out") == str(tmp_path / "a") and two.pop("out") == str(tmp_path / "b")
    assert one == two and one["lr"] == 0.003 and one["seed"] == 7


def test_options_on_the_command_line_override_the_config(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    stored = TrainConfig(data=data, out=tmp_path / "old", weights="none", image_size=32, epochs=1, batch_size=4,
                         lr=0.003)
    (tmp_path / "config.json").write_text(json.dumps(stored.to_dict()))
    args = ["--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "new"), "--lr", "0.02", "-q"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "new" / "config.json").read_text())
    assert written["lr"] == 0.02 and written["batch_size"] == 4 and written["data"] == str(data)


def test_a_config_that_is_not_a_run_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    result = CliRunner().invoke(train_main, ["--config", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "bad.json" in result.output and "config.json" in result.output
    result = CliRunner().invoke(train_main, ["--epochs", "1"])
    assert result.exit_code == 2 and "DATA" in result.output


def _captured_config(monkeypatch, args: list[str]) -> TrainConfig:
    """The TrainConfig gcv-train builds from ``args`` (training itself replaced by a capture)."""
    import garmentcv.train.loop as loop

    seen: list[TrainConfig] = []

    def capture(cfg: TrainConfig, progress: bool = True):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(loop, "train", capture)
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    return seen[0]


def test_a_preset_replaces_the_defaults_it_names_and_given_options_win(
    make_lamoda, tmp_path: Path, monkeypatch
) -> None:
    from garmentcv.train.config import PRESETS

    data = make_lamoda(per_class=3)
    cfg = _captured_config(monkeypatch, [str(data), "--out", str(tmp_path / "a"), "--preset", "scratch"])
    assert cfg.preset == "scratch"
    # random init, as its name and its help say (without it, the ImageNet download of the default fails offline)
    assert {name: getattr(cfg, name) for name in PRESETS["scratch"]} == PRESETS["scratch"] == {"epochs": 10,
                                                                                                "weights": "none"}
    untouched = TrainConfig(data=data, out=tmp_path / "a")
    assert all(getattr(cfg, f.name) == getattr(untouched, f.name)
               for f in dataclasses.fields(TrainConfig) if f.name not in {*PRESETS["scratch"], "preset"})
    cfg = _captured_config(monkeypatch,
                           [str(data), "--out", str(tmp_path / "b"), "--preset", "scratch", "--epochs", "2"])
    assert cfg.epochs == 2 and cfg.preset == "scratch"  # the given option wins over the preset's 10
    cfg_weights = _captured_config(monkeypatch, [str(data), "--out", str(tmp_path / "c"), "--preset", "scratch",
                                                 "--weights", "imagenet"])
    assert (cfg_weights.weights, cfg_weights.epochs) == ("imagenet", 10)
    assert (TrainConfig.with_preset("scratch", data=data, out=tmp_path, epochs=2)
            == dataclasses.replace(cfg, out=tmp_path))


def test_a_preset_run_reruns_from_its_config_json_and_unknown_presets_are_refused(make_lamoda, tmp_path: Path) -> None:
    data = make_lamoda(per_class=3)
    args = [str(data), "--out", str(tmp_path / "a"), "--preset", "scratch", "--epochs", "1", "--weights", "none",
            "--image-size", "32", "--batch-size", "4", "-q"]
    assert CliRunner().invoke(train_main, args).exit_code == 0
    stored = json.loads((tmp_path / "a" / "config.json").read_text())
    assert stored["preset"] == "scratch" and stored["epochs"] == 1
    again = CliRunner().invoke(train_main, ["--config", str(tmp_path / "a" / "config.json"),
                                            "--out", str(tmp_path / "b"), "-q"])
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k: v for k, v in rerun.items() if k != "out"} == {k: v for k, v in stored.items() if k != "out"}
    unknown = CliRunner().invoke(train_main, [str(data), "--preset", "imagenet-like"])
    assert unknown.exit_code == 2 and "'imagenet-like' is not 'scratch'" in unknown.output
