"""Bring-your-own data: a classification task read from a CSV, TSV, JSONL or Parquet file on disk.

`task=file task.location=reviews.csv task.name=reviews` (and `task.text_column`, optionally
`task.text_pair_column`, `task.label_column` naming the file's columns). The splits come from,
in this order:
  - a directory: `task.location=data/` holding one file per split, `train.<ext>`, `test.<ext>`
    and optionally `validation.<ext>`;
  - a column named `split` (SPLIT_COLUMN) in the one file, whose values are train, validation
    (optional) and test;
  - neither: the seeded stratified 80/10/10 split of the packaged tasks shipped without one
    (`stratified_split`, seeded by `task.split_seed`), drawn after cleaning so that no text can
    land in two splits.
`task.hub_splits` maps our split names to the file's (a file stem or a split-column value, e.g.
`+task.hub_splits.validation=dev`). A validation split the file does not have is carved from train
(10%, stratified, seeded by `task.split_seed`), as for hub tasks.

Then the data goes through the one preparation every source uses (preparation.prepare_task):
surrounding whitespace stripped; empty or whitespace-only texts dropped and counted (`empty`);
repeated texts kept once, texts seen with two labels dropped, leaks across splits removed, all
counted in `Task.dropped`. Labels are the label column's values as strings, in sorted order
(numerically when every label is an integer).

Bad input fails here, before any model loads, naming the file and the fix: a missing file or
directory, an unknown extension, bytes that are not UTF-8 (with the line), a missing column (with
the columns the file has), a single label, a label with fewer than MIN_LABEL_EXAMPLES examples.
A run's identity holds the sha256 of the file's bytes (`file_identity`): an edited file is a new
task, never a finished one reused.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections import Counter
from pathlib import Path

import pandas as pd

from poolbench.assets import Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.preparation import SPLITS, RawTask, carve_validation, clean, stratified_split

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
SPLIT_COLUMN = "split"
MIN_LABEL_EXAMPLES = 2  # one example cannot both train a head and be evaluated


def split_files(cfg: TaskConfig) -> dict[str, Path]:
    """Our split -> its file, for a directory location; {"all": path} for a single file."""
    if not cfg.location:
        raise Unavailable(f"task {cfg.name}: task=file needs task.location=<a .csv, .tsv, .jsonl or .parquet file, "
                          "or a directory of train/validation/test files>.")
    path = Path(cfg.location).expanduser()
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise Unavailable(f"task {cfg.name}: task.location={cfg.location!r} has the extension {path.suffix!r}; "
                              f"poolbench reads {', '.join(READERS)} (convert the file, or rename it if it is one "
                              "of these).")
        return {"all": path}
    if not path.is_dir():
        raise Unavailable(f"task {cfg.name}: task.location={cfg.location!r}: no such file or directory "
                          f"(looked for {path.resolve()}).")
    names = {**{split: split for split in SPLITS}, **dict(cfg.hub_splits)}
    files: dict[str, Path] = {}
    for split in SPLITS:
        found = sorted(p for p in path.iterdir() if p.stem == names[split] and p.suffix.lower() in READERS)
        if len(found) > 1:
            raise Unavailable(f"task {cfg.name}: {path} holds {len(found)} files for the {split} split "
                              f"({', '.join(p.name for p in found)}): keep one.")
        if found:
            files[split] = found[0]
    missing = [split for split in ("train", "test") if split not in files]
    if missing:
        raise Unavailable(f"task {cfg.name}: the directory {path} has no file for the {' and '.join(missing)} split "
                          f"(it holds {sorted(p.name for p in path.iterdir()) or 'nothing'}); name them "
                          f"{', '.join(f'{names[s]}.csv' for s in missing)} (or .tsv, .jsonl, .parquet), or map our "
                          "split names to yours with task.hub_splits (e.g. +task.hub_splits.test=heldout).")
    return files


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, stamp: tuple[int, int]) -> str:
    """Keyed by (path, size, mtime): the jobs of one sweep hash each file once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(cfg: TaskConfig) -> dict[str, str | None]:
    """What a run's identity adds for a file task: the sha256 of each file's bytes (None where there
    is no readable file: the job then fails on it, before any work, with the reason)."""
    try:
        files = split_files(cfg)
    except Unavailable:
        return {"content": None}
    stamps = {split: path.stat() for split, path in files.items()}
    return {split: _sha256(path.resolve(), (stamps[split].st_size, stamps[split].st_mtime_ns))
            for split, path in files.items()}


