"""Tokenized tasks and length-aware batches.

On a CPU, padding is most of the cost: a batch runs as long as its longest sequence. So
batches hold sequences of similar length. Training batches are still shuffled: the data is
shuffled, cut into chunks of many batches, each chunk sorted by length and cut into
batches, and the batches shuffled again (the "bucket" sampler of fairseq and AllenNLP).
Evaluation and encoding batches are simply sorted by length.
"""

from __future__ import annotations

from typing import Callable, Iterator

import lightning as L
import numpy as np
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from poolbench.backbones import MODEL_INPUTS, Backbone
from poolbench.tasks import Task, subsample_train


def tokenize(task: Task, tokenizer: PreTrainedTokenizerBase, max_length: int,
             normalize_text: Callable[[str], str] | None = None) -> DatasetDict:
    """Token ids per example, cached by `datasets` next to the prepared task. Pairs of texts
    are encoded as the backbone's pair format ([CLS] a [SEP] b [SEP] or its equivalent).
    `normalize_text` (`Backbone.normalize_text`) is applied first, for backbones trained on
    normalised text."""

    def texts(batch: dict, field: str) -> list[str]:
        return batch[field] if normalize_text is None else [normalize_text(text) for text in batch[field]]

    def encode(batch: dict) -> dict:
        encoded = tokenizer(*(texts(batch, field) for field in task.text_fields), truncation=True,
                            max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return task.splits.map(encode, batched=True, remove_columns=list(task.text_fields), desc="tokenize")


def sorted_batches(lengths: np.ndarray, batch_size: int | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Positions sorted by length, cut into batches of `batch_size` sequences or, with
    `max_tokens`, of at most that many padded tokens (longest x count)."""
    order = np.argsort(lengths, kind="stable")
    batches, current, longest = [], [], 0
    for position in order.tolist():
        longest_if_added = max(longest, int(lengths[position]))
        full = (len(current) == batch_size) if max_tokens is None else (longest_if_added * (len(current) + 1) > max_tokens)
        if current and full:
            batches.append(current)
            current, longest_if_added = [], int(lengths[position])
        current.append(position)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length sequences; reshuffled every epoch from (seed, epoch)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, batches_per_bucket: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_size = batch_size * batches_per_bucket
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        shuffled = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(shuffled), self.bucket_size):
            bucket = shuffled[start:start + self.bucket_size]
            batches += [bucket[b].tolist() for b in sorted_batches(self.lengths[bucket], self.batch_size)]
        yield from (batches[i] for i in rng.permutation(len(batches)))

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.bucket_size)
        return full * -(-self.bucket_size // self.batch_size) + -(-rest // self.batch_size)


class TaskDataModule(L.LightningDataModule):
    """train / validation / test loaders of one task, tokenized for one backbone."""

    def __init__(self, task: Task, backbone: Backbone, max_length: int, batch_size: int,
                 seed: int, max_train_examples: int | None = None, num_workers: int = 0):
        super().__init__()
        self.task = task
        self.backbone = backbone
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed
        self.max_train_examples = max_train_examples
        self.num_workers = num_workers
        self.collate = DataCollatorWithPadding(backbone.tokenizer)
        self.splits: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tokenized = tokenize(self.task, self.backbone.tokenizer, self.max_length, self.backbone.normalize_text)
        self.splits = {
            "train": subsample_train(tokenized["train"], self.max_train_examples, self.seed),
            "validation": tokenized["validation"],
            "test": tokenized["test"],
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        inputs = [c for c in (*MODEL_INPUTS, "label", "id") if c in dataset.column_names]
        lengths = np.asarray(dataset["length"])
        batches = (BucketBatchSampler(lengths, self.batch_size, self.seed) if shuffle
                   else sorted_batches(lengths, self.batch_size))
        return DataLoader(dataset.with_format(columns=inputs), batch_sampler=batches, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

