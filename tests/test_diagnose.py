"""The diagnose measures on known answers: real backbones where the answer is exact, arrays otherwise.

Known answers: a uniform attention row has entropy log n; attention rows sum to 1 over real tokens;
a causal decoder's first real token attends only to itself (weight 1) and is blind to every later
token (erasure sensitivity 0); an encoder's layer 0 (embeddings) puts the same vector at [CLS] for
every input, so its cls readout is insensitive to erasure, has anisotropy 1 and sits exactly at the
majority-class floor; at layer 0 mean pooling moves only through the erased token's own embedding;
k-NN and nearest-centroid accuracy equal a brute-force loop.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from poolbench.backbones import PACKAGED, Backbone, forward_hidden_states
from poolbench.diagnose.attention import (attention_metrics, eager_attention, entropy, readout_attention,
                                          summarize_attention)
from poolbench.diagnose.erasure import (erasure_sensitivity, neutral_token, relative_bin, summarize_erasure)
from poolbench.diagnose.geometry import (anisotropy, centroid_predict, cls_mean_cosine, cls_mean_frame, geometry_table,
                                         knn_predict, majority_floor, training_free_accuracy)
from poolbench.diagnose.stats import mean_over_texts
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.encoding import encode_batch
from poolbench.pooling import BASE_POOLINGS, special_mask, special_token_ids
from test_backbones import load  # noqa: F401 (a fixture: one way to load a yaml's backbone, shared)

# Different lengths, so that a batch pads all but the longest.
TEXTS = ["Hi there", "The central bank raised interest rates again.", "Travel insurance for a family holiday",
         "A much longer sentence, with punctuation and numbers like 42, to make the others pad."]


needs_smollm2 = pytest.mark.skipif(not PACKAGED["smollm2-135m"].installed(), reason="smollm2-135m is not installed")


# --------------------------------------------------------------------------- attention


def padded_rows(lengths: list[int], side: str, seq: int, heads: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention [batch, heads, seq, seq], every row uniform over the real tokens, and its mask."""
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, slice(0, n) if side == "right" else slice(seq - n, seq)] = 1
    rows = mask[:, None, None, :].double().expand(-1, heads, seq, -1) / mask.sum(1)[:, None, None, None]
    return rows, mask


def test_entropy_of_a_uniform_row_is_log_n_and_of_a_one_hot_row_zero():
    for n in (1, 2, 7, 100):
        uniform = torch.full((n,), 1 / n, dtype=torch.float64)
        assert entropy(uniform, torch.ones(n, dtype=torch.bool)).item() == pytest.approx(math.log(n), abs=1e-12)
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert entropy(one_hot, torch.ones(3, dtype=torch.bool)).item() == 0


@pytest.mark.parametrize("side", ["right", "left"])
def test_attention_metrics_of_uniform_rows_read_only_real_tokens(side):
    lengths, seq = [3, 5, 1], 5
    attentions, mask = padded_rows(lengths, side, seq)
    special = torch.zeros_like(mask, dtype=torch.bool)
    for b, n in enumerate(lengths):  # the first real token is special ([CLS])
        special[b, seq - n if side == "left" else 0] = True
    frame = attention_metrics([attentions, attentions], mask, special)
    assert len(frame) == 2 * 2 * 2 * 3  # layers x heads x positions x texts
    n = frame["text"].map(dict(enumerate(lengths)))
    assert (frame["n_real"] == n).all() and sorted(frame["layer"].unique()) == [1, 2]
    np.testing.assert_allclose(frame["entropy"], np.log(n), atol=1e-12)
    np.testing.assert_allclose(frame[["breadth", "real_mass"]], 1.0, atol=1e-12)
    np.testing.assert_allclose(frame["self"], 1 / n, atol=1e-12)
    first = frame["position"] == "first"
    np.testing.assert_allclose(frame.loc[first, "special"], 0.0, atol=1e-12)  # its own weight is in `self`
    np.testing.assert_allclose(frame.loc[~first, "special"], (1 / n)[~first].where(n[~first] > 1, 0.0), atol=1e-12)


