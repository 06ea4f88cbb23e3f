"""Task preparation on small synthetic frames whose answers are known, so the leak-free guarantee
is checked without any dataset package: `clean` (strip, drop empty, one copy per text, drop texts
with two labels), `make_disjoint` (test, then validation, keep their texts; train pays),
`stratified_split` and `stratified_indices` (seeded, stratified, nothing lost), and the bucket
sampler's length (it sizes the learning-rate schedule).

The property tests draw texts from a tiny alphabet of letters in two cases and whitespace, so
that texts equal up to case and whitespace, empty texts and conflicting labels happen often."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from poolbench.data import BucketBatchSampler
from poolbench.tasks import (SPLITS, RawTask, clean, make_disjoint, prepare, stratified_indices, stratified_split,
                             text_key)

PROPERTY = settings(max_examples=200, deadline=None)


def frame(text, label, text_pair=None, **index) -> pd.DataFrame:
    columns = {"text": text} if text_pair is None else {"text": text, "text_pair": text_pair}
    return pd.DataFrame({**columns, "label": label}, **index)


def rows(frame_: pd.DataFrame) -> list[tuple]:
    return list(frame_.itertuples(index=False, name=None))


def key_of(*texts: str) -> str:
    """The documented text identity, written out: case-folded, whitespace collapsed, pair joined by a tab."""
    return "\t".join(" ".join(t.casefold().split()) for t in texts)


# --------------------------------------------------------------------------- strategies

ALPHABET = ["a", "A", "b", "B", " ", "  ", "\t", "\n"]
texts = st.one_of(st.lists(st.sampled_from(ALPHABET), max_size=4).map("".join), st.sampled_from([None, np.nan]))
clean_texts = st.lists(st.sampled_from(ALPHABET), max_size=4).map("".join)
labels = st.sampled_from(["x", "y"])


@st.composite
def frames(draw, text=texts, pair=None, max_size=12) -> pd.DataFrame:
    """A frame of `text` [, `text_pair`], `label`, with a range, reversed or repeated index, and
    string columns as loaders make them: pandas' str dtype (read_csv) or object (to_pandas)."""
    pair = draw(st.booleans()) if pair is None else pair
    n = draw(st.integers(0, max_size))
    column = st.lists(text, min_size=n, max_size=n)
    index = draw(st.sampled_from([list(range(n)), list(range(n))[::-1], [7] * n]))
    built = frame(draw(column), draw(st.lists(labels, min_size=n, max_size=n)), draw(column) if pair else None,
                  index=index)
    return built.astype(draw(st.sampled_from(["str", object])))


def reference_clean(frame_: pd.DataFrame) -> tuple[list[tuple], Counter]:
    """`clean` as its docstring states it, row by row: kept rows (stripped, in input order) and the counts."""
    fields = [c for c in ("text", "text_pair") if c in frame_]
    stripped = [(tuple("" if pd.isna(t) else t.strip() for t in texts), label)
                for *texts, label in frame_[fields + ["label"]].itertuples(index=False, name=None)]
    non_empty = [(texts, label) for texts, label in stripped if all(texts)]
    labels_of: dict[str, set] = {}
    for texts, label in non_empty:
        labels_of.setdefault(key_of(*texts), set()).add(label)
    kept, seen, counts = [], set(), Counter(empty=len(stripped) - len(non_empty), duplicate=0, conflicting_label=0)
    for texts, label in non_empty:
        key = key_of(*texts)
        if len(labels_of[key]) > 1:
            counts["conflicting_label"] += 1
        elif key in seen:
            counts["duplicate"] += 1
        else:
            seen.add(key)
            kept.append((*texts, label))
    return kept, counts


# --------------------------------------------------------------------------- clean: known frames


def test_clean_strips_outer_whitespace_and_keeps_inner_whitespace():
    """'  book a  flight\\n' -> 'book a  flight' and '\\tcancel it ' -> 'cancel it': only the ends are stripped."""
    cleaned, dropped = clean(frame(["  book a  flight\n", "\tcancel it "], ["travel", "travel"]))
    assert rows(cleaned) == [("book a  flight", "travel"), ("cancel it", "travel")]
    assert dropped == Counter(empty=0, duplicate=0, conflicting_label=0)


