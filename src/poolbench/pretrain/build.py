"""One recipe -> one pretrained backbone in the cache: the packaged corpus (corpus.py), its
WordPiece tokenizer (tokenizer.py) and the arm's examples (examples.py), fed to the cached,
resumable build (recipe.py). The result loads as `backbone.source=pretrained
backbone.location=<recipe.name>` (backbones.core)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from poolbench.pretrain.corpus import load_corpus
from poolbench.pretrain.examples import arm_examples, collate
from poolbench.pretrain.recipe import Recipe, build_pretrained
from poolbench.pretrain.tokenizer import DEFAULT_VOCAB_SIZE, tokenizer_dir


def recipe_for(arm: str, size: str, *, steps: int, seed: int, batch_size: int = 32, lr: float = 1e-3,
               warmup: float = 0.1, vocab_size: int = DEFAULT_VOCAB_SIZE, seq_len: int = 128,
               cache_dir: str | Path | None = None) -> Recipe:
    """The recipe of an arm on the packaged corpus (its fingerprint is part of the recipe)."""
    return Recipe(arm=arm, size=size, vocab_size=vocab_size, seq_len=seq_len, steps=steps, batch_size=batch_size,
                  lr=lr, warmup=warmup, seed=seed, corpus=load_corpus(cache_dir).fingerprint)


def build_backbone(recipe: Recipe, cache_dir: str | Path | None = None, **build_options: Any) -> Path:
    """The directory of the backbone `recipe` names, pretrained first if absent (resuming a killed
    build). Epoch e of the data is the arm's plan for epoch e: every arm sees the same order."""
    corpus = load_corpus(cache_dir)
    if recipe.corpus != corpus.fingerprint:
        raise ValueError(f"recipe {recipe.name} was made for corpus {recipe.corpus}; the packaged corpus here is "
                         f"{corpus.fingerprint}: make the recipe again with recipe_for(...).")
    epochs = itertools.count()  # StepBatches asks for epochs 0, 1, ... in order, in every process

    def make_batches() -> DataLoader:
        examples = arm_examples(recipe.arm, recipe.seed, recipe.seq_len, next(epochs), vocab_size=recipe.vocab_size,
                                cache_dir=cache_dir)
        return DataLoader(examples, batch_size=recipe.batch_size, shuffle=False, collate_fn=collate, drop_last=True)

    return build_pretrained(recipe, make_batches, tokenizer_dir(corpus, recipe.vocab_size, cache_dir), cache_dir,
                            **build_options)