@pytest.mark.parametrize("name", ["tiny-bert", "minilm-l6"])
def test_real_attention_rows_sum_to_one_over_real_tokens_whichever_side_pads(load, name):
    backbone = load(name)
    before = backbone.model.config._attn_implementation
    frames = {}
    for side in ("right", "left"):
        backbone.tokenizer.padding_side = side
        frames[side] = readout_attention(backbone, TEXTS)
    backbone.tokenizer.padding_side = "right"
    assert backbone.model.config._attn_implementation == before  # switched back after the eager pass
    frame = frames["right"]
    assert len(frame) == backbone.num_layers * backbone.model.config.num_attention_heads * 2 * len(TEXTS)
    np.testing.assert_allclose(frame["real_mass"], 1.0, atol=1e-5)
    np.testing.assert_allclose(frame[["self", "special", "content"]].sum(1), 1.0, atol=1e-5)
    assert (frame["entropy"] >= -1e-9).all() and (frame["entropy"] <= np.log(frame["n_real"]) + 1e-6).all()
    numbers = ["entropy", "breadth", "self", "special", "content", "real_mass"]
    np.testing.assert_allclose(frames["left"][numbers], frame[numbers], atol=1e-5)  # positions count real tokens
    summary = summarize_attention(frame)
    assert len(summary) == backbone.num_layers * 2 and (summary["n_texts"] == len(TEXTS)).all()


def test_eager_attention_computes_the_same_states_and_is_switched_back(load):
    """The weights read belong to the function the other measures run (SDPA): same states, float rounding apart."""
    backbone = load("minilm-l6")
    batch = tokenize_texts(backbone, TEXTS)
    with torch.inference_mode():
        default = forward_hidden_states(backbone.model, batch)
        with eager_attention(backbone.model) as model:
            assert model.config._attn_implementation == "eager"
            eager = forward_hidden_states(model, batch)
    assert backbone.model.config._attn_implementation == "sdpa"
    real = batch["attention_mask"].bool()
    for d, e in zip(default, eager):
        torch.testing.assert_close(e[real], d[real], atol=1e-5, rtol=1e-5)


def test_unknown_tokens_are_content_and_padding_is_neither(load):
    tokenizer = load("minilm-l6").tokenizer
    batch = tokenizer(["hello \u2603 world", "hi"], padding=True, return_tensors="pt")
    assert tokenizer.unk_token_id in batch["input_ids"][0].tolist()  # the snowman is not in the vocabulary
    assert special_mask(special_token_ids(tokenizer), batch["input_ids"], batch["attention_mask"]).tolist() == [
        [True, False, False, False, True], [True, False, True, False, False]]


def assert_first_token_sees_only_itself(backbone: Backbone) -> None:
    backbone.tokenizer.padding_side = "left"
    assert tokenize_texts(backbone, TEXTS)["attention_mask"][:, 0].min() == 0, "the batch must be left-padded"
    frame = readout_attention(backbone, TEXTS)
    first = frame[frame["position"] == "first"]
    assert len(first) == backbone.num_layers * backbone.model.config.num_attention_heads * len(TEXTS)
    np.testing.assert_allclose(first["self"], 1.0, atol=1e-6)
    np.testing.assert_allclose(first["entropy"], 0.0, atol=1e-5)
    np.testing.assert_allclose(first["breadth"], 1 / first["n_real"], rtol=1e-5)
    last = frame[frame["position"] == "last"]
    assert last["self"].max() < 1 - 1e-3  # the last token does look elsewhere: the check is not vacuous


def test_a_causal_decoders_first_token_attends_only_to_itself_under_left_padding(load):
    assert_first_token_sees_only_itself(load("tiny-gpt2"))


