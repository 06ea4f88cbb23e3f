"""Probe mode for the attention readout: the query q and the softmax head trained jointly on cached
token states of the frozen backbone (token_states.py).

One job = one seed, one or all layers, as in poolbench.probe. Its heads are every (layer, weight
decay) pair: per head a query q [hidden] (0 at init: mean pooling) and the probe's head
Linear(hidden, n_labels), trained together as one batched program.

Held equal to the other readouts' probe (poolbench.probe), so that only the readout changes:
- the head's init (`probe.init_heads`, the same generators), the minibatch order (the same
  generator), batch size, learning rate, epochs, patience, MIN_LOSS_DELTA, the weight-decay grid,
  and the selection rules (per head the best validation epoch, per layer the best weight decay;
  ties: lower loss, then the first decay). Test is read once, for the selected head of each layer.
- Standardisation. The token states are z-scored per dimension with the mean and standard deviation
  of the training rows' MEAN-pooled vectors (this seed's rows; never validation or test). An
  attention pooling is a convex combination of token states, so it commutes with any per-dimension
  affine map: pooling z-scored states is z-scoring the pooled vector with these statistics. At q = 0
  the head thus sees the mean probe's standardised input (up to float16 storage) and starts where the
  mean probe starts; the scores q . h are computed on the same z-scored states, so one learning rate
  suits every layer whatever its raw scale.
- AdamW: torch.optim.AdamW, one parameter group per weight decay: decoupled decay on q and the head's
  weight, none on the bias, as probe.py does. Decay pulls q back to 0, toward mean pooling, so the
  grid regularises the pooling too. Gradients by autograd: the loss is the sum over heads of each
  head's mean cross-entropy and no parameter is shared, so each head's gradient and AdamW step are its
  own (heads trained together equal heads trained alone: tested).
- Early stopping is per head; a stopped head keeps stepping with the others, its best state frozen,
  until every head stopped. Unlike probe.py no layer leaves the program early: a simpler loop, at the
  cost of some steps.
Layers are trained in groups that fit a RAM budget for their token states (`STATES_BUDGET`); heads of
different layers share nothing and the minibatch order depends on the seed only, so the grouping
changes no number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor

from poolbench.attention_pooling.readout import attention_pool
from poolbench.attention_pooling.token_states import TokenRows, TokenStates, token_states_for
from poolbench.config import Job, ProbeConfig
from poolbench.features import FeatureSet, features_for
from poolbench.probe import BETAS, EPS, MIN_LOSS_DELTA, fit_standardizer, init_heads, metrics_of, seed_of, train_indices
from poolbench.records import RunResult

log = logging.getLogger(__name__)

# Token states of one group of layers (train + validation split) held in RAM at once.
STATES_BUDGET = 4 * 2**30


def _logits(rows: TokenRows, index: Tensor, query: Tensor, weight: Tensor, bias: Tensor
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Examples `index` of (z-scored) `rows` through every head: query [L, D, H], weight [L, D, H, C], bias
    [L, D, C] -> logits [L, D, B, C], attention weights [L, D, B, T] and the batch's mask [B, T]."""
    states, mask = rows.batch(index)
    pooled, weights = attention_pool(states, mask, query)
    return torch.matmul(pooled, weight) + bias.unsqueeze(2), weights, mask


