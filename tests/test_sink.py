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
is the mean over its other tokens, written out, unmoved by a massive h_0; the verdict follows the issue's
definition at each threshold's boundary; the NSP comparison's paired interval, computed by hand (scipy's t).
Unit of replication: the text (rows of a split or sample) for the measures, the seed for the probes'
accuracy, the pretraining seed for the arms; each test is one draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy import stats

from poolbench.backbones import forward_hidden_states
from poolbench.config import CONF_DIR
from poolbench.diagnose.ablation import ablation_layers, blocks, replaced_state
from poolbench.diagnose.dependence import centered_cosine, linear_cka, variance_share
from poolbench.diagnose.eager import eager_pass, value_projections
from poolbench.diagnose.massive import massive_frame, summarize_massive
from poolbench.diagnose.sink_attention import first_position_shares
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.jobs import run_job
from poolbench.pooling import first_token_index, massive_positions, pool
from poolbench.report.sink import SinkThresholds, nsp_lines, verdict
from poolbench.report.write import MultirunReport, build_report, main
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


# --------------------------------------------------------------------------- verdict and report


def measured(**values) -> dict:
    """One backbone x layer's evidence: by default a summary without an ablation measured at its layer."""
    row = {"variance_share_cls": 0.3, "massive_first": 0.0, "raw": 0.4, "value": 0.4, "decodable": 0.2}
    return row | values


SINK = dict(variance_share_cls=0.0, massive_first=1.0, decodable=0.0)  # SmolLM2's middle layers, by the issue
HURTS = dict(ablation_mean_others=-0.05, ablation_mean_others_high=-0.01)
HARMLESS = dict(ablation_mean_others=-0.01, ablation_mean_others_high=0.01)


def test_the_verdict_follows_the_definition():
    """summary = varying, decodable, mean-ablation hurts; sink = near-constant, massive or discounted, NOT
    decodable, mean-ablation harmless; mixed otherwise. An unmeasured ablation vetoes neither."""
    assert verdict(measured()) == "summary" and verdict(measured(**HURTS)) == "summary"
    assert verdict(measured(**HARMLESS)) == "mixed"  # decodable and varying, but nothing downstream reads it
    assert verdict(measured(**SINK)) == "sink" and verdict(measured(**SINK, **HARMLESS)) == "sink"
    assert verdict(measured(**SINK, **HURTS)) == "mixed"  # something reads its input-specific part
    assert verdict(measured(variance_share_cls=0.01, raw=0.5, value=0.1, decodable=0.0)) == "sink"  # parked
    # MiniLM-L6's layers 1-5 (the issue's measurement): near-constant and discounted, yet h_0 is decodable
    minilm = measured(variance_share_cls=0.001, raw=0.45, value=0.11, decodable=0.6, ablation_mean_others=-0.016,
                      ablation_mean_others_high=0.0)
    assert verdict(minilm) == "mixed"
    assert verdict(minilm, SinkThresholds(min_decodable=0.7)) == "sink"  # a stricter "decodable", from config
    # the cls probe's own loss is no evidence: a decoder's final h_0 is position 0's by construction
    assert verdict(measured(**SINK, ablation_mean_cls=-0.3)) == "sink"
    # a constant embedding-layer [CLS]: nothing attends yet (no attention measured), not massive
    assert verdict(measured(variance_share_cls=0.0, raw=np.nan, value=np.nan, decodable=0.0)) == "mixed"
    assert verdict(measured(decodable=0.0)) == "mixed"  # varies, but nothing a k-NN or probe can use
    assert verdict(measured(decodable=np.nan)) == "mixed"  # unmeasured counts as absent
    assert verdict({"variance_share_cls": 0.0, "massive_first": 1.0}) == "sink"  # missing keys count as absent


@pytest.mark.parametrize(("name", "key", "row", "verdicts"), [
    # (threshold, the evidence it reads, the rest of the row, (verdict exactly at it, verdict just below it))
    ("min_variance_share", "variance_share_cls", dict(massive_first=1.0, decodable=0.2), ("summary", "mixed")),
    ("min_variance_share", "variance_share_cls", dict(massive_first=1.0, decodable=0.0), ("mixed", "sink")),
    ("min_decodable", "decodable", dict(variance_share_cls=0.0, massive_first=1.0), ("mixed", "sink")),
    ("min_decodable", "decodable", dict(), ("summary", "mixed")),
    ("massive_share", "massive_first", dict(variance_share_cls=0.0, decodable=0.0), ("sink", "mixed")),
])
def test_each_threshold_holds_at_its_value_and_not_just_below(name, key, row, verdicts):
    thresholds = SinkThresholds()
    value = getattr(thresholds, name)
    assert verdict(measured(**row, **{key: value}), thresholds) == verdicts[0]
    assert verdict(measured(**row, **{key: np.nextafter(value, 0)}), thresholds) == verdicts[1]


def test_the_value_discount_and_the_harmful_ablation_at_their_boundaries():
    near_constant = dict(variance_share_cls=0.0, decodable=0.0, raw=0.4)  # 0.5 x 0.4 = 0.2 exactly
    assert verdict(measured(**near_constant, value=0.2)) == "mixed"  # not under half: not discounted
    assert verdict(measured(**near_constant, value=np.nextafter(0.2, 0))) == "sink"
    # a loss of exactly harmful_ablation with an interval below 0 hurts; an interval reaching 0 does not
    assert verdict(measured(**SINK, ablation_mean_others=-0.02, ablation_mean_others_high=-1e-9)) == "mixed"
    assert verdict(measured(**SINK, ablation_mean_others=-0.02, ablation_mean_others_high=0.0)) == "sink"
    assert verdict(measured(**SINK, ablation_mean_others=np.nextafter(-0.02, 0),
                            ablation_mean_others_high=-0.01)) == "sink"
    assert verdict(measured(ablation_mean_others=-0.02, ablation_mean_others_high=-1e-9)) == "summary"


def test_thresholds_are_fractions_named_as_the_command_line_and_the_callback_set_them():
    with pytest.raises(ValueError, match=r"min_decodable=1.5 \(--sink-min-decodable, or "
                                         r"hydra.callbacks.report.sink.min_decodable\) is out of range"):
        SinkThresholds(min_decodable=1.5)
    with pytest.raises(ValueError, match=r"unknown sink thresholds \['min_decodeable'\]: use min_variance_share"):
        SinkThresholds.of({"min_decodeable": 0.1})
    assert SinkThresholds.of(None) == SinkThresholds() and SinkThresholds.of({"min_decodable": 0.1}).min_decodable == 0.1


def test_the_sweep_callback_reads_its_sink_thresholds_from_the_hydra_config():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+hydra.callbacks.report.sink.min_decodable=0.25"],
                      return_hydra_config=True)
    assert instantiate(cfg.hydra.callbacks.report).sink == SinkThresholds(min_decodable=0.25)
    with pytest.raises(ValueError, match="unknown sink thresholds"):
        MultirunReport(sink={"decodable": 0.25})


