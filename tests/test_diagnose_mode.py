"""The diagnose mode as a job: one job per (backbone, task, seed) measures every readout at every layer.

Known answers, through the job owner on real (tiny, random) backbones and real data: a causal
decoder's first token puts attention weight 1 on itself and is blind to every erasure, at every
layer; an encoder's layer-0 [CLS] is one vector for all inputs, so its erasure sensitivity is 0, its
training-free accuracies sit exactly at the majority floor and its anisotropy is 1. The unit of the
intervals in a record is the text; here each test is one job.
"""

from __future__ import annotations

import pytest

from poolbench.jobs import ALL_READOUTS, run_job

SMALL = ["mode=diagnose", "task=mcid", "layer=all", "mode.attention_texts=24", "mode.erasure_texts=4",
         "mode.erasure_positions=5", "mode.knn_k=3", "mode.anisotropy_pairs=50"]


def test_a_decoders_first_token_attends_to_itself_and_ignores_erasures(make_cfg, tmp_path):
    records = run_job(make_cfg(*SMALL, "backbone=tiny-gpt2"), tmp_path / "job")
    assert [r.factors.layer for r in records] == [0, 1, 2]
    for record in records:
        m = record.metrics
        assert record.factors.pooling == ALL_READOUTS and record.predictions is None
        assert m["erasure/cls/all"] == pytest.approx(0, abs=1e-12)
        assert m["erasure/mean/all"] > 1e-6  # the mean does move
        if record.factors.layer > 0:
            assert m["attention/first/self"] == pytest.approx(1, abs=1e-9)
            assert m["attention/first/entropy"] == pytest.approx(0, abs=1e-9)
            assert m["attention/last/self"] < 1
        else:  # the embedding output has no attention
            assert not any(key.startswith("attention/") for key in m)


def test_an_encoders_layer0_cls_is_constant_and_the_job_covers_every_readout(make_cfg, tmp_path):
    overrides = [*SMALL, "backbone=tiny-bert", "task.max_train_examples=64"]
    records = run_job(make_cfg(*overrides), tmp_path / "first")
    layer0 = records[0].metrics
    assert layer0["erasure/cls/all"] == pytest.approx(0, abs=1e-12)
    assert layer0["geometry/cls/centroid"] == layer0["geometry/cls/knn"] == layer0["geometry/floor"]
    assert layer0["geometry/cls/anisotropy"] == pytest.approx(1, abs=1e-9)
    assert layer0["n_train"] == 64 and layer0["n_attention_texts"] == 24 and layer0["n_erasure_texts"] == 4
    for pooling in ("cls", "mean", "max", "last"):  # every readout, in tenths where a sampled position fell
        keys = {key for key in records[-1].metrics if key.startswith(f"erasure/{pooling}/") and "_" not in key[8:]}
        assert f"erasure/{pooling}/all" in keys and keys <= {f"erasure/{pooling}/{b}" for b in [*"0123456789", "all"]}
    for position in ("first", "last"):
        row = records[-1].metrics
        mass = sum(row[f"attention/{position}/{kind}"] for kind in ("self", "special", "content"))
        assert mass == pytest.approx(1, abs=1e-6)  # the three kinds partition a row (float32 softmax)
    # The pooling is not a factor of diagnose: a sweep over it finds the first job's runs finished.
    again = run_job(make_cfg(*overrides, "pooling=cls"), tmp_path / "again")
    assert [r.reused_from for r in again] == [r.dir for r in records]


def test_a_pair_task_is_refused_with_a_reason(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="sentence-pair task: diagnose reads single texts"):
        run_job(make_cfg(*SMALL, "backbone=tiny-bert", "task=nsp_bbc"), tmp_path / "job")
