"""A pretraining recipe, and the cached, resumable build of the backbone it names.

A `Recipe` is everything that decides the weights of a pretrained backbone: the arm (which
objectives), the size, the data (vocabulary, sequence length, corpus fingerprint), the
optimisation and the seed. `recipe.key()` hashes every field, so it is the backbone's identity:
  <cache>/pretrained/<arm>-<size>-<key>/          the published backbone (HF layout):
      config.json, model.safetensors              BertForPreTraining (pooler and sentence head kept)
      tokenizer files                             copied from the tokenizer directory
      recipe.json                                 the recipe, its key and what built it
      intrinsic.json                              the slot for intrinsic scores (training's last
                                                  logged metrics under "train"; evaluations add keys)
  <cache>/pretrained/<arm>-<size>-<key>.work/     checkpoints while it trains (last.ckpt)

The arms:  random    no training: the initial weights every arm of the same seed starts from (control)
           mlm       single segments, MLM only
           mlm_pairs segment pairs, MLM only (the NSP arm's inputs without its loss)
           mlm_nsp   pairs, MLM + next-sentence prediction (BERT)
           mlm_sop   pairs, MLM + sentence-order prediction (ALBERT)
Sizes are Google's BERT miniatures (Turc et al. 2019), intermediate = 4 x hidden.

`build_pretrained` trains once, through `assets.build_once` (a file lock; the directory appears
complete or not at all). It is resumable: a Lightning `last.ckpt` is written atomically every
`checkpoint_every` steps into the persistent work directory (not the temporary build directory,
which a crash deletes), and a build that finds one resumes from it. Resumed = uninterrupted:
the schedule is the recipe's, the data order and dropout masks are functions of the step
(`StepBatches`, `PretrainingModule`), and Lightning restores the optimiser and scheduler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import lightning as L
import torch
import transformers
from filelock import FileLock
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from transformers import AutoTokenizer, BertConfig, BertForPreTraining

from poolbench.assets import build_once, cache_root
from poolbench.config import PRETRAIN_SIZES, SENTENCE_ARMS
from poolbench.pretrain.model import IGNORE, MODEL_INPUTS, PretrainingModule, step_seed
from poolbench.validation import check_recipe

SIZES = PRETRAIN_SIZES  # (layers, hidden, heads) of each size
# Raise when the training code changes what a recipe produces: every key changes with it.
RECIPE_VERSION = 1
TOKEN_COLUMNS = MODEL_INPUTS  # the batch's [rows, tokens] tensors (mlm_positions index into them)


@dataclass(frozen=True)
class Recipe:
    arm: str
    size: str
    vocab_size: int
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    warmup: float  # fraction of `steps` of linear warmup, then linear decay to 0
    seed: int
    corpus: str  # the corpus fingerprint (the data side's identity of the examples)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "32-true"  # Lightning precision: "32-true" (CPU), "bf16-mixed" (GPU)

    def __post_init__(self) -> None:
        check_recipe(self)  # the same checks, and messages, as the backbone.pretrain config's

    @property
    def sentence_loss(self) -> bool:
        return self.arm in SENTENCE_ARMS

    def key(self) -> str:
        """A hash of every field (and RECIPE_VERSION): the identity of the backbone it builds."""
        fields = {**dataclasses.asdict(self), "version": RECIPE_VERSION}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"{self.arm}-{self.size}-{self.key()}"

    def bert_config(self, pad_token_id: int = 0) -> BertConfig:
        layers, hidden, heads = SIZES[self.size]
        return BertConfig(vocab_size=self.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=4 * hidden,
                          max_position_embeddings=max(512, self.seq_len), type_vocab_size=2,
                          pad_token_id=pad_token_id)


def pretrained_dir(recipe: Recipe, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "pretrained" / recipe.name


def work_dir(recipe: Recipe, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "pretrained" / f"{recipe.name}.work"


class BuildInterrupted(RuntimeError):
    """Training stopped before the recipe's last step (`stop_after`); the work dir holds the checkpoint."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed, so a kill mid-write never leaves a
    truncated last.ckpt for the next build to fail on."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class StepBatches:
    """The training batches as an endless stream whose i-th batch depends only on (seed, i), each
    process keeping its share of it.

    Epoch e iterates `make_batches()` after seeding the RNG with (seed, e), so a shuffling sampler
    gives the same order every time; each batch is fetched after seeding with (seed, step), so
    random masking in a collate function is reproducible too. On (re)start it reads the trainer's
    global step and skips the batches already trained on (fetching them: a loader's workers end
    up in the same state). Checks the data contract against the recipe on the way.

    Data parallel (Lightning DDP, `shard` = (rank, world size)): every process fetches the same
    global batch of recipe.batch_size rows and keeps the contiguous rows rank * n .. (rank + 1) * n,
    n = batch_size / world size, trimmed of the padding columns its rows do not need. The ranks see
    disjoint rows whose union is the one-process batch of the same step (the recipe, its data and
    masks, and so its name, do not depend on the number of devices), and resuming works as in one
    process. `step_tokens` holds the real tokens of each global batch yielded, by step: the same in
    every process, the sum over the ranks' shares (`trained_tokens` counts those trained on: the
    trainer fetches one batch ahead)."""

    def __init__(self, make_batches: Callable[[], Iterable[dict]], recipe: Recipe, position: Callable[[], int],
                 shard: Callable[[], tuple[int, int]] = lambda: (0, 1)):
        self.make_batches, self.recipe, self.position, self.shard = make_batches, recipe, position, shard
        self.step_tokens: dict[int, int] = {}  # step -> real (unpadded) tokens of its global batch

    def __iter__(self) -> Iterator[dict]:
        start, step, epoch = self.position(), 0, 0
        rank, world_size = self.shard()
        if self.recipe.batch_size % world_size:
            raise ValueError(f"backbone.pretrain.batch_size={self.recipe.batch_size} does not split over {world_size} "
                             f"processes: use a multiple of {world_size} (the batch size is the global one).")
        seed = self.recipe.seed
        while True:
            torch.manual_seed(step_seed(seed, epoch, stream=2))
            loader = self.make_batches()
            iterator, fetched = iter(loader), False
            while True:
                torch.manual_seed(step_seed(seed, step, stream=0))
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                fetched = True
                if step >= start:
                    self._check(batch, first=step == start)
                    self.step_tokens[step] = int(batch["attention_mask"].sum())
                    yield batch if world_size == 1 else share_of(batch, rank, world_size)
                step += 1
            if not fetched:
                raise ValueError("make_batches() gave an empty loader.")
            epoch += 1

    def trained_tokens(self, end: int) -> int:
        """The real tokens of the global batches of the steps before `end` that this stream yielded:
        those trained on, when `end` is the trainer's global step after fitting."""
        return sum(tokens for step, tokens in self.step_tokens.items() if step < end)

    def _check(self, batch: dict, first: bool) -> None:
        recipe = self.recipe
        rows, length = batch["input_ids"].shape
        if length > recipe.seq_len or (first and rows != recipe.batch_size):
            raise ValueError(f"a batch of {rows} x {length} tokens does not fit the recipe "
                             f"(batch_size={recipe.batch_size}, seq_len={recipe.seq_len}).")
        if not recipe.sentence_loss and bool((batch["sentence_label"] != IGNORE).any()):
            raise ValueError(f"arm {recipe.arm} has no sentence loss, but the batch holds sentence labels.")
        if first and int(batch["input_ids"].max()) >= recipe.vocab_size:
            raise ValueError(f"a token id >= vocab_size={recipe.vocab_size}.")


