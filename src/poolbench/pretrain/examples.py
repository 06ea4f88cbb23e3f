"""The arms' pretraining examples, from one seeded plan shared by all arms.

The arms differ ONLY in how the two segments are laid out and in the sentence loss:
  mlm        [CLS] A B [SEP]              B the true continuation of A; token types all 0
  mlm_pairs  [CLS] A [SEP] B' [SEP]       B' = B (half) or a segment of ANOTHER document; no sentence label
  mlm_nsp    the same inputs as mlm_pairs, sentence_label 1 = next (B' = B), 0 = random
  mlm_sop    [CLS] A [SEP] B [SEP] label 1 (in order) or [CLS] B [SEP] A [SEP] label 0 (swapped)
Token types: 0 for [CLS] <first> [SEP], 1 for <second> [SEP] (all 0 for mlm). mlm holds the same
content tokens as the other arms, so its sequences are one [SEP] shorter.

The plan (`build_plan`, seeded by (seed, epoch), independent of the arm): each document's sentences
are grouped into chunks of at least the token budget (seq_len - 3) and at least two sentences;
each chunk is cut at a seeded sentence boundary into A and B; chunks are put in a seeded order;
exactly half (ceil) of the slots are `is_next` (NSP next, SOP in order), the others get a B' from
another document: from the first sentence of another chunk's B (so never a document's first
sentence, like B), preferably one with as much text left in its document as the true B holds;
its sentences fill the budget when A and B do, else hold about as many tokens as B (`_fill`): the
sequence length tells next from random as little as whole sentences allow (measured on the
packaged corpus, seq_len 128: mean length 112 random vs 110 next, full-length 70% vs 66%).
Index i is the same slot in every arm. A pair over budget is truncated token by token from the
longer segment, A from its front and B from its back, so the tokens at the A|B junction stay
adjacent.

Epochs: `PretrainingExamples(..., epoch=e)` is the e-th pass, re-planned and re-masked from
(seed, e) (new cuts, order, random segments and masks, like BERT's duplicated data); the count
of slots per epoch does not depend on e (sentences all hold tokens). `epochs_seen` converts a step budget into passes.
`arm_examples` builds an arm's examples on the packaged corpus (or its held-out documents).

Masking (`draw_mask`) is drawn over the example's canonical content (A's tokens, then its second
segment's: B, or B' for the random pairs of mlm_pairs/mlm_nsp), from a stream keyed by (seed,
epoch, index): 15% of the content tokens (at least 1); of those 80% -> [MASK], 10% -> a random
non-special token, 10% unchanged. Arms whose content coincides therefore mask the same tokens the
same way: mlm_pairs == mlm_nsp always; mlm, mlm_sop and mlm_pairs at a positive slot; mlm and
mlm_sop at every slot (SOP's swap moves the masked tokens along with their segment).

Batch (`collate`): input_ids, token_type_ids, attention_mask LongTensor [B, T] (padded with [PAD],
0, 0); mlm_positions LongTensor [B, M] (masked positions, padded with 0); mlm_labels LongTensor
[B, M] (original ids, -100 where padded); sentence_label LongTensor [B] (-100 for mlm, mlm_pairs).
Feed a `PretrainingExamples` to a DataLoader WITHOUT shuffling: the order is the plan's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ARMS = ("mlm", "mlm_pairs", "mlm_nsp", "mlm_sop")
DEFAULT_SEQ_LEN = 128
MASK_RATE = 0.15
MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.8, 0.1  # of the masked tokens; the rest stay unchanged
IGNORE_INDEX = -100
PAD_ID = 0  # tokenizer.SPECIAL_TOKENS puts [PAD] first
RANDOM_SEGMENT_TRIES = 20  # draws for a random B' start with enough text left (else the last draw)


@dataclass
class TokenizedDocuments:
    """Documents as per-sentence token ids (no special tokens), and the ids the examples need."""

    documents: list[list[np.ndarray]]
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    vocab_size: int
    special_ids: tuple[int, ...]

    def save(self, path: Path) -> None:
        """One flat array of ids with sentence and document boundaries, and the ids (np.savez)."""
        sentences = [s for document in self.documents for s in document]
        np.savez(path, ids=np.concatenate(sentences) if sentences else np.zeros(0, np.int64),
                 sentence_ends=np.cumsum([len(s) for s in sentences]),
                 document_ends=np.cumsum([len(d) for d in self.documents]),
                 special=np.asarray([self.cls_id, self.sep_id, self.mask_id, self.pad_id, self.vocab_size]),
                 special_ids=np.asarray(self.special_ids))

    @classmethod
    def load(cls, path: Path) -> "TokenizedDocuments":
        arrays = np.load(path)
        sentences = np.split(arrays["ids"].astype(np.int64), arrays["sentence_ends"][:-1])
        documents = [sentences[start:end] for start, end in
                     zip(np.r_[0, arrays["document_ends"][:-1]], arrays["document_ends"])]
        cls_id, sep_id, mask_id, pad_id, vocab_size = (int(v) for v in arrays["special"])
        return cls(documents, cls_id, sep_id, mask_id, pad_id, vocab_size,
                   tuple(int(v) for v in arrays["special_ids"]))

    @classmethod
    def from_tokenizer(cls, documents: Sequence[list[str]], tokenizer) -> "TokenizedDocuments":
        flat = [sentence for document in documents for sentence in document]
        ids = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
        grouped, start = [], 0
        for document in documents:
            grouped.append([np.asarray(s, dtype=np.int64) for s in ids[start:start + len(document)]])
            start += len(document)
        return cls(grouped, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id,
                   tokenizer.pad_token_id, len(tokenizer), tuple(sorted(tokenizer.all_special_ids)))


@dataclass(frozen=True)
class Slot:
    """One example's segments: sentence ranges [start, end) of a document."""

    document: int
    a: tuple[int, int]
    b: tuple[int, int]  # A's true continuation
    is_next: bool  # NSP: B' = B (label 1); SOP: in order (label 1)
    other_document: int  # where B' comes from when not is_next (else == document)
    other_b: tuple[int, int]


