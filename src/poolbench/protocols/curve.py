"""Learning curves: the full probe's heads (probe.fit_heads: AdamW, weight decay and epoch chosen
on validation) trained on growing stratified subsets of the job's training rows.

Sizes: `per_label` n (n rows of each label, all of a label that has fewer) and `fractions` f of
the rows (stratified, round(f x n) in all). All sizes of a seed are cut from ONE seeded shuffle,
so they are nested (the 8 per label are among the 16 per label, 10% among 100%), and they are the
same rows for every readout and layer. Fraction 1.0 is the full probe itself: the same rows in the
same order and seed, so the same heads and numbers as a `full` run.
Validation is the whole validation split at every size, as for the full probe.
"""

from __future__ import annotations

import numpy as np

from poolbench.config import Job
from poolbench.features import FeatureSet
from poolbench.probe import fit_heads, metrics_of, seed_of, train_indices
from poolbench.protocols.sampling import fraction_quota, label_ranks, quota_rows
from poolbench.records import RunResult


def size_name(kind: str, value: float) -> str:
    """How a training size is named in metrics: per_label_8, fraction_0.1."""
    return f"{kind}_{value:g}"


def curve_subsets(train_labels: np.ndarray, per_label: list[int], fractions: list[float], seed: int
                  ) -> dict[str, np.ndarray]:
    """Every training size's rows (positions into `train_labels`), nested, from one seeded shuffle."""
    ranks = label_ranks(train_labels, np.random.default_rng(seed_of("learning_curve", seed)))
    classes = np.unique(train_labels).tolist()
    subsets = {size_name("per_label", n): quota_rows(train_labels, ranks, dict.fromkeys(classes, n)) for n in per_label}
    subsets |= {size_name("fraction", f): quota_rows(train_labels, ranks, fraction_quota(train_labels, f))
                for f in fractions}
    return subsets


def learning_curve(features: FeatureSet, job: Job) -> list[RunResult]:
    """Per layer: curve/<size>/{n_train,val/acc,test/acc,test/f1} for every size; val/ and test/ are
    those of the largest size."""
    layers, num_labels = list(job.layers), len(features.label_names)
    labels = features.labels("train")
    pool = train_indices(labels.numpy(), job.task.max_train_examples, job.seed)
    subsets = curve_subsets(labels.numpy()[pool], list(job.mode.learning_curve.per_label),
                            list(job.mode.learning_curve.fractions), job.seed)
    val_y, test_y = features.labels("validation"), features.labels("test")
    metrics: list[dict[str, float]] = [{} for _ in layers]
    largest = max(subsets, key=lambda name: len(subsets[name]))
    for name, positions in subsets.items():
        rows = pool[positions]
        fitted = fit_heads(features.vectors("train", job.pooling, layers, rows=rows), labels[rows],
                           features.vectors("validation", job.pooling, layers), val_y, layers, job.mode, num_labels,
                           job.seed)
        test_logits = fitted.logits(features.vectors("test", job.pooling, layers))
        for i in range(len(layers)):
            val, test = metrics_of(fitted.val_logits[i], val_y, num_labels), metrics_of(test_logits[i], test_y, num_labels)
            metrics[i] |= {f"curve/{name}/n_train": len(rows), f"curve/{name}/val/acc": val["acc"],
                           f"curve/{name}/test/acc": test["acc"], f"curve/{name}/test/f1": test["f1"],
                           f"curve/{name}/weight_decay": fitted.weight_decays[i]}
            if name == largest:
                metrics[i] |= {"val/acc": val["acc"], "val/f1": val["f1"], "test/acc": test["acc"],
                               "test/f1": test["f1"], "n_train": len(rows)}
    return [RunResult(layer=layer, metrics={**metrics[i], "n_test": len(test_y), "n_labels": num_labels},
                      selection={"protocol": "learning_curve", "largest": largest}, timings={}, predictions=None,
                      features=features.key)
            for i, layer in enumerate(layers)]
