"""The attention readout and its probe heads, against known answers.

Readout (the unit: one sequence): q = 0 is `mean` under left and right padding whatever sits under the
padding; any q equals the softmax written out with loops per sequence; padding gets weight 0 and
gradient 0; autograd's gradient passes a finite-difference check. Probe heads: one batched head is torch's
AdamW on the fine-tuning module (AttentionPooling + Linear) fed left-padded batches built here; heads
trained together equal heads trained alone; and on a synthetic task where one marked token carries the
label (the unit: one generated data set, seeded), the trained query beats the mean probe.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from poolbench.attention_pooling.probe import fit_attention, train_attention_heads
from poolbench.attention_pooling.readout import AttentionPooling, attention_pool
from poolbench.attention_pooling.token_states import TokenRows
from poolbench.config import ProbeConfig
from poolbench.model import decay_groups
from poolbench.pooling import pool
from poolbench.probe import fit_heads, fit_standardizer, init_heads, seed_of
from test_pooling import batches, fillers, padded


def softmax_reference(row: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The readout of one unpadded sequence [length, hidden], by definition (scaled scores), in float64."""
    row, query = row.double(), query.double()
    scores = [float(row[t] @ query) / math.sqrt(len(query)) for t in range(len(row))]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return sum(w * row[t] for t, w in enumerate(weights)) / sum(weights)


@settings(max_examples=60, deadline=None)
@given(batch=batches, filler=fillers, side=st.sampled_from(["left", "right"]))
def test_a_zero_query_is_mean_pooling_whatever_sits_under_padding(batch, filler, side):
    states, mask = padded([s for s, _, _ in batch], side, filler)
    pooled, _ = attention_pool(states, mask, torch.zeros(1, states.shape[-1]))
    # Equal up to float32 summation order (weights 1/n, then a matmul, against a sum divided by n).
    torch.testing.assert_close(pooled[0], pool(states, mask, "mean"), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(batch=batches, filler=fillers, side=st.sampled_from(["left", "right"]), seed=st.integers(0, 1000))
def test_every_head_of_every_layer_equals_the_softmax_written_out(batch, filler, side, seed):
    generator = torch.Generator().manual_seed(seed)
    rows = [s for s, _, _ in batch]
    layers = [rows, [r.flip(0) * 0.5 for r in rows]]  # two "layers" of the same lengths
    stacked = [padded(layer, side, filler) for layer in layers]
    states, mask = torch.stack([s for s, _ in stacked]), stacked[0][1]
    query = torch.randn(2, 3, states.shape[-1], generator=generator)  # 2 layers x 3 heads
    pooled, weights = attention_pool(states, mask, query)
    assert pooled.shape == (2, 3, len(rows), states.shape[-1])
    expected = torch.stack([torch.stack([torch.stack([softmax_reference(row, query[l, d]) for row in layers[l]])
                                         for d in range(3)]) for l in range(2)])
    torch.testing.assert_close(pooled.double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, len(rows)))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_gets_zero_weight_and_zero_gradient(side):
    rows = [torch.randn(n, 5, generator=torch.Generator().manual_seed(n)) for n in (2, 6, 4)]
    states, mask = padded(rows, side, math.nan)
    states.requires_grad_()
    query = (torch.randn(1, 5) * 30).requires_grad_()  # sharp: most weight on one token
    pooled, weights = attention_pool(states, mask, query)
    assert (weights[0][~mask.bool()] == 0).all() and torch.isfinite(pooled).all()
    pooled.sum().backward()
    assert (states.grad[~mask.bool()] == 0).all() and torch.isfinite(states.grad).all()
    assert torch.isfinite(query.grad).all()
    other, _ = attention_pool(*padded(rows, "left" if side == "right" else "right", 0.0), query.detach())
    torch.testing.assert_close(pooled.detach(), other)


def test_the_gradient_passes_a_finite_difference_check():
    states, mask = padded([torch.randn(n, 4, generator=torch.Generator().manual_seed(n)) for n in (3, 1, 5)],
                          "left", 0.0)
    states = states.double().requires_grad_()
    query = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, q: attention_pool(s, mask, q)[0], (states, query))


def test_the_module_starts_as_mean_and_its_query_is_decayed_like_a_weight():
    states, mask = padded([torch.randn(3, 6), torch.randn(5, 6)], "left", 0.0)
    module = AttentionPooling(6)
    torch.testing.assert_close(module(states, mask), pool(states, mask, "mean"), rtol=1e-6, atol=1e-6)
    decayed, undecayed = decay_groups(nn.ModuleList([module, nn.Linear(6, 2)]), 0.1)
    assert any(p is module.scorer.weight for p in decayed["params"]) and decayed["weight_decay"] == 0.1
    assert not any(p is module.scorer.weight for p in undecayed["params"])


# ---------------------------------------------------------------------------------------------
# Probe heads

def token_rows(examples: list[torch.Tensor]) -> TokenRows:
    """One layer of ragged examples as the token-state cache stores them."""
    lengths = torch.tensor([len(e) for e in examples])
    return TokenRows(torch.cat(examples).unsqueeze(0), torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]))