@pytest.mark.parametrize("pair", [False, True])
def test_clean_keeps_an_empty_split_empty_whatever_its_dtype(pair):
    """An empty split read from a file or built from no rows has float64 text columns: cleaning it
    gives an empty split with nothing dropped, not an error."""
    columns = ["text", "text_pair"] if pair else ["text"]
    empty = pd.DataFrame({**{c: pd.Series([], dtype="float64") for c in columns},
                          "label": pd.Series([], dtype="int64")})
    cleaned, dropped = clean(empty)
    assert cleaned.empty and list(cleaned.columns) == [*columns, "label"]
    assert dropped == Counter(empty=0, duplicate=0, conflicting_label=0)


def test_clean_drops_empty_whitespace_only_and_missing_texts():
    """'', ' ', '\\t\\n', None and NaN are 5 empty texts: only 'kept' stays, counted empty=5."""
    cleaned, dropped = clean(frame(["", " ", "\t\n", None, np.nan, "kept"], ["a", "b", "a", "b", "a", "b"]))
    assert rows(cleaned) == [("kept", "b")]
    assert dropped == Counter(empty=5, duplicate=0, conflicting_label=0)


def test_clean_keeps_the_first_copy_of_a_text_repeated_up_to_case_and_whitespace():
    """Four spellings of 'book a flight' (case, inner and outer whitespace) keep the first, stripped;
    'book a flights' is another text. duplicate=3."""
    cleaned, dropped = clean(frame(["Book a flight", "book  a FLIGHT", " BOOK A\tflight ", "book a flights",
                                    "book a\nflight"], ["travel"] * 5))
    assert rows(cleaned) == [("Book a flight", "travel"), ("book a flights", "travel")]
    assert dropped == Counter(empty=0, duplicate=3, conflicting_label=0)


def test_clean_drops_every_copy_of_a_text_seen_with_two_labels():
    """'refund please' with labels a, a, b (up to case and whitespace): all three copies go, none is kept;
    conflicting_label=3, duplicate=0. 'other' stays."""
    cleaned, dropped = clean(frame(["refund please", "other", "Refund please", " refund  please"], ["a", "a", "a", "b"]))
    assert rows(cleaned) == [("other", "a")]
    assert dropped == Counter(empty=0, duplicate=0, conflicting_label=3)


def test_clean_counts_each_reason_exactly_on_a_mixed_frame():
    """10 rows: 2 empty, 'hi' x3 one label (2 duplicates), 'yo' x2 two labels (2 conflicting), 3 unique kept."""
    cleaned, dropped = clean(frame(["hi", "", "Hi ", "yo", "one", "YO", "  ", "two", "HI", "three"],
                                   ["g", "g", "g", "g", "g", "s", "s", "g", "g", "s"]))
    assert rows(cleaned) == [("hi", "g"), ("one", "g"), ("two", "g"), ("three", "s")]
    assert dropped == Counter(empty=2, duplicate=2, conflicting_label=2)
    assert 10 == len(cleaned) + sum(dropped.values())


def test_clean_compares_pairs_as_pairs():
    """Pairs: ('a b','c') and ('a','b c') are different pairs; ('Q ?','A') and ('q  ?',' a') the same
    pair (one duplicate); ('same','x') vs ('same','y') differ by their second text; ('s','t') with
    two labels conflicts; an empty second text makes the row empty."""
    cleaned, dropped = clean(frame(["a b", "a", "Q ?", "q  ?", "same", "same", "s", "S", "lonely"],
                                   ["1", "1", "1", "1", "1", "1", "1", "2", "1"],
                                   text_pair=["c", "b c", "A", " a", "x", "y", "t", "T", "  "]))
    assert rows(cleaned) == [("a b", "c", "1"), ("a", "b c", "1"), ("Q ?", "A", "1"), ("same", "x", "1"),
                             ("same", "y", "1")]
    assert dropped == Counter(empty=1, duplicate=1, conflicting_label=2)