def diagnose_dirs(make_cfg, tmp_path) -> list:
    dirs = []
    for name in ("tiny-bert", "tiny-gpt2"):
        records = run_job(make_cfg(*SMALL, f"backbone={name}", "task.max_train_examples=64"), tmp_path / name)
        dirs.append(tmp_path / name)
        assert records
    return dirs


def test_the_sink_section_from_real_diagnose_and_probe_jobs(make_cfg, tmp_path):
    dirs = diagnose_dirs(make_cfg, tmp_path)
    for pooling in ("cls", "mean", "mean_nosink", "last"):  # the probes beside them, two seeds
        for seed in (0, 1):
            run_job(make_cfg("mode=probe", "task=mcid", "layer=all", "mode.max_epochs=2", "task.max_train_examples=64",
                             "backbone=tiny-gpt2", f"pooling={pooling}", f"seed={seed}"), tmp_path / f"p-{pooling}-{seed}")
            dirs.append(tmp_path / f"p-{pooling}-{seed}")
    report = build_report(dirs, tmp_path / "report")
    text = report.read_text()
    assert "## Sink or summary" in text and "mean-abl. Δothers" in text
    for figure in ("sink-tiny-bert-random-mcid.png", "sink-tiny-gpt2-random-mcid.png"):  # by file name (random init)
        assert f"![{figure}]({figure})" in text and f"`{figure}`:" in text and (tmp_path / "report" / figure).exists()
    table = pd.read_csv(tmp_path / "report" / "sink.csv")
    assert len(table) == 2 * 3 and set(table["verdict"]) <= {"summary", "sink", "mixed"}
    bert0 = table[(table["backbone"] == "tiny-bert") & (table["layer"] == 0)].iloc[0]
    assert bert0["variance_share_cls"] == 0 and bert0["verdict"] == "mixed"  # constant, but no sink
    gpt2 = table[table["backbone"] == "tiny-gpt2"]
    assert (gpt2["variance_share_cls"] == 0).all() and gpt2["raw"].isna().all()  # GPT-2: values not measured
    assert gpt2["probe_above_floor"].notna().all() and table[table["backbone"] == "tiny-bert"]["probe_above_floor"].isna().all()
    assert (gpt2["decodable"] == np.fmax(gpt2["knn_above_floor"], gpt2["probe_above_floor"])).all()
    ablated = table[table["ablation_mean_cls"].notna()]
    assert sorted(ablated["layer"]) == [1, 1]  # the only layer below the last of 2, for both backbones
    gpt2_ablated = ablated[ablated["backbone"] == "tiny-gpt2"]
    assert (gpt2_ablated[["ablation_mean_cls", "ablation_mean_others"]] == 0).all(axis=None)  # a constant h_0
    # the sink-free mean beside the plain mean, paired by seed, from the probe records
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    final = runs[(runs["mode"] == "probe") & (runs["layer"] == 2)].pivot(index="seed", columns="pooling", values="test/acc")
    difference = 100 * (final["mean_nosink"] - final["mean"]).mean()
    assert "### The sink-free mean" in text and f"{difference:+.1f} points" in text and "paired over 2 seeds" in text
    # thresholds from the command line: nothing is 100 points above the floor, so nothing is a summary
    strict = tmp_path / "strict"
    assert main([*map(str, dirs), "--out", str(strict), "--sink-min-decodable", "1"]) == 0
    assert "summary" not in set(pd.read_csv(strict / "sink.csv")["verdict"])
    assert "linear probe is 100 accuracy points above the majority floor" in (strict / "REPORT.md").read_text()