def _chunks(documents: list[list[np.ndarray]], budget: int, rng: np.random.Generator) -> list[tuple]:
    """(document, A range, B range): consecutive sentences up to the budget, cut at a seeded boundary."""
    chunks = []
    for d, sentences in enumerate(documents):
        start, length = 0, 0
        for i, sentence in enumerate(sentences):
            length += len(sentence)
            count = i + 1 - start
            if (length >= budget and count >= 2) or i == len(sentences) - 1:
                if count >= 2:
                    cut = start + int(rng.integers(1, count))
                    if sum(map(len, sentences[start:cut])) and sum(map(len, sentences[cut:i + 1])):
                        chunks.append((d, (start, cut), (cut, i + 1)))
                start, length = i + 1, 0
    return chunks


def build_plan(documents: list[list[np.ndarray]], seq_len: int, seed: int, epoch: int = 0) -> list[Slot]:
    """The slots of one epoch, in order: the same for every arm (see the module docstring)."""
    rng = np.random.default_rng([seed, epoch])
    chunks = _chunks(documents, seq_len - 3, rng)
    if len({d for d, _, _ in chunks}) < 2:
        raise ValueError("pretraining needs at least two documents with two sentences or more.")
    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    is_next = rng.permutation(len(chunks)) < (len(chunks) + 1) // 2
    ends = [np.cumsum([0] + [len(s) for s in sentences]) for sentences in documents]  # tokens before sentence i
    slots = []
    for (d, a, b), positive in zip(chunks, is_next):
        other, other_b = d, b
        if not positive:
            need = int(ends[d][b[1]] - ends[d][b[0]])
            for _ in range(RANDOM_SEGMENT_TRIES):  # prefer a start with as much text left as B holds
                other, _, other_b = chunks[int(rng.integers(len(chunks)))]
                if other != d and ends[other][-1] - ends[other][other_b[0]] >= need:
                    break
            while other == d:
                other, _, other_b = chunks[int(rng.integers(len(chunks)))]
            # a full positive (A + B over budget) gets a B' that fills the budget; a short one (the end of
            # its document) a B' about as long as its B
            room = seq_len - 3 - int(ends[d][a[1]] - ends[d][a[0]])
            other_b = _fill(documents[other], other_b[0], min(need, room), room)
        slots.append(Slot(d, a, b, bool(positive), other, other_b))
    return slots


