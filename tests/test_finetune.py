"""Fine-tuning end to end: a tiny random backbone in-process, then the packaged MiniLM-L6 on mcid."""

import json

import pandas as pd
import pytest

from poolbench.assets import Unavailable
from poolbench.config import ConfigError
from poolbench.jobs import run_job as run
from poolbench.records import RECORD_FILE, Factors, read_predictions, read_record


def test_smoke_training_writes_a_complete_record(make_cfg, tmp_path):
    cfg = make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", "pooling=cls", "task.max_train_examples=128")
    [record] = run(cfg, tmp_path / "run")
    saved = read_record(tmp_path / "run" / "records" / "cls-L2-s0")
    assert saved.status == "finished" and saved.run_id == record.run_id
    assert saved.factors == Factors(backbone="tiny-bert", family="encoder_nsp", init="random", task="mcid",
                                    mode="finetune", pooling="cls", layer=2, num_layers=2, seed=0,
                                    max_train_examples=128)
    assert saved.metrics["n_train"] == 128
    assert saved.config["pooling"]["name"] == "cls"
    predictions = read_predictions(saved)
    assert len(predictions) == saved.metrics["n_test"]
    assert (predictions["prediction"] == predictions["probs"].map(lambda p: p.argmax())).all()
    accuracy = (predictions["prediction"] == predictions["label"]).mean()
    assert accuracy == pytest.approx(saved.metrics["test/acc"], abs=1e-6)
    assert not (tmp_path / "outputs" / "checkpoints" / record.run_id).exists()  # removed once tested


def test_the_same_config_and_seed_give_the_same_metrics_and_a_finished_run_is_reused(make_cfg, tmp_path):
    cfg = make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", "skip_finished=false")
    [first] = run(cfg, tmp_path / "a")
    [second] = run(cfg, tmp_path / "b")
    assert first.run_id == second.run_id and first.metrics == second.metrics
    reused = make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke")
    [third] = run(reused, tmp_path / "c")
    reused_dir = tmp_path / "c" / "records" / "mean-L2-s0"
    assert json.loads((reused_dir / RECORD_FILE).read_text())["reused_from"] == third.reused_from == second.dir
    assert pd.read_parquet(reused_dir / "predictions.parquet").equals(read_predictions(second))


def test_a_failing_run_leaves_a_failed_record_and_a_clear_error(make_cfg, tmp_path):
    cfg = make_cfg("backbone=tiny-bert", "backbone.source=local", f"backbone.location={tmp_path / 'nowhere'}",
                   "task=mcid", "trainer=smoke")
    with pytest.raises(Unavailable, match=r"holds no config.json"):
        run(cfg, tmp_path / "run")
    failed = read_record(tmp_path / "run")
    assert failed.status == "failed" and "holds no config.json" in failed.error


def test_a_layer_the_backbone_lacks_is_refused_before_any_work(make_cfg, tmp_path):
    cfg = make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", "layer=7")
    with pytest.raises(ConfigError, match=r"layer=7 is out of range for a backbone with 2 layers"):
        run(cfg, tmp_path / "run")
    refused = read_record(tmp_path / "run")
    assert refused.status == "refused" and "layer=7 is out of range" in refused.error


@pytest.mark.integration
def test_packaged_minilm_learns_mcid(make_cfg, tmp_path):
    cfg = make_cfg("backbone=minilm-l6", "task=mcid", "pooling=mean", "trainer.max_epochs=2", "mode.lr=1e-4")
    [record] = run(cfg, tmp_path / "run")
    # 16 intents: chance is about 0.06-0.2 (majority class); a working pipeline is far above it.
    assert record.metrics["test/acc"] > 0.6, record.metrics
    assert record.metrics["n_test"] == 331