@pytest.mark.slow
@needs_smollm2
def test_smollm2_first_token_attends_only_to_itself_and_is_blind_to_later_tokens(load):
    backbone = load("smollm2-135m")
    try:
        assert_first_token_sees_only_itself(backbone)
    finally:
        backbone.tokenizer.padding_side = "right"
    assert neutral_token(backbone.tokenizer) == (216, "space")  # no mask token: a space erases
    frame = erasure_sensitivity(backbone, TEXTS[:2], poolings=("cls", "last"))
    cls = frame[frame["pooling"] == "cls"]
    later = cls[cls["position"] > 0]  # no BOS: the first real token is a word, position 0
    assert len(later) and later["sensitivity"].abs().max() < 1e-6
    assert cls.loc[cls["position"] == 0, "sensitivity"].max() > 1e-3
    assert frame.loc[frame["pooling"] == "last", "sensitivity"].max() > 1e-3


# --------------------------------------------------------------------------- erasure


def test_relative_bins_are_tenths_of_the_content_tokens():
    assert relative_bin(np.arange(20), 20).tolist() == [b for b in range(10) for _ in range(2)]
    assert relative_bin(np.arange(3), 3).tolist() == [0, 3, 6]


def test_a_causal_decoders_cls_is_blind_to_every_later_token(load):
    backbone = load("tiny-gpt2")
    frame = erasure_sensitivity(backbone, TEXTS)
    assert set(frame["pooling"]) == set(BASE_POOLINGS) and set(frame["layer"]) == set(range(backbone.num_layers + 1))
    # MiniLM's tokenizer: the first real token is [CLS], special, so every erased position is later.
    assert (frame["position"] > 0).all()
    assert frame.loc[frame["pooling"] == "cls", "sensitivity"].abs().max() < 1e-6
    assert frame.loc[frame["pooling"] == "mean", "sensitivity"].min() > 0
    # Every content position of every text, each once per (pooling, layer).
    per_text = frame[(frame["pooling"] == "cls") & (frame["layer"] == 0)].groupby("text").size()
    assert (per_text == frame.groupby("text")["n_content"].first()).all()


def test_an_encoders_layer0_cls_is_the_same_whatever_is_erased(load):
    backbone = load("minilm-l6")
    frame = erasure_sensitivity(backbone, TEXTS, max_positions=4, seed=1)
    cls = frame[frame["pooling"] == "cls"]
    assert cls.loc[cls["layer"] == 0, "sensitivity"].abs().max() < 1e-12
    assert cls.loc[cls["layer"] == backbone.num_layers, "sensitivity"].max() > 1e-3  # later layers do move
    assert frame[frame["pooling"] == "cls"].groupby("text").size().max() == 4 * (backbone.num_layers + 1)
    again = erasure_sensitivity(backbone, TEXTS, max_positions=4, seed=1)
    assert again.equals(frame)  # the subsample is seeded
    summary = summarize_erasure(frame)
    assert set(summary["bin"]) <= {*map(str, range(10)), "all"}
    overall = summary[summary["bin"] == "all"]
    assert len(overall) == len(BASE_POOLINGS) * (backbone.num_layers + 1) and (overall["n_texts"] == len(TEXTS)).all()


def test_mean_sensitivity_at_layer0_equals_the_embedding_arithmetic(load):
    """At layer 0 BERT embeds each token alone: LN(W[token] + P[position] + T[0]). Erasing token i
    moves the mean over n real tokens by (e(mask, i) - e(x_i, i)) / n and nothing else."""
    backbone = load("minilm-l6")
    embeddings = backbone.model.embeddings
    mask_id = backbone.tokenizer.mask_token_id
    frame = erasure_sensitivity(backbone, TEXTS[1:3])
    layer0 = frame[(frame["pooling"] == "mean") & (frame["layer"] == 0)]
    with torch.no_grad():
        def embed(token: int, position: int) -> torch.Tensor:
            summed = (embeddings.word_embeddings.weight[token] + embeddings.position_embeddings.weight[position]
                      + embeddings.token_type_embeddings.weight[0]).double()
            ln = embeddings.LayerNorm
            centred = summed - summed.mean()
            return centred / torch.sqrt(centred.pow(2).mean() + ln.eps) * ln.weight.double() + ln.bias.double()

        for t, text in enumerate(TEXTS[1:3]):
            ids = backbone.tokenizer(text)["input_ids"]
            states = torch.stack([embed(token, p) for p, token in enumerate(ids)])
            mean = states.mean(0)
            for row in layer0[layer0["text"] == t].itertuples():
                moved = mean + (embed(mask_id, row.position) - states[row.position]) / len(ids)
                expected = 1 - torch.nn.functional.cosine_similarity(mean, moved, dim=0).item()
                assert row.sensitivity == pytest.approx(expected, abs=1e-6), (t, row.position)
    assert layer0["sensitivity"].min() > 1e-4  # not vacuous