def marked_task(n: int, seed: int, hidden: int = 8, labels: int = 4) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Texts of 4-12 tokens; dims 1..labels hold a one-hot label per token. One token, at a random
    position, carries the text's label and is marked by dim 0 = 1; every other token carries a random
    label. Mean pooling sees the label as one vote among 4-12; a query on dim 0 reads it alone."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(labels, (n,), generator=generator)
    examples = []
    for label in y.tolist():
        length = int(torch.randint(4, 13, (1,), generator=generator))
        votes = torch.randint(labels, (length,), generator=generator)
        where = int(torch.randint(length, (1,), generator=generator))
        votes[where] = label
        states = 0.1 * torch.randn(length, hidden, generator=generator)
        states[torch.arange(length), 1 + votes] += 1.0
        states[where, 0] += 1.0
        examples.append(states)
    return examples, y


def test_one_batched_attention_head_is_torch_adamw_on_the_finetuning_module():
    examples, y = marked_task(96, seed=0)
    val_examples, val_y = marked_task(32, seed=1)
    train, val = token_rows(examples), token_rows(val_examples)
    index = torch.arange(96)
    stats = fit_standardizer(train.means(index))
    lr, wd, seed, batch_size = 0.05, 0.1, 3, 16
    heads = train_attention_heads(train.standardized(stats), index, y, val.standardized(stats), val_y, [0], [wd], 4,
                                  seed, lr, batch_size, max_epochs=3, patience=5)

    # The reference: the fine-tuning module's readout + nn.Linear, torch's AdamW, batches padded on the LEFT.
    attention, linear = AttentionPooling(8), nn.Linear(8, 4)
    weight, bias = init_heads([0], [wd], seed, 8, 4)
    with torch.no_grad():
        linear.weight.copy_(weight[0, :, 0].T)
        linear.bias.copy_(bias[0, 0])
    optimizer = torch.optim.AdamW([{"params": [attention.scorer.weight, linear.weight], "weight_decay": wd},
                                   {"params": [linear.bias], "weight_decay": 0.0}], lr=lr)
    mean, std = stats
    order = torch.Generator().manual_seed(seed_of("order", seed))
    snapshots = []  # the reference's parameters after each epoch
    for _ in range(3):
        for batch in torch.randperm(96, generator=order).split(batch_size):
            states, mask = padded([(examples[i] - mean[0]) / std[0] for i in batch.tolist()], "left", 0.0)
            optimizer.zero_grad()
            nn.functional.cross_entropy(linear(attention(states, mask)), y[batch]).backward()
            optimizer.step()
        snapshots.append([p.detach().clone() for p in (attention.scorer.weight[0], linear.weight.T, linear.bias)])
    query, head_weight, head_bias = snapshots[int(heads.epoch[0, 0]) - 1]  # the epoch validation kept
    torch.testing.assert_close(heads.query[0, 0], query, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heads.weight[0, 0], head_weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heads.bias[0, 0], head_bias, atol=1e-5, rtol=1e-4)


def test_attention_heads_trained_together_equal_heads_trained_alone():
    examples, y = marked_task(160, seed=2)
    val_examples, val_y = marked_task(48, seed=3)
    # Two layers: the states, and the states with the marker dimension scaled down (a harder layer).
    scaled = [e * torch.tensor([0.2] + [1.0] * 7) for e in examples]
    val_scaled = [e * torch.tensor([0.2] + [1.0] * 7) for e in val_examples]
    train = TokenRows(torch.stack([token_rows(examples).tokens[0], token_rows(scaled).tokens[0]]),
                      token_rows(examples).offsets)
    val = TokenRows(torch.stack([token_rows(val_examples).tokens[0], token_rows(val_scaled).tokens[0]]),
                    token_rows(val_examples).offsets)
    index = torch.arange(160)
    stats = fit_standardizer(train.means(index))
    train, val = train.standardized(stats), val.standardized(stats)
    decays = [0.0, 0.1]
    together = train_attention_heads(train, index, y, val, val_y, [3, 4], decays, 4, 0, 0.02, 32, 8, 2)
    for i, layer in enumerate([3, 4]):
        one_layer = TokenRows(train.tokens[i:i + 1], train.offsets), TokenRows(val.tokens[i:i + 1], val.offsets)
        for d, wd in enumerate(decays):
            alone = train_attention_heads(one_layer[0], index, y, one_layer[1], val_y, [layer], [wd], 4, 0, 0.02, 32,
                                          8, 2)
            assert together.epoch[i, d] == alone.epoch[0, 0]
            assert together.val_acc[i, d] == alone.val_acc[0, 0]
            torch.testing.assert_close(together.query[i, d], alone.query[0, 0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(together.weight[i, d], alone.weight[0, 0], atol=1e-5, rtol=1e-4)


def test_the_trained_query_reads_the_marked_token_where_mean_pooling_cannot():
    examples, y = marked_task(800, seed=4)
    val_examples, val_y = marked_task(200, seed=5)
    train, val = token_rows(examples), token_rows(val_examples)
    index = torch.arange(800)
    settings_ = ProbeConfig(max_epochs=30, patience=5)
    fitted = fit_attention(train, index, y, val, val_y, [0], settings_, 4, seed=0)
    logits, readout = fitted.scores(val, 256)
    attention_acc = float((logits[0].argmax(-1) == val_y).float().mean())
    mean_heads = fit_heads(train.means(index), y, val.means(torch.arange(200)), val_y, [0], settings_, 4, seed=0)
    mean_acc = float((mean_heads.val_logits[0].argmax(-1) == val_y).float().mean())
    assert attention_acc >= 0.95 and attention_acc - mean_acc >= 0.2, (attention_acc, mean_acc)
    assert float(readout["breadth"][0]) < 0.5  # it left mean pooling (breadth 1) for a few tokens
