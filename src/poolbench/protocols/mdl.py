"""Minimum description length of the labels given the vectors: the online code of Voita & Titov
(2020, "Information-Theoretic Probing with Minimum Description Length", section 2.2.2).

The job's training rows are put in one seeded random order and cut at block ends t_1 < ... < t_S = n
(`mode.mdl.blocks`, percent of n; the paper's 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50,
100). The first block is sent with the uniform code, t_1 log2 K bits for K labels; every later block
(t_i, t_{i+1}] with the head trained on the rows before it (1 .. t_i):

    online codelength = t_1 log2 K + sum_i sum_{j in (t_i, t_{i+1}]} -log2 p_i(y_j | x_j)

against the uniform codelength n log2 K; compression = uniform / online. The head is the full
probe's (probe.fit_heads: standardised on its own training rows only, weight decay and epoch chosen
on the validation split, as the paper's early stopping on a held-out set). The record's val/ and
test/ numbers are those of the head trained on all n rows: the full probe's, the accuracy the
codelength stands beside.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from torch import Tensor

from poolbench.config import Job
from poolbench.features import FeatureSet
from poolbench.probe import fit_heads, metrics_of, seed_of, train_indices
from poolbench.records import RunResult


def block_ends(n: int, percents: Sequence[float]) -> list[int]:
    """Rows at each block end: round(n x p / 100), at least 1, repeats dropped (a small n can map
    two percentages to one row count)."""
    ends: list[int] = []
    for percent in percents:
        end = min(n, max(1, round(n * percent / 100)))
        if not ends or end > ends[-1]:
            ends.append(end)
    return ends


def online_codelength(ends: Sequence[int], num_labels: int, block_log2_probs: Callable[[int, int], Tensor]
                      ) -> dict[str, float]:
    """The online code in bits. `block_log2_probs(start, end)` gives log2 p(y_j | x_j) of rows
    start .. end-1 (in code order) under a head trained on rows 0 .. start-1."""
    first = ends[0] * math.log2(num_labels)
    blocks = [-float(block_log2_probs(start, end).sum()) for start, end in zip(ends, ends[1:])]
    online = first + sum(blocks)
    uniform = ends[-1] * math.log2(num_labels)
    return {"mdl/online_bits": online, "mdl/uniform_bits": uniform, "mdl/compression": uniform / online,
            "mdl/first_block_bits": first}


def mdl(features: FeatureSet, job: Job) -> list[RunResult]:
    """Per layer: mdl/online_bits, mdl/uniform_bits, mdl/compression, mdl/blocks, and the val/ and
    test/ metrics of the head on all rows."""
    layers, num_labels = list(job.layers), len(features.label_names)
    labels = features.labels("train")
    pool = train_indices(labels.numpy(), job.task.max_train_examples, job.seed)
    order = pool[np.random.default_rng(seed_of("mdl", job.seed)).permutation(len(pool))]  # code order
    ends = block_ends(len(order), job.mode.mdl.blocks)
    val_y, test_y = features.labels("validation"), features.labels("test")

    def fit(rows: np.ndarray):
        rows = np.sort(rows)  # as the full probe reads them: its minibatch order comes from the seed
        return fit_heads(features.vectors("train", job.pooling, layers, rows=rows), labels[rows],
                         features.vectors("validation", job.pooling, layers), val_y, layers, job.mode, num_labels,
                         job.seed)

    block_bits: dict[tuple[int, int], Tensor] = {}
    for start, end in zip(ends, ends[1:]):
        fitted = fit(order[:start])
        block = order[start:end]
        log_probs = fitted.logits(features.vectors("train", job.pooling, layers, rows=block)).log_softmax(-1)
        block_bits[start, end] = log_probs.gather(-1, labels[block].view(1, -1, 1).expand(len(layers), -1, 1))[..., 0] \
            / math.log(2)  # [L, block]
    final = fit(order)
    test_logits = final.logits(features.vectors("test", job.pooling, layers))
    results = []
    for i, layer in enumerate(layers):
        code = online_codelength(ends, num_labels, lambda start, end: block_bits[start, end][i])
        val, test = metrics_of(final.val_logits[i], val_y, num_labels), metrics_of(test_logits[i], test_y, num_labels)
        results.append(RunResult(
            layer=layer,
            metrics={**code, "mdl/blocks": len(ends), "mdl/first_block": ends[0], "val/acc": val["acc"],
                     "val/f1": val["f1"], "test/acc": test["acc"], "test/f1": test["f1"], "n_train": len(order),
                     "n_test": len(test_y), "n_labels": num_labels},
            selection={"protocol": "mdl", "block_ends": ends, "weight_decay": final.weight_decays[i],
                       "epoch": final.epochs[i], "monitor": "val/acc"},
            timings={}, predictions=None, features=features.key))
    return results
