"""Calibration figures (ECE, NLL, Brier), the temperature fit, and their use by export, classify and evaluate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from garmentcv.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)


def test_softmax_with_temperature() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    p = softmax(logits, 2.0)
    assert p[0, 0] == pytest.approx(math.e / (math.e + 1), abs=1e-12)
    assert p[1].tolist() == [0.5, 0.5]
    assert softmax(logits).tolist()[0] == pytest.approx([math.e**2 / (math.e**2 + 1), 1 / (math.e**2 + 1)])
    with pytest.raises(ValueError, match="temperature"):
        softmax(logits, 0.0)


# Four images, two classes; hand-computed figures below.
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
TARGETS = np.array([0, 1, 1, 0])


def test_nll_and_brier_by_hand() -> None:
    # NLL = -(ln .9 + ln .2 + ln .7 + ln .6) / 4
    assert negative_log_likelihood(PROBS, TARGETS) == pytest.approx(
        -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4, abs=1e-12)
    # Brier = mean over images of sum_c (p_c - y_c)^2 = (0.02 + 1.28 + 0.18 + 0.32) / 4 = 0.45
    assert brier_score(PROBS, TARGETS) == pytest.approx(0.45, abs=1e-12)


def test_ece_by_hand() -> None:
    # confidences .9 (right), .8 (wrong), .7 (right), .6 (right); 15 bins of width 1/15:
    # .9 -> bin 13 (.8667,.9333], .8 -> bin 11 (.7333,.8], .7 -> bin 10 (.6667,.7333], .6 -> bin 8 (.5333,.6]
    # each bin one image: ECE = (|1-.9| + |0-.8| + |1-.7| + |1-.6|) / 4 = 1.6 / 4 = 0.4
    assert expected_calibration_error(PROBS, TARGETS) == pytest.approx(0.4, abs=1e-12)
    # two bins: (0,.5] empty, (.5,1] all four: |3/4 - (.9+.8+.7+.6)/4| = |.75 - .75| = 0
    assert expected_calibration_error(PROBS, TARGETS, bins=2) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(PROBS, TARGETS, bins=2)
    assert [(b.count, b.lower, b.upper) for b in bins] == [(0, 0.0, 0.5), (4, 0.5, 1.0)]
    assert bins[1].accuracy == pytest.approx(0.75) and bins[1].confidence == pytest.approx(0.75)
    assert math.isnan(bins[0].accuracy)


def test_confidence_on_a_bin_edge_goes_to_the_lower_bin() -> None:
    # Guo et al.'s bins are (m-1)/M < conf <= m/M: 0.6 with 5 bins lies in (0.4, 0.6], the third bin.
    bins = reliability_bins(np.array([[0.6, 0.4]]), np.array([0]), bins=5)
    assert [b.count for b in bins] == [0, 0, 1, 0, 0]


@pytest.mark.parametrize("true_t", [3.0, 0.5])
def test_fit_recovers_a_known_temperature(true_t: float) -> None:
    """Labels drawn from softmax(z); the model reports z * true_t, so the best temperature is true_t."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, size=(20000, 5))
    p = softmax(z)
    labels = (p.cumsum(axis=1) > rng.random((len(z), 1))).argmax(axis=1)
    fitted = fit_temperature(z * true_t, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)  # sampling noise at 20,000 labels: well under 5%
    assert negative_log_likelihood(softmax(z * true_t, fitted), labels) <= negative_log_likelihood(
        softmax(z * true_t), labels)


def test_fit_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no images"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="targets"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 3]))


def test_model_info_carries_the_temperature_and_old_files_read_as_uncalibrated() -> None:
    from garmentcv.artifact import ModelInfo
    from garmentcv.models.registry import default_preprocessing

    base = ModelInfo(arch="resnet18", classes=("a", "b"), preprocessing=default_preprocessing("resnet18", 32),
                     precision="fp32", weights_source="none")
    assert base.temperature is None and base.applied_temperature == 1.0
    assert "garmentcv.temperature" not in base.to_metadata()  # a file without it: as before this change
    assert ModelInfo.from_metadata(base.to_metadata()) == base
    calibrated = ModelInfo(**{**base.__dict__, "temperature": 2.5})
    props = calibrated.to_metadata()
    assert props["garmentcv.temperature"] == "2.5"
    back = ModelInfo.from_metadata(props)
    assert back == calibrated and back.applied_temperature == 2.5
    from garmentcv.errors import ModelFileError

    with pytest.raises(ModelFileError, match="temperature"):
        ModelInfo.from_metadata({**props, "garmentcv.temperature": "-1"})


