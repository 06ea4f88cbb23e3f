"""How close two encodings of the same texts are: the readout vectors of one backbone in two precisions.

A precision study (experiments/precision.yaml) asks whether bfloat16 changes what a probe reads. Beside
the accuracies (the report's Precision section) it measures the vectors themselves, per layer, on the
test split of the task, from the two feature cache entries (one per precision: the key holds the dtype):
  cosine      per test text, the cosine between its vector in one precision and in the other; the
              mean over texts and the smallest (the worst text)
  linear CKA  Kornblith et al. (2019), centred kernel alignment with a linear kernel,
              ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F) with Xc, Yc the column-centred matrices
              [texts x features]: 1 when Y is X up to an orthogonal transform and an isotropic scale
              (and a shift), so it reads whether the geometry a linear probe sees was kept.
The job computes it (probe.run, when `mode.reference_dtype` names another precision than the job's),
not the report: the report reads records only, and a cache may be on another machine, evicted, or
absent where records come from W&B. Both entries are on this machine when the job runs; the reference
entry is encoded on first use, exactly as the reference precision's own jobs would encode it (then they
find it cached), so a precision study pays nothing extra for it.
"""

from __future__ import annotations

import numpy as np
import torch

from poolbench.features import FeatureSet

SPLIT = "test"  # the vectors that are scored: the ones whose closeness matters
METRIC_PREFIX = "precision"  # precision/cosine, precision/cosine_min, precision/cka


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n rows (x [n, p], y [n, q]), in float64; NaN where
    either is constant over the rows (nothing to align: h_0 at the embedding layer is one vector)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear CKA compares the same rows: {x.shape[0]} vs {y.shape[0]}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    # The feature-space form (p x q products): cheaper than the n x n Gram matrices for n > p, q.
    self_x, self_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if self_x == 0 or self_y == 0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / (self_x * self_y))


def row_cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cosine between row i of x and row i of y, for every i (float64)."""
    return torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)


def closeness(features: FeatureSet, reference: FeatureSet, pooling: str, layers: list[int]
              ) -> dict[int, dict[str, float]]:
    """Per layer, `pooling`'s test vectors in `features` against the same texts in `reference`: the mean
    and smallest cosine over texts and the linear CKA, as `precision/*` metrics."""
    if not np.array_equal(features.ids(SPLIT).numpy(), reference.ids(SPLIT).numpy()):
        raise ValueError(f"{features.key} and {reference.key} hold different {SPLIT} texts: they are not two "
                         "encodings of one task")
    ours, theirs = features.vectors(SPLIT, pooling, layers), reference.vectors(SPLIT, pooling, layers)
    out = {}
    for i, layer in enumerate(layers):
        cosines = row_cosines(ours[i], theirs[i])
        out[layer] = {f"{METRIC_PREFIX}/cosine": float(cosines.mean()),
                      f"{METRIC_PREFIX}/cosine_min": float(cosines.min()),
                      f"{METRIC_PREFIX}/cka": linear_cka(ours[i].numpy(), theirs[i].numpy())}
    return out