def _fill(sentences: list[np.ndarray], start: int, need: int, room: int) -> tuple[int, int]:
    """From sentence `start` on (at least that one), whole sentences holding `need` tokens: at least
    that many when `need` fills the `room`, else the count nearest to it that stays below the room;
    fewer at the document's end."""
    end, length = start + 1, len(sentences[start])
    while end < len(sentences):
        longer = length + len(sentences[end])
        if not (length < need if need >= room else abs(longer - need) < abs(length - need) and longer < room):
            break
        length, end = longer, end + 1
    return start, end


def truncate_pair(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Shorten the longer segment one token at a time (A from its front, B from its back) until both fit."""
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return a[len(a) - la:], b[:lb]


def draw_mask(n: int, seed: int, epoch: int, index: int, replacement_ids: np.ndarray):
    """Over n content tokens: the chosen content indices (ascending), and for each the action
    (0 = [MASK], 1 = random token, 2 = unchanged) and its random token. Depends on (seed, epoch,
    index, n) only, so arms with the same content draw the same mask."""
    rng = np.random.default_rng([seed, epoch, index, 1])  # 1: not the plan's stream
    k = max(1, int(round(n * MASK_RATE)))
    chosen = np.sort(rng.permutation(n)[:k])
    u = rng.random(k)
    action = np.where(u < MASK_TOKEN_SHARE, 0, np.where(u < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE, 1, 2))
    random_ids = replacement_ids[rng.integers(len(replacement_ids), size=k)]
    return chosen, action, random_ids


class PretrainingExamples(torch.utils.data.Dataset):
    """One epoch of an arm's examples for a seed: example i is slot i of the shared plan."""

    def __init__(self, tokenized: TokenizedDocuments, arm: str, seed: int, seq_len: int = DEFAULT_SEQ_LEN,
                 epoch: int = 0):
        if arm not in ARMS:
            raise ValueError(f"arm={arm!r}: choose one of {ARMS}.")
        self.tokenized, self.arm, self.seed, self.seq_len, self.epoch = tokenized, arm, seed, seq_len, epoch
        self.slots = build_plan(tokenized.documents, seq_len, seed, epoch)
        special = np.asarray(tokenized.special_ids)
        self.replacement_ids = np.setdiff1d(np.arange(tokenized.vocab_size), special)

    def __len__(self) -> int:
        return len(self.slots)

    def _segment(self, document: int, span: tuple[int, int]) -> np.ndarray:
        return np.concatenate(self.tokenized.documents[document][span[0]:span[1]])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        slot, t = self.slots[index], self.tokenized
        budget = self.seq_len - 3
        random_pair = self.arm in ("mlm_pairs", "mlm_nsp") and not slot.is_next
        second = self._segment(slot.other_document, slot.other_b) if random_pair else self._segment(slot.document,
                                                                                                     slot.b)
        a, second = truncate_pair(self._segment(slot.document, slot.a), second, budget)
        la, lb = len(a), len(second)
        cls, sep = [t.cls_id], [t.sep_id]
        if self.arm == "mlm":
            ids = np.concatenate([cls, a, second, sep])
            types = np.zeros(len(ids), dtype=np.int64)
            content = np.arange(1, la + lb + 1)  # position of each canonical content token
        elif self.arm == "mlm_sop" and not slot.is_next:  # [CLS] B [SEP] A [SEP]
            ids = np.concatenate([cls, second, sep, a, sep])
            types = np.r_[np.zeros(lb + 2, dtype=np.int64), np.ones(la + 1, dtype=np.int64)]
            content = np.r_[np.arange(lb + 2, lb + 2 + la), np.arange(1, lb + 1)]
        else:  # [CLS] A [SEP] B' [SEP]
            ids = np.concatenate([cls, a, sep, second, sep])
            types = np.r_[np.zeros(la + 2, dtype=np.int64), np.ones(lb + 1, dtype=np.int64)]
            content = np.r_[np.arange(1, la + 1), np.arange(la + 2, la + 2 + lb)]
        ids = ids.astype(np.int64)
        chosen, action, random_ids = draw_mask(la + lb, self.seed, self.epoch, index, self.replacement_ids)
        positions = content[chosen]
        labels = ids[positions].copy()
        ids[positions] = np.where(action == 0, t.mask_id, np.where(action == 1, random_ids, labels))
        order = np.argsort(positions, kind="stable")
        if self.arm == "mlm_nsp" or self.arm == "mlm_sop":
            sentence_label = int(slot.is_next)
        else:
            sentence_label = IGNORE_INDEX
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.ones(len(ids), dtype=torch.long),
                "mlm_positions": torch.from_numpy(positions[order]), "mlm_labels": torch.from_numpy(labels[order]),
                "sentence_label": torch.tensor(sentence_label, dtype=torch.long)}


