"""Probe mode: linear softmax heads on cached pooled vectors of a frozen backbone, many at once.

One job = one pooling, one seed, one or all layers. Its heads are every (layer, weight decay)
pair, trained together as ONE batched tensor program: weights [layers, hidden, decays x labels]
and a batched matmul (torch.baddbmm) per step, with hand-written gradients and a vectorised
AdamW, so 7 layers x 5 decays cost about as much Python as one head. Each head is still exactly
`Linear(hidden, n_labels)` + cross-entropy, the head fine-tuning uses.

Choices, and why:
- Optimizer: minibatch AdamW, not full-batch L-BFGS. (1) Heads trained together must not
  interact: AdamW is elementwise, so head h's trajectory is the one it would have alone, while
  L-BFGS's line search and curvature memory are global over all parameters of the closure:
  batching heads would couple them. (2) Early stopping and weight decay are then chosen on
  validation exactly as in fine-tuning (per epoch, `mode.patience`). (3) The seed varies the
  head init and the minibatch order, so seed spread is real even on the full training split
  (the L2-regularised problem is convex: L-BFGS would return the same optimum for every seed,
  and the spread would only measure the train subsample).
- Weight decay is decoupled (AdamW), not applied to the bias (the BERT recipe fine-tuning uses).
- Standardisation: every feature dimension of every (layer, pooling) is z-scored with the mean
  and standard deviation of the TRAINING examples of this seed (never validation or test: no
  leak). Raw scales differ by orders of magnitude between readouts and layers (max pooling is
  shifted and wide, the embedding layer is small, late layers carry a few outlier dimensions
  with values ~10-100x the rest), so the same learning rate and weight-decay grid would be a
  different regulariser for each readout; standardising makes "only the readout changes" true
  of the optimisation too. A constant dimension (e.g. [CLS] at layer 0, identical for every
  input) is centred to 0 and left unscaled.
- Selection: per head, the epoch of the best validation accuracy (ties: lower validation
  loss); per layer, the weight decay whose best epoch scores highest the same way (ties: the
  first in `mode.weight_decays`). Test vectors are loaded and scored once, for the selected
  head of each layer only.
- Determinism: head init, minibatch order and the train subsample come from generators seeded
  by the seed (init by (seed, layer, weight decay), so a head is the same whichever other
  heads share its job). Same config + seed on the same machine and thread count -> same metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from poolbench.closeness import closeness
from poolbench.config import Job, ProbeConfig
from poolbench.features import FeatureSet, features_for
from poolbench.progress import Progress
from poolbench.records import RunResult
from poolbench.tasks import stratified_indices

log = logging.getLogger(__name__)

BETAS = (0.9, 0.999)
EPS = 1e-8
# At equal validation accuracy, a loss drop smaller than this is no gain. Without it a head on a
# constant input (h_0 at the embedding layer is the same vector for every text) never stops: its
# bias creeps toward the label prior forever, and the whole batch of heads trains to max_epochs.
MIN_LOSS_DELTA = 1e-4


# ---------------------------------------------------------------------------------------------
# Heads

def seed_of(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(repr, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def init_heads(layers: Sequence[int], weight_decays: Sequence[float], seed: int, hidden: int, num_labels: int
               ) -> tuple[Tensor, Tensor]:
    """Weights [L, hidden, D, C] and biases [L, D, C], nn.Linear's U(-1/sqrt(hidden), 1/sqrt(hidden))
    init, head (layer, wd) drawn from its own generator: independent of the other heads."""
    bound = hidden ** -0.5
    weight = torch.empty(len(layers), hidden, len(weight_decays), num_labels)
    bias = torch.empty(len(layers), len(weight_decays), num_labels)
    for i, layer in enumerate(layers):
        for d, wd in enumerate(weight_decays):
            generator = torch.Generator().manual_seed(seed_of("head", seed, layer, float(wd)))
            weight[i, :, d] = torch.empty(hidden, num_labels).uniform_(-bound, bound, generator=generator)
            bias[i, d] = torch.empty(num_labels).uniform_(-bound, bound, generator=generator)
    return weight, bias


def head_logits(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x [L, n, H], weight [L, H, D, C], bias [L, D, C] -> logits [L, n, D, C]."""
    L, H, D, C = weight.shape
    return torch.baddbmm(bias.reshape(L, 1, D * C), x, weight.reshape(L, H, D * C)).view(L, x.shape[1], D, C)


