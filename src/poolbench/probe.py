"""Probe mode: linear softmax heads on cached pooled vectors of a frozen backbone, many at once.

One job = one pooling, one seed, one or all layers. Its heads are every (layer, weight decay)
pair, trained together as ONE tensor program: per layer and step, one matmul gives the logits of
all its heads (weights [hidden, decays x labels]) and one their hand-written gradients; AdamW
updates every head at once on flat buffers (`LiveHeads`). A head that stops leaves the program,
so a job computes only the heads still training. Each head is still exactly
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


@dataclass
class HeadGroup:
    """Live layers that have the same number k of live heads: one batched matmul trains them all."""

    positions: Tensor  # [G]: the layers' positions in train_x and in the [L, D] grids
    decays: Tensor  # [G, k]: each layer's live heads, as positions in the weight-decay grid
    val_x: Tensor  # [G, m, H]: the layers' validation vectors

    @property
    def heads(self) -> int:
        return self.decays.numel()


@dataclass
class LiveHeads:
    """The heads still training and their AdamW state, in flat buffers.

    A buffer holds, group after group, the group's weights [G, H, k x C] then its biases [G, k x C]
    (`views`). AdamW is elementwise, so its update runs once on each whole buffer: a handful of ops
    per step, whatever the number of heads. A stopped head leaves the buffers (`keep`), and its
    layer moves to the group of its remaining head count: there are at most as many groups as
    weight decays, so a step costs a few batched matmuls however many layers the job has."""

    hidden: int
    num_labels: int
    groups: list[HeadGroup]
    shrink: Tensor  # per element: decoupled weight decay's factor 1 - lr x wd; 1 for a bias
    params: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor

    @classmethod
    def start(cls, weight: Tensor, bias: Tensor, shrink: Tensor, val_x: Tensor) -> LiveHeads:
        """weight [L, H, D, C], bias [L, D, C]; shrink [D], the decay factor of each grid position."""
        L, H, D, C = weight.shape
        group = HeadGroup(positions=torch.arange(L), decays=torch.arange(D).expand(L, D), val_x=val_x)
        params = torch.cat([weight.reshape(-1), bias.reshape(-1)])
        factor = torch.cat([shrink.view(1, 1, D, 1).expand(L, H, D, C).reshape(-1), torch.ones(L * D * C)])
        return cls(hidden=H, num_labels=C, groups=[group], shrink=factor, params=params,
                   exp_avg=torch.zeros_like(params), exp_avg_sq=torch.zeros_like(params))

    def views(self, flat: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(weights [G, H, k x C], biases [G, k x C]) of every group, views of a flat buffer."""
        H, C = self.hidden, self.num_labels
        parts = flat.split([size for group in self.groups for size in (group.heads * H * C, group.heads * C)])
        return [(weight.view(len(group.positions), H, -1), bias.view(len(group.positions), -1))
                for group, weight, bias in zip(self.groups, parts[::2], parts[1::2])]

    def index(self) -> tuple[Tensor, Tensor]:
        """(layer position, decay position) of every live head, in buffer order."""
        return (torch.cat([group.positions.repeat_interleave(group.decays.shape[1]) for group in self.groups]),
                torch.cat([group.decays.reshape(-1) for group in self.groups]))

    def step(self, train_x: Tensor, batch: Tensor, onehot: Tensor, lr: float, step: int) -> None:
        """One AdamW step of every live head on the rows `batch` of train_x [L, n, H] (onehot [B, C])."""
        B, C = len(batch), self.num_labels
        rows = train_x.view(-1, self.hidden)  # layer i's row j is row i x n + j: one index_select per group
        grad = torch.empty_like(self.params)
        for group, (weight, bias), (grad_w, grad_b) in zip(self.groups, self.views(self.params), self.views(grad)):
            index = (group.positions.unsqueeze(1) * train_x.shape[1] + batch).view(-1)
            x = rows.index_select(0, index).view(len(group.positions), B, self.hidden)
            grad_logits = torch.baddbmm(bias.unsqueeze(1), x, weight).view(len(x), B, -1, C).softmax(-1)
            # d(mean CE)/d logits = (softmax - onehot) / B, for each head separately.
            grad_logits = grad_logits.sub_(onehot.view(1, B, 1, C)).div_(B).view(len(x), B, -1)
            torch.bmm(x.transpose(1, 2), grad_logits, out=grad_w)
            torch.sum(grad_logits, 1, out=grad_b)
        # torch.optim.AdamW's single-tensor update, per element: decoupled decay, then the Adam step.
        self.params.mul_(self.shrink)
        step_size, root_correction2 = lr / (1 - BETAS[0] ** step), math.sqrt(1 - BETAS[1] ** step)
        self.exp_avg.lerp_(grad, 1 - BETAS[0])
        self.exp_avg_sq.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
        self.params.addcdiv_(self.exp_avg, self.exp_avg_sq.sqrt().div_(root_correction2).add_(EPS), value=-step_size)

    def validate(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy and accuracy of every live head on the validation rows: [K] each."""
        losses, accs = [], []
        for group, (weight, bias) in zip(self.groups, self.views(self.params)):
            logits = torch.baddbmm(bias.unsqueeze(1), group.val_x, weight)
            logits = logits.view(len(weight), len(y), -1, self.num_labels)
            index = y.view(1, -1, 1, 1).expand(*logits.shape[:3], 1)
            losses.append(-logits.log_softmax(-1).gather(-1, index).squeeze(-1).mean(1).reshape(-1))
            accs.append((logits.argmax(-1) == y.view(1, -1, 1)).float().mean(1).reshape(-1))
        return torch.cat(losses), torch.cat(accs)

    def save(self, best: HeadsResult, improved: Tensor) -> None:
        """Copy the heads marked in `improved` [K] into best.weight and best.bias."""
        H, C = self.hidden, self.num_labels
        for group, (weight, bias), mask in zip(self.groups, self.views(self.params),
                                               improved.split([group.heads for group in self.groups])):
            mask = mask.view(group.decays.shape)
            layer, decay = group.positions.unsqueeze(1).expand_as(mask)[mask], group.decays[mask]
            best.weight[layer, :, decay] = weight.view(len(weight), H, -1, C).transpose(1, 2)[mask]
            best.bias[layer, decay] = bias.view(len(bias), -1, C)[mask]

    def keep(self, alive: Tensor) -> LiveHeads:
        """The heads marked in `alive` [K], with their parameters and AdamW state, regrouped."""
        H, C = self.hidden, self.num_labels
        rows = []  # (remaining heads, position, group, row, mask) of every layer that keeps a head
        for g, (group, mask) in enumerate(zip(self.groups, alive.split([group.heads for group in self.groups]))):
            for row, row_mask in enumerate(mask.view(group.decays.shape)):
                if row_mask.any():
                    rows.append((int(row_mask.sum()), int(group.positions[row]), g, row, row_mask))
        rows.sort(key=lambda r: (-r[0], r[1]))
        members = [[r for r in rows if r[0] == k] for k in sorted({r[0] for r in rows}, reverse=True)]
        groups = [HeadGroup(positions=torch.tensor([position for _, position, *_ in member]),
                            decays=torch.stack([self.groups[g].decays[row][mask] for *_, g, row, mask in member]),
                            val_x=torch.stack([self.groups[g].val_x[row] for *_, g, row, _ in member]))
                  for member in members]

        def select(flat: Tensor) -> Tensor:
            views = self.views(flat)
            return torch.cat([part for member in members for part in (
                torch.stack([views[g][0][row].view(H, -1, C)[:, mask] for *_, g, row, mask in member]).reshape(-1),
                torch.stack([views[g][1][row].view(-1, C)[mask] for *_, g, row, mask in member]).reshape(-1))])

        return LiveHeads(hidden=H, num_labels=C, groups=groups, shrink=select(self.shrink), params=select(self.params),
                         exp_avg=select(self.exp_avg), exp_avg_sq=select(self.exp_avg_sq))


def train_heads(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, layers: Sequence[int],
                weight_decays: Sequence[float], num_labels: int, seed: int, lr: float, batch_size: int,
                max_epochs: int, patience: int) -> HeadsResult:
    """Train one softmax head per (layer, weight decay) on standardised vectors, all at once.

    train_x [L, n, H] and val_x [L, m, H] hold layer `layers[i]` at position i. Each head does
    minibatch AdamW on its own mean cross-entropy, and stops after `patience` epochs without a
    validation gain (accuracy up, or equal accuracy and loss down by MIN_LOSS_DELTA); its best state is kept.

    Only heads still training are computed: a head that stops leaves the program (its weights and
    optimiser state are dropped; its best state is frozen). Heads share no parameter or statistic,
    so no other head can tell (tested)."""
    L, n, H = train_x.shape
    D, C = len(weight_decays), num_labels
    train_x = train_x.contiguous()  # LiveHeads.step reads its rows as one [L x n, H] matrix
    weight, bias = init_heads(layers, weight_decays, seed, H, C)
    best = HeadsResult(val_acc=torch.full((L, D), -1.0), val_loss=torch.full((L, D), float("inf")),
                       epoch=torch.zeros(L, D, dtype=torch.long), weight=weight.clone(), bias=bias.clone(),
                       epochs_run=0)
    heads = LiveHeads.start(weight, bias, 1 - lr * torch.tensor([float(wd) for wd in weight_decays]), val_x)
    waited = torch.zeros(L, D, dtype=torch.long)
    order = torch.Generator().manual_seed(seed_of("order", seed))
    onehot = torch.nn.functional.one_hot(train_y, C).float()
    step = 0
    progress = Progress(max_epochs, f"training {L * D} heads", "epochs")  # early stopping may end it sooner
    for epoch in range(1, max_epochs + 1):
        for batch in torch.randperm(n, generator=order).split(batch_size):
            step += 1
            heads.step(train_x, batch, onehot[batch], lr, step)
        progress.update()
        val_loss, val_acc = heads.validate(val_y)
        layer, decay = heads.index()
        best_acc, best_loss = best.val_acc[layer, decay], best.val_loss[layer, decay]
        improved = (val_acc > best_acc) | ((val_acc == best_acc) & (val_loss < best_loss - MIN_LOSS_DELTA))
        best.val_acc[layer, decay] = torch.where(improved, val_acc, best_acc)
        best.val_loss[layer, decay] = torch.where(improved, val_loss, best_loss)
        best.epoch[layer, decay] = torch.where(improved, epoch, best.epoch[layer, decay])
        heads.save(best, improved)
        waited[layer, decay] = torch.where(improved, 0, waited[layer, decay] + 1)
        best.epochs_run = epoch
        alive = waited[layer, decay] < patience
        if not alive.any():
            break
        if not alive.all():
            heads = heads.keep(alive)
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
