"""The pooling contract (docs/design.md): right and left padding alike, padding ignored, rows independent."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poolbench.pooling import POOLINGS, pool, pool_all


def reference(row: torch.Tensor, pooling: str) -> torch.Tensor:
    """The readout of one unpadded sequence [length, hidden], by definition."""
    return {"cls": row[0], "last": row[-1], "mean": row.mean(0), "max": row.amax(0)}[pooling].float()


def padded(rows: list[torch.Tensor], side: str, filler: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rows of different lengths, padding with `filler` on one side."""
    seq, hidden = max(len(r) for r in rows), rows[0].shape[1]
    states = torch.full((len(rows), seq, hidden), filler)
    mask = torch.zeros(len(rows), seq, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(seq - len(row), seq)
        states[i, span], mask[i, span] = row, 1
    return states, mask


batches = st.builds(
    lambda lengths, hidden, seed: [torch.randn(n, hidden, generator=torch.Generator().manual_seed(seed + i)) * 3
                                   for i, n in enumerate(lengths)],
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    hidden=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)
fillers = st.sampled_from([0.0, 1e6, -1e6, math.inf, -math.inf, math.nan])


@settings(max_examples=60, deadline=None)
@given(rows=batches, filler=fillers, pooling=st.sampled_from(POOLINGS))
def test_left_and_right_padding_give_the_same_vectors(rows, filler, pooling):
    right = pool(*padded(rows, "right", filler), pooling)
    left = pool(*padded(rows, "left", filler), pooling)
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(rows=batches, filler=fillers, side=st.sampled_from(["left", "right"]), pooling=st.sampled_from(POOLINGS))
def test_a_batch_equals_its_rows_one_by_one_whatever_sits_under_padding(rows, filler, side, pooling):
    pooled = pool(*padded(rows, side, filler), pooling)
    expected = torch.stack([reference(row, pooling) for row in rows])
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)  # also fails on any inf or NaN from padding


def test_max_is_right_when_every_real_state_is_very_negative():
    # A finite fill such as -1e4 would win here; -inf never does.
    rows = [torch.full((2, 3), -5e4), torch.full((4, 3), -7e4)]
    torch.testing.assert_close(pool(*padded(rows, "right", 0.0), "max"), torch.tensor([[-5e4] * 3, [-7e4] * 3]))


def test_bfloat16_states_reduce_in_float32():
    states = torch.randn(2, 300, 16).to(torch.bfloat16)
    mask = torch.ones(2, 300, dtype=torch.long)
    pooled = pool(states, mask, "mean")
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, states.float().mean(1), rtol=1e-6, atol=1e-6)


def test_pool_all_equals_each_pooling():
    states, mask = padded([torch.randn(3, 4), torch.randn(5, 4)], "left", 0.0)
    everything = pool_all(states, mask)
    assert tuple(everything) == POOLINGS
    for pooling in POOLINGS:
        torch.testing.assert_close(everything[pooling], pool(states, mask, pooling))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_row_without_real_tokens_is_an_error(pooling):
    states, mask = padded([torch.randn(3, 4), torch.randn(2, 4)], "right", 0.0)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        pool(states, mask, pooling)


def test_bad_shapes_and_names_are_errors():
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "sum")
    with pytest.raises(ValueError, match="does not match"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 3), "mean")
