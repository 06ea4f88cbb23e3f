"""A probe job's W&B run draws accuracy against layer: one history row per layer with `layer` as its
step metric. Read back from a real offline run's .wandb file (WANDB_MODE=offline, the installed
script). The unit is one layer of one job; the known answer is each layer's record."""

import json

import pytest
from test_sweep import wandb_records


def test_a_probe_job_logs_one_history_row_per_layer_against_the_layer_step_metric(poolbench_cli, tmp_path):
    poolbench_cli("mode=probe", "layer=all", "pooling=mean", "backbone=tiny-bert", "task=mcid", "mode.max_epochs=2",
                  "study=layertest")
    [run_dir] = (tmp_path / "outputs" / "runs").iterdir()
    [wandb_file] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(wandb_file)
    rows = []
    for record in records:
        if record.HasField("history"):
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    per_layer = [row for row in rows if "layer" in row]
    assert [row["layer"] for row in per_layer] == [0, 1, 2]
    for row in per_layer:
        record = json.loads((run_dir / "records" / f"mean-L{row['layer']}-s0" / "record.json").read_text())
        for metric in ("val/acc", "test/acc", "test/f1"):
            assert row[f"per_layer/{metric}"] == pytest.approx(record["metrics"][metric])
    metrics = {m.metric.glob_name or m.metric.name: m.metric for m in records if m.HasField("metric")}
    assert metrics["per_layer/*"].step_metric == "layer"  # W&B's x axis for these keys
    assert metrics["per_layer/*"].summary.none  # no summary: its last value would be the last layer's only
    summary = {item.key or "/".join(item.nested_key) for r in records if r.HasField("summary") for item in r.summary.update}
    assert {"L0/test/acc", "L2/test/acc"} <= summary  # what poolbench-report --from-wandb reads
