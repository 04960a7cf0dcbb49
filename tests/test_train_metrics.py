"""Macro metrics (shared by gcv-train and gcv-evaluate): averaged over the classes present in y_true only."""

from __future__ import annotations

import pytest

from garmentcv.metrics import classification_metrics


def test_macro_averages_only_the_classes_present() -> None:
    # class 2 has no true image; one image of class 0 is predicted as class 2
    m = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1], num_classes=3)
    # class 0: P 1, R 1/2, F1 2/3; class 1: P 1, R 1, F1 1; class 2 is not averaged
    assert (m.precision, m.recall, m.f1) == pytest.approx((1.0, 0.75, 5 / 6), abs=1e-12)
    assert m.accuracy == 0.75 and m.count == 4
    assert m.macro_classes == [0, 1] and m.absent_classes == [2]
    assert m.confusion_matrix == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    d = m.to_dict()
    assert d["macro_classes"] == [0, 1] and d["absent_classes"] == [2]
    assert set(d) >= {"accuracy", "precision", "recall", "f1", "confusion_matrix", "count"}


def test_macro_with_every_class_present_is_sklearns_macro() -> None:
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], num_classes=2)
    # class 0: P 1, R 1/2, F1 2/3; class 1: P 2/3, R 1, F1 4/5
    assert (m.precision, m.recall, m.f1) == pytest.approx((5 / 6, 0.75, (2 / 3 + 0.8) / 2), abs=1e-12)
    assert m.macro_classes == [0, 1] and m.absent_classes == []