def test_clean_returns_a_fresh_range_index_and_ignores_the_input_index():
    """A repeated input index gives the same rows as a range index, and the result is numbered 0..n-1."""
    values = (["x", "X", "y", "", "z"], ["a", "a", "b", "a", "b"])
    by_range, counts = clean(frame(*values))
    repeated, repeated_counts = clean(frame(*values, index=[3, 3, 3, 3, 3]))
    assert_frame_equal(by_range, repeated)
    assert counts == repeated_counts and list(repeated.index) == [0, 1, 2]


# --------------------------------------------------------------------------- clean: properties


@PROPERTY
@given(frames())
def test_clean_equals_a_row_by_row_reference(raw):
    """On random frames (single texts and pairs, missing texts, any index), clean keeps exactly the
    rows and counts exactly the reasons that the reference written from its docstring does."""
    expected_rows, expected_counts = reference_clean(raw)
    cleaned, dropped = clean(raw)
    assert rows(cleaned) == expected_rows
    assert dropped == expected_counts


@PROPERTY
@given(frames())
def test_clean_leaves_unique_non_empty_texts_taken_from_the_input_and_accounts_for_every_row(raw):
    """After clean: no two rows share a text_key; no text is empty; every kept row is an input row
    (stripped), in input order; no kept text had two labels in the input; and
    len(input) == len(output) + sum(counter)."""
    cleaned, dropped = clean(raw)
    fields = [c for c in ("text", "text_pair") if c in raw]
    keys = text_key(cleaned)
    assert keys.is_unique
    assert (cleaned[fields] != "").all(axis=None)
    source = [(*("" if pd.isna(t) else t.strip() for t in texts), label)
              for *texts, label in raw[fields + ["label"]].itertuples(index=False, name=None)]
    position = 0
    for row in rows(cleaned):  # a subsequence of the stripped input rows
        position = source.index(row, position) + 1
    labels_of: dict[str, set] = {}
    for *texts, label in source:
        if all(texts):
            labels_of.setdefault(key_of(*texts), set()).add(label)
    assert all(len(labels_of[key]) == 1 for key in keys)
    assert set(dropped) == {"empty", "duplicate", "conflicting_label"} and min(dropped.values()) >= 0
    assert len(raw) == len(cleaned) + sum(dropped.values())


# --------------------------------------------------------------------------- make_disjoint


def test_make_disjoint_keeps_test_then_validation_and_train_pays():
    """test keeps 'a', 'b' (and its own repeat of 'a'); validation loses 'A' and 'b ' (in test), keeps
    'c' and 'only val' and also 'd', which train has; train loses 'a', 'B' (test) and 'd', 'C' (validation).
    Counter: leak_test=0, leak_validation=2, leak_train=4."""
    splits = {
        "train": frame(["a", "d", "train only", "B", "C"], ["t"] * 5),
        "validation": frame(["A", "c", "b ", "only val", "d"], ["v"] * 5),
        "test": frame(["a", "b", "a"], ["s"] * 3),
    }
    disjoint, dropped = make_disjoint(splits)
    assert list(disjoint) == list(SPLITS)
    assert_frame_equal(disjoint["test"], splits["test"])
    assert rows(disjoint["validation"]) == [("c", "v"), ("only val", "v"), ("d", "v")]
    assert rows(disjoint["train"]) == [("train only", "t")]
    assert dropped == Counter(leak_test=0, leak_validation=2, leak_train=4)


def test_make_disjoint_compares_pairs_as_pairs():
    """A pair leaks only when both texts match (up to case and whitespace): ('q','a') in test removes
    ('Q',' a ') from train but not ('q','b') nor ('a','q')."""
    test = pd.DataFrame({"text": ["q"], "text_pair": ["a"], "label": ["x"]})
    train = pd.DataFrame({"text": ["Q", "q", "a"], "text_pair": [" a ", "b", "q"], "label": ["x", "x", "x"]})
    disjoint, dropped = make_disjoint({"train": train, "validation": test.iloc[:0], "test": test})
    assert rows(disjoint["train"]) == [("q", "b", "x"), ("a", "q", "x")]
    assert dropped == Counter(leak_test=0, leak_validation=0, leak_train=1)


