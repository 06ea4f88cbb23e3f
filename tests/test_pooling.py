"""The pooling contract (docs/design.md): right and left padding alike, padding ignored, rows independent.

Every pooling is checked against `reference`, its definition written out with Python loops over one
unpadded sequence (the unit: one sequence); weighted_mean also against sentence-transformers' Pooling
where that package is installed; mean_nosink against Sun et al.'s criterion written out (`massive`) and on
activations planted on each side of its two thresholds.
"""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poolbench.config import Pooling
from poolbench.pooling import BASE_POOLINGS, NOSPECIAL_POOLINGS, POOLINGS, TOKEN_POOLINGS, pool, pool_all, pooled_size


def reference(row: torch.Tensor, pooling: str, special: list[bool], first: torch.Tensor) -> torch.Tensor:
    """The readout of one unpadded sequence, by definition: `row` [length, hidden] the layer read,
    `special` which of its tokens are special, `first` [length, hidden] the first transformer layer."""
    row, first = row.double(), first.double()
    n, hidden = row.shape
    content = [i for i in range(n) if not special[i]]

    def mean(positions, states=row):
        return sum(states[i] for i in positions) / len(positions)

    def maximum(positions):
        return torch.tensor([max(float(row[i, d]) for i in positions) for d in range(hidden)], dtype=torch.double)

    if pooling == "cls":
        out = row[0]
    elif pooling == "last":
        out = row[n - 1]
    elif pooling == "mean":
        out = mean(range(n))
    elif pooling == "max":
        out = maximum(range(n))
    elif pooling == "weighted_mean":  # SGPT: the i-th token (1-based) weighs i
        out = sum((i + 1) * row[i] for i in range(n)) / sum(i + 1 for i in range(n))
    elif pooling == "mean_nospecial":
        out = mean(content)
    elif pooling == "max_nospecial":
        out = maximum(content)
    elif pooling == "mean_nosink":
        kept = [i for i in range(1, n) if not massive(row, i)]
        out = mean(kept) if kept else torch.zeros(hidden, dtype=torch.double)
    elif pooling == "cls_mean":
        out = torch.cat([row[0], mean(range(n))])
    elif pooling == "first_last_avg":
        out = mean(range(n), (first + row) / 2)
    else:
        raise AssertionError(pooling)
    return out.float()


def massive(row: torch.Tensor, i: int) -> bool:
    """Sun et al.'s criterion for token i of one unpadded sequence, by definition: its largest |activation|
    above 100 and above 1,000x the (lower) median of every |activation| of the sequence."""
    magnitudes = [abs(float(v)) for v in row.flatten()]
    largest, median = max(abs(float(v)) for v in row[i]), statistics.median_low(magnitudes)
    return largest > 100 and (largest > 1000 * median if median > 0 else largest > 0)