def test_a_threshold_out_of_range_is_refused_by_the_command_line_naming_its_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "out"), "--sink-harmful-ablation", "2"])
    assert "harmful_ablation=2.0 (--sink-harmful-ablation, or hydra.callbacks.report.sink.harmful_ablation) is " \
           "out of range: a fraction in [0, 1]" in capsys.readouterr().err


def arm_rows(verdicts: dict[str, list[str]], shares: dict[str, list[float]], decodable: dict[str, list[float]]):
    """Final-layer (2 of 2) rows of two arms over pretraining seeds 0..n-1, as sink_table gives them."""
    return pd.DataFrame([{"arm": arm, "backbone_seed": float(seed), "task": "mcid", "layer": 2, "num_layers": 2,
                          "verdict": verdict_, "variance_share_cls": shares[arm][seed],
                          "decodable": decodable[arm][seed]}
                         for arm, column in verdicts.items() for seed, verdict_ in enumerate(column)])


def test_the_nsp_question_is_answered_paired_by_pretraining_seed_and_as_a_null_result_when_it_is_one():
    null = nsp_lines(arm_rows({"mlm_pairs": ["mixed", "summary", "mixed"], "mlm_nsp": ["mixed", "mixed", "summary"]},
                              {"mlm_pairs": [0.10, 0.20, 0.30], "mlm_nsp": [0.12, 0.17, 0.33]},
                              {"mlm_pairs": [0.1, 0.2, 0.1], "mlm_nsp": [0.2, 0.1, 0.1]}))
    text = " ".join(null)
    differences = np.array([0.02, -0.03, 0.03])  # mlm_nsp − mlm_pairs per pretraining seed, by hand
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert f"variance share by {100 * differences.mean():+.1f} points ([{100 * (differences.mean() - half):+.1f}, " \
           f"{100 * (differences.mean() + half):+.1f}])" in text
    assert "p0: mixed → mixed; p1: summary → mixed; p2: mixed → summary" in text
    assert "**null result**: there is no sink to turn" in text and "n = 3 pretraining seeds" in text
    turned = nsp_lines(arm_rows({"mlm_pairs": ["sink"] * 3, "mlm_nsp": ["summary"] * 3},
                                {"mlm_pairs": [0.01, 0.0, 0.02], "mlm_nsp": [0.3, 0.35, 0.4]},
                                {"mlm_pairs": [0.0, 0.01, 0.0], "mlm_nsp": [0.3, 0.2, 0.25]}))
    assert "yes: h_0 turns from sink to summary in every pretraining seed" in " ".join(turned)
    assert nsp_lines(arm_rows({"mlm_pairs": ["sink"]}, {"mlm_pairs": [0.0]}, {"mlm_pairs": [0.0]})) == []  # one arm


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