@st.composite
def split_frames(draw) -> dict[str, pd.DataFrame]:
    pair = draw(st.booleans())
    return {split: draw(frames(text=clean_texts, pair=pair, max_size=10)) for split in SPLITS}


@PROPERTY
@given(split_frames())
def test_make_disjoint_leaves_no_text_in_two_splits_and_counts_what_left(splits):
    """On random splits: afterwards no text_key is in two splits; test is returned as given;
    validation is exactly its rows whose text is not in test; train exactly its rows whose text is in
    neither; the counter holds, per split, input rows minus output rows."""
    disjoint, dropped = make_disjoint(splits)
    keys = {split: set(text_key(disjoint[split])) for split in SPLITS}
    assert not (keys["train"] & keys["validation"] or keys["train"] & keys["test"]
                or keys["validation"] & keys["test"])
    test_keys, validation_keys = set(text_key(splits["test"])), set(text_key(splits["validation"]))
    expected = {
        "test": splits["test"],
        "validation": splits["validation"][~text_key(splits["validation"]).isin(test_keys)],
        "train": splits["train"][~text_key(splits["train"]).isin(test_keys | validation_keys)],
    }
    for split in SPLITS:
        assert rows(disjoint[split]) == rows(expected[split]), split
        assert dropped[f"leak_{split}"] == len(splits[split]) - len(disjoint[split])
    assert dropped["leak_test"] == 0


@PROPERTY
@given(st.builds(dict, train=frames(pair=False), validation=frames(pair=False), test=frames(pair=False)))
def test_prepare_gives_clean_disjoint_splits_and_accounts_for_every_row(splits):
    """prepare = clean each split, then make them disjoint: no empty text, no text twice within or
    across splits, labels kept, and the input rows equal the output rows plus every count dropped."""
    raw = RawTask(splits=splits, label_names=["x", "y"], dropped=Counter(loader=2))
    prepared = prepare(raw)
    owner: dict[str, str] = {}
    for split in SPLITS:
        out = prepared.splits[split]
        assert (out["text"] != "").all() and set(out["label"]) <= {"x", "y"}
        for key in text_key(out):
            assert owner.setdefault(key, split) == split and key != ""
        assert len(set(text_key(out))) == len(out)
    n_in = sum(len(splits[split]) for split in SPLITS) + 2
    assert n_in == sum(len(prepared.splits[split]) for split in SPLITS) + sum(prepared.dropped.values())
    assert prepared.label_names == ["x", "y"] and min(prepared.dropped.values(), default=1) > 0


# --------------------------------------------------------------------------- stratified_split


def labelled(sizes: dict[str, int]) -> pd.DataFrame:
    """Rows numbered by `id`, labels in interleaved order (not grouped), sizes per label."""
    labels_ = [label for label, n in sizes.items() for _ in range(n)]
    order = np.random.default_rng(123).permutation(len(labels_))
    return pd.DataFrame({"id": np.arange(len(labels_)), "text": [f"text {i}" for i in range(len(labels_))],
                         "label": [labels_[i] for i in order]})


def test_stratified_split_is_seeded():
    """The same seed gives the same three frames; seed 1 gives another test split than seed 0."""
    data = labelled({"a": 60, "b": 30, "c": 10})
    first, again, other = (stratified_split(data, seed) for seed in (0, 0, 1))
    for split in SPLITS:
        assert_frame_equal(first[split], again[split])
    assert set(first["test"]["id"]) != set(other["test"]["id"])


def test_stratified_split_gives_each_class_its_fractions():
    """Classes of 10, 20 and 30 rows split 80/10/10 into exactly 8/1/1, 16/2/2 and 24/3/3."""
    parts = stratified_split(labelled({"a": 10, "b": 20, "c": 30}), seed=4)
    counts = {split: Counter(parts[split]["label"]) for split in SPLITS}
    assert counts == {"train": {"a": 8, "b": 16, "c": 24}, "validation": {"a": 1, "b": 2, "c": 3},
                      "test": {"a": 1, "b": 2, "c": 3}}


