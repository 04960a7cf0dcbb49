"""Unknown-item scores from a classifier's logits and embeddings (numpy only, torch-free).

Every score is HIGHER for an image MORE LIKELY to be none of the classes. An image is called unknown when its
score is ``> threshold``; :func:`fit_threshold` places the threshold so that a chosen share (the in-distribution
recall, 95% by default) of held-out images of the classes score ``<= threshold`` and are kept.

Methods (:data:`METHODS`), each from its paper; pytorch-ood (Kirchheim et al. 2022) and OpenOOD (Yang et al.
2022) implement the same definitions in torch:

* ``msp``: ``-max_c softmax(z / T)_c``, the maximum softmax probability (Hendrycks and Gimpel 2017, "A Baseline
  for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR), here of the
  temperature-scaled logits.
* ``energy``: ``-T * logsumexp(z / T)``, the free energy (Liu, Wang, Owens and Li 2020, "Energy-based
  Out-of-distribution Detection", NeurIPS, eq. 5).
* ``maxlogit``: ``-max_c z_c`` (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt and Song 2022,
  "Scaling Out-of-Distribution Detection for Real-World Settings", ICML).
* ``knn``: Euclidean distance from the L2-normalised embedding to its k-th (:data:`KNN_K`) nearest neighbour
  among L2-normalised embeddings of training images (Sun, Ming, Zhu and Li 2022, "Out-of-
  Distribution Detection with Deep Nearest Neighbors", ICML). The bank is a seeded random subset of at most
  ``max_bank`` images, as the paper's sampled variant.
* ``mahalanobis``: the smallest squared Mahalanobis distance ``min_c (x - mu_c)^T P (x - mu_c)`` from the
  embedding to the class means, with one precision matrix ``P`` shared by all classes, the (pseudo-)inverse of
  the pooled within-class covariance (Lee, Lee, Lee and Shin 2018, "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks", NeurIPS, eq. 2; on the penultimate features, without
  input preprocessing or feature ensembles).
* ``vim``: ``alpha * ||residual|| - logsumexp(z)``, the virtual logit (Wang, Li, Zhang and Zhang 2022, "ViM:
  Out-Of-Distribution with Virtual-logit Matching", CVPR, eq. 6-8): the embedding is moved to the origin
  ``u = -pinv(W) b`` of the head ``z = W x + b``, the residual is its part outside the principal subspace (the
  top ``d`` eigenvectors of the centred training embeddings' covariance), and ``alpha`` matches the residual
  norms' mean to the mean maximum logit on the training images. ``d`` is :func:`vim_dimension`.

The temperature applies to ``msp`` and ``energy``; ``maxlogit``, ``knn``, ``mahalanobis`` and ``vim`` use raw
logits and embeddings, as their papers define them (a temperature would only rescale ``maxlogit``).
"""

from __future__ import annotations

import math

import numpy as np

#: The score methods, in the order the docs and benchmarks list them.
METHODS = ("msp", "energy", "maxlogit", "knn", "mahalanobis", "vim")
#: The method ``gcv export --unknown-score`` uses when given no method: among the best measured with and without
#: outlier exposure, and computed in float32 in the graph as closely as numpy computes it (cosine similarities of
#: unit vectors), where ``vim`` and ``mahalanobis`` rest on a covariance that is singular when the reference images
#: are few (:data:`COVARIANCE_METHODS`), which makes their scores huge, amplifies rounding and may make the export
#: refuse them (docs/unknowns.md, "How to choose", shows the measurements).
DEFAULT_METHOD = "knn"
#: Methods that need the embedding (penultimate features) as well as the logits.
EMBEDDING_METHODS = frozenset({"knn", "mahalanobis", "vim"})
#: The methods that rest on the covariance of the reference embeddings (its inverse, its principal subspace): with
#: no more reference images than the embedding has dimensions, that covariance is singular and they are unreliable.
COVARIANCE_METHODS = frozenset({"mahalanobis", "vim"})
#: ``k`` of the ``knn`` score: the distance to the k-th nearest bank embedding. Sun et al. 2022 keep ``k`` roughly
#: proportional to the bank size (k=50 of 50 000 CIFAR-10 images, k=10 of a 1% ImageNet sample of 12 800).
KNN_K = 10
#: Reference keys each method stores (every value a numpy array; scalars are 0-d arrays).
REFERENCE_KEYS = {
    "msp": (),
    "energy": (),
    "maxlogit": (),
    "knn": ("bank", "k"),
    "mahalanobis": ("means", "precision"),
    "vim": ("origin", "residual_basis", "alpha"),
}
_EPS = 1e-12


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown score method {method!r}; choose one of {', '.join(METHODS)}")


