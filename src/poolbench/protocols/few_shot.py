"""Few-shot probing the way MTEB's classification tasks score an embedding model.

MTEB (AbsTaskClassification, method="logReg", and logRegClassificationEvaluator) does, per task:
n_experiments = 10 times, shuffle the training rows and keep the first samples_per_label = 8 of each
label; fit sklearn's `LogisticRegression(max_iter=100)` (otherwise its defaults: L2 with C = 1,
lbfgs, multinomial) on the embeddings as they are (no scaling); score accuracy and macro F1 on the
test split; report the mean over the experiments. Here the same, with these differences:
- every layer and every readout is probed, not one embedding per model;
- the subsamples come from the job's training rows (`task.max_train_examples`, the rows the full
  probe of this seed trains on) and are drawn by generators seeded by (seed, repeat), so one seed's
  subsamples are the same for every readout and layer (the comparison between readouts is paired);
  MTEB draws its ten from one global numpy seed (42);
- validation is scored too (for the record; MTEB has none), never used to choose anything.
Nothing here is tuned: a fixed protocol, as MTEB's.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from poolbench.config import Job
from poolbench.features import FeatureSet
from poolbench.probe import seed_of, train_indices
from poolbench.protocols.sampling import per_label_rows
from poolbench.records import RunResult


def subsamples(train_labels: np.ndarray, per_label: int, repeats: int, seed: int) -> list[np.ndarray]:
    """The `repeats` few-shot training sets of a seed: positions into `train_labels`."""
    return [per_label_rows(train_labels, per_label, np.random.default_rng(seed_of("few_shot", seed, repeat)))
            for repeat in range(repeats)]


def fit_and_score(train_x: np.ndarray, train_y: np.ndarray, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                  max_iter: int, seed: int) -> tuple[dict[str, float], bool]:
    """MTEB's evaluator on one subsample: accuracy and macro F1 per split, and whether lbfgs converged."""
    classifier = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted instead: MTEB's budget is the protocol
        classifier.fit(train_x, train_y)
    scores = {}
    for split, (x, y) in splits.items():
        predicted = classifier.predict(x)
        scores[f"{split}/acc"] = accuracy_score(y, predicted)
        scores[f"{split}/f1"] = f1_score(y, predicted, average="macro")
    return scores, bool(classifier.n_iter_.max() < max_iter)


def few_shot(features: FeatureSet, job: Job) -> list[RunResult]:
    """Per layer: test/acc and test/f1 (and val/) = the mean over the subsamples; few_shot/test_acc_sd
    their sd; few_shot/not_converged how many fits stopped at max_iter."""
    settings, layers = job.mode.few_shot, list(job.layers)
    labels = features.labels("train").numpy()
    pool = train_indices(labels, job.task.max_train_examples, job.seed)
    pool_labels = labels[pool]
    draws = subsamples(pool_labels, settings.per_label, settings.repeats, job.seed)
    train_x = features.vectors("train", job.pooling, layers, rows=pool).numpy()
    splits = {split: (features.vectors(split, job.pooling, layers).numpy(), features.labels(split).numpy())
              for split in ("validation", "test")}
    split_name = {"validation": "val", "test": "test"}
    results = []
    for i, layer in enumerate(layers):
        scores, converged = [], []
        for rows in draws:
            layer_splits = {split_name[split]: (x[i], y) for split, (x, y) in splits.items()}
            score, ok = fit_and_score(train_x[i, rows], pool_labels[rows], layer_splits, settings.max_iter, job.seed)
            scores.append(score)
            converged.append(ok)
        mean = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
        results.append(RunResult(
            layer=layer,
            metrics={**mean, "few_shot/test_acc_sd": float(np.std([s["test/acc"] for s in scores], ddof=1))
                     if len(scores) > 1 else 0.0,
                     "few_shot/not_converged": len(converged) - sum(converged),
                     "n_train": float(np.mean([len(rows) for rows in draws])), "n_test": len(splits["test"][1]),
                     "n_labels": len(features.label_names)},
            selection={"protocol": "few_shot", "per_label": settings.per_label, "repeats": settings.repeats},
            timings={}, predictions=None, features=features.key))
    return results
