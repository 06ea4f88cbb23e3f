"""Seeded stratified subsamples of a job's training rows. They take label arrays of the TRAINING
rows only and return positions into them: no other split can enter a subsample."""

from __future__ import annotations

import numpy as np
import pandas as pd


def label_ranks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every position, its rank among the positions of its label in a seeded shuffle (0 = first).
    Keeping the ranks below k keeps, per label, the first k of the shuffle: MTEB's undersampling
    (AbsTaskClassification._undersample_data). Subsamples cut from one draw are nested."""
    order = rng.permutation(len(labels))
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[order] = pd.Series(labels[order]).groupby(labels[order]).cumcount().to_numpy()
    return ranks


def per_label_rows(labels: np.ndarray, per_label: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions: `per_label` of each label (all of a label that has fewer), drawn by `rng`."""
    return np.flatnonzero(label_ranks(labels, rng) < per_label)


def fraction_quota(labels: np.ndarray, fraction: float) -> dict[int, int]:
    """Rows per label for a stratified `fraction` of the rows: round(fraction x n) in all, each label
    in proportion (largest remainder, as tasks.stratified_indices)."""
    classes, counts = np.unique(labels, return_counts=True)
    n = max(1, round(fraction * len(labels)))
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    return dict(zip(classes.tolist(), take.tolist()))


def quota_rows(labels: np.ndarray, ranks: np.ndarray, quota: dict[int, int]) -> np.ndarray:
    """Sorted positions whose rank within their label is below that label's quota."""
    limit = np.array([quota.get(label, 0) for label in labels.tolist()])
    return np.flatnonzero(ranks < limit)
