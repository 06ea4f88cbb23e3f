"""A control task (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"),
adapted from word types to sentences.

Hewitt & Liang give every word TYPE a random label, so a probe can score well on the control task
only by memorising types: the control measures what the probe can learn by itself. For a sentence
readout the surface property is the text's first content word (lower-cased; the first word not in
sklearn's English stop-word list, else its first word): every text that starts with the same content
word gets the same control label, drawn by a seeded random function of the word (`mode.control.seed`).
The function keeps the task's label distribution: word types go, largest first, to a random label
that still has room for all their texts (counted over train, validation and test together), so each
label ends within one type's size of its count in the task. Measured (seed 0): exact on mcid, trec and
nsp_bbc; on banking77 one first word starts 575 texts, more than any label has, and the control
distribution is 6.3% (total variation) from the task's.

Selectivity = task accuracy - control accuracy, per readout x layer: both heads are the full
probe's (probe.fit_heads), on the same rows with the same seed, selected on validation.
For a sentence pair the first text's word is used.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from poolbench.config import Job
from poolbench.features import FeatureSet
from poolbench.probe import fit_heads, metrics_of, seed_of, train_indices
from poolbench.records import RunResult
from poolbench.tasks import SPLITS, load_task

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def first_content_word(text: str) -> str:
    """The first word not in the stop-word list, lower-cased; the first word if all are stop words;
    "" for a text without a word."""
    words = WORD.findall(text.lower())
    return next((word for word in words if word not in ENGLISH_STOP_WORDS), words[0] if words else "")


def control_function(words: list[str], labels: np.ndarray, num_labels: int, seed: int) -> dict[str, int]:
    """word -> control label, a seeded random function whose label counts over `words` stay within
    one word type's count of the task's `labels` counts."""
    rng = np.random.default_rng(seed_of("control", seed))
    counts = Counter(words)
    types = sorted(counts)  # a fixed order first, so the shuffle alone decides ties
    shuffled = [types[i] for i in rng.permutation(len(types))]
    room = np.bincount(labels, minlength=num_labels).astype(np.int64)
    mapping = {}
    for word in sorted(shuffled, key=lambda w: -counts[w]):  # stable: equal counts keep the shuffled order
        fits = np.flatnonzero(room >= counts[word])
        label = int(rng.choice(fits)) if len(fits) else int(np.argmax(room))
        mapping[word] = label
        room[label] -= counts[word]
    return mapping


def control_labels(features: FeatureSet, job: Job) -> tuple[dict[str, torch.Tensor], int]:
    """Every split's control labels, in the feature cache's row order, and the number of word types."""
    task = load_task(job.task, job.cache_dir)
    words = {}
    for split in SPLITS:
        by_id = dict(zip(task.splits[split]["id"], task.splits[split]["text"]))
        words[split] = [first_content_word(by_id[i]) for i in features.ids(split).tolist()]
    every_word = [word for split in SPLITS for word in words[split]]
    every_label = np.concatenate([features.labels(split).numpy() for split in SPLITS])
    mapping = control_function(every_word, every_label, len(features.label_names), job.mode.control.seed)
    return {split: torch.tensor([mapping[word] for word in words[split]]) for split in SPLITS}, len(mapping)


def control(features: FeatureSet, job: Job) -> list[RunResult]:
    """Per layer: val/ and test/ of the task head, control/{val,test}/acc of the control head,
    selectivity = test/acc - control/test/acc, and the control task's majority-label floor on test."""
    layers, num_labels = list(job.layers), len(features.label_names)
    task_labels = {split: features.labels(split) for split in SPLITS}
    control, n_types = control_labels(features, job)
    rows = train_indices(task_labels["train"].numpy(), job.task.max_train_examples, job.seed)
    scores = {}
    for name, y in (("task", task_labels), ("control", control)):
        fitted = fit_heads(features.vectors("train", job.pooling, layers, rows=rows), y["train"][rows],
                           features.vectors("validation", job.pooling, layers), y["validation"], layers, job.mode,
                           num_labels, job.seed)
        test_logits = fitted.logits(features.vectors("test", job.pooling, layers))
        scores[name] = [(metrics_of(fitted.val_logits[i], y["validation"], num_labels),
                         metrics_of(test_logits[i], y["test"], num_labels)) for i in range(len(layers))]
    floor = float(torch.bincount(control["test"]).max()) / len(control["test"])
    results = []
    for i, layer in enumerate(layers):
        (val, test), (control_val, control_test) = scores["task"][i], scores["control"][i]
        results.append(RunResult(
            layer=layer,
            metrics={"val/acc": val["acc"], "val/f1": val["f1"], "test/acc": test["acc"], "test/f1": test["f1"],
                     "control/val/acc": control_val["acc"], "control/test/acc": control_test["acc"],
                     "selectivity": test["acc"] - control_test["acc"], "control/test_majority": floor,
                     "control/word_types": n_types,
                     "n_train": len(rows), "n_test": len(task_labels["test"]), "n_labels": num_labels},
            selection={"protocol": "control", "control_seed": job.mode.control.seed}, timings={}, predictions=None,
            features=features.key))
    return results
