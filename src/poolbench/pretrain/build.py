"""One recipe -> one pretrained backbone in the cache: the packaged corpus (corpus.py), its
WordPiece tokenizer (tokenizer.py) and the arm's examples (examples.py), fed to the cached,
resumable build (recipe.py), then scored on held-out text (intrinsic.py).

The job owner's pretraining stage is `ensure_pretrained`: a `backbone.pretrain` recipe becomes a
`source=pretrained location=<recipe.name>` backbone, built first if the cache lacks it (under the
cache's file lock: parallel jobs needing one recipe build it once; on more than one device, by a
program of its own: `build_in_own_program`), and the facts its records carry (`pretrain/*` metrics:
intrinsic accuracies, budget, throughput, corpus statistics).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from poolbench.assets import atomic_write_bytes, cache_root
from poolbench.config import BackboneConfig, PretrainConfig
from poolbench.pretrain.corpus import corpus_fingerprint, load_corpus
from poolbench.pretrain.examples import arm_examples, collate, epochs_seen
from poolbench.pretrain.intrinsic import intrinsic_scores
from poolbench.pretrain.recipe import Recipe, build_pretrained, pretrained_dir
from poolbench.pretrain.tokenizer import DEFAULT_VOCAB_SIZE, load_tokenizer, tokenizer_dir


def recipe_for(arm: str, size: str, *, steps: int, seed: int, batch_size: int = 32, lr: float = 1e-3,
               warmup: float = 0.1, vocab_size: int = DEFAULT_VOCAB_SIZE, seq_len: int = 128,
               precision: str = "32-true", cache_dir: str | Path | None = None) -> Recipe:
    """The recipe of an arm on the packaged corpus (its fingerprint is part of the recipe; read from
    the cache, so a job whose backbone is built never loads the corpus)."""
    return Recipe(arm=arm, size=size, vocab_size=vocab_size, seq_len=seq_len, steps=steps, batch_size=batch_size,
                  lr=lr, warmup=warmup, seed=seed, corpus=corpus_fingerprint(cache_dir), precision=precision)


def recipe_of(pretrain: PretrainConfig, cache_dir: str | Path | None = None) -> Recipe:
    """The recipe a `backbone.pretrain` config names."""
    return recipe_for(pretrain.arm, pretrain.size, steps=pretrain.steps, seed=pretrain.seed,
                      batch_size=pretrain.batch_size, lr=pretrain.lr, warmup=pretrain.warmup,
                      vocab_size=pretrain.vocab_size, seq_len=pretrain.seq_len, precision=pretrain.precision,
                      cache_dir=cache_dir)


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


def ensure_pretrained(backbone: BackboneConfig, cache_dir: str | Path | None = None
                      ) -> tuple[BackboneConfig, dict[str, float]]:
    """The pretraining stage of a job: `backbone` with its recipe built and named (location), and
    the `pretrain/*` facts for its records. A backbone without a recipe passes through unchanged.
    A build on more than one device (`devices` other than 1) runs in a program of its own."""
    if backbone.pretrain is None:
        return backbone, {}
    options = backbone.pretrain
    recipe = recipe_of(options, cache_dir)
    directory = pretrained_dir(recipe, cache_dir)
    if not (directory / "config.json").exists():
        build = build_backbone if options.devices == 1 else build_in_own_program
        build(recipe, cache_dir, checkpoint_every=options.checkpoint_every, accelerator=options.accelerator,
              devices=options.devices)
    path = directory / "intrinsic.json"
    intrinsic = json.loads(path.read_text())
    if "facts" not in intrinsic:  # computed once per backbone: a re-launched study only reads them
        if "held_out" not in intrinsic:
            intrinsic["held_out"] = intrinsic_scores(directory, recipe, cache_dir)
        intrinsic["facts"] = pretrain_facts(recipe, intrinsic, cache_dir)
        atomic_write_bytes(path, json.dumps(intrinsic, indent=2).encode())
    return dataclasses.replace(backbone, location=recipe.name), intrinsic["facts"]


# The program of a data-parallel build (parallel.py).
PARALLEL_PROGRAM = "poolbench.pretrain.parallel"


def build_in_own_program(recipe: Recipe, cache_dir: str | Path | None = None, **build_options: Any) -> None:
    """`build_backbone(recipe, cache_dir, **build_options)` run by a program of its own, the pretraining
    stage's way to build on more than one device. Lightning's DDP starts ranks 1..N-1 by running the
    current program again with its command line (on CPU and GPU nodes alike): inside a `poolbench` job,
    rank 1 would compose the job again (under `-m`, the whole sweep), train its share, then run the job
    itself and write a second set of records, and a later DDP build in the same process would find
    rank 0's DDP variables in its environment and wait for ranks that never start. Run as PARALLEL_PROGRAM,
    every rank only builds. Its ranks' output goes where this process's goes; a failed build raises
    RuntimeError."""
    build = {"recipe": dataclasses.asdict(recipe), "cache_dir": str(cache_root(cache_dir)), "options": build_options}
    done = subprocess.run([sys.executable, "-m", PARALLEL_PROGRAM, json.dumps(build)])
    if done.returncode != 0:
        raise RuntimeError(f"the data-parallel build of {recipe.name} failed (exit status {done.returncode}); "
                           "its ranks' output above says why.")


def pretrain_facts(recipe: Recipe, intrinsic: dict, cache_dir: str | Path | None = None) -> dict[str, float]:
    """What a record says about the backbone's pretraining: held-out accuracies (NaN where the arm
    has no such head), the budget, the throughput of the process that trained it, the corpus."""
    held_out, train = intrinsic["held_out"], intrinsic.get("train", {})
    trained = recipe.arm != "random"
    examples_per_epoch = len(arm_examples("mlm", recipe.seed, recipe.seq_len, vocab_size=recipe.vocab_size,
                                          cache_dir=cache_dir))
    # Time and tokens of the process that trained the backbone: the whole build unless it resumed.
    whole_build = trained and not train.get("resumed", 1.0)
    facts = {f"pretrain/{name}": math.nan if held_out.get(name) is None else float(held_out[name])
             for name in ("mlm_acc", "nsp_acc", "sop_acc")}
    facts |= {
        "pretrain/steps": float(recipe.steps if trained else 0),
        "pretrain/epochs": epochs_seen(recipe.steps, recipe.batch_size, examples_per_epoch) if trained else 0.0,
        "pretrain/tokens": train["process_tokens"] if whole_build else (math.nan if trained else 0.0),
        "pretrain/train_s": train["process_s"] if whole_build else math.nan,
        "pretrain/tokens_per_s": train.get("tokens_per_s", math.nan),
        **{f"pretrain/corpus_{name}": float(value)
           for name, value in corpus_statistics(recipe.vocab_size, cache_dir).items()},
    }
    return facts


def corpus_statistics(vocab_size: int, cache_dir: str | Path | None = None) -> dict[str, int]:
    """Documents, sentences and tokens of the packaged corpus: computed once per corpus and vocabulary."""
    corpus = load_corpus(cache_dir)
    path = cache_root(cache_dir) / "pretrain" / f"statistics-{corpus.fingerprint}-{vocab_size}.json"
    if not path.exists():
        statistics = corpus.statistics(load_tokenizer(corpus, vocab_size, cache_dir))
        atomic_write_bytes(path, json.dumps(statistics).encode())
    return json.loads(path.read_text())