# --------------------------------------------------------------------------- geometry


def test_a_constant_readout_is_at_the_floor_with_anisotropy_one():
    rng = np.random.default_rng(0)
    train_y, test_y = rng.choice(3, size=50, p=[0.2, 0.5, 0.3]), rng.choice(3, size=30)
    vector = rng.normal(size=8)
    train_x, test_x = np.tile(vector, (50, 1)), np.tile(vector, (30, 1))
    scores = training_free_accuracy(train_x, train_y, test_x, test_y, k=10)
    assert scores["centroid"] == scores["knn"] == scores["floor"] == np.mean(test_y == 1)
    assert anisotropy(test_x, n_pairs=200) == pytest.approx(1.0, abs=1e-12)
    assert (centroid_predict(train_x, train_y, test_x) == 1).all() and (knn_predict(train_x, train_y, test_x) == 1).all()


def test_majority_floor_breaks_ties_towards_the_smaller_label():
    assert majority_floor(np.array([2, 2, 1, 1, 0]), np.array([1, 2, 2])) == pytest.approx(1 / 3)


def brute_force(train_x, train_y, test_x, k):
    """(centroid, knn) predictions by explicit loops, ties to the more frequent training class, then the smaller label."""
    counts = Counter(train_y.tolist())
    best = lambda labels: min(labels, key=lambda c: (-counts[c], c))  # noqa: E731
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
    centroids = {c: np.mean([x / np.linalg.norm(x) for x, y in zip(train_x, train_y) if y == c], axis=0)
                 for c in counts}
    centroid, knn = [], []
    for x in test_x:
        scores = {c: cos(x, m) for c, m in centroids.items()}
        centroid.append(best([c for c in scores if scores[c] == max(scores.values())]))
        nearest = sorted(range(len(train_x)), key=lambda j: -cos(x, train_x[j]))[:k]
        votes = Counter(int(train_y[j]) for j in nearest)
        knn.append(best([c for c in votes if votes[c] == max(votes.values())]))
    return np.array(centroid), np.array(knn)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_and_centroid_equal_a_brute_force_loop(k):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(4, 6))
    train_y, test_y = rng.choice(4, size=80, p=[0.4, 0.3, 0.2, 0.1]), rng.choice(4, size=40)
    train_x = centres[train_y] + 1.5 * rng.normal(size=(80, 6))
    test_x = centres[test_y] + 1.5 * rng.normal(size=(40, 6))
    centroid, knn = brute_force(train_x, train_y, test_x, k)
    np.testing.assert_array_equal(centroid_predict(train_x, train_y, test_x), centroid)
    np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k), knn)
    scores = training_free_accuracy(train_x, train_y, test_x, test_y, k)
    assert scores["knn"] == np.mean(knn == test_y) and scores["centroid"] == np.mean(centroid == test_y)


TOPICS = {
    0: ["The striker scored twice in the final", "Our team lost the match on penalties", "She won the tennis open",
        "The coach praised the young goalkeeper", "Fans cheered as the runner crossed the line",
        "The league title was decided on the last day", "He broke the world record in swimming",
        "The referee sent off two players", "Cricket fans waited for the rain to stop",
        "The boxer retired after twenty fights", "A late goal sealed the cup win", "The cyclist took the yellow jersey",
        "Basketball playoffs start next week", "The marathon drew ten thousand runners", "The rugby side won again",
        "The golfer missed a short putt"],
    1: ["The central bank raised interest rates", "Shares fell sharply on Monday", "Inflation rose to four percent",
        "The company reported record profits", "Investors sold government bonds", "The dollar weakened against the euro",
        "Oil prices climbed after the report", "The bank cut its growth forecast", "Mortgage rates hit a new high",
        "The startup raised fifty million dollars", "Unemployment fell last quarter", "Tax revenue beat expectations"],
    2: ["Bake the bread for forty minutes", "Add salt and pepper to the soup", "This pasta sauce needs more garlic",
        "Chop the onions finely", "The cake was rich and chocolatey", "Grill the fish with lemon and herbs",
        "Whisk the eggs with a little milk", "Serve the curry with rice", "Roast the vegetables until golden",
        "The salad needs a sharper dressing", "Simmer the beans for an hour", "Fry the mushrooms in butter"],
}