def test_stratified_split_loses_no_row_of_a_tiny_class():
    """Classes of 1, 2 and 3 rows: 10% of them rounds to 0, so all 6 rows are in train, none lost."""
    data = labelled({"one": 1, "two": 2, "three": 3})
    parts = stratified_split(data, seed=0)
    assert sorted(parts["train"]["id"]) == list(range(6))
    assert len(parts["validation"]) == len(parts["test"]) == 0


@st.composite
def split_inputs(draw):
    sizes = draw(st.dictionaries(st.sampled_from("abcde"), st.integers(0, 40), min_size=1).filter(
        lambda s: sum(s.values()) > 0))
    validation = draw(st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3, 0.5]))
    test = draw(st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5]).filter(lambda t: validation + t <= 1))
    return labelled(sizes), (1 - validation - test, validation, test), draw(st.integers(0, 2**32 - 1))


@PROPERTY
@given(split_inputs())
def test_stratified_split_is_a_stratified_partition(inputs):
    """For random class sizes, fractions and seeds: every input row is in exactly one split,
    unchanged and in input order; each class's count per split is within one example of
    fraction x class size; the same seed gives the same split."""
    data, fractions, seed = inputs
    parts = stratified_split(data, seed, fractions)
    together = pd.concat([parts[split] for split in SPLITS])
    assert sorted(together["id"]) == list(range(len(data)))
    assert_frame_equal(together.sort_values("id").reset_index(drop=True), data)
    sizes = Counter(data["label"])
    for split, fraction in zip(SPLITS, fractions):
        assert parts[split]["id"].is_monotonic_increasing
        counts = Counter(parts[split]["label"])
        for label, n in sizes.items():
            assert abs(counts[label] - fraction * n) <= 1 + 1e-9, (split, label, counts[label], fraction * n)
    again = stratified_split(data, seed, fractions)
    assert all(parts[split].equals(again[split]) for split in SPLITS)


# --------------------------------------------------------------------------- stratified_indices


@pytest.mark.parametrize(("sizes", "n", "expected"), [
    ({"a": 5, "b": 3, "c": 2}, 4, {"a": 2, "b": 1, "c": 1}),  # quotas 2.0, 1.2, 0.8: the extra one to c (.8)
    ({"a": 26, "b": 26, "c": 48}, 5, {"a": 1, "b": 1, "c": 3}),  # 1.3, 1.3, 2.4: c (.4); rounding would give 4 rows
    ({"a": 36, "b": 34, "c": 30}, 7, {"a": 3, "b": 2, "c": 2}),  # 2.52, 2.38, 2.1: a (.52)
    ({"a": 7, "b": 6, "c": 7}, 6, {"a": 2, "b": 2, "c": 2}),  # 2.1, 1.8, 2.1: b (.8), not the larger classes
])
def test_stratified_indices_follows_the_largest_remainder_rule(sizes, n, expected):
    """Hand-computed largest-remainder counts per class (quota = class size x n / total; floors, then
    one more for the largest remainders until n), and the positions are distinct, sorted, of the class."""
    labels_ = np.array([label for label, k in sizes.items() for _ in range(k)])
    chosen = stratified_indices(labels_, n, seed=0)
    assert len(chosen) == n and len(set(chosen.tolist())) == n and (np.diff(chosen) > 0).all()
    assert Counter(labels_[chosen].tolist()) == expected


def test_stratified_indices_of_n_at_least_the_size_is_everything():
    """n = len and n > len both give every position 0..len-1 once."""
    labels_ = np.array(["a", "b", "a", "c"])
    assert stratified_indices(labels_, 4, seed=1).tolist() == [0, 1, 2, 3]
    assert stratified_indices(labels_, 9, seed=1).tolist() == [0, 1, 2, 3]


