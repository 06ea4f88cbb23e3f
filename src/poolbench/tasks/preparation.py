"""What a task is, and the one preparation every source's data goes through.

A loader (`LOADERS`: packaged.py, hub.py, pairs.py) returns a `RawTask`: pandas frames per split
(columns `text`, optionally `text_pair`, and `label` as a name) plus the label order.
`prepare_task` does the rest the same way for all of them:

1. clean each split: strip whitespace, drop empty texts, keep one copy of each text (texts
   compare by `text_key`: case-folded, whitespace collapsed; a text seen with two labels is
   dropped altogether);
2. make the splits disjoint: a text also in test leaves validation and train, a text also in
   validation leaves train (the evaluation splits stay as published, the training split pays);
3. check labels and emptiness, give label ids in the fixed order and an `id` per example,
   fingerprint the prepared data, and save it under the cache so that tokenization
   (`datasets.map`) is cached too:
     <cache>/tasks/<name>-<fingerprint>/   a datasets.DatasetDict (train, validation, test)

The fingerprint hashes the prepared examples, the label order and PREPARATION_VERSION, nothing
else: the feature cache keys on it, so a change here that changes any example must bump
PREPARATION_VERSION. Tasks shipped without splits are split here too (`stratified_split`,
seeded by `task.split_seed`), and `subsample_train` draws a seed's training rows.

A task's options are conf/task/*.yaml, read as `TaskConfig`s by `task_configs`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from poolbench.assets import Unavailable, build_once
from poolbench.config import CONF_DIR, TaskConfig

SPLITS = ("train", "validation", "test")
USER_SOURCES = ("hub", "file")  # data that does not ship here: not a packaged task, not pretraining's concern
# Bump when the preparation below changes what a task's examples are: caches key on it.
# v2: texts compare case- and whitespace-insensitively, splits made disjoint, 20NG header stripped.
PREPARATION_VERSION = 2


@dataclass
class RawTask:
    splits: dict[str, pd.DataFrame]  # text [, text_pair], label (names); other columns are ignored
    label_names: list[str]  # the label order; ids are positions in this list
    dropped: Counter = field(default_factory=Counter)  # examples a loader removed, by reason


@dataclass
class Task:
    name: str
    splits: DatasetDict  # train / validation / test with id, text [, text_pair], label (ClassLabel)
    label_names: list[str]
    text_fields: tuple[str, ...]  # ("text",) or ("text", "text_pair"): then tokenize as a pair
    fingerprint: str
    dropped: dict[str, int] = field(default_factory=dict)  # examples removed while preparing, by reason

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------------------------------------
# Shared preparation

def text_fields_of(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("text", "text_pair") if c in frame]


def text_key(frame: pd.DataFrame) -> pd.Series:
    """What makes two examples the same text: case-folded, whitespace collapsed, pair joined by a tab."""
    columns = [frame[c].tolist() for c in text_fields_of(frame)]
    return pd.Series(["\t".join(normal_form(t) for t in texts) for texts in zip(*columns)], index=frame.index,
                     dtype=object)


def normal_form(text: str) -> str:
    """One text as `text_key` compares it: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n positions drawn without replacement, each class in proportion (largest remainder)."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def stratified_split(frame: pd.DataFrame, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, pd.DataFrame]:
    """Seeded stratified train/validation/test split of a task shipped without one."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[pd.DataFrame]] = {split: [] for split in SPLITS}
    for _, group in frame.groupby("label", sort=True):
        group = group.iloc[rng.permutation(len(group))]
        n_val, n_test = round(len(group) * fractions[1]), round(len(group) * fractions[2])
        parts["validation"].append(group.iloc[:n_val])
        parts["test"].append(group.iloc[n_val:n_val + n_test])
        parts["train"].append(group.iloc[n_val + n_test:])
    return {split: pd.concat(frames).sort_index().reset_index(drop=True) for split, frames in parts.items()}


VALIDATION_FRACTION = 0.1  # carved from train when a source has train and test but no validation split


def carve_validation(train: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): VALIDATION_FRACTION of a cleaned training split, stratified and seeded."""
    carved = stratified_split(train, seed, (1 - VALIDATION_FRACTION, VALIDATION_FRACTION, 0.0))
    return carved["train"], carved["validation"]


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """Strip whitespace, drop empty texts, keep one copy of each text (by `text_key`); a text seen
    with two different labels is dropped altogether. Counts what went, by reason."""
    # astype(str): a column with no text at all (an empty split) has a numeric dtype, and .str refuses it.
    frame = frame.assign(**{c: frame[c].fillna("").astype(str).str.strip() for c in text_fields_of(frame)})
    non_empty = frame[(frame[text_fields_of(frame)] != "").all(axis=1)]
    key = text_key(non_empty)
    conflicting = non_empty.groupby(key)["label"].transform("nunique") > 1
    copy = key.duplicated() & ~conflicting
    dropped = Counter(empty=len(frame) - len(non_empty), duplicate=int(copy.sum()),
                      conflicting_label=int(conflicting.sum()))
    return non_empty[~conflicting & ~copy].reset_index(drop=True), dropped