def encoded(backbone: Backbone, texts: list[str]) -> dict[str, np.ndarray]:
    batch = tokenize_texts(backbone, texts)
    with torch.inference_mode():
        pooled = encode_batch(backbone.model, batch, BASE_POOLINGS).numpy()  # [poolings, layers + 1, n, hidden]
    return {p: pooled[i] for i, p in enumerate(BASE_POOLINGS)}


def test_an_encoders_layer0_cls_scores_at_the_floor_and_later_readouts_above_it(load):
    backbone = load("minilm-l6")
    texts = [(t, y) for y, group in TOPICS.items() for t in group]  # 40 texts, classes 16 / 12 / 12
    train = [i for i in range(len(texts)) if i % 3 != 2]
    test = [i for i in range(len(texts)) if i % 3 == 2]
    labels = np.array([y for _, y in texts])
    vectors = encoded(backbone, [t for t, _ in texts])
    cls0 = vectors["cls"][0]
    assert np.abs(cls0 - cls0[0]).max() == 0  # the same vector for every text
    assert anisotropy(cls0, n_pairs=300) == pytest.approx(1.0, abs=1e-12)
    scores = training_free_accuracy(cls0[train], labels[train], cls0[test], labels[test], k=5)
    assert scores["centroid"] == scores["knn"] == scores["floor"] == np.mean(labels[test] == 0)
    last = training_free_accuracy(vectors["mean"][-1][train], labels[train], vectors["mean"][-1][test],
                                  labels[test], k=5)
    assert last["centroid"] > scores["floor"] + 0.3 and last["knn"] > scores["floor"] + 0.3
    cosines = cls_mean_cosine(vectors["cls"], vectors["mean"])  # [layers + 1, n]
    assert cosines.shape == (backbone.num_layers + 1, len(texts)) and np.all(np.abs(cosines) <= 1 + 1e-9)


def test_the_geometry_table_reads_a_cached_feature_set(make_cfg, features_of):
    found, _ = features_of(make_cfg("mode=probe", "task=mcid", "backbone=tiny-bert"))
    table = geometry_table(found, poolings=("cls", "mean"), k=5, n_pairs=100)
    assert len(table) == 2 * (found.num_layers + 1)
    assert list(table.columns) == ["pooling", "layer", "centroid", "knn", "floor", "anisotropy"]
    train_x, test_x = (found.vectors(split, "mean", [1])[0].numpy() for split in ("train", "test"))
    row = table[(table["pooling"] == "mean") & (table["layer"] == 1)].iloc[0]
    expected = training_free_accuracy(train_x, found.labels("train").numpy(), test_x, found.labels("test").numpy(), 5)
    assert {key: row[key] for key in expected} == expected
    assert row["anisotropy"] == anisotropy(test_x, 100)
    cosines = cls_mean_frame(found)
    assert len(cosines) == (found.num_layers + 1) * found.size("test") and cosines["cosine"].abs().max() <= 1 + 1e-9


# --------------------------------------------------------------------------- summaries


def test_means_over_texts_count_each_text_once_with_a_t_interval():
    import pandas as pd
    frame = pd.DataFrame({"group": "a", "text": [0, 0, 1, 2], "value": [0.0, 2.0, 2.0, 3.0]})  # text 0 averages to 1
    [row] = mean_over_texts(frame, ["group"], ["value"]).to_dict("records")
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd([1, 2, 3]) / sqrt(3)
    assert row["value"] == pytest.approx(2.0) and row["n_texts"] == 3
    assert (row["value_low"], row["value_high"]) == pytest.approx((2.0 - half, 2.0 + half))