# --- export fits T; evaluate uses it on other images ---

def _overconfident_run(root, spread: float = 30.0):
    """A run folder (tests.test_export.make_run) with an informative but far too sure head.

    The head is a nearest-centroid classifier on the backbone's features of the run's training images (so it
    is right on the clean images), its logits scaled to a spread of ``spread`` (so the raw softmax says ~1.0
    for nearly every image). Every 4th validation image is given the next class's label (label noise): the
    model is then wrong on a quarter of them while ~100% sure, as over-confident models are.
    """
    import csv as _csv

    import torch

    from garmentcv.image import Preprocessing, load_input
    from garmentcv.models.registry import build_model
    from garmentcv.train.checkpoint import load_checkpoint, save_checkpoint
    from tests.test_export import CLASSES, make_run

    ckpt = make_run(root, "resnet18", per_class=8)
    state = load_checkpoint(ckpt)
    model = build_model("resnet18", len(CLASSES), "none").model
    model.load_state_dict(state["state_dict"])
    model.fc = torch.nn.Identity()
    model.eval()
    pp = Preprocessing.from_dict(state["preprocessing"])
    with open(root / "train.csv", encoding="utf-8") as handle:
        rows = list(_csv.DictReader(handle))
    with torch.no_grad():
        features = model(torch.from_numpy(np.stack([load_input(Path(r["path"]), pp) for r in rows]))).numpy()
    labels = np.array([CLASSES.index(r["label"]) for r in rows])
    centre = features.mean(axis=0)
    weight = np.stack([features[labels == c].mean(axis=0) - centre for c in range(len(CLASSES))])
    bias = -(weight @ centre)
    logits = features @ weight.T + bias
    factor = spread / float(logits.std())
    state["state_dict"]["fc.weight"] = torch.from_numpy(weight * factor).float()
    state["state_dict"]["fc.bias"] = torch.from_numpy(bias * factor).float()
    save_checkpoint(ckpt, state)
    with open(root / "val.csv", encoding="utf-8") as handle:
        val = list(_csv.DictReader(handle))
    with open(root / "val.csv", "w", newline="", encoding="utf-8") as handle:
        writer = _csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], noisy_label(i, r["label"])] for i, r in enumerate(val))
    return ckpt


def noisy_label(i: int, label: str) -> str:
    """Every 4th label moved to the next class."""
    from tests.test_export import CLASSES

    return CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)] if i % 4 == 3 else label


def root_of(result) -> Path:
    """The run folder of an export result's checkpoint (RUN/<arch>/best.pt)."""
    return result.checkpoint.parent.parent


@pytest.fixture(scope="module")
def overconfident_export(tmp_path_factory: pytest.TempPathFactory):
    from garmentcv.export.exporter import ExportConfig, export_checkpoint

    root = tmp_path_factory.mktemp("overconfident")
    ckpt = _overconfident_run(root / "run")
    return root, export_checkpoint(ExportConfig(checkpoint=ckpt, out=root / "model.onnx"), progress=False)


def test_export_fits_and_stores_the_temperature(overconfident_export) -> None:
    from garmentcv.infer.model_file import read_model_info

    _, r = overconfident_export
    assert r.val_images == 24
    info = read_model_info(r.out)
    assert info.temperature == r.info.temperature == r.temperature
    assert 3 < r.temperature < 100  # logits with a spread of 30: far too sure, yet a finite optimum
    # the fit is the minimum NLL on those images: the raw softmax is worse, and so is any other T nearby
    assert r.calibrated.nll < r.uncalibrated.nll
    from garmentcv.export.exporter import ImageStream, select_images
    from tests.test_export import CLASSES

    val = select_images(root_of(r) / "val.csv", CLASSES, 0, True, "validation")
    logits, targets = [], []
    import onnxruntime as ort

    session = ort.InferenceSession(str(r.out), providers=["CPUExecutionProvider"])
    uint8 = info.input_format == "uint8-nhwc"  # feed the file what it declares (gcv-export's default: uint8 crops)
    for batch in ImageStream(val, info.preprocessing, 8, progress=False, warn=False, uint8=uint8):
        logits.append(session.run(["logits"], {"input": batch.inputs})[0])
        targets.append(batch.targets)
    z, y = np.concatenate(logits), np.concatenate(targets)
    best = negative_log_likelihood(softmax(z, r.temperature), y)
    assert best == pytest.approx(r.calibrated.nll, abs=1e-9)
    assert best < negative_log_likelihood(softmax(z, r.temperature * 1.05), y)
    assert best < negative_log_likelihood(softmax(z, r.temperature / 1.05), y)
    assert r.calibrated.ece < r.uncalibrated.ece
    assert info.metrics["export"]["temperature"] == r.temperature
    assert info.metrics["export"]["ece"] == pytest.approx(r.calibrated.ece)
    assert info.metrics["export"]["ece_uncalibrated"] == pytest.approx(r.uncalibrated.ece)