def collate(examples: Sequence[dict[str, torch.Tensor]], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Pad a batch of examples into the batch format of the module docstring."""
    size, length = len(examples), max(len(e["input_ids"]) for e in examples)
    masked = max(len(e["mlm_positions"]) for e in examples)
    batch = {"input_ids": torch.full((size, length), pad_id, dtype=torch.long),
             "token_type_ids": torch.zeros(size, length, dtype=torch.long),
             "attention_mask": torch.zeros(size, length, dtype=torch.long),
             "mlm_positions": torch.zeros(size, masked, dtype=torch.long),
             "mlm_labels": torch.full((size, masked), IGNORE_INDEX, dtype=torch.long)}
    for row, example in enumerate(examples):
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            batch[key][row, :len(example[key])] = example[key]
        for key in ("mlm_positions", "mlm_labels"):
            batch[key][row, :len(example[key])] = example[key]
    batch["sentence_label"] = torch.stack([e["sentence_label"] for e in examples])
    return batch


def arm_examples(arm: str, seed: int, seq_len: int = DEFAULT_SEQ_LEN, epoch: int = 0, held_out: bool = False,
                 vocab_size: int | None = None, cache_dir=None) -> PretrainingExamples:
    """An arm's examples on the packaged corpus with its tokenizer, each built once and cached
    (corpus, tokenizer, and the tokenized documents: <cache root>/pretrain/tokens-<fingerprint>-
    <vocab size>-<pretrain|held_out>/). `held_out=True`: the held-out documents, for intrinsic evaluation."""
    from poolbench.assets import build_once, cache_root
    from poolbench.pretrain.corpus import load_corpus
    from poolbench.pretrain.tokenizer import DEFAULT_VOCAB_SIZE, load_tokenizer

    corpus, vocab_size = load_corpus(cache_dir), vocab_size or DEFAULT_VOCAB_SIZE
    part = "held_out" if held_out else "pretrain"

    def tokenize(out: Path) -> None:
        tokenizer = load_tokenizer(corpus, vocab_size, cache_dir)
        documents = corpus.held_out if held_out else corpus.documents
        TokenizedDocuments.from_tokenizer(documents, tokenizer).save(out / "tokens.npz")

    directory = build_once(cache_root(cache_dir) / "pretrain" / f"tokens-{corpus.fingerprint}-{vocab_size}-{part}",
                           tokenize)
    return PretrainingExamples(TokenizedDocuments.load(directory / "tokens.npz"), arm, seed, seq_len, epoch)


def epochs_seen(steps: int, batch_size: int, examples_per_epoch: int) -> float:
    """How many passes over an epoch's examples `steps` batches of `batch_size` make."""
    return steps * batch_size / examples_per_epoch