def _loss_acc(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy per head, [L, D] each."""
    log_probs = logits.log_softmax(-1)
    index = y.view(1, -1, 1, 1).expand(*logits.shape[:3], 1)
    loss = -log_probs.gather(-1, index).squeeze(-1).mean(1)
    acc = (logits.argmax(-1) == y.view(1, -1, 1)).float().mean(1)
    return loss, acc


@dataclass
class HeadsResult:
    """Best (early-stopped) state of every head: [L, D] grids, and the weights at that state."""

    val_acc: Tensor
    val_loss: Tensor
    epoch: Tensor  # 1-based epoch of the best state
    weight: Tensor  # [L, H, D, C]
    bias: Tensor  # [L, D, C]
    epochs_run: int

    def select(self) -> list[int]:
        """Per layer, the index of the chosen weight decay: best accuracy, then lower loss, then first."""
        chosen = []
        for acc, loss in zip(self.val_acc.tolist(), self.val_loss.tolist()):
            chosen.append(min(range(len(acc)), key=lambda d: (-acc[d], loss[d], d)))
        return chosen


def train_heads(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, layers: Sequence[int],
                weight_decays: Sequence[float], num_labels: int, seed: int, lr: float, batch_size: int,
                max_epochs: int, patience: int) -> HeadsResult:
    """Train one softmax head per (layer, weight decay) on standardised vectors, all at once.

    train_x [L, n, H] and val_x [L, m, H] hold layer `layers[i]` at position i. Each head does
    minibatch AdamW on its own mean cross-entropy, and stops after `patience` epochs without a
    validation gain (accuracy up, or equal accuracy and loss down by MIN_LOSS_DELTA); its best state is kept.

    Only layers with a head still training are computed: once every head of a layer has stopped,
    the layer leaves the program (its weights, optimiser state and validation rows are dropped).
    Within a live layer a stopped head keeps stepping with the others (masking it would cost a
    pass over all weights per step), but nothing reads it again: its best state is frozen and heads
    share no parameter or statistic, so no other head can tell (tested)."""
    L, n, H = train_x.shape
    D, C = len(weight_decays), num_labels
    weight, bias = init_heads(layers, weight_decays, seed, H, C)
    decay = torch.tensor([float(wd) for wd in weight_decays]).view(1, 1, D, 1)
    m_w, v_w, m_b, v_b = (torch.zeros_like(t) for t in (weight, weight, bias, bias))
    best = HeadsResult(val_acc=torch.full((L, D), -1.0), val_loss=torch.full((L, D), float("inf")),
                       epoch=torch.zeros(L, D, dtype=torch.long), weight=weight.clone(), bias=bias.clone(),
                       epochs_run=0)
    active = torch.ones(L, D, dtype=torch.bool)
    waited = torch.zeros(L, D, dtype=torch.long)
    live = torch.arange(L)  # positions (in train_x and best) of the layers still computed
    order = torch.Generator().manual_seed(seed_of("order", seed))
    onehot_all = torch.nn.functional.one_hot(train_y, C).float()
    step = 0
    progress = Progress(max_epochs, f"training {L * D} heads", "epochs")  # early stopping may end it sooner
    for epoch in range(1, max_epochs + 1):
        for batch in torch.randperm(n, generator=order).split(batch_size):
            x = train_x[live.unsqueeze(1), batch]  # [L', B, H]: the live layers' rows of this batch
            grad_logits = head_logits(x, weight, bias).softmax(-1)
            # d(mean CE)/d logits = (softmax - onehot) / B, for each head separately.
            grad_logits.sub_(onehot_all[batch].view(1, len(batch), 1, C)).div_(len(batch))
            grad_w = torch.bmm(x.transpose(1, 2), grad_logits.view(len(live), len(batch), D * C)).view(weight.shape)
            grad_b = grad_logits.sum(1)
            step += 1
            # torch.optim.AdamW's single-tensor update, per head: decoupled decay, then the Adam step.
            weight.mul_(1 - lr * decay)
            step_size, root_correction2 = lr / (1 - BETAS[0] ** step), math.sqrt(1 - BETAS[1] ** step)
            for param, grad, m, v in ((weight, grad_w, m_w, v_w), (bias, grad_b, m_b, v_b)):
                m.lerp_(grad, 1 - BETAS[0])
                v.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
                param.addcdiv_(m, v.sqrt().div_(root_correction2).add_(EPS), value=-step_size)
        progress.update()
        val_loss, val_acc = _loss_acc(head_logits(val_x, weight, bias), val_y)
        best_acc, best_loss = best.val_acc[live], best.val_loss[live]
        improved = active[live] & ((val_acc > best_acc) | ((val_acc == best_acc) & (val_loss < best_loss - MIN_LOSS_DELTA)))
        best.val_acc[live] = torch.where(improved, val_acc, best_acc)
        best.val_loss[live] = torch.where(improved, val_loss, best_loss)
        best.epoch[live] = torch.where(improved, epoch, best.epoch[live])
        best.weight[live] = torch.where(improved.view(-1, 1, D, 1), weight, best.weight[live])
        best.bias[live] = torch.where(improved.view(-1, D, 1), bias, best.bias[live])
        waited[live] = torch.where(improved, 0, waited[live] + 1)
        active[live] &= waited[live] < patience
        best.epochs_run = epoch
        keep = active[live].any(1)
        if not keep.any():
            break
        if not keep.all():
            live = live[keep]
            weight, bias, m_w, v_w, m_b, v_b, val_x = (t[keep] for t in (weight, bias, m_w, v_w, m_b, v_b, val_x))
    progress.close()
    return best


# ---------------------------------------------------------------------------------------------
# A job's layers

def fit_standardizer(train_x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation [L, 1, H] of every dimension of every layer over the training rows."""
    mean = train_x.mean(1, keepdim=True)
    std = train_x.std(1, unbiased=False, keepdim=True)
    return mean, torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))  # constant dim: unscaled


