"""Calibration figures (ECE, NLL, Brier), the temperature fit, and their use by export, classify and evaluate."""

from __future__ import annotations

import math

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