def share_of(batch: dict, rank: int, world_size: int) -> dict:
    """Process `rank`'s rows of a global batch (the rank-th of `world_size` equal contiguous blocks),
    without the padding columns none of them uses (right padding: real tokens come first)."""
    rows = batch["input_ids"].size(0) // world_size
    share = {key: value[rank * rows:(rank + 1) * rows] for key, value in batch.items()}
    length = int(share["attention_mask"].sum(dim=1).max())
    return {key: value[:, :length] if key in TOKEN_COLUMNS else value for key, value in share.items()}


def build_pretrained(recipe: Recipe, make_batches: Callable[[], Iterable[dict]], tokenizer_dir: str | Path,
                     cache_dir: str | Path | None = None, *, checkpoint_every: int = 1000,
                     stop_after: int | None = None, accelerator: str = "auto", devices: Any = 1,
                     strategy: str = "auto", deterministic: Any = "warn", logger: Any = None,
                     log_every_n_steps: int = 50, keep_work: bool = False) -> Path:
    """The directory of the backbone `recipe` builds, trained first if absent (see the module doc).

    make_batches   () -> an iterable of batches in the data contract (poolbench.pretrain.model),
                   of recipe.batch_size rows of at most recipe.seq_len tokens; called once per epoch
    checkpoint_every  steps between checkpoints in the work directory
    stop_after     stop at this global step (a time-sliced job): the checkpoint is kept and
                   BuildInterrupted raised; nothing is published. The next call resumes.
    accelerator, devices, strategy  Lightning's: devices > 1 trains data-parallel (DDP, each process
                   a share of every batch: StepBatches); the recipe, and so the backbone, is the same.
                   "auto" on more than one device, for an arm without a sentence loss, is DDP told of
                   the parameters no loss reaches (the pooler and the sentence head), which it refuses
                   otherwise
    deterministic  Lightning's: True (exact; CPU tests), "warn" (deterministic where torch can be)
    logger         a Lightning logger for the training curves (None: a CSVLogger in the work dir),
                   written every `log_every_n_steps`
    keep_work      keep the work directory (checkpoints) after publishing
    """
    target, work = pretrained_dir(recipe, cache_dir), work_dir(recipe, cache_dir)
    tokenizer_dir = Path(tokenizer_dir)

    def pad_token_id() -> int:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if len(tokenizer) > recipe.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size={recipe.vocab_size}.")
        return tokenizer.pad_token_id or 0

    def train(save_to: Path | None) -> dict[str, float]:
        return _train(recipe, make_batches, work, pad_token_id=pad_token_id(), checkpoint_every=checkpoint_every,
                      stop_after=stop_after, accelerator=accelerator, devices=devices, strategy=strategy,
                      deterministic=deterministic, logger=logger, log_every_n_steps=log_every_n_steps,
                      save_to=save_to)

    if rank_zero_only.rank != 0 and not target.exists():
        # A DDP process started as a whole program (Lightning's subprocess launcher, SLURM, torchrun):
        # rank 0 holds the build's lock and waits for this rank to join its training, so this one trains
        # its share without the lock, then waits on the lock for rank 0 to publish.
        if recipe.arm != "random":
            train(save_to=None)
        with FileLock(str(target) + ".lock"):
            if not target.exists():
                raise RuntimeError(f"{recipe.name}: rank {rank_zero_only.rank} trained, but rank 0 published nothing "
                                   f"at {target}; see rank 0's error.")
        return target

    def build(tmp: Path) -> None:
        if recipe.arm == "random":
            initial_model(recipe, pad_token_id()).save_pretrained(tmp)
            metrics = {}
        else:
            metrics = train(save_to=tmp)
        for path in tokenizer_dir.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
        about = {**dataclasses.asdict(recipe), "key": recipe.key(), "name": recipe.name, "version": RECIPE_VERSION,
                 "built_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "lightning": L.__version__}}
        (tmp / "recipe.json").write_text(json.dumps(about, indent=2))
        (tmp / "intrinsic.json").write_text(json.dumps({"train": metrics}, indent=2))

    build_once(target, build)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return target


def initial_model(recipe: Recipe, pad_token_id: int) -> BertForPreTraining:
    """The weights training starts from: a function of the recipe's size and seed only, so every
    arm of one seed (and the `random` control) starts from the same model."""
    L.seed_everything(recipe.seed, workers=True)
    torch.manual_seed(recipe.seed)
    return BertForPreTraining(recipe.bert_config(pad_token_id))


def _train(recipe: Recipe, make_batches, work: Path, *, pad_token_id: int, checkpoint_every: int,
           stop_after: int | None, accelerator, devices, strategy, deterministic, logger, log_every_n_steps: int,
           save_to: Path | None) -> dict[str, float]:
    """Train (or resume) in `work`; save the BertForPreTraining into `save_to` (None: a DDP rank > 0,
    which publishes nothing); the last logged metrics."""
    work.mkdir(parents=True, exist_ok=True)
    module = PretrainingModule(initial_model(recipe, pad_token_id), sentence_loss=recipe.sentence_loss, lr=recipe.lr,
                               weight_decay=recipe.weight_decay, warmup_ratio=recipe.warmup,
                               total_steps=recipe.steps, step_seed=recipe.seed)
    checkpoint = ModelCheckpoint(dirpath=work, save_top_k=0, save_last=True, every_n_train_steps=checkpoint_every,
                                 save_on_train_epoch_end=False, enable_version_counter=False)
    max_steps = recipe.steps if stop_after is None else min(stop_after, recipe.steps)
    if strategy == "auto" and devices != 1 and not recipe.sentence_loss:
        # DDP stops at the first step where a parameter got no gradient ("parameters that were not used in
        # producing the loss"); without a sentence loss the pooler and the sentence head get none.
        strategy = "ddp_find_unused_parameters_true"
    if logger is None:
        logger = L.pytorch.loggers.CSVLogger(work, name="logs")
    trainer = L.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, precision=recipe.precision,
                        max_steps=max_steps, max_epochs=-1, gradient_clip_val=recipe.grad_clip, deterministic=deterministic,
                        callbacks=[checkpoint], plugins=[AtomicCheckpointIO()], logger=logger,
                        default_root_dir=work, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, log_every_n_steps=log_every_n_steps)
    batches = StepBatches(make_batches, recipe, position=lambda: trainer.global_step,
                          shard=lambda: (trainer.global_rank, trainer.world_size))
    last = work / "last.ckpt"
    resumed = last.exists()
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches, ckpt_path=last if resumed else None)
    seconds = time.perf_counter() - started
    trainer.save_checkpoint(last)  # where this process stopped, whatever the cadence
    if trainer.global_step < recipe.steps:
        raise BuildInterrupted(f"{recipe.name}: stopped at step {trainer.global_step} of {recipe.steps}; "
                               f"the next build resumes from {last}.")
    if save_to is not None:
        module.model.save_pretrained(save_to)
    # Throughput of this process's steps (all of them unless it resumed), Lightning's loop included; under
    # DDP, of all processes together.
    tokens = batches.trained_tokens(trainer.global_step)
    return {**{k: float(v) for k, v in trainer.callback_metrics.items()}, "resumed": float(resumed),
            "process_s": seconds, "process_tokens": float(tokens), "tokens_per_s": tokens / seconds}