def read_frame(cfg: TaskConfig, path: Path) -> pd.DataFrame:
    """The file as strings (labels too); UTF-8 only, with the line of the first bad byte."""
    kind = READERS[path.suffix.lower()]
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several kinds for a damaged file
            raise Unavailable(f"task {cfg.name}: cannot read {path} as Parquet: {error}") from error
        return frame
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise Unavailable(f"task {cfg.name}: {path} is not UTF-8: byte {data[error.start]:#04x} at line {line} "
                          f"(byte offset {error.start}). Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 "
                          f"{path.name}`.") from None
    try:
        if kind == "jsonl":
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
        return pd.read_csv(io.StringIO(text), sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    except ValueError as error:  # pandas' parser errors are ValueErrors
        raise Unavailable(f"task {cfg.name}: cannot parse {path} as {kind.upper()}: {error}") from error


def _columns(cfg: TaskConfig, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The named columns as text [, text_pair], label [, split]; Unavailable naming what the file has."""
    named = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        named["task.text_pair_column"] = cfg.text_pair_column
    absent = [f"{key}={column!r}" for key, column in named.items() if column not in frame]
    if absent:
        raise Unavailable(f"task {cfg.name}: {path} has no column {', no column '.join(absent)}; its columns are "
                          f"{list(map(str, frame.columns))}: set {', '.join(a.split('=')[0] for a in absent)} "
                          "to one of them.")
    ours = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        ours[cfg.text_pair_column] = "text_pair"
    if SPLIT_COLUMN in frame and SPLIT_COLUMN not in ours:
        ours[SPLIT_COLUMN] = "split"
    frame = frame[list(ours)].rename(columns=ours)
    labels = frame["label"]
    # A label read from JSONL or Parquet may be a number; labels are names (strings), missing ones empty.
    frame = frame.assign(label=labels.where(labels.notna(), "").astype(str).str.strip())
    return frame


def _label_names(cfg: TaskConfig, frame: pd.DataFrame, where: str) -> list[str]:
    """Sorted label names; Unavailable for a missing label, a single label or a label too rare to split."""
    counts = Counter(frame["label"])
    if not counts:
        raise Unavailable(f"task {cfg.name}: {where} has no row with a non-empty text in column {cfg.text_column!r}.")
    if "" in counts:
        raise Unavailable(f"task {cfg.name}: {where} has {counts['']} rows without a label in column "
                          f"{cfg.label_column!r}: give them one or remove them.")
    if len(counts) < 2:
        raise Unavailable(f"task {cfg.name}: {where} has a single label ({', '.join(map(repr, counts)) or 'none'}) "
                          f"in column {cfg.label_column!r}: a classification task needs at least two "
                          "(is task.label_column the right column?).")
    rare = {label: n for label, n in counts.items() if n < MIN_LABEL_EXAMPLES}
    if rare:
        shown = ", ".join(f"{label!r} ({n})" for label, n in sorted(rare.items())[:10])
        raise Unavailable(f"task {cfg.name}: {where} has {len(rare)} label(s) with fewer than {MIN_LABEL_EXAMPLES} "
                          f"examples after cleaning: {shown}. Each label needs examples to train on and to evaluate "
                          "on: add examples, merge the label into another, or remove its rows.")
    names = list(counts)
    numeric = all(name.lstrip("-").isdigit() for name in names)
    return sorted(names, key=int) if numeric else sorted(names)


def _by_split_column(cfg: TaskConfig, frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    names = {**{split: split for split in SPLITS}, **dict(cfg.hub_splits)}
    ours = {names[split]: split for split in SPLITS}
    values = set(frame["split"].astype(str))
    if values - set(ours) or not {names["train"], names["test"]} <= values:
        raise Unavailable(f"task {cfg.name}: column {SPLIT_COLUMN!r} of {path} holds {sorted(values)}; it names each "
                          f"row's split: {names['train']}, {names['validation']} (optional) and {names['test']} (map "
                          "yours with task.hub_splits, e.g. +task.hub_splits.validation=dev), or rename the column "
                          "to have the file split here.")
    return {ours[value]: group.drop(columns="split").reset_index(drop=True)
            for value, group in frame.groupby(frame["split"].astype(str))}


def load_file(cfg: TaskConfig) -> RawTask:
    """The task in `task.location` (module docstring), as a RawTask for `prepare_task`."""
    files = split_files(cfg)
    if "all" in files:
        path = files["all"]
        frame = _columns(cfg, read_frame(cfg, path), path)
        if "split" not in frame:
            frame, dropped = clean(frame)
            label_names = _label_names(cfg, frame, str(path))
            return RawTask(splits=stratified_split(frame, cfg.split_seed), label_names=label_names, dropped=dropped)
        splits = _by_split_column(cfg, frame, path)
    else:
        splits = {split: _columns(cfg, read_frame(cfg, path), path).drop(columns="split", errors="ignore")
                  for split, path in files.items()}
    label_names = _label_names(cfg, clean(pd.concat(splits.values(), ignore_index=True))[0], cfg.location)
    dropped: Counter = Counter()
    if "validation" not in splits:
        splits["train"], dropped = clean(splits["train"])
        splits["train"], splits["validation"] = carve_validation(splits["train"], cfg.split_seed)
    return RawTask(splits={split: splits[split] for split in SPLITS}, label_names=label_names, dropped=dropped)
