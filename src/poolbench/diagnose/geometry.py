"""Geometry of cached readouts, no forward pass: cos(cls, mean), anisotropy, training-free accuracy.

Everything reads pooled vectors as the feature cache stores them (`poolbench.features`: per split,
per pooling, float32 [num_layers + 1, n, hidden]) or plain numpy arrays of the same rows.

cos(h_0, mean): the cache holds poolbench's `mean`, which averages ALL real tokens, the special ones
([CLS], [SEP]) included, so h_0 itself is one of the averaged states (1/n of the mean); a mean of
content tokens only is not cached. `cls_mean_cosine` is therefore cos(cls, mean over all real
tokens), as available; it overstates cos(h_0, mean of content states) by h_0's own share of the mean.

Training-free accuracy asks whether the classes are already separated in the readout's geometry,
with nothing fitted but class means: nearest class centroid by cosine (each class's centroid is the
mean of its training vectors after L2 normalisation, so every text counts once whatever its norm)
and k nearest training neighbours by cosine with a majority vote.

Ties are broken by the training prior, deterministically: among tied classes the one with MORE
training examples wins, then the smaller label. Near-ties within `tol` of cosine count as ties, and
every training vector as similar as the k-th nearest (within `tol`) is a neighbour, so the result
never depends on the order of the training set. Consequence: a readout that is the same vector for
every text (or zero) predicts the training majority class for every test text, exactly the
majority-class floor (`majority_floor`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from poolbench.features import FeatureSet
from poolbench.pooling import BASE_POOLINGS

TOL = 1e-9  # cosines closer than this are a tie (float64; rounding of identical vectors is ~1e-16)
_CHUNK = 1024  # test rows per block of the similarity matrix


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1, in float64; zero rows stay zero (their cosine with anything is 0)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine along the last axis: [..., n, d] x [..., n, d] -> [..., n]."""
    return (unit(a) * unit(b)).sum(-1)


def cls_mean_cosine(cls: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """cos(cls, mean) per text (and per layer when given [layers, n, hidden]); see the module note."""
    return cosine(cls, mean)


def anisotropy(vectors: np.ndarray, n_pairs: int = 1000, seed: int = 0) -> float:
    """Mean cosine between `n_pairs` random pairs of DISTINCT texts (rows), drawn with replacement."""
    n = len(vectors)
    if n < 2:
        raise ValueError("anisotropy needs at least two texts")
    rng = np.random.default_rng(seed)
    first = rng.integers(n, size=n_pairs)
    second = (first + rng.integers(1, n, size=n_pairs)) % n  # never equal to first
    normed = unit(vectors)
    return float((normed[first] * normed[second]).sum(-1).mean())


def _class_order(train_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes sorted by label, rank of each for tie-breaks: most frequent first, then smaller label)."""
    classes, counts = np.unique(train_y, return_counts=True)
    order = np.lexsort((classes, -counts))
    rank = np.empty(len(classes), dtype=np.int64)
    rank[order] = np.arange(len(classes))
    return classes, rank


def _pick(scores: np.ndarray, rank: np.ndarray, tol: float) -> np.ndarray:
    """Per row, the index of the best score, ties (within tol) to the best-ranked class."""
    tied = scores >= scores.max(axis=1, keepdims=True) - tol
    return np.where(tied, rank[None, :], len(rank)).argmin(axis=1)


def majority_floor(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy on test of always predicting the training majority class (ties: the smaller label)."""
    classes, rank = _class_order(np.asarray(train_y))
    return float(np.mean(np.asarray(test_y) == classes[rank.argmin()]))


def centroid_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Label of the nearest class centroid by cosine, for each test row."""
    train_y = np.asarray(train_y)
    classes, rank = _class_order(train_y)
    normed = unit(train_x)
    centroids = np.stack([normed[train_y == c].mean(0) for c in classes])
    return classes[_pick(unit(test_x) @ unit(centroids).T, rank, tol)]


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 10,
                tol: float = TOL) -> np.ndarray:
    """Majority label of the k most cosine-similar training rows (all rows tied with the k-th count)."""
    train_y = np.asarray(train_y)
    classes, rank = _class_order(train_y)
    k = min(k, len(train_y))
    onehot = (train_y[:, None] == classes[None, :]).astype(np.float64)  # [n_train, n_classes]
    normed_train, normed_test = unit(train_x), unit(test_x)
    predicted = np.empty(len(normed_test), dtype=classes.dtype)
    for start in range(0, len(normed_test), _CHUNK):
        similarity = normed_test[start:start + _CHUNK] @ normed_train.T
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1:k]
        votes = (similarity >= kth - tol).astype(np.float64) @ onehot
        predicted[start:start + _CHUNK] = classes[_pick(votes, rank, 0.0)]
    return predicted


def training_free_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                           k: int = 10) -> dict[str, float]:
    """{"centroid", "knn", "floor"}: accuracies on test of the two training-free classifiers and the
    majority-class floor."""
    test_y = np.asarray(test_y)
    return {"centroid": float(np.mean(centroid_predict(train_x, train_y, test_x) == test_y)),
            "knn": float(np.mean(knn_predict(train_x, train_y, test_x, k) == test_y)),
            "floor": majority_floor(train_y, test_y)}


def geometry_table(features: FeatureSet, poolings: Sequence[str] = BASE_POOLINGS, layers: Sequence[int] | None = None,
                   k: int = 10, n_pairs: int = 1000, seed: int = 0, train: str = "train",
                   test: str = "test", train_rows: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (pooling, layer) of a cached feature set: centroid, knn, floor (training-free accuracies
    on `test`, fitted on `train`, or on its rows `train_rows`) and anisotropy (of the `test` vectors).
    Reads one layer at a time."""
    layers = range(features.num_layers + 1) if layers is None else layers
    train_y, test_y = features.labels(train).numpy(), features.labels(test).numpy()
    if train_rows is not None:
        train_y = train_y[train_rows]
    rows = []
    for pooling in poolings:
        for layer in layers:
            train_x = features.vectors(train, pooling, [layer], rows=train_rows)[0].numpy()
            test_x = features.vectors(test, pooling, [layer])[0].numpy()
            rows.append({"pooling": pooling, "layer": layer,
                         **training_free_accuracy(train_x, train_y, test_x, test_y, k),
                         "anisotropy": anisotropy(test_x, n_pairs, seed)})
    return pd.DataFrame(rows)


def cls_mean_frame(features: FeatureSet, split: str = "test", layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Tidy cos(cls, mean) of a cached split: columns layer, text (row of the split), cosine."""
    layers = list(range(features.num_layers + 1) if layers is None else layers)
    values = cls_mean_cosine(features.vectors(split, "cls", layers).numpy(), features.vectors(split, "mean", layers).numpy())
    layer, text = np.meshgrid(layers, np.arange(values.shape[1]), indexing="ij")
    return pd.DataFrame({"layer": layer.ravel(), "text": text.ravel(), "cosine": values.ravel()})