def _loss_acc(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy and correct predictions per head [L, D] over a batch's logits [L, D, B, C]."""
    index = y.view(1, 1, -1, 1).expand(*logits.shape[:3], 1)
    loss = -logits.log_softmax(-1).gather(-1, index).squeeze(-1).sum(-1)
    return loss, (logits.argmax(-1) == y.view(1, 1, -1)).float().sum(-1)


@dataclass
class AttentionHeads:
    """Best (early-stopped) state of every head, [L, D] grids and the parameters at that state."""

    val_acc: Tensor
    val_loss: Tensor
    epoch: Tensor  # 1-based epoch of the best state
    query: Tensor  # [L, D, H]
    weight: Tensor  # [L, D, H, C]
    bias: Tensor  # [L, D, C]
    epochs_run: int

    def select(self) -> list[int]:
        """Per layer, the chosen weight decay's index: best accuracy, then lower loss, then first (probe.py's rule)."""
        return [min(range(len(acc)), key=lambda d: (-acc[d], loss[d], d))
                for acc, loss in zip(self.val_acc.tolist(), self.val_loss.tolist())]


def evaluate(rows: TokenRows, y: Tensor, query: Tensor, weight: Tensor, bias: Tensor, batch_size: int
             ) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy per head [L, D] over every example of (z-scored) `rows`."""
    loss, correct = torch.zeros(query.shape[:2]), torch.zeros(query.shape[:2])
    with torch.no_grad():
        for index in torch.arange(len(rows)).split(batch_size):
            batch_loss, batch_correct = _loss_acc(_logits(rows, index, query, weight, bias)[0], y[index])
            loss += batch_loss
            correct += batch_correct
    return loss / len(rows), correct / len(rows)


def train_attention_heads(train: TokenRows, train_index: Tensor, train_y: Tensor, val: TokenRows, val_y: Tensor,
                          layers: Sequence[int], weight_decays: Sequence[float], num_labels: int, seed: int, lr: float,
                          batch_size: int, max_epochs: int, patience: int) -> AttentionHeads:
    """Train one (query, softmax head) per (layer, weight decay) on the z-scored token states (`train`,
    `val`: TokenRows.standardized) of the training examples `train_index` (labels `train_y`), all at once;
    stop each head after `patience` epochs without a validation gain (accuracy up, or equal accuracy and
    loss down by MIN_LOSS_DELTA)."""
    L, D, H = len(layers), len(weight_decays), train.tokens.shape[-1]
    weight, bias = init_heads(layers, weight_decays, seed, H, num_labels)  # [L, H, D, C], [L, D, C]
    queries, weights, biases, groups = [], [], [], []
    for d, wd in enumerate(weight_decays):
        query = torch.zeros(L, H, requires_grad=True)
        head_weight = weight[:, :, d].clone().requires_grad_()
        head_bias = bias[:, d].clone().requires_grad_()
        queries.append(query)
        weights.append(head_weight)
        biases.append(head_bias)
        groups += [{"params": [query, head_weight], "weight_decay": float(wd)},
                   {"params": [head_bias], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS)

    def parameters() -> tuple[Tensor, Tensor, Tensor]:
        return torch.stack(queries, 1), torch.stack(weights, 1), torch.stack(biases, 1)

    with torch.no_grad():
        best = AttentionHeads(val_acc=torch.full((L, D), -1.0), val_loss=torch.full((L, D), float("inf")),
                              epoch=torch.zeros(L, D, dtype=torch.long), query=parameters()[0].clone(),
                              weight=parameters()[1].clone(), bias=parameters()[2].clone(), epochs_run=0)
    active = torch.ones(L, D, dtype=torch.bool)
    waited = torch.zeros(L, D, dtype=torch.long)
    order = torch.Generator().manual_seed(seed_of("order", seed))
    for epoch in range(1, max_epochs + 1):
        for batch in torch.randperm(len(train_index), generator=order).split(batch_size):
            logits = _logits(train, train_index[batch], *parameters())[0]
            optimizer.zero_grad(set_to_none=True)
            (_loss_acc(logits, train_y[batch])[0] / len(batch)).sum().backward()
            optimizer.step()
        with torch.no_grad():
            query, head_weight, head_bias = parameters()
            val_loss, val_acc = evaluate(val, val_y, query, head_weight, head_bias, batch_size)
            improved = active & ((val_acc > best.val_acc) |
                                 ((val_acc == best.val_acc) & (val_loss < best.val_loss - MIN_LOSS_DELTA)))
            best.val_acc = torch.where(improved, val_acc, best.val_acc)
            best.val_loss = torch.where(improved, val_loss, best.val_loss)
            best.epoch = torch.where(improved, epoch, best.epoch)
            best.query = torch.where(improved.view(L, D, 1), query, best.query)
            best.weight = torch.where(improved.view(L, D, 1, 1), head_weight, best.weight)
            best.bias = torch.where(improved.view(L, D, 1), head_bias, best.bias)
        waited = torch.where(improved, 0, waited + 1)
        active &= waited < patience
        best.epochs_run = epoch
        if not active.any():
            break
    return best


@dataclass
class FittedAttention:
    """The validation-selected (query, head) of every layer and the statistics it z-scores with."""

    query: Tensor  # [L, 1, H]
    weight: Tensor  # [L, 1, H, C]
    bias: Tensor  # [L, 1, C]
    stats: tuple[Tensor, Tensor]
    weight_decays: list[float]
    epochs: list[int]
    epochs_run: int
    heads: int

    def scores(self, rows: TokenRows, batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits [L, n, C] of every example of raw `rows`, and where the selected query looks, per layer
        (means over the examples): the weight on the first and on the last real token, and the breadth
        exp(entropy) / tokens (1 = uniform, mean pooling; 1/n = one token)."""
        logits, first, last, breadth = [], [], [], []
        rows = rows.standardized(self.stats)
        with torch.no_grad():
            for index in torch.arange(len(rows)).split(batch_size):
                batch_logits, weights, mask = _logits(rows, index, self.query, self.weight, self.bias)
                weights, lengths = weights[:, 0], mask.sum(1)  # [L, B, T]: right-padded, first real token at 0
                logits.append(batch_logits[:, 0])
                first.append(weights[:, :, 0])
                last.append(weights.gather(2, (lengths - 1).view(1, -1, 1).expand(len(weights), -1, 1))[..., 0])
                entropy = -torch.where(mask, weights * weights.clamp_min(1e-30).log(), 0.0).sum(-1)
                breadth.append(entropy.exp() / lengths)
        readout = {name: torch.cat(parts, 1).mean(1) for name, parts in
                   (("first", first), ("last", last), ("breadth", breadth))}
        return torch.cat(logits, 1), readout


def fit_attention(train: TokenRows, train_index: Tensor, train_y: Tensor, val: TokenRows, val_y: Tensor,
                  layers: Sequence[int], settings: ProbeConfig, num_labels: int, seed: int) -> FittedAttention:
    """z-score raw `train` and `val` with the training rows' mean-pooled statistics, train every (layer, weight
    decay) head and keep the one validation selects per layer."""
    stats = fit_standardizer(train.means(train_index))
    weight_decays = [float(wd) for wd in settings.weight_decays]
    train, val = train.standardized(stats), val.standardized(stats)
    heads = train_attention_heads(train, train_index, train_y, val, val_y, layers, weight_decays, num_labels,
                                  seed=seed, lr=settings.lr, batch_size=settings.batch_size,
                                  max_epochs=settings.max_epochs, patience=settings.patience)
    chosen = heads.select()
    index = torch.arange(len(layers))
    return FittedAttention(query=heads.query[index, chosen].unsqueeze(1),
                           weight=heads.weight[index, chosen].unsqueeze(1),
                           bias=heads.bias[index, chosen].unsqueeze(1), stats=stats,
                           weight_decays=[weight_decays[c] for c in chosen],
                           epochs=[int(heads.epoch[i, c]) for i, c in enumerate(chosen)], epochs_run=heads.epochs_run,
                           heads=len(layers) * len(weight_decays))


def layer_groups(layers: Sequence[int], bytes_per_layer: int, budget: int) -> list[list[int]]:
    """`layers` cut into consecutive groups whose token states fit `budget` bytes (at least one layer each)."""
    size = max(1, budget // max(bytes_per_layer, 1))
    layers = list(layers)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def probe_attention_layers(features: FeatureSet, states: TokenStates, layers: Sequence[int], settings: ProbeConfig,
                           seed: int, max_train_examples: int | None) -> tuple[list[RunResult], dict[str, Any]]:
    """Train, select on validation, then score test once, for the attention readout at the given layers."""
    num_labels = len(features.label_names)
    labels = features.labels("train")
    train_index = torch.from_numpy(train_indices(labels.numpy(), max_train_examples, seed))
    train_y, val_y, test_y = labels[train_index], features.labels("validation"), features.labels("test")
    tokens = sum(states.manifest["splits"][split]["tokens"] for split in ("train", "validation"))
    results, info = [], {"epochs_run": 0, "heads": 0}
    for group in layer_groups(layers, tokens * states.manifest["hidden_size"] * 4, STATES_BUDGET):
        train, val = states.rows("train", group), states.rows("validation", group)
        fitted = fit_attention(train, train_index, train_y, val, val_y, group, settings, num_labels, seed)
        val_logits, _ = fitted.scores(val, settings.batch_size)
        del train, val
        test_logits, readout = fitted.scores(states.rows("test", group), settings.batch_size)
        info = {"epochs_run": max(info["epochs_run"], fitted.epochs_run), "heads": info["heads"] + fitted.heads}
        for i, layer in enumerate(group):
            val_metrics = metrics_of(val_logits[i], val_y, num_labels)
            test_metrics = metrics_of(test_logits[i], test_y, num_labels)
            probs = test_logits[i].softmax(-1)
            predictions = pd.DataFrame({"id": features.ids("test").numpy(), "label": test_y.numpy(),
                                        "prediction": probs.argmax(-1).numpy(), "probs": list(probs.numpy())})
            results.append(RunResult(
                layer=layer,
                metrics={"val/acc": val_metrics["acc"], "val/f1": val_metrics["f1"], "test/acc": test_metrics["acc"],
                         "test/f1": test_metrics["f1"], "n_test": len(test_y), "n_train": len(train_index),
                         "n_labels": num_labels, **{f"attention/{k}": float(v[i]) for k, v in readout.items()}},
                selection={"weight_decay": fitted.weight_decays[i], "epoch": fitted.epochs[i], "monitor": "val/acc"},
                timings={},
                predictions=predictions.sort_values("id").reset_index(drop=True),
                features=features.key,
            ))
    return results, info


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """Probe mode, pooling=attention: the feature entry of (backbone, task) (its labels and ids; encoded on
    first use), the token states of `job.layers` (encoded on first use), then every layer's heads.
    `logger` is unused: the job owner logs results."""
    started = time.perf_counter()
    features, encode_s = features_for(job.backbone, job.task, job.cache_dir, job.mode.encode_batch_tokens)
    states, states_s = token_states_for(features, job.backbone, job.task, job.cache_dir, job.mode.encode_batch_tokens,
                                        job.layers)
    train_started = time.perf_counter()
    results, info = probe_attention_layers(features, states, job.layers, job.mode, job.seed,
                                           job.task.max_train_examples)
    train_s = time.perf_counter() - train_started
    log.info("attention s%d: %d heads on layers %s in %.1f s (%d epochs)", job.seed, info["heads"], list(job.layers),
             train_s, info["epochs_run"])
    for result in results:
        result.timings = {"encode_s": encode_s + states_s, "token_states_s": states_s, "train_s": train_s,
                          "total_s": time.perf_counter() - started}
    return results