def standardize(stats: tuple[Tensor, Tensor], *xs: Tensor) -> None:
    """In place: z-score with the training statistics."""
    mean, std = stats
    for x in xs:
        x.sub_(mean).div_(std)


def train_indices(labels: np.ndarray, max_examples: int | None, seed: int) -> np.ndarray:
    """The training rows of this seed: all, or the stratified subsample `tasks.subsample_train` draws."""
    if max_examples is None or max_examples >= len(labels):
        return np.arange(len(labels))
    return stratified_indices(labels, max_examples, seed)


def metrics_of(logits: Tensor, y: Tensor, num_labels: int) -> dict[str, float]:
    preds = logits.argmax(-1)
    return {"acc": float(multiclass_accuracy(preds, y, num_labels, average="micro")),
            "f1": float(multiclass_f1_score(preds, y, num_labels, average="macro"))}


@dataclass
class FittedHeads:
    """The validation-selected head of every layer, and the training statistics it standardises with."""

    weight: Tensor  # [L, H, 1, C]
    bias: Tensor  # [L, 1, C]
    stats: tuple[Tensor, Tensor]
    weight_decays: list[float]  # chosen per layer
    epochs: list[int]  # best epoch per layer, 1-based
    epochs_run: int
    heads: int  # heads trained: layers x weight decays
    val_logits: Tensor  # [L, m, C]

    def logits(self, x: Tensor) -> Tensor:
        """Raw vectors x [L, n, H] (standardised in place) -> logits [L, n, C]."""
        standardize(self.stats, x)
        return head_logits(x, self.weight, self.bias)[:, :, 0]


def fit_heads(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, layers: Sequence[int],
              settings: ProbeConfig, num_labels: int, seed: int) -> FittedHeads:
    """Standardise train_x and val_x IN PLACE with the training rows' statistics, train every
    (layer, weight decay) head, and keep the one validation selects per layer."""
    stats = fit_standardizer(train_x)
    standardize(stats, train_x, val_x)
    weight_decays = [float(wd) for wd in settings.weight_decays]
    heads = train_heads(train_x, train_y, val_x, val_y, layers, weight_decays, num_labels, seed=seed, lr=settings.lr,
                        batch_size=settings.batch_size, max_epochs=settings.max_epochs, patience=settings.patience)
    chosen = heads.select()
    index = torch.arange(len(layers))
    weight = heads.weight[index, :, chosen].unsqueeze(2)
    bias = heads.bias[index, chosen].unsqueeze(1)
    return FittedHeads(weight=weight, bias=bias, stats=stats, weight_decays=[weight_decays[c] for c in chosen],
                       epochs=[int(heads.epoch[i, c]) for i, c in enumerate(chosen)], epochs_run=heads.epochs_run,
                       heads=len(layers) * len(weight_decays), val_logits=head_logits(val_x, weight, bias)[:, :, 0])


