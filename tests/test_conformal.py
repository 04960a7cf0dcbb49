"""Tests for split conformal prediction sets (garmentcv.conformal): exact quantiles and scores on hand-computed
examples, and the coverage guarantee on generated exchangeable data over many seeds."""

from __future__ import annotations

import numpy as np
import pytest

from garmentcv.conformal import (
    ConformalFitError,
    ConformalPredictor,
    SetFigures,
    class_scores,
    conformal_quantile,
    fit_conformal,
    min_images,
    per_class_figures,
    set_figures,
)


def test_quantile_is_the_kth_smallest_with_k_ceil_n_plus_1_times_coverage() -> None:
    scores = np.array([0.8, 0.1, 0.6, 0.3])  # sorted: 0.1 0.3 0.6 0.8; n = 4
    assert conformal_quantile(scores, 0.6) == 0.6  # k = ceil(5 * 0.6) = 3
    assert conformal_quantile(scores, 0.5) == 0.6  # k = ceil(2.5) = 3
    assert conformal_quantile(scores, 0.4) == 0.3  # k = 2
    assert conformal_quantile(scores, 0.8) == 0.8  # k = 4
    with pytest.raises(ConformalFitError, match="at least 19"):
        conformal_quantile(scores, 0.95)


def test_min_images_counts_exact_integers_despite_float_rounding() -> None:
    assert min_images(0.95) == 19  # 20 * 0.95 rounds to 19.000000000000004
    assert min_images(0.9) == 9
    assert min_images(0.5) == 1
    assert conformal_quantile(np.arange(19) / 19, 0.95) == 18 / 19


def test_lac_and_aps_scores_by_hand() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(class_scores(probs, "lac"), [[0.5, 0.7, 0.8], [0.75, 0.75, 0.5]])
    # aps: cumulative probability down to the class; the tie 0.25/0.25 ranks class 0 first
    np.testing.assert_allclose(class_scores(probs, "aps"), [[0.5, 0.8, 1.0], [0.75, 1.0, 0.5]])


def test_fitted_lac_sets_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    targets = np.array([0, 0, 0, 0])  # true scores 0.1 0.3 0.6 0.8
    predictor = fit_conformal(probs, targets, coverage=0.6, method="lac")
    assert predictor.qhat == (0.6,) and predictor.images == 4
    # class y in the set when 1 - p_y <= 0.6, i.e. p_y >= 0.4
    assert predictor.sets(np.array([[0.5, 0.5], [0.35, 0.65], [0.61, 0.39]])) == [[0, 1], [1], [0]]
    assert predictor.sets(np.array([[0.39, 0.39, 0.22]])) == [[]]  # lac can give an empty set


def test_class_conditional_fits_one_qhat_per_class_and_needs_each_class() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    targets = np.array([0, 0, 1, 1])
    predictor = fit_conformal(probs, targets, coverage=0.5, method="lac", class_conditional=True)
    # class 0: scores 0.1 0.4, k = ceil(3 * 0.5) = 2 -> 0.4; class 1: scores 0.3 0.2 -> 0.3
    assert predictor.qhat == pytest.approx((0.4, 0.3))
    with pytest.raises(ConformalFitError, match="class 1"):
        fit_conformal(probs[:3], targets[:3], coverage=0.6, class_conditional=True)


def test_round_trip_and_refusals() -> None:
    predictor = ConformalPredictor("aps", 0.9, (0.5, 0.7, 0.9), True, 30)
    assert ConformalPredictor.from_dict(predictor.to_dict(), 3) == predictor
    with pytest.raises(ValueError, match="qhat"):
        ConformalPredictor.from_dict(predictor.to_dict(), 2)
    with pytest.raises(ValueError, match="method"):
        class_scores(np.ones((1, 2)) / 2, "raps")


def _exchangeable(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images drawn alike: a model's probabilities (softmax of noisy logits) and labels drawn from a distribution
    the model only roughly knows (so sets must grow to reach the coverage)."""
    logits = rng.normal(0.0, 2.0, size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.exp(logits * 0.7 + rng.normal(0.0, 1.0, size=(n, classes)))
    truth /= truth.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(classes, p=row) for row in truth])
    return probs, targets


@pytest.mark.parametrize("method", ["lac", "aps"])
@pytest.mark.parametrize("class_conditional", [False, True])
def test_coverage_holds_over_many_seeds(method: str, class_conditional: bool) -> None:
    """Coverage given the held-out images is Beta-distributed around 1 - alpha (Angelopoulos and Bates 2021,
    section 3.2); its mean over 60 seeds of 200 held-out and 1000 test images lies within 0.01 of the bound."""
    coverage, classes = 0.9, 4
    found = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        probs, targets = _exchangeable(rng, 1200, classes)
        predictor = fit_conformal(probs[:200], targets[:200], coverage, method, class_conditional)
        found.append(set_figures(predictor.contains(probs[200:]), targets[200:]).coverage)
    mean = float(np.mean(found))
    assert coverage - 0.01 <= mean <= coverage + 1 / 51 + 0.01  # per class: n about 50 each


def test_set_figures_by_hand() -> None:
    contains = np.array([[True, False], [True, True], [False, False], [False, True]])
    targets = np.array([0, 1, 0, 0])
    figures = set_figures(contains, targets)
    assert figures == SetFigures(coverage=0.5, mean_size=1.0, images=4, empty=1, ambiguous=1)
    per_class = per_class_figures(contains, targets, ["a", "b"])
    assert per_class["a"].coverage == pytest.approx(1 / 3) and per_class["b"].coverage == 1.0
