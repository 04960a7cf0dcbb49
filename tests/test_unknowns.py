"""Unknown scores: each method against a hand computation, the threshold and figures, and the torch module (and its
ONNX export) against the numpy scores."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from garmentcv.unknowns import scores


def _head(dim: int = 4, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(classes, dim)).astype(np.float32), rng.normal(size=classes).astype(np.float32)


def _fit(method: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, **kwargs) -> dict:
    return scores.fit_reference(method, x, y, x @ w.T + b, w, b, **kwargs)


def test_msp_energy_and_maxlogit_equal_their_formulas_with_and_without_temperature() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    for method in ("msp", "energy", "maxlogit"):
        assert scores.fit_reference(method, np.zeros((3, 2)), np.zeros(3), logits, np.eye(2), np.zeros(2)) == {}
    e = math.e
    np.testing.assert_allclose(scores.score("msp", logits, None, {}), [-e**2 / (e**2 + 1), -0.5, -e**2 / (e**2 + 1)])
    np.testing.assert_allclose(scores.score("msp", logits, None, {}, temperature=2.0),
                               [-e / (e + 1), -0.5, -e / (e + 1)])
    np.testing.assert_allclose(scores.score("energy", logits, None, {}),
                               [-math.log(e**2 + 1), -math.log(2), -math.log(e + e**3)])
    np.testing.assert_allclose(scores.score("energy", logits, None, {}, temperature=2.0),
                               [-2 * math.log(e + 1), -2 * math.log(2), -2 * math.log(e**0.5 + e**1.5)])
    np.testing.assert_allclose(scores.score("maxlogit", logits, None, {}, temperature=2.0), [-2.0, 0.0, -3.0])


def test_knn_is_the_distance_to_the_kth_nearest_normalised_bank_embedding() -> None:
    bank = np.array([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0]], dtype=np.float32)  # unit: 0, 90 and 180 degrees
    w, b = np.eye(2, dtype=np.float32), np.zeros(2, dtype=np.float32)
    ref = _fit("knn", bank, np.array([0, 1, 0]), w, b)
    np.testing.assert_allclose(ref["bank"], [[1, 0], [0, 1], [-1, 0]])
    assert int(ref["k"]) == 3  # KNN_K, capped at the bank's size
    queries = np.array([[5.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(scores.score("knn", queries, queries, ref), [2.0, 2.0])
    ref["k"] = np.array(2)
    np.testing.assert_allclose(scores.score("knn", queries, queries, ref), [math.sqrt(2), math.sqrt(2)], rtol=1e-6)
    ref["k"] = np.array(1)
    np.testing.assert_allclose(scores.score("knn", queries, queries, ref), [0.0, math.sqrt(2)], atol=1e-6)


def test_knn_bank_is_a_seeded_subset_of_at_most_max_bank_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    w, b = _head()
    ref = _fit("knn", x, np.zeros(50, dtype=int), w, b, max_bank=20, seed=3)
    assert ref["bank"].shape == (20, 4) and int(ref["k"]) == scores.KNN_K
    np.testing.assert_allclose(np.linalg.norm(ref["bank"], axis=1), 1.0, rtol=1e-6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert all(np.isclose(unit, row, atol=1e-6).all(axis=1).any() for row in ref["bank"])
    np.testing.assert_array_equal(ref["bank"], _fit("knn", x, np.zeros(50, dtype=int), w, b, max_bank=20,
                                                    seed=3)["bank"])
    assert not np.array_equal(ref["bank"], _fit("knn", x, np.zeros(50, dtype=int), w, b, max_bank=20,
                                                seed=4)["bank"])


def test_mahalanobis_uses_class_means_and_the_pooled_within_class_precision() -> None:
    # Both classes: a cross of half-widths 1 (x) and 2 (y) around (0, 0) and (4, 0); pooled covariance diag(0.5, 2).
    cross = np.array([[1, 0], [-1, 0], [0, 2], [0, -2]], dtype=np.float32)
    x = np.concatenate([cross, cross + [4, 0]])
    y = np.array([0] * 4 + [1] * 4)
    w, b = _head(dim=2, classes=2)
    ref = _fit("mahalanobis", x, y, w, b)
    np.testing.assert_allclose(ref["means"], [[0, 0], [4, 0]], atol=1e-6)
    np.testing.assert_allclose(ref["precision"], [[2, 0], [0, 0.5]], atol=1e-6)
    queries = np.array([[1.0, 1.0], [3.0, 2.0]])  # (2*1 + 0.5*1, min(2*9 + 0.5*4, 2*1 + 0.5*4))
    np.testing.assert_allclose(scores.score("mahalanobis", queries @ w.T, queries, ref), [2.5, 4.0], rtol=1e-6)


def test_mahalanobis_refuses_a_class_without_images() -> None:
    w, b = _head(dim=2, classes=3)
    with pytest.raises(ValueError, match=r"classes \[2\] have no images"):
        _fit("mahalanobis", np.ones((4, 2)), np.array([0, 0, 1, 1]), w, b)


def test_vim_residual_is_outside_the_top_half_of_the_centred_covariance() -> None:
    # Head bias 0, so the origin is 0. Every sign pattern of (10, 8, 0.5, 0.3): covariance diag(100, 64, 0.25,
    # 0.09) exactly, so the principal subspace is axes 0 and 1 and the residual axes 2 and 3.
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 4)).reshape(4, -1).T
    x = (signs * [10.0, 8.0, 0.5, 0.3]).astype(np.float32)
    w = np.array([[1.0, 0.5, 0, 0], [-1.0, 0.2, 0, 0]], dtype=np.float32)
    b = np.zeros(2, dtype=np.float32)
    ref = _fit("vim", x, np.zeros(16, dtype=int), w, b)
    assert scores.vim_dimension(4) == 2 and ref["residual_basis"].shape == (4, 2)
    np.testing.assert_allclose(ref["origin"], 0.0, atol=1e-6)
    logits = x @ w.T
    alpha = logits.max(axis=1).mean() / np.linalg.norm(x[:, 2:], axis=1).mean()
    assert float(ref["alpha"]) == pytest.approx(alpha, rel=1e-6)
    queries = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    q_logits = queries @ w.T
    hand = alpha * np.linalg.norm(queries[:, 2:], axis=1) - np.log(np.exp(q_logits).sum(axis=1))
    np.testing.assert_allclose(scores.score("vim", q_logits, queries, ref), hand, rtol=1e-6)


def test_vim_origin_is_minus_pinv_w_times_b() -> None:
    w = np.array([[2.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    b = np.array([2.0, -4.0], dtype=np.float32)
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    np.testing.assert_allclose(_fit("vim", x, np.zeros(10, dtype=int), w, b)["origin"], [-1.0, 1.0], rtol=1e-6)


def test_threshold_keeps_the_recall_share_and_let_through_counts_at_or_below_it() -> None:
    s = np.arange(20, 0, -1, dtype=float)  # 20 .. 1
    assert scores.fit_threshold(s) == 19.0  # 19 of 20 = 95% at or below
    assert scores.fit_threshold(s, recall=0.9) == 18.0
    assert scores.fit_threshold(s, recall=1.0) == 20.0
    assert scores.fit_threshold(s, recall=0.96) == 20.0  # 19.2 images: the 20th
    assert scores.let_through(np.array([18.5, 19.0, 19.5]), 19.0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="recall must be in"):
        scores.fit_threshold(s, recall=0.0)
    with pytest.raises(ValueError, match="finite"):
        scores.fit_threshold(np.array([1.0, np.nan]))


def test_auroc_is_one_for_separated_scores_and_counts_pairs_otherwise() -> None:
    assert scores.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert scores.auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75
    assert scores.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0


def test_score_refuses_unknown_methods_missing_embeddings_and_references() -> None:
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="choose one of msp, energy, maxlogit, knn, mahalanobis, vim"):
        scores.score("odin", logits, None, {})
    with pytest.raises(ValueError, match="lacks bank, k"):
        scores.score("knn", logits, np.zeros((2, 4)), {})
    with pytest.raises(ValueError, match="needs the embeddings"):
        scores.score("vim", logits, None, {"origin": 0, "residual_basis": 0, "alpha": 0})
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        scores.score("msp", logits, None, {}, temperature=0.0)


def test_scores_module_imports_neither_torch_nor_sklearn() -> None:
    code = ("import sys; import garmentcv.unknowns.scores; "
            "print('torch' in sys.modules, 'sklearn' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _fitted(method: str, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """A reference fitted on 60 random 8-d embeddings of 3 classes, and 7 other embeddings with their logits."""
    rng = np.random.default_rng(seed)
    w, b = _head(dim=8, classes=3, seed=seed)
    y = np.arange(60) % 3
    x = (rng.normal(size=(60, 8)) + 2.0 * w[y]).astype(np.float32)
    ref = _fit(method, x, y, w, b, max_bank=40)
    queries = (rng.normal(size=(7, 8)) * 2).astype(np.float32)
    return ref, queries @ w.T + b, queries


@pytest.mark.parametrize("method", scores.METHODS)
def test_torch_module_equals_the_numpy_score(method: str) -> None:
    torch = pytest.importorskip("torch")
    from garmentcv.unknowns.graph import UnknownScore

    ref, logits, embedding = _fitted(method)
    module = UnknownScore(method, ref, temperature=1.7)
    with torch.no_grad():
        got = module(torch.from_numpy(logits), torch.from_numpy(embedding)).numpy()
    want = scores.score(method, logits, embedding, ref, temperature=1.7)
    assert got.dtype == np.float32 and got.shape == (7,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*axis name. batch will not be used:UserWarning")
@pytest.mark.parametrize("method", scores.METHODS)
def test_onnx_export_of_the_module_equals_the_numpy_score(method: str) -> None:
    """Exported as garmentcv.export does (dynamo exporter, opset 18, dynamic batch), run on another batch size."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from garmentcv.unknowns.graph import UnknownScore

    ref, logits, embedding = _fitted(method, seed=1)
    module = UnknownScore(method, ref, temperature=1.3).eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            module, (torch.from_numpy(logits[:3]), torch.from_numpy(embedding[:3])), None,
            input_names=["logits", "embedding"], output_names=["ood_score"], opset_version=18,
            dynamic_shapes=({0: batch}, {0: batch}), dynamo=True, external_data=False, optimize=True, verbose=False,
        )  # fmt: skip
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"logits": logits, "embedding": embedding}
    (got,) = session.run(["ood_score"], {i.name: feeds[i.name] for i in session.get_inputs()})
    want = scores.score(method, logits, embedding, ref, temperature=1.3)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