def make_disjoint(splits: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], Counter]:
    """Drop from validation the texts also in test, from train those also in validation or test."""
    held_out: set[str] = set()
    disjoint, dropped = {}, Counter()
    for split in ("test", "validation", "train"):
        frame = splits[split]
        key = text_key(frame)
        leaked = key.isin(held_out)
        dropped[f"leak_{split}"] = int(leaked.sum())
        disjoint[split] = frame[~leaked].reset_index(drop=True)
        held_out |= set(key)
    return {split: disjoint[split] for split in SPLITS}, dropped


def prepare(raw: RawTask) -> RawTask:
    """Clean every split and make them disjoint: what `prepare_task` stores."""
    dropped = Counter(raw.dropped)
    splits = {}
    for split in SPLITS:
        splits[split], counts = clean(raw.splits[split])
        dropped.update(counts)
    splits, leaks = make_disjoint(splits)
    dropped.update(leaks)
    return RawTask(splits=splits, label_names=raw.label_names, dropped=+dropped)


# ---------------------------------------------------------------------------------------------
# Checking, fingerprinting, saving; subsampling

def _fingerprint(raw: RawTask) -> str:
    """Of the prepared data: label order and every split's texts and labels, and the preparation version."""
    digest = hashlib.sha256(f"v{PREPARATION_VERSION}".encode())
    digest.update("|".join(raw.label_names).encode())
    for split in SPLITS:
        frame = raw.splits[split]
        content = frame[text_fields_of(frame) + ["label"]]
        digest.update(pd.util.hash_pandas_object(content, index=False).values.tobytes())
    return digest.hexdigest()[:16]


def _check(cfg: TaskConfig, raw: RawTask) -> None:
    """What `prepare` guarantees; a failure here is a bug in a loader or in `prepare`."""
    seen: dict[str, str] = {}
    for split in SPLITS:
        frame = raw.splits[split]
        if frame.empty:
            raise Unavailable(f"task {cfg.name}: the {split} split is empty.")
        unknown = set(frame["label"]) - set(raw.label_names)
        if unknown:
            raise Unavailable(f"task {cfg.name}: {split} has labels outside the label list: {sorted(unknown)[:5]}")
        if (frame[text_fields_of(frame)] == "").any(axis=None):
            raise Unavailable(f"task {cfg.name}: {split} has empty texts.")
        for key in set(text_key(frame)):
            if seen.setdefault(key, split) != split:
                raise Unavailable(f"task {cfg.name}: a text is in both {seen[key]} and {split}: {key[:80]!r}")


def prepare_task(cfg: TaskConfig, raw: RawTask, cache_dir: Path) -> Task:
    """What a loader returned, prepared (`prepare`), checked, fingerprinted and saved as a DatasetDict
    under <cache_dir>/tasks/<name>-<fingerprint>/, or read from there when prepared before."""
    raw = prepare(raw)
    _check(cfg, raw)
    fingerprint = _fingerprint(raw)
    text_fields = tuple(text_fields_of(raw.splits["train"]))
    features = Features({"id": Value("int64"), **{c: Value("string") for c in text_fields},
                         "label": ClassLabel(names=raw.label_names)})

    def save(out: Path) -> None:
        label_id = {name: i for i, name in enumerate(raw.label_names)}
        DatasetDict({
            split: Dataset.from_pandas(
                frame.assign(id=np.arange(len(frame)), label=frame["label"].map(label_id))[list(features)],
                features=features, preserve_index=False)
            for split, frame in raw.splits.items()
        }).save_to_disk(str(out))

    directory = build_once(Path(cache_dir).expanduser() / "tasks" / f"{cfg.name}-{fingerprint}", save)
    return Task(name=cfg.name, splits=load_from_disk(str(directory)), label_names=raw.label_names,
                text_fields=text_fields, fingerprint=fingerprint, dropped=dict(raw.dropped))


def subsample_train(train: Dataset, max_examples: int | None, seed: int) -> Dataset:
    """The training split (raw or tokenized), or a stratified seeded subsample of it: seeds then
    vary the data too."""
    if max_examples is None or max_examples >= len(train):
        return train
    return train.select(stratified_indices(np.asarray(train["label"]), max_examples, seed))


# ---------------------------------------------------------------------------------------------
# The options

def task_config(path: Path) -> TaskConfig:
    """A conf/task/*.yaml as a TaskConfig (its Hydra defaults list dropped; an unknown key fails)."""
    options = yaml.safe_load(path.read_text())
    options.pop("defaults", None)
    return TaskConfig(**options)


def task_configs() -> list[TaskConfig]:
    """Every conf/task/*.yaml, by file name."""
    return [task_config(path) for path in sorted((CONF_DIR / "task").glob("*.yaml"))]
