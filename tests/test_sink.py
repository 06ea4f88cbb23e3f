"""Sink or summary: the measures that tell an input-dependent h_0 from a near-constant attention sink.

Known answers: a constant readout (an encoder's layer-0 [CLS], a decoder's h_0 whose first token is
the same for every input) has variance share 0 and centered cosine 0, even with a massive dimension;
CKA of a readout with itself is 1 and equals the HSIC formula with centering matrices (computed
independently here), unmoved by a constant vector added to either view; Sun et al.'s criterion on
hand-made states; SmolLM2's first position is massive at layers 12-28; uniform attention with equal
value norms gives equal raw and value-weighted shares; the per-head value norms, weighted by the
attention and summed with the output bias, rebuild the output projection's output (a hand
computation, BERT, MPNet and SmolLM2's grouped-query attention); mean-ablating a decoder's constant h_0
changes no readout (1e-6) while zero-ablating it does, and mean-ablating a varying content position
changes the outputs; the sink-free mean (mean_nosink) of a decoder whose h_0 is one vector for every input
is the mean over its other tokens, written out, unmoved by a massive h_0; the verdict and the report's
section: tests/test_sink_report.py. Unit of replication: the text (rows of a split or sample); each test is
one draw.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poolbench.backbones import forward_hidden_states
from poolbench.diagnose.ablation import ablation_layers, blocks, replaced_state
from poolbench.diagnose.dependence import centered_cosine, linear_cka, variance_share
from poolbench.diagnose.eager import eager_pass, value_projections
from poolbench.diagnose.massive import massive_frame, summarize_massive
from poolbench.diagnose.sink_attention import first_position_shares
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.jobs import run_job
from poolbench.pooling import first_token_index, massive_positions, pool
from test_backbones import load, needs  # noqa: F401 (load: a fixture)
from test_diagnose import TEXTS, needs_smollm2
from test_diagnose_mode import SMALL

RNG = np.random.default_rng(0)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels and H = I - 11^T/n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# --------------------------------------------------------------------------- input dependence


def test_a_constant_readout_has_no_input_dependence_even_with_a_massive_dimension():
    sink = np.full((50, 16), 0.1, dtype=np.float32)
    sink[:, 3] = 5000.0  # a massive activation: plain cosine between texts is 1 either way
    assert variance_share(sink) == 0 and centered_cosine(sink, n_pairs=200) == 0
    assert linear_cka(sink, RNG.normal(size=(50, 8))) == 0  # 0/0 defined as 0
    assert variance_share(np.zeros((5, 4))) == 0


def test_variance_share_is_the_varying_energy_and_ignores_where_the_cloud_sits():
    x = RNG.normal(size=(400, 8))
    x -= x.mean(0)
    assert variance_share(x) == pytest.approx(1.0)
    shifted = x + 10.0  # every dimension shifted by 10: mean energy 8 x 100 more
    expected = (x ** 2).sum(1).mean() / ((shifted ** 2).sum(1).mean())
    assert variance_share(shifted) == pytest.approx(expected)
    # the centered cosine sees only the cloud: the same pairs whatever the shift
    assert centered_cosine(shifted, 300, seed=1) == pytest.approx(centered_cosine(x, 300, seed=1), abs=1e-9)


def test_centered_cosine_tells_one_shared_direction_from_no_shared_direction():
    direction = RNG.normal(size=6)
    one_direction = 7.0 + np.outer(RNG.normal(size=100), direction)  # pairs are +1 or -1 after centering
    normed = (one_direction - one_direction.mean(0))
    normed /= np.linalg.norm(normed, axis=1, keepdims=True)
    assert np.allclose(np.abs(normed @ normed.T), 1)
    # isotropic variation has no shared direction: its centered cosine is ~ -1/(n-1), i.e. ~0
    assert abs(centered_cosine(7.0 + RNG.normal(size=(400, 64)), n_pairs=2000)) < 0.02


def test_linear_cka_matches_the_hsic_formula_and_is_one_for_a_readout_with_itself():
    x = RNG.normal(size=(60, 12))
    y = x @ RNG.normal(size=(12, 5)) + 0.5 * RNG.normal(size=(60, 5))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    # invariant to a constant vector (a sink) added to either view, to rotation and to isotropic scale
    q, _ = np.linalg.qr(RNG.normal(size=(12, 12)))
    assert linear_cka(3 * x @ q + 1000.0, y - 50.0) == pytest.approx(hsic_cka(x, y), rel=1e-8)
    with pytest.raises(ValueError, match="same texts"):
        linear_cka(x, y[:-1])


def test_dependence_in_a_diagnose_job_on_real_backbones(make_cfg, tmp_path):
    """Layer-0 [CLS] of an encoder and h_0 of a decoder whose first token is always [CLS] are constant."""
    bert = run_job(make_cfg(*SMALL, "backbone=tiny-bert", "task.max_train_examples=64"), tmp_path / "bert")
    layer0, last = bert[0].metrics, bert[-1].metrics
    assert layer0["dependence/cls/variance_share"] == 0 and layer0["dependence/cls/centered_cosine"] == 0
    assert layer0["dependence/cka"] == 0
    assert 0 < last["dependence/cls/variance_share"] <= 1 and 0 < last["dependence/mean/variance_share"] <= 1
    assert 0 < last["dependence/cka"] <= 1
    assert "dependence/mean_nospecial/variance_share" in last
    gpt2 = run_job(make_cfg(*SMALL, "backbone=tiny-gpt2", "task.max_train_examples=64"), tmp_path / "gpt2")
    for record in gpt2:
        assert record.metrics["dependence/cls/variance_share"] == 0
        assert record.metrics["dependence/cls/centered_cosine"] == 0
        assert record.metrics["dependence/mean/variance_share"] > 1e-4


# --------------------------------------------------------------------------- massive activations


def test_massive_activation_ratio_and_criterion_on_hand_made_states():
    hidden = torch.ones(2, 4, 8)  # two texts, right-padded; position 0 carries a massive dimension in text 0
    hidden[0, 0, 5] = 5000.0  # the median over the text's 32 activations stays 1
    hidden[1, 0, 2] = 50.0  # 50x the median, and below 100 in value: not massive
    hidden[1, 3] = 1e6  # padding: in no median and no readout
    hidden[0, 2, 7] = -2000.0  # a content token with a massive negative activation
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    special = torch.tensor([[1, 0, 0, 1], [1, 0, 1, 0]]).bool()  # [CLS] x x [SEP] / [CLS] x [SEP] pad
    frame = massive_frame([hidden], mask, special).set_index(["position", "text"])
    assert frame.loc[("first", 0), ["ratio", "max_abs", "top_dim", "massive"]].tolist() == [5000, 5000, 5, 1]
    assert frame.loc[("first", 1), ["ratio", "top_dim", "massive"]].tolist() == [50, 2, 0]
    assert frame.loc[("content", 0), ["ratio", "top_dim", "massive"]].tolist() == [2000, 7, 1]
    assert frame.loc[("last", 1), "ratio"] == 1  # [SEP] of text 1 sits at position 2
    summary = summarize_massive(frame.reset_index()).set_index("position")
    assert summary.loc["first", "massive"] == 0.5 and summary.loc["first", "top_dim"] in (2, 5)
    assert summary.loc["content", "n_texts"] == 2


@needs_smollm2
def test_smollm2_first_position_carries_massive_activations_in_middle_layers(load):
    run = eager_pass(load("smollm2-135m"), TEXTS, values=False)
    frame = summarize_massive(massive_frame(run.hidden_states, run.attention_mask, run.special))
    first = frame[frame["position"] == "first"].set_index("layer")
    assert first.loc[0, "massive"] == 0  # embeddings: no massive activation
    assert (first.loc[12:28, "massive"] == 1).all() and (first.loc[12:28, "ratio"] > 1000).all()  # every text


# --------------------------------------------------------------------------- sink vs value


def test_uniform_attention_with_equal_value_norms_gives_equal_raw_and_value_shares():
    attention = torch.full((2, 3, 5, 5), 1 / 5)
    raw, value = first_position_shares(attention, torch.full((2, 3, 5), 2.5), torch.tensor([0, 1]))
    torch.testing.assert_close(raw, value)
    torch.testing.assert_close(raw, torch.full_like(raw, 0.2, dtype=torch.float64))
    # a long value vector at position 0 raises its value share above its raw share, and by the formula
    norms = torch.ones(2, 3, 5)
    norms[:, :, 0] = 4.0
    _, value = first_position_shares(attention, norms, torch.tensor([0, 0]))
    torch.testing.assert_close(value, torch.full_like(value, 4 / 8, dtype=torch.float64))


def hand_attention_output(backbone, texts) -> tuple[list, list, list]:
    """Per block: the value projection's output, the output projection's output, and the attentions."""
    projections = value_projections(backbone.model)
    values, outputs = [], []
    hooks = [p.value.register_forward_hook(lambda m, i, o: values.append(o.detach())) for p in projections]
    hooks += [p.output.register_forward_hook(lambda m, i, o: outputs.append(o.detach())) for p in projections]
    try:
        run = eager_pass(backbone, texts, values=True)
    finally:
        for hook in hooks:
            hook.remove()
    return run, values, outputs


@pytest.mark.parametrize("name", ["tiny-bert", pytest.param("smollm2-135m", marks=needs_smollm2),
                                  pytest.param("mpnet-base", marks=needs("mpnet-base"))])
def test_value_norms_are_the_heads_contributions_that_rebuild_the_attention_output(load, name):
    """By hand: per head h and key j, v_j^(kv head of h) @ W_O[:, h]^T; summed with the attention weights
    over keys and heads, plus the output bias, it is the output projection's output (SmolLM2: 9 heads
    on 3 key-value heads, so the grouped-query mapping is checked too)."""
    backbone = load(name)
    run, values, outputs = hand_attention_output(backbone, TEXTS[:3])
    projections = value_projections(backbone.model)
    real = run.attention_mask.bool()
    for block, (p, v, out, attention) in enumerate(zip(projections, values, outputs, run.attentions)):
        heads, kv_heads = p.heads, p.kv_heads
        head_dim = v.shape[-1] // kv_heads
        rebuilt = torch.zeros_like(out, dtype=torch.float64) + p.output.bias.double() if p.output.bias is not None \
            else torch.zeros_like(out, dtype=torch.float64)
        norms = torch.empty(run.value_norms[block].shape, dtype=torch.float64)
        for h in range(heads):
            kv = h // (heads // kv_heads)
            contribution = (v[..., kv * head_dim:(kv + 1) * head_dim].double()
                            @ p.output.weight[:, h * head_dim:(h + 1) * head_dim].double().T)  # [batch, seq, hidden]
            norms[:, h] = contribution.norm(dim=-1)
            rebuilt += attention[:, h].double() @ contribution
        torch.testing.assert_close(run.value_norms[block].double(), norms, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rebuilt[real], out[real].double(), rtol=1e-3, atol=1e-4)


def test_gpt2s_fused_projection_is_not_guessed(load):
    assert value_projections(load("tiny-gpt2").model) is None
    assert eager_pass(load("tiny-gpt2"), TEXTS[:2]).value_norms is None


def test_massive_and_sink_measures_in_a_diagnose_job(make_cfg, tmp_path):
    records = run_job(make_cfg(*SMALL, "backbone=tiny-bert", "task.max_train_examples=64"), tmp_path / "bert")
    for record in records:
        m = record.metrics
        assert {"massive/first/ratio", "massive/last/massive", "massive/content/top_dim"} <= set(m)
        assert m["massive/first/ratio"] >= 1
        if record.factors.layer > 0:
            assert 0 <= m["sink/value"] <= 1 and 0 <= m["sink/raw_low"] <= m["sink/raw"] <= m["sink/raw_high"] <= 1
        else:
            assert not any(key.startswith("sink/") for key in m)
    gpt2 = run_job(make_cfg(*SMALL, "backbone=tiny-gpt2"), tmp_path / "gpt2")
    assert not any(key.startswith("sink/") for key in gpt2[-1].metrics) and "massive/first/ratio" in gpt2[-1].metrics


# --------------------------------------------------------------------------- the sink-free mean


def test_mean_nosink_of_a_decoder_whose_h0_is_one_vector_for_every_input(load):
    """tiny-gpt2 reads MiniLM's tokenizer: every text starts with [CLS], so its causal h_0 is the same vector
    for every input at every layer. mean_nosink is the mean over the other real tokens, written out per text
    (the random model has no massive activation: checked with numpy's median), and does not move when that
    h_0 is replaced by a massive constant, which drags the plain mean of every text towards one vector."""
    backbone = load("tiny-gpt2")
    batch = tokenize_texts(backbone, TEXTS)
    mask = batch["attention_mask"]
    rows, first = torch.arange(len(TEXTS)), first_token_index(mask.bool())
    with torch.inference_mode():
        states = forward_hidden_states(backbone.model, batch)
    for hidden in states:
        h0 = hidden[rows, first]
        torch.testing.assert_close(h0, h0[:1].expand_as(h0))  # one vector for every input
        for text, (row, real) in enumerate(zip(hidden.double().numpy(), mask.bool().numpy())):
            tokens = row[real]
            assert np.abs(tokens).max() <= 1000 * np.median(np.abs(tokens)) or np.abs(tokens).max() <= 100
            torch.testing.assert_close(pool(hidden, mask, "mean_nosink")[text].double(),
                                       torch.from_numpy(tokens[1:].mean(0)), rtol=1e-5, atol=1e-6)
        sunk = hidden.clone()
        sunk[rows, first] = 0.0
        sunk[rows, first, 3] = 5e4  # a sink as Sun et al. find it: one huge dimension at position 0
        assert massive_positions(sunk, mask)[rows, first].all()
        torch.testing.assert_close(pool(sunk, mask, "mean_nosink"), pool(hidden, mask, "mean_nosink"))
        means = torch.nn.functional.normalize(pool(sunk, mask, "mean"), dim=-1)
        assert (means @ means.T).min() > 0.99  # the plain mean is the sink for every text


@needs_smollm2
def test_smollm2s_mean_without_its_sink_is_input_dependent_where_its_plain_mean_is_not(load):
    """The issue's measurement: at SmolLM2's layers 12-28 the first word is a massive sink, and in the middle of
    that range the plain means of different texts have cosine 0.99+ (measured here: 0.996-1.000 at layers 12 and
    20 for these four texts; 0.95-1.00 at layer 28); without position 0 (and any massive position) every pair's
    cosine falls (0.73-0.90 here)."""
    backbone = load("smollm2-135m")
    batch = tokenize_texts(backbone, TEXTS)
    with torch.inference_mode():
        states = forward_hidden_states(backbone.model, batch)
    mask = batch["attention_mask"]
    off_diagonal = ~torch.eye(len(TEXTS), dtype=torch.bool)
    for layer in (12, 20, 28):
        assert massive_positions(states[layer], mask)[torch.arange(len(TEXTS)), first_token_index(mask.bool())].all()
        mean, nosink = (torch.nn.functional.normalize(pool(states[layer], mask, p), dim=-1)
                        for p in ("mean", "mean_nosink"))
        pairs, pairs_nosink = (mean @ mean.T)[off_diagonal], (nosink @ nosink.T)[off_diagonal]
        assert (pairs_nosink < pairs).all() and pairs_nosink.mean() < 0.9
        if layer < 28:
            assert pairs.min() > 0.99


# --------------------------------------------------------------------------- ablation of position 0


def test_replaced_state_replaces_exactly_there_and_moves_what_reads_it(load):
    """Mean-ablating a position whose vector varies (the first content token) changes the outputs; the
    replaced state is the replacement, every other position of that layer is untouched."""
    backbone = load("tiny-bert")
    batch = tokenize_texts(backbone, TEXTS)
    first = first_token_index(batch["attention_mask"].bool())
    rows = torch.arange(len(TEXTS))
    with torch.inference_mode():
        clean = forward_hidden_states(backbone.model, batch)
    replacement = clean[1][rows, first + 1].mean(0)  # the content token's mean over these texts
    seen = []  # what block 2 reads: block 1's output after the replacement
    reader = blocks(backbone.model)[1].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
    try:
        with replaced_state(backbone.model, 1, first + 1, replacement), torch.inference_mode():
            ablated = forward_hidden_states(backbone.model, batch)
    finally:
        reader.remove()
    torch.testing.assert_close(seen[0][rows, first + 1], replacement.expand(len(TEXTS), -1))
    keep = torch.ones_like(batch["attention_mask"], dtype=torch.bool)
    keep[rows, first + 1] = False
    torch.testing.assert_close(seen[0][keep], clean[1][keep])
    mask = batch["attention_mask"]
    moved = 1 - torch.cosine_similarity(pool(ablated[-1], mask, "mean"), pool(clean[-1], mask, "mean"))
    assert (moved > 1e-5).all()


def test_ablation_layers_are_evenly_spaced_below_the_last():
    assert ablation_layers(2, 4) == [1] and ablation_layers(6, 10) == [1, 2, 3, 4, 5]
    assert ablation_layers(30, 4) == [1, 10, 20, 29] and ablation_layers(12, 0) == []


def test_mean_ablating_a_constant_h0_changes_nothing_and_zero_ablating_it_does(make_cfg, tmp_path):
    """tiny-gpt2 reads MiniLM's tokenizer: every text starts with [CLS], so its causal h_0 is one vector for
    every input at every layer; replacing it by its training mean is replacing it by itself."""
    records = run_job(make_cfg(*SMALL, "backbone=tiny-gpt2", "mode.ablation_texts=16"), tmp_path / "gpt2")
    ablated = records[1].metrics  # layer 1: the only one below the last of 2
    assert records[1].metrics["n_ablation_texts"] == 16 and not any("ablation/" in k for k in records[0].metrics)
    for pooling in ("cls", "mean", "max", "last"):
        assert ablated[f"ablation/mean/{pooling}/distance"] < 1e-6
        assert ablated[f"ablation/mean/{pooling}/accuracy_change"] == 0
        assert 0 <= ablated[f"ablation/{pooling}/clean_accuracy"] <= 1
    for pooling in ("cls", "mean", "last"):
        assert ablated[f"ablation/zero/{pooling}/distance"] > 1e-4  # the constant is read downstream