def probe_layers(features: FeatureSet, pooling: str, layers: Sequence[int], settings: ProbeConfig, seed: int,
                 max_train_examples: int | None) -> tuple[list[RunResult], dict[str, Any]]:
    """Train, select on validation, then score test once, for one pooling at the given layers."""
    layers = list(layers)
    num_labels = len(features.label_names)
    labels = features.labels("train")
    rows = train_indices(labels.numpy(), max_train_examples, seed)
    train_x, train_y = features.vectors("train", pooling, layers, rows=rows), labels[rows]
    val_x, val_y = features.vectors("validation", pooling, layers), features.labels("validation")
    fitted = fit_heads(train_x, train_y, val_x, val_y, layers, settings, num_labels, seed)
    del train_x, val_x
    # Test is read now, once, at the selected setting of every layer.
    test_x, test_y = features.vectors("test", pooling, layers), features.labels("test")
    test_logits = fitted.logits(test_x)
    test_ids = features.ids("test")
    results = []
    for i, layer in enumerate(layers):
        val, test = metrics_of(fitted.val_logits[i], val_y, num_labels), metrics_of(test_logits[i], test_y, num_labels)
        probs = test_logits[i].softmax(-1)
        predictions = pd.DataFrame({"id": test_ids.numpy(), "label": test_y.numpy(),
                                    "prediction": probs.argmax(-1).numpy(), "probs": list(probs.numpy())})
        results.append(RunResult(
            layer=layer,
            metrics={"val/acc": val["acc"], "val/f1": val["f1"], "test/acc": test["acc"], "test/f1": test["f1"],
                     "n_test": len(test_y), "n_train": len(rows), "n_labels": num_labels},
            selection={"weight_decay": fitted.weight_decays[i], "epoch": fitted.epochs[i], "monitor": "val/acc"},
            timings={},
            predictions=predictions.sort_values("id").reset_index(drop=True),
            features=features.key,
        ))
    return results, {"epochs_run": fitted.epochs_run, "heads": fitted.heads}


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """Probe mode: the cached features of (backbone, task), encoded on first use, then the heads of
    every layer in `job.layers` trained together; with `mode.reference_dtype` naming another precision than
    the job's, also each layer's closeness to that precision's vectors (poolbench.closeness). `logger` is
    unused: the job owner logs results."""
    started = time.perf_counter()
    features, encode_s = features_for(job.backbone, job.task, job.cache_dir, job.mode.encode_batch_tokens,
                                      pooling=job.pooling)
    train_started = time.perf_counter()
    results, info = probe_layers(features, job.pooling, job.layers, job.mode, job.seed, job.task.max_train_examples)
    train_s = time.perf_counter() - train_started
    log.info("%s s%d: %d heads on layers %s in %.1f s (%d epochs)", job.pooling, job.seed, info["heads"],
             list(job.layers), train_s, info["epochs_run"])
    reference_s = 0.0
    if compares_precision(job):
        reference_started = time.perf_counter()
        reference, _ = features_for(replace(job.backbone, dtype=job.mode.reference_dtype), job.task,
                                    job.cache_dir, job.mode.encode_batch_tokens, pooling=job.pooling)
        close = closeness(features, reference, job.pooling, list(job.layers))
        for result in results:
            result.metrics.update(close[result.layer])
        reference_s = time.perf_counter() - reference_started
    for result in results:
        # Per job: the heads of all its layers train together, so train_s is shared.
        result.timings = {"encode_s": encode_s, "train_s": train_s, "total_s": time.perf_counter() - started}
        if reference_s:
            # The reference precision's entry (encoded when absent) and the closeness.
            result.timings["reference_s"] = reference_s
    return results


def compares_precision(job: Job) -> bool:
    """Whether the job measures its vectors against another precision's (mode.reference_dtype): a
    job in the reference precision itself has nothing to compare."""
    return job.mode.reference_dtype is not None and job.mode.reference_dtype != job.backbone.dtype
