"""Input dependence of cached readouts that massive activations cannot fake (no forward pass).

A near-constant vector with a few huge dimensions (an attention sink, Sun et al. 2024's massive
activations) has a plain cosine of ~1 between any two texts, and so does a mean that includes it.
Plain cosine then cannot tell whether the small varying part carries anything. These measures
look at the varying part only, per readout x layer of one split's cached vectors X [n, hidden]
(mu = the split's mean vector):

  variance_share    trace(Cov X) / mean ||x||^2 = mean ||x - mu||^2 / mean ||x||^2, in [0, 1]:
                    the share of the vector's energy that differs between inputs. 0 for a readout that
                    is the same vector for every input, 1 for one whose mean is 0. The headline
                    "centered input dependence" (scale-free, so comparable across layers and readouts).
  centered_cosine   mean cosine between random pairs of distinct texts after removing mu: the
                    anisotropy of what varies. Near -1/(n-1) whenever the varying parts point in no
                    shared direction (centering makes the pairwise dot products sum to a negative
                    number); clearly above 0 when the variation is one shared direction (e.g. length).
                    It does NOT grow with the amount of input dependence: read it beside variance_share.
  cka               linear CKA (Kornblith et al. 2019) between h_0 (cls) and the mean of content
                    states (`mean_nospecial` where the tokenizer adds special tokens, else `mean`):
                    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on centered X, Y. Invariant to
                    a constant vector added to either (so a sink cannot fake it), 1 for a readout
                    against itself.

Float32 rounding: a centered row shorter than 1e-6 of its vector's norm counts as exactly 0 (the
same input computed in two batches differs by rounding only). Degenerate cases, defined explicitly: a split whose vectors are all zero has variance_share 0; a pair
whose centered vectors include a zero vector has cosine 0 (so a constant readout's centered cosine
is 0); CKA with a constant readout (zero centered Gram) is 0: nothing of the other is linearly in it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from poolbench.diagnose.geometry import unit
from poolbench.features import FeatureSet

DEPENDENCE_METRICS = ("variance_share", "centered_cosine")


def centered(vectors: np.ndarray) -> np.ndarray:
    """Rows minus their mean, in float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors - vectors.mean(0, keepdims=True)


def variance_share(vectors: np.ndarray) -> float:
    """trace(Cov) / mean squared norm (population covariance, so the share is <= 1); 0 when every row is 0."""
    vectors = np.asarray(vectors, dtype=np.float64)
    energy = float((vectors ** 2).sum(1).mean())
    residual = _zero_below_rounding(centered(vectors), vectors)
    return float((residual ** 2).sum(1).mean()) / energy if energy > 0 else 0.0


def centered_cosine(vectors: np.ndarray, n_pairs: int = 1000, seed: int = 0) -> float:
    """Mean cosine of `n_pairs` random pairs of distinct rows after removing the mean row (the same
    pairs as geometry.anisotropy draws for this seed); a zero centered row has cosine 0 with anything."""
    n = len(vectors)
    if n < 2:
        raise ValueError("centered cosine needs at least two texts")
    rng = np.random.default_rng(seed)
    first = rng.integers(n, size=n_pairs)
    second = (first + rng.integers(1, n, size=n_pairs)) % n
    normed = unit(_zero_below_rounding(centered(vectors), vectors))
    return float((normed[first] * normed[second]).sum(-1).mean())


def _zero_below_rounding(residual: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Centered rows whose norm is float32 rounding of the original (identical inputs) set to exactly 0,
    so a constant readout stored in float32 is constant here too, not a cloud of rounding errors."""
    scale = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1, keepdims=True)
    tiny = np.linalg.norm(residual, axis=1, keepdims=True) <= 1e-6 * np.maximum(scale, 1e-30)
    return np.where(tiny, 0.0, residual)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two views [n, d_x], [n, d_y] of the same n texts; 0 if either is constant."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same texts in both views, got {len(x)} and {len(y)} rows")
    xc, yc = _zero_below_rounding(centered(x), x), _zero_below_rounding(centered(y), y)
    xx, yy = np.linalg.norm(xc.T @ xc), np.linalg.norm(yc.T @ yc)
    if xx == 0 or yy == 0:
        return 0.0
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (xx * yy))


def content_mean_pooling(features: FeatureSet) -> str:
    """The cached mean of content states: mean_nospecial where the entry stores it (its tokenizer adds
    special tokens), else mean (no special token to leave out)."""
    return "mean_nospecial" if "mean_nospecial" in features.poolings else "mean"


def dependence_table(features: FeatureSet, poolings: Sequence[str], layers: Sequence[int], n_pairs: int = 1000,
                     seed: int = 0, split: str = "test") -> pd.DataFrame:
    """One row per (pooling, layer): variance_share and centered_cosine of the split's cached vectors,
    and `cka` = linear CKA(cls, content mean) (the same value on every pooling's row of a layer)."""
    content = content_mean_pooling(features)
    rows = []
    for layer in layers:
        vectors = {p: features.vectors(split, p, [layer])[0].numpy() for p in dict.fromkeys([*poolings, "cls", content])}
        cka = linear_cka(vectors["cls"], vectors[content])
        rows += [{"pooling": p, "layer": layer, "variance_share": variance_share(vectors[p]),
                  "centered_cosine": centered_cosine(vectors[p], n_pairs, seed), "cka": cka,
                  "cka_with": content} for p in poolings]
    return pd.DataFrame(rows)