def _check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``(N, D)`` ``x`` divided by their L2 norm (clamped at 1e-12, so a zero row stays zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def vim_dimension(dim: int) -> int:
    """Dimension ``d`` of ViM's principal subspace for ``dim``-dimensional embeddings.

    Wang et al. 2022 take ``d = 1000`` for 2048-d features and ``d = 512`` for 768-d ones; OpenOOD takes 256 of
    ResNet-18's 512. Here: half the dimension, at most 1000, at least 1.
    """
    return max(1, min(dim // 2, 1000))


def whitening(precision: np.ndarray) -> np.ndarray:
    """``L`` (D, D) float64 with ``L @ L.T == precision`` (from its eigendecomposition; negative eigenvalues of
    rounding clipped to 0), so that ``(x - mu)^T P (x - mu) = ||(x - mu) @ L||^2`` without cancellation."""
    values, vectors = np.linalg.eigh(np.asarray(precision, dtype=np.float64))
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def fit_reference(
    method: str,
    embeddings: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray,
    head_weight: np.ndarray,
    head_bias: np.ndarray,
    *,
    max_bank: int = 2048,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Fit what ``method`` needs to score new images, from held-in images of the classes.

    Args:
        method: one of :data:`METHODS`.
        embeddings: ``(N, D)`` pooled penultimate features of images of the classes (training images).
        labels: ``(N,)`` their class indices in ``0..C-1`` (``mahalanobis`` needs every class at least once).
        logits: ``(N, C)`` the model's logits of the same images (``vim`` fits ``alpha`` on them).
        head_weight: ``(C, D)`` weight of the final linear layer, ``logits = embeddings @ W.T + b``.
        head_bias: ``(C,)`` its bias.
        max_bank: most embeddings the ``knn`` bank keeps (a seeded random subset when ``N`` is larger).
        seed: seed of that subset.

    Returns:
        float32 arrays by name (:data:`REFERENCE_KEYS`): empty for ``msp``, ``energy`` and ``maxlogit``;
        ``bank`` ``(M, D)`` (L2-normalised, ``M <= max_bank``) and ``k`` (0-d int64) for ``knn``; ``means``
        ``(C, D)`` and ``precision`` ``(D, D)`` for ``mahalanobis``; ``origin`` ``(D,)``, ``residual_basis``
        ``(D, D - d)`` and ``alpha`` (0-d) for ``vim``.

    Raises:
        ValueError: unknown method, shapes that disagree, no images, a class without images (mahalanobis), or
            ``max_bank < 1``.
    """
    _check_method(method)
    if method in ("msp", "energy", "maxlogit"):
        return {}
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    z = np.asarray(logits, dtype=np.float64)
    w = np.asarray(head_weight, dtype=np.float64)
    b = np.asarray(head_bias, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    n, dim = x.shape
    n_classes = w.shape[0]
    if w.shape != (n_classes, dim) or b.shape != (n_classes,):
        raise ValueError(f"head weight {w.shape} and bias {b.shape} must be (C, {dim}) and (C,)")
    if y.shape != (n,) or z.shape != (n, n_classes):
        raise ValueError(f"need labels (N,) and logits (N, C) for N={n}, C={n_classes}; got {y.shape} and {z.shape}")
    if method == "knn":
        if max_bank < 1:
            raise ValueError(f"max_bank must be at least 1, got {max_bank}")
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_bank, replace=False)) if n > max_bank else None
        bank = l2_normalise(x if keep is None else x[keep])
        return {"bank": bank.astype(np.float32), "k": np.array(min(KNN_K, len(bank)), dtype=np.int64)}
    if method == "mahalanobis":
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"labels must be class indices in 0..{n_classes - 1}")
        counts = np.bincount(y, minlength=n_classes)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0).tolist()
            raise ValueError(f"classes {missing} have no images; the Mahalanobis score needs a mean for every class")
        means = np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])
        centred = x - means[y]
        covariance = centred.T @ centred / n
        precision = np.linalg.pinv(covariance, hermitian=True)
        return {"means": means.astype(np.float32), "precision": precision.astype(np.float32)}
    # vim
    origin = -np.linalg.pinv(w) @ b
    centred = x - origin
    _, vectors = np.linalg.eigh(centred.T @ centred / n)  # eigenvalues ascending
    residual_basis = vectors[:, : dim - vim_dimension(dim)]
    residual_norm = np.linalg.norm(centred @ residual_basis, axis=1)
    alpha = z.max(axis=1).mean() / max(residual_norm.mean(), _EPS)
    return {
        "origin": origin.astype(np.float32),
        "residual_basis": residual_basis.astype(np.float32),
        "alpha": np.array(alpha, dtype=np.float32),
    }


def score(
    method: str,
    logits: np.ndarray,
    embeddings: np.ndarray | None,
    reference: dict[str, np.ndarray],
    temperature: float = 1.0,
) -> np.ndarray:
    """Unknown score of every image: higher means more likely none of the classes.

    Args:
        method: one of :data:`METHODS`.
        logits: ``(N, C)`` raw logits.
        embeddings: ``(N, D)`` pooled penultimate features; needed by ``knn``, ``mahalanobis`` and ``vim``
            (:data:`EMBEDDING_METHODS`), ignored by the others (may be ``None``).
        reference: what :func:`fit_reference` returned for ``method``.
        temperature: the model's fitted temperature ``T > 0``; used by ``msp`` and ``energy``.

    Returns:
        ``(N,)`` float64 scores.

    Raises:
        ValueError: unknown method, missing embeddings or reference keys, shapes that disagree, a temperature
            that is not a positive number.
    """
    _check_method(method)
    _check_temperature(temperature)
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {z.shape}")
    missing = [key for key in REFERENCE_KEYS[method] if key not in reference]
    if missing:
        raise ValueError(f"the {method} reference lacks {', '.join(missing)}; fit it with fit_reference({method!r})")
    if method == "msp":
        scaled = z / temperature
        return -np.exp(scaled.max(axis=1) - _logsumexp(scaled))
    if method == "energy":
        return -temperature * _logsumexp(z / temperature)
    if method == "maxlogit":
        return -z.max(axis=1)
    if embeddings is None:
        raise ValueError(f"the {method} score needs the embeddings; export the model with its embedding output")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(z):
        raise ValueError(f"embeddings must be (N, D) with N={len(z)} as the logits, got shape {x.shape}")
    if method == "knn":
        bank = np.asarray(reference["bank"], dtype=np.float64)
        k = int(reference["k"])
        similarity = l2_normalise(x) @ bank.T  # (N, M); ||a - b||^2 = 2 - 2 a.b for unit vectors
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        return np.sqrt(np.clip(2.0 - 2.0 * kth, 0.0, None))
    if method == "mahalanobis":
        lower = whitening(reference["precision"])
        projected = x @ lower  # (N, D)
        means = np.asarray(reference["means"], dtype=np.float64) @ lower  # (C, D)
        return ((projected[:, None, :] - means[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    # vim
    residual = (x - np.asarray(reference["origin"], dtype=np.float64)) @ np.asarray(
        reference["residual_basis"], dtype=np.float64
    )
    return float(reference["alpha"]) * np.linalg.norm(residual, axis=1) - _logsumexp(z)


def fit_threshold(scores_in: np.ndarray, recall: float = 0.95) -> float:
    """The smallest threshold ``t`` with at least ``recall`` of ``scores_in`` ``<= t`` (an observed score).

    Images scoring ``<= t`` are kept, those above are called unknown; on the fitting images the share kept is
    ``ceil(recall * N) / N``.

    Args:
        scores_in: ``(N,)`` scores of held-out images of the classes.
        recall: share of them to keep, in ``(0, 1]``.

    Raises:
        ValueError: no scores, a non-finite score, or ``recall`` outside ``(0, 1]``.
    """
    s = np.asarray(scores_in, dtype=np.float64).ravel()
    if len(s) == 0 or not np.isfinite(s).all():
        raise ValueError(f"need finite in-distribution scores to fit a threshold, got {len(s)} values")
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    return float(np.sort(s)[math.ceil(recall * len(s) - 1e-9) - 1])


def let_through(scores_out: np.ndarray, threshold: float) -> float:
    """Share of ``scores_out`` (images of none of the classes) that score ``<= threshold``, i.e. are kept."""
    s = np.asarray(scores_out, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError("need at least one score of other images")
    return float((s <= threshold).mean())


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """Area under the ROC curve separating other images (positive) from images of the classes, by score.

    1.0: every other image scores above every image of the classes; 0.5: chance. scikit-learn's
    ``roc_auc_score`` (the ``[eval]`` extra).
    """
    from sklearn.metrics import roc_auc_score

    s_in = np.asarray(scores_in, dtype=np.float64).ravel()
    s_out = np.asarray(scores_out, dtype=np.float64).ravel()
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError(f"need scores of both kinds, got {len(s_in)} in-distribution and {len(s_out)} other")
    truth = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return float(roc_auc_score(truth, np.concatenate([s_in, s_out])))
