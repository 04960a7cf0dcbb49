"""When export stores a temperature: only on a model that beats chance, fitted on enough images with enough errors,
and not at a bound of its search; otherwise none (the raw softmax), with the reason in the summary and the file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentcv.calibration import (
    MIN_FIT_ERRORS,
    MIN_FIT_IMAGES,
    T_MAX,
    T_MIN,
    chance_accuracy,
    chance_margin,
    decide_temperature,
    fit_temperature,
)


def _logits(right: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class logits whose top class beats the other by ``margin``, right where ``right``; targets alternate
    between the classes (chance: 50%)."""
    n = len(right)
    targets = np.arange(n) % 2
    top = np.where(right, targets, 1 - targets)
    logits = np.zeros((n, 2))
    logits[np.arange(n), top] = margin
    return logits, targets


def test_no_temperature_when_every_image_is_right() -> None:
    """With no error the NLL falls all the way to the lower bound: that T would make every confidence ~1."""
    logits, targets = _logits(np.ones(40, bool), np.linspace(0.5, 4, 40))
    assert fit_temperature(logits, targets) == pytest.approx(T_MIN)
    decision = decide_temperature(logits, targets)
    assert (decision.temperature, decision.fitted, decision.problem) == (None, None, False)
    assert decision.note == (f"0 of 40 validation images misclassified, fewer than the {MIN_FIT_ERRORS} a temperature "
                             "is fitted on (only wrong predictions keep the fit from running to its lower bound)")


def test_no_temperature_on_too_few_images() -> None:
    right = np.arange(12) != 0  # 11 of 12 right: above chance even on 12 images
    decision = decide_temperature(*_logits(right, np.full(12, 3.0)))
    assert decision.temperature is None and not decision.problem
    assert decision.note == f"12 validation images, fewer than the {MIN_FIT_IMAGES} a temperature is fitted on"


def test_no_temperature_at_the_lower_bound_of_the_search() -> None:
    """Enough errors, but each an exact tie (its NLL the same at every T): sharper is still better, the fit ends at
    T_MIN."""
    right = np.arange(60) % 10 != 0
    logits, targets = _logits(right, np.where(right, 5.0, 0.0))
    targets[~right] = 1  # a tie [0, 0] goes to class 0: wrong for class 1
    decision = decide_temperature(logits, targets)
    assert decision.temperature is None and decision.fitted == pytest.approx(T_MIN) and not decision.problem
    assert decision.note.startswith(f"the fit reached the lower bound of its search (T = {T_MIN:g})")


def test_no_temperature_and_a_problem_at_the_upper_bound() -> None:
    """Above chance, but wrong with great confidence and right by a hair: uniform probabilities fit better, as
    after a diverged training; no temperature, and callers warn."""
    right = np.arange(100) % 10 < 7  # 70% right: above chance (50%) by more than its margin (10 points)
    logits, targets = _logits(right, np.where(right, 0.01, 50.0))
    assert 0.7 > chance_accuracy(targets, 2) + chance_margin(0.5, 100)
    decision = decide_temperature(logits, targets)
    assert decision.temperature is None and decision.fitted == pytest.approx(T_MAX) and decision.problem
    assert decision.note.startswith(f"the fit reached the upper bound of its search (T = {T_MAX:g}): uniform "
                                    "probabilities fit these validation images better than any the model gives")


def test_no_temperature_and_a_problem_at_chance() -> None:
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(60, 3)) * 10, rng.integers(0, 3, 60)
    chance = chance_accuracy(targets, 3)
    assert chance == max(1 / 3, np.bincount(targets).max() / 60)
    assert chance_margin(chance, 60) == pytest.approx(2 * np.sqrt(chance * (1 - chance) / 60))
    decision = decide_temperature(logits, targets)
    assert decision.temperature is None and decision.fitted is None and decision.problem
    assert "is not above chance" in decision.note and "the larger of 5 points and two standard errors" in decision.note
    # a majority class sets chance: always answering it is right 90% of the time
    majority = np.zeros(100, int)
    majority[:10] = 1
    assert chance_accuracy(majority, 2) == 0.9 and chance_margin(0.9, 100) == pytest.approx(0.06)