@PROPERTY
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=60), st.data())
def test_stratified_indices_is_exact_distinct_proportional_and_seeded(labels_, data):
    """For random labels, n and seed: exactly n distinct positions in range; each class gets floor or
    ceil of its quota (within 1); classes that got the extra one have remainders at least as large as
    those that did not; the same seed picks the same positions."""
    labels_ = np.array(labels_)
    n = data.draw(st.integers(0, len(labels_)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    chosen = stratified_indices(labels_, n, seed)
    assert len(chosen) == n and len(set(chosen.tolist())) == n
    assert ((0 <= chosen) & (chosen < len(labels_))).all()
    got = Counter(labels_[chosen].tolist())
    sizes = Counter(labels_.tolist())
    quota = {c: k * n / len(labels_) for c, k in sizes.items()}
    assert all(abs(got[c] - quota[c]) < 1 for c in sizes)
    extra = {c: got[c] - math.floor(quota[c]) for c in sizes}
    assert set(extra.values()) <= {0, 1}
    remainder = {c: quota[c] - math.floor(quota[c]) for c in sizes}
    with_extra = [remainder[c] for c in sizes if extra[c]]
    without = [remainder[c] for c in sizes if not extra[c]]
    if with_extra and without:
        assert min(with_extra) >= max(without) - 1e-12
    assert stratified_indices(labels_, n, seed).tolist() == chosen.tolist()


# --------------------------------------------------------------------------- BucketBatchSampler


def sampler(n: int, batch_size: int, batches_per_bucket: int, seed: int = 0) -> BucketBatchSampler:
    lengths = np.random.default_rng(seed).integers(1, 60, size=n)
    return BucketBatchSampler(lengths, batch_size, seed=seed, batches_per_bucket=batches_per_bucket)


@pytest.mark.parametrize(("n", "batch_size", "batches_per_bucket", "expected"), [
    (0, 8, 2, 0),  # nothing to sample
    (5, 8, 2, 1),  # fewer examples than one batch
    (8, 8, 2, 1),  # exactly one batch
    (17, 8, 2, 3),  # a bucket of 16 (2 batches), then a bucket of 1
    (37, 8, 2, 5),  # buckets 16, 16, 5: 2 + 2 + 1
    (48, 8, 4, 6),  # less than one bucket of 32, a whole number of batches
    (64, 8, 2, 8),  # exactly four buckets
    (70, 8, 4, 9),  # buckets 32, 32, 6: 4 + 4 + 1
    (100, 1, 3, 100),  # one example per batch
])
def test_bucket_sampler_yields_the_hand_counted_number_of_batches(n, batch_size, batches_per_bucket, expected):
    """Hand-counted batches per epoch (each bucket of batch_size x batches_per_bucket examples is cut
    into ceil(bucket / batch_size) batches): both __len__ and __iter__ give that number."""
    batches = sampler(n, batch_size, batches_per_bucket)
    assert len(batches) == expected
    assert len(list(batches)) == expected


@PROPERTY
@given(st.integers(0, 400), st.integers(1, 16), st.integers(1, 8), st.integers(0, 3), st.integers(0, 3))
def test_bucket_sampler_length_equals_its_batches_and_covers_every_index_once(n, batch_size, per_bucket, seed, epoch):
    """For any (n, batch_size, batches_per_bucket, seed, epoch): len() equals the number of batches
    __iter__ yields; each batch holds 1..batch_size indices; every index 0..n-1 appears exactly once."""
    batches = sampler(n, batch_size, per_bucket, seed)
    batches.set_epoch(epoch)
    epoch_batches = list(batches)
    assert len(batches) == len(epoch_batches)
    assert all(1 <= len(batch) <= batch_size for batch in epoch_batches)
    assert sorted(i for batch in epoch_batches for i in batch) == list(range(n))


def test_set_epoch_changes_the_order_but_not_the_count():
    """Epochs 0 and 1 of 200 examples: other batch order, the same 25 batches and the same indices;
    going back to epoch 0 (or a second sampler with the same seed) repeats epoch 0 exactly."""
    batches = sampler(200, 8, 5)
    first = list(batches)
    batches.set_epoch(1)
    second = list(batches)
    assert first != second
    assert len(first) == len(second) == len(batches) == 25
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b) == list(range(200))
    batches.set_epoch(0)
    assert list(batches) == first == list(sampler(200, 8, 5))