def padded(rows: list[torch.Tensor], side: str, filler: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rows of different lengths, padding with `filler` on one side."""
    seq, hidden = max(len(r) for r in rows), rows[0].shape[1]
    states = torch.full((len(rows), seq, hidden), filler)
    mask = torch.zeros(len(rows), seq, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(seq - len(row), seq)
        states[i, span], mask[i, span] = row, 1
    return states, mask


def sequences(draw_lengths, hidden, seed):
    """(states, first layer, special flags) per sequence; at least one content token per sequence."""
    out = []
    for i, n in enumerate(draw_lengths):
        generator = torch.Generator().manual_seed(seed + i)
        special = (torch.rand(n, generator=generator) < 0.4).tolist()
        special[int(torch.randint(n, (1,), generator=generator))] = False
        out.append((torch.randn(n, hidden, generator=generator) * 3, torch.randn(n, hidden, generator=generator),
                    special))
    return out


batches = st.builds(sequences, st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 8),
                    st.integers(0, 10_000))
fillers = st.sampled_from([0.0, 1e6, -1e6, math.inf, -math.inf, math.nan])


def pooled(batch, side: str, filler: float, pooling: str) -> torch.Tensor:
    states, mask = padded([s for s, _, _ in batch], side, filler)
    first, _ = padded([f for _, f, _ in batch], side, filler)
    # Special flags under padding are set: pooling must ignore padding whatever it is flagged as.
    flags, _ = padded([torch.tensor(sp, dtype=torch.float).unsqueeze(-1) for _, _, sp in batch], side, 1.0)
    return pool(states, mask, pooling, special=flags[..., 0].bool(), first_layer=first)


@settings(max_examples=60, deadline=None)
@given(batch=batches, filler=fillers, pooling=st.sampled_from(POOLINGS))
def test_left_and_right_padding_give_the_same_vectors(batch, filler, pooling):
    right, left = pooled(batch, "right", filler, pooling), pooled(batch, "left", filler, pooling)
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(batch=batches, filler=fillers, side=st.sampled_from(["left", "right"]), pooling=st.sampled_from(POOLINGS))
def test_a_batch_equals_its_rows_one_by_one_whatever_sits_under_padding(batch, filler, side, pooling):
    expected = torch.stack([reference(states, pooling, special, first) for states, first, special in batch])
    # Also fails on any inf or NaN from padding.
    torch.testing.assert_close(pooled(batch, side, filler, pooling), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_weighted_mean_equals_sentence_transformers_weightedmean(side):
    st_modules = pytest.importorskip("sentence_transformers.models")
    rows = [torch.randn(n, 6, generator=torch.Generator().manual_seed(n)) for n in (1, 4, 7, 3)]
    states, mask = padded(rows, side, 0.0)  # sentence-transformers multiplies padding by 0: a finite filler
    theirs = st_modules.Pooling(6, pooling_mode="weightedmean")({"token_embeddings": states, "attention_mask": mask})
    torch.testing.assert_close(pool(states, mask, "weighted_mean"), theirs["sentence_embedding"], rtol=1e-6,
                               atol=1e-6)


def test_the_pooling_options_are_the_poolings_the_pooler_attention_and_the_prompt_readouts():
    assert [p.value for p in Pooling] == [*POOLINGS, "pooler", "attention", "prompt_last", "label_words"]
    assert [pooled_size(p, 5) for p in POOLINGS] == [5] * (len(POOLINGS) - 2) + [10, 5]


def test_max_is_right_when_every_real_state_is_very_negative():
    # A finite fill such as -1e4 would win here; -inf never does.
    rows = [torch.full((2, 3), -5e4), torch.full((4, 3), -7e4)]
    for pooling in ("max", "max_nospecial"):
        states, mask = padded(rows, "right", 0.0)
        torch.testing.assert_close(pool(states, mask, pooling, special=torch.zeros_like(mask, dtype=torch.bool)),
                                   torch.tensor([[-5e4] * 3, [-7e4] * 3]))


def test_bfloat16_states_reduce_in_float32():
    states = torch.randn(2, 300, 16).to(torch.bfloat16)
    mask = torch.ones(2, 300, dtype=torch.long)
    pooled_ = pool(states, mask, "mean")
    assert pooled_.dtype == torch.float32
    torch.testing.assert_close(pooled_, states.float().mean(1), rtol=1e-6, atol=1e-6)


def test_pool_all_equals_each_pooling():
    states, mask = padded([torch.randn(3, 4), torch.randn(5, 4)], "left", 0.0)
    special = mask.bool() & (torch.arange(5) % 2 == 0)
    everything = pool_all(states, mask, TOKEN_POOLINGS, special=special)
    assert tuple(everything) == TOKEN_POOLINGS
    for pooling in TOKEN_POOLINGS:
        torch.testing.assert_close(everything[pooling], pool(states, mask, pooling, special=special))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_row_without_real_tokens_is_an_error(pooling):
    states, mask = padded([torch.randn(3, 4), torch.randn(2, 4)], "right", 0.0)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        pool(states, mask, pooling, special=torch.zeros_like(mask, dtype=torch.bool), first_layer=states)


@pytest.mark.parametrize("side", ["left", "right"])
def test_mean_nosink_leaves_out_position_0_and_the_massive_positions_only(side):
    """Planted activations on each side of Sun et al.'s two thresholds (value 100, ratio 1,000); the median
    |activation| of each text is 1 (or 0.01), padding holds inf, and a one-token text pools to zeros."""
    text = torch.ones(5, 4)
    text[2, 1] = 5000.0  # massive: > 100 and 5,000x the median 1
    text[3, 0] = 500.0  # > 100 but only 500x: kept
    quiet = torch.full((4, 4), 0.01)
    quiet[0, 2] = 1e4  # position 0, massive: out either way
    quiet[2, 3] = 90.0  # 9,000x the median 0.01, but not > 100: kept
    states, mask = padded([text, quiet, torch.full((1, 4), 7.0)], side, math.inf)
    expected = torch.stack([(text[1] + text[3] + text[4]) / 3, (quiet[1] + quiet[2] + quiet[3]) / 3, torch.zeros(4)])
    torch.testing.assert_close(pool(states, mask, "mean_nosink"), expected)
    torch.testing.assert_close(expected[:2].double(), torch.stack([reference(text, "mean_nosink", [False] * 5, text),
                                                                    reference(quiet, "mean_nosink", [False] * 4, quiet)]).double())


@pytest.mark.parametrize("pooling", NOSPECIAL_POOLINGS)
def test_a_row_of_special_tokens_only_is_an_error_for_the_nospecial_poolings(pooling):
    states, mask = padded([torch.randn(3, 4), torch.randn(2, 4)], "right", 0.0)
    special = torch.tensor([[True, False, True], [True, True, False]])
    with pytest.raises(ValueError, match=r"rows \[1\] hold special tokens only"):
        pool(states, mask, pooling, special=special)


def test_missing_inputs_bad_shapes_and_names_are_errors():
    states, mask = torch.zeros(1, 2, 3), torch.ones(1, 2)
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        pool(states, mask, "sum")
    with pytest.raises(ValueError, match="does not match"):
        pool(states, torch.ones(1, 3), "mean")
    with pytest.raises(ValueError, match=r"need `special`"):
        pool(states, mask, "mean_nospecial")
    with pytest.raises(ValueError, match=r"first_last_avg needs first_layer"):
        pool(states, mask, "first_last_avg")
    with pytest.raises(ValueError, match=r"first_layer shape"):
        pool(states, mask, "first_last_avg", first_layer=torch.zeros(1, 2, 4))
    assert set(BASE_POOLINGS) < set(TOKEN_POOLINGS) < set(POOLINGS)