def test_a_temperature_when_the_images_can_fit_one() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 4)) * 3
    labels = np.array([rng.choice(4, p=np.exp(r) / np.exp(r).sum()) for r in z])
    decision = decide_temperature(z * 2.0, labels)
    assert decision.temperature == decision.fitted == fit_temperature(z * 2.0, labels)
    assert decision.temperature == pytest.approx(2.0, rel=0.25) and decision.note == "" and not decision.problem


def _clean_run(root: Path) -> Path:
    """The over-confident run of tests.test_calibration with its validation labels put right: the model is right on
    every validation image, so the NLL keeps falling as T shrinks."""
    from tests.test_calibration import _overconfident_run
    from tests.test_export import CLASSES

    ckpt = _overconfident_run(root)
    with open(root / "val.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(root / "val.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], next(c for c in CLASSES if r["path"].endswith(f"_{c}.png"))] for r in rows)
    return ckpt


def test_export_stores_no_temperature_for_a_clean_validation_set(tmp_path: Path) -> None:
    """24 validation images, all right: the fit would end at T = 0.01 and make every confidence 1.0."""
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.model_file import read_model_info

    ckpt = _clean_run(tmp_path / "run")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(export_main, [str(ckpt), "--out", str(out), "--bf16-check", "off"])
    assert result.exit_code == 0, result.output
    note = (f"0 of 24 validation images misclassified, fewer than the {MIN_FIT_ERRORS} a temperature is fitted on "
            "(only wrong predictions keep the fit from running to its lower bound)")
    info = read_model_info(out)
    assert info.temperature is None and info.applied_temperature == 1.0 and info.temperature_note == note
    assert info.metrics["export"]["temperature"] is None and info.metrics["export"]["temperature_note"] == note
    assert info.metrics["export"]["accuracy"] == 1.0
    assert info.metrics["export"]["ece"] == info.metrics["export"]["ece_uncalibrated"]  # what consumers apply
    assert f"temperature: none stored, gcv classify and gcv evaluate use the raw softmax: {note}" in result.stdout
    assert (f"INFO garmentcv.export.exporter: no temperature stored (gcv classify and gcv evaluate will use the raw "
            f"softmax): {note}") in result.stderr
    assert "WARNING garmentcv" not in result.stderr  # a clean validation set is no problem of the model


def test_export_refuses_a_temperature_for_an_untrained_model(tmp_path: Path) -> None:
    """Random init on a tiny set: at chance, so no temperature (a fit would calibrate noise), and a warning."""
    from garmentcv.export.cli import main as export_main
    from garmentcv.infer.model_file import read_model_info
    from tests.test_export import make_run

    ckpt = make_run(tmp_path / "run", "resnet18", per_class=2)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(export_main, [str(ckpt), "--out", str(out), "--bf16-check", "off"])
    assert result.exit_code == 0, result.output
    info = read_model_info(out)
    accuracy = info.metrics["export"]["accuracy"]
    chance, margin = 1 / 3, chance_margin(1 / 3, 6)
    assert accuracy <= chance + margin  # what the rule tests: random init is not distinguishable from chance
    note = (f"validation accuracy {accuracy:.2%} on 6 images is not above chance ({chance:.2%}, the larger of 1/3 and "
            f"the largest class's share) by more than {100 * margin:.1f} points (the larger of 5 points and two "
            "standard errors of chance accuracy on 6 images): the model has not learned to tell the classes apart, "
            "or its training diverged; its probabilities mean nothing and no temperature can mend that")
    assert info.temperature is None and info.temperature_note == note
    assert (f"WARNING garmentcv.export.exporter: no temperature stored (gcv classify and gcv evaluate will use the "
            f"raw softmax): {note}") in result.stderr
    assert f"temperature: none stored, gcv classify and gcv evaluate use the raw softmax: {note}" in result.stdout


def test_help_states_the_rule_with_the_constants() -> None:
    from garmentcv.export.cli import main as export_main

    text = " ".join(CliRunner().invoke(export_main, ["--help"]).output.split())
    assert (f"when there are fewer than {MIN_FIT_IMAGES} validation images or fewer than {MIN_FIT_ERRORS} "
            f"misclassified "
            f"ones, or when the fit ends at a bound of its search ({T_MIN:g} or {T_MAX:g})") in text
    assert "not above chance (the larger of 1/classes and the largest class's share) by the larger of 5 points" in text
