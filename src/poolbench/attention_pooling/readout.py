"""The attention readout: a single learned query q, softmax(q . h_t) over the real tokens t.

    score_t  = q . h_t / sqrt(hidden)   for each real token t (padding gets weight exactly 0)
    a        = softmax(score) over the real tokens of the row
    pooled   = sum_t a_t h_t

Choices, and why:
- q starts at 0, so every real token weighs 1/n and the readout starts as `mean` (special tokens
  included, as in `mean`): training moves it away from mean only as far as the data asks, and the
  comparison "learned aggregator vs mean" starts from equality, not from a random pooling.
- No temperature and no bias: q's norm is the inverse temperature, and softmax ignores a constant
  added to every score. One query, as the issue asks (not multi-head): the smallest trained
  aggregator that can hold h_0's job, i.e. put its weight on one position.
- Scores scaled by 1/sqrt(hidden), as in scaled dot-product attention. AdamW moves every coordinate of
  q by about lr per step, so an unscaled score would move by about lr x hidden x |h| per step (~10 at
  the probe's lr 1e-2 on 384 z-scored dimensions): the first steps, driven by a still random head, made
  the softmax near one-hot and it stayed there (minilm-l6 / mcid probe, layers 0-6: test accuracy
  0.76-0.88 unscaled, 0.85-0.88 scaled, mean 0.85-0.88). The scale leaves q = 0 = mean.
- Scores and sums in float32, like every pooling (a bf16 sum over hundreds of tokens loses digits).
- Padding is filled with 0 before anything reads it, never multiplied by the mask: padding may hold
  inf or NaN (0 * NaN = NaN), and a 0 there also keeps its gradient 0.

`attention_pool` is batched over heads: states of several layers [L, B, T, H] and queries [L, D, H]
(D heads per layer: the probe's weight-decay grid) give [L, D, B, H] in two matmuls; a plain batch
[B, T, H] with queries [D, H] gives [D, B, H]. Not one of pooling.POOLINGS: like BERT's pooler it
needs weights, learned with the head, so it is dispatched before `pooling.pool`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from poolbench.pooling import check_inputs

ATTENTION = "attention"  # the readout's name: `pooling=attention`


def attention_pool(hidden_states: Tensor, attention_mask: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Attention-pool `hidden_states` [*, B, T, H] (any float dtype; * = leading dims such as layers)
    with `query` [*, D, H] (D queries per leading index) under `attention_mask` [B, T] (1 = real token,
    left or right padding). Returns float32 (float64 for float64 states) pooled [*, D, B, H] and
    weights [*, D, B, T]; each row of weights sums to 1 over its real tokens and is exactly 0 on padding."""
    if hidden_states.dim() < 3 or query.dim() != hidden_states.dim() - 1:
        raise ValueError(f"hidden_states [*, batch, seq, hidden] {tuple(hidden_states.shape)} needs query "
                         f"[*, queries, hidden] with the same leading dims; got {tuple(query.shape)}")
    if query.shape[-1] != hidden_states.shape[-1]:
        raise ValueError(f"query width {query.shape[-1]} differs from the hidden size {hidden_states.shape[-1]}")
    mask = check_inputs(hidden_states[(0,) * (hidden_states.dim() - 3)], attention_mask)
    dtype = torch.promote_types(hidden_states.dtype, torch.float32)  # float64 stays float64 (gradcheck)
    states = hidden_states.to(dtype)
    if not mask.all():
        states = torch.where(mask.unsqueeze(-1), states, 0.0)
    scores = torch.einsum("...bth,...dh->...dbt", states, query.to(dtype)) / math.sqrt(states.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return torch.einsum("...dbt,...bth->...dbh", weights, states), weights


class AttentionPooling(nn.Module):
    """The readout as fine-tuning trains it, with the backbone and the head, by the same optimiser.

    q is the weight of a bias-free `Linear(hidden, 1)` (the scorer): a 2-D weight, so the BERT recipe
    of `model.decay_groups` decays it like the head's weight (decay pulls q back to 0, i.e. to mean
    pooling), while biases and norms stay undecayed. Initialised to 0: mean pooling at step 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.scorer = nn.Linear(hidden_size, 1, bias=False)
        nn.init.zeros_(self.scorer.weight)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T, H] states and [B, T] mask -> float32 [B, H]."""
        pooled, _ = attention_pool(hidden_states, attention_mask, self.scorer.weight)
        return pooled[0]