def test_calibrated_ece_is_lower_on_images_not_used_for_the_fit(overconfident_export, tmp_path) -> None:
    """The temperature fitted on the run's val.csv makes ECE lower on other images of the same kind."""
    import json

    from garmentcv.calibration import calibration_figures
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model
    from tests.conftest import COLOURS
    from tests.test_export import CLASSES, _noisy_image

    root, exported = overconfident_export
    fitted_on = {line.split(",")[0] for line in (root / "run" / "val.csv").read_text().splitlines()[1:]}
    test = tmp_path / "test"
    for c, label in enumerate(CLASSES):
        for i in range(10):  # the same label noise as the images of the fit
            seed = 5000 + 100 * c + i
            _noisy_image(test / f"{seed:05d}_{noisy_label(10 * c + i, label)}.png", COLOURS[c], seed)
    assert not {str(p.resolve()) for p in test.iterdir()} & fitted_on
    # runtime pinned: on a CPU with AMX, auto would run this file (bf16 gate passed) in bf16 and move the 30-image ECE
    r = evaluate_model(EvaluateConfig(data=test, out=tmp_path / "ev", model=exported.out, provider="cpu",
                                      runtime="onnxruntime",
                                      progress=False))
    assert r.count == 30 and r.temperature == exported.temperature
    assert r.uncalibrated.ece > 0.15  # nearly every confidence is ~1 whatever the accuracy
    assert r.calibrated.ece < r.uncalibrated.ece - 0.1
    assert r.calibrated.nll < r.uncalibrated.nll
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] == exported.temperature and cal["applied"] == "temperature"
    assert cal["uncalibrated"]["ece"] == pytest.approx(r.uncalibrated.ece)
    assert cal["calibrated"]["ece"] == pytest.approx(r.calibrated.ece)
    assert len(cal["calibrated"]["reliability"]) == 15
    assert sum(b["count"] for b in cal["uncalibrated"]["reliability"]) == 30
    assert (tmp_path / "ev" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figures agree with the per-image rows: recompute from the logits of the written predictions
    logits = np.stack([p.logits for p in r.predictions])
    targets = np.array([CLASSES.index(p.label) for p in r.predictions])
    assert calibration_figures(softmax(logits, r.temperature), targets).ece == pytest.approx(r.calibrated.ece)
    assert calibration_figures(softmax(logits), targets).brier == pytest.approx(r.uncalibrated.brier)


def test_export_cli_prints_the_temperature(overconfident_export, tmp_path) -> None:
    from click.testing import CliRunner

    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.model_file import read_model_info

    _, exported = overconfident_export
    result = CliRunner().invoke(export_main, [str(exported.checkpoint), "--out", str(tmp_path / "m.onnx"), "-q"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("temperature "))
    assert line.startswith(f"temperature {exported.temperature:.4g} fitted on the validation images")
    assert f"ECE {exported.uncalibrated.ece:.4f} -> {exported.calibrated.ece:.4f}" in line
    assert read_model_info(tmp_path / "m.onnx").temperature == exported.temperature  # the same images, the same fit


def test_help_shows_the_new_options_with_defaults() -> None:
    from click.testing import CliRunner

    from garmentcv.infer.cli import classify_main, evaluate_main

    classify = CliRunner().invoke(classify_main, ["--help"]).output
    evaluate = CliRunner().invoke(evaluate_main, ["--help"]).output
    for text in (classify, evaluate):
        assert "--calibration [temperature|none]" in text and "[default: temperature]" in text
    assert "--min-confidence" in classify and "--topk" in classify
    assert "--target-accuracy" in evaluate
