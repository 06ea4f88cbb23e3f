"""The encoding pass: a tokenized split -> every readout of every layer, in one forward per batch.

Batches are length-sorted and cut by a token budget (`encoding_plan`), so padding stays below 5% of
the computed tokens; each batch runs once with `output_hidden_states=True` and every requested
readout (`pooling.TOKEN_POOLINGS`) of every hidden layer is pooled from it. The feature cache
(features.py) writes what this returns; the prompt readouts, the attention readout's token states and
the benchmarks reuse the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from poolbench.backbones import MODEL_INPUTS, forward_hidden_states
from poolbench.data import sorted_batches
from poolbench.pooling import (NOSPECIAL_POOLINGS, TOKEN_POOLINGS, adds_special_tokens, pool_all, special_mask,
                               special_token_ids)
from poolbench.progress import Progress


def stored_poolings(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The token-state poolings an entry of this tokenizer stores: all, but the nospecial ones only
    where the tokenizer adds special tokens (elsewhere they would equal mean and max)."""
    if adds_special_tokens(tokenizer):
        return TOKEN_POOLINGS
    return tuple(p for p in TOKEN_POOLINGS if p not in NOSPECIAL_POOLINGS)



@dataclass
class EncodeStats:
    examples: int = 0
    batches: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0  # batch size x longest sequence, summed over batches

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / max(self.computed_tokens, 1)

    def add(self, other: "EncodeStats") -> None:
        for name in ("examples", "batches", "real_tokens", "computed_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# Within one encoding batch, at most this fraction of the computed tokens may be padding.
MAX_PADDING = 0.05


def encoding_plan(lengths: np.ndarray, max_tokens: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Length-sorted batches of at most `max_tokens` padded tokens (`data.sorted_batches`), each
    cut further so that padding stays below `max_padding` of its computed tokens. A token budget
    alone packs a whole small split of short texts into one batch that spans lengths 3..25 and
    computes mostly padding (mcid: 42% efficiency at 16384 tokens); the cut keeps every batch
    >= 95% real tokens while batches of equal lengths still fill the budget."""
    lengths = np.asarray(lengths)
    plan = []
    for batch in sorted_batches(lengths, max_tokens=max_tokens):  # ascending lengths within a batch
        current, real = [], 0
        for position in batch:
            length = int(lengths[position])
            if current and length * (len(current) + 1) - (real + length) > max_padding * length * (len(current) + 1):
                plan.append(current)
                current, real = [], 0
            current.append(position)
            real += length
        plan.append(current)
    return plan


def encoding_batches(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_tokens: int
                     ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(positions in the split, padded model inputs) of length-sorted batches (`encoding_plan`).
    Padding by `DataCollatorWithPadding`, on the tokenizer's side."""
    columns = dataset.select_columns([c for c in MODEL_INPUTS if c in dataset.column_names] + ["length"]).to_dict()
    lengths = np.asarray(columns.pop("length"))
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    for positions in encoding_plan(lengths, max_tokens):
        batch = collate([{c: values[i] for c, values in columns.items()} for i in positions])
        yield np.asarray(positions), dict(batch)


def encode_batch(model: PreTrainedModel, batch: dict[str, torch.Tensor], poolings: Sequence[str],
                 special_ids: Sequence[int] = ()) -> torch.Tensor:
    """float32 [len(poolings), num_layers + 1, batch, hidden]: the `poolings` (from TOKEN_POOLINGS) of every
    hidden state; `special_ids` (`pooling.special_token_ids`) for the nospecial ones."""
    mask = batch["attention_mask"]
    special = (special_mask(special_ids, batch["input_ids"], mask) if set(poolings) & set(NOSPECIAL_POOLINGS)
               else None)
    per_layer = [pool_all(states, mask, poolings, special=special) for states in forward_hidden_states(model, batch)]
    return torch.stack([torch.stack([pooled[s] for pooled in per_layer]) for s in poolings])


def encode_split(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, max_tokens: int,
                 out: dict[str, np.ndarray] | None = None, num_layers: int | None = None,
                 poolings: Sequence[str] | None = None, description: str = "encoding"
                 ) -> tuple[dict[str, np.ndarray], EncodeStats]:
    """Pool one tokenized split. `out` maps pooling -> a [num_layers + 1, n, hidden] float32 array
    (e.g. a memory map) filled in dataset order; made in RAM when not given. `poolings`: those of
    `out`, else what a new entry stores (`stored_poolings`). `description` names the progress shown."""
    poolings = tuple(out) if out is not None else stored_poolings(tokenizer) if poolings is None else tuple(poolings)
    special_ids = special_token_ids(tokenizer)
    stats = EncodeStats(examples=len(dataset))
    with torch.inference_mode(), Progress(len(dataset), description, "texts") as progress:
        for positions, batch in encoding_batches(dataset, tokenizer, max_tokens):
            pooled = encode_batch(model, batch, poolings, special_ids).numpy()
            if out is None:
                out = {s: np.empty((pooled.shape[1], len(dataset), pooled.shape[3]), np.float32) for s in poolings}
            if num_layers is not None and pooled.shape[1] != num_layers + 1:
                raise RuntimeError(f"the model returned {pooled.shape[1]} hidden states; expected {num_layers + 1}")
            for s, pooling in enumerate(poolings):
                out[pooling][:, positions] = pooled[s]
            mask = batch["attention_mask"]
            stats.batches += 1
            stats.real_tokens += int(mask.sum())
            stats.computed_tokens += mask.numel()
            progress.update(len(positions))
    return out or {}, stats
