"""The attention readout in jobs (tiny-bert, tiny-gpt2 on mcid): the token-state cache, probe jobs,
the refusal under the other protocols, and fine-tuning.

Known answers: the cached token states' means equal the feature cache's `mean` vectors (pooled at
encoding time, an independent path) within float16 rounding (the unit: one text); the fine-tuning
module at q = 0 computes what the mean module computes on the same left-padded batch.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from poolbench.attention_pooling import probe as attention_probe
from poolbench.attention_pooling import token_states as token_states_module
from poolbench.attention_pooling.token_states import _store, token_states_for, token_states_root
from poolbench.backbones import load_backbone
from poolbench.config import ConfigError
from poolbench.jobs import run_job, typed_config
from poolbench.model import PoolingClassifier, decay_groups
from poolbench.records import read_predictions
from poolbench.tasks import SPLITS

PROBE = ["mode=probe", "task=mcid", "logger=none", "backbone=tiny-bert", "mode.max_epochs=3", "pooling=attention"]
TEXTS = ["a short one", "the second text is a little longer than the first", "three words here"]


def test_token_states_are_stored_once_per_layer_beside_an_untouched_feature_entry(make_cfg, features_of, count_calls):
    cfg = make_cfg(*PROBE)
    config = typed_config(cfg)
    features, _ = features_of(cfg)
    # Another test of the session may have stored them: this one watches the first encoding.
    shutil.rmtree(token_states_root(config.paths.cache_dir) / features.key, ignore_errors=True)
    entry_before = {p.name: p.read_bytes() for p in features.directory.iterdir()}

    def states_at(layers):
        return token_states_for(features, config.backbone, config.task, config.paths.cache_dir, 2048, layers)

    states, spent = states_at([0, 2])
    assert spent > 0 and states.layers == [0, 2] and states.manifest["key"] == features.key
    for split in SPLITS:
        rows = states.rows(split, [0, 2])
        assert rows.tokens.dtype == torch.float16 and len(rows) == features.size(split)
        assert int(rows.offsets[-1]) == states.manifest["splits"][split]["tokens"]
        torch.testing.assert_close(rows.means(torch.arange(len(rows))), features.vectors(split, "mean", [0, 2]),
                                   rtol=2e-3, atol=2e-3)
    assert {p.name: p.read_bytes() for p in features.directory.iterdir()} == entry_before

    loads = count_calls(token_states_module, "load_backbone")
    assert states_at([2])[1] == 0 and loads == []  # stored layers: the backbone is not even loaded
    stored = {p.name: p.stat().st_mtime_ns for p in states.directory.glob("*-L*.npy")}
    more, spent = states_at([1, 2])  # one pass adds layer 1 only
    assert spent > 0 and len(loads) == 1 and more.layers == [0, 1, 2]
    assert [entry["layers"] for entry in more.manifest["added"]] == [[0, 2], [1]]
    assert all(more.directory.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in stored.items())
    with pytest.raises(ValueError, match=r"holds no token states of layers \[5\]"):
        more.rows("test", [5])


def test_a_layer_beyond_the_float16_range_is_stored_in_float32_without_loss(tmp_path):
    paths = {0: tmp_path / ".train-L0.npy.partial"}
    arrays = {0: np.lib.format.open_memmap(paths[0], mode="w+", dtype=np.float16, shape=(4, 2))}
    _store(arrays, paths, 0, np.array([2, 3]), np.array([[1.5, -2.0], [3.0, 4.0]], np.float32))
    _store(arrays, paths, 0, np.array([0, 1]), np.array([[1e5, 0.0], [-7e4, 0.25]], np.float32))
    arrays[0].flush()
    del arrays
    stored = np.load(paths[0])
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, [[1e5, 0.0], [-7e4, 0.25], [1.5, -2.0], [3.0, 4.0]])
    assert not list(tmp_path.glob("*.wide"))


def test_an_attention_probe_job_writes_a_record_per_layer_and_layer_groups_change_no_number(make_cfg, tmp_path,
                                                                                          monkeypatch):
    records = run_job(make_cfg(*PROBE, "layer=all"), tmp_path / "run")
    assert [r.factors.layer for r in records] == [0, 1, 2]
    for record in records:
        assert record.factors.pooling == "attention" and record.factors.mode == "probe"
        assert record.selection["weight_decay"] in [0.0, 0.1, 1.0] and 1 <= record.selection["epoch"] <= 3
        assert 0 < record.metrics["attention/breadth"] <= 1 + 1e-6
        assert record.timings["token_states_s"] >= 0 and record.timings["train_s"] > 0
        predictions = read_predictions(record)
        assert len(predictions) == record.metrics["n_test"] == 331
        assert (predictions["prediction"] == predictions["label"]).mean() == pytest.approx(record.metrics["test/acc"])
    monkeypatch.setattr(attention_probe, "STATES_BUDGET", 1)  # one layer per group
    again = run_job(make_cfg(*PROBE, "layer=all", "skip_finished=false"), tmp_path / "again")
    for a, b in zip(records, again):
        assert a.selection == b.selection and a.metrics["val/acc"] == b.metrics["val/acc"]
        assert a.metrics["test/acc"] == b.metrics["test/acc"]
        np.testing.assert_allclose(np.stack(read_predictions(a)["probs"]), np.stack(read_predictions(b)["probs"]),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("protocol", ["few_shot", "learning_curve", "mdl", "control"])
def test_attention_under_another_protocol_is_refused_before_any_work(make_cfg, protocol):
    with pytest.raises(ConfigError, match=f"pooling=attention with mode.protocol={protocol}"):
        make_cfg(*PROBE, f"mode.protocol={protocol}")


def test_the_finetuning_module_starts_as_mean_and_trains_its_query(make_cfg):
    config = typed_config(make_cfg("backbone=tiny-gpt2"))  # left padding
    backbone = load_backbone(config.backbone, config.paths.cache_dir)
    settings = dict(layer=2, num_labels=3, hidden_size=32, lr=1e-3, weight_decay=0.01, warmup_ratio=0.0, dropout=0.1)
    attention = PoolingClassifier(backbone.model, pooling="attention", **settings).eval()
    mean = PoolingClassifier(backbone.model, pooling="mean", **settings).eval()
    mean.head.load_state_dict(attention.head.state_dict())
    batch = dict(backbone.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert batch["attention_mask"][:, 0].min() == 0  # really left-padded
    with torch.no_grad():
        torch.testing.assert_close(attention(batch), mean(batch), rtol=1e-6, atol=1e-6)
    nn.functional.cross_entropy(attention(batch), torch.tensor([0, 1, 2])).backward()
    query = attention.attention.scorer.weight
    assert query.grad.abs().sum() > 0  # the loss reaches q through the softmax
    decayed = decay_groups(attention, 0.01)[0]["params"]
    assert any(p is query for p in decayed)  # the optimiser of configure_optimizers trains (and decays) it


def test_a_finetuning_run_of_attention_finishes(make_cfg, tmp_path):
    [record] = run_job(make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", "pooling=attention",
                                "task.max_train_examples=64"), tmp_path / "run")
    assert record.status == "finished" and record.factors.pooling == "attention" and record.factors.layer == 2
