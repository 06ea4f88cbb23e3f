"""The W&B dashboard of a study: its specification from a real offline sweep, every key it draws
logged by that sweep's runs, the `wandb sync` command the sweep prints, and the W&B report the
specification builds (wandb-workspaces, not saved: offline nothing can be uploaded)."""

import glob
import json
import shlex
import subprocess
from dataclasses import replace

import pytest

from poolbench import jobs
from poolbench.records import Factors, Record, find_records, write_record
from poolbench.report import dashboard
from test_sweep import wandb_records

SWEEP = ["-m", "mode=probe", "layer=all", "pooling=cls,mean", "study=dash", "backbone=tiny-bert", "task=mcid",
         "mode.max_epochs=2"]


def logged_keys(wandb_file) -> tuple[set[str], set[str]]:
    """The history keys and the summary keys of an offline run."""
    records = wandb_records(wandb_file)
    history = {item.key or "/".join(item.nested_key) for r in records if r.HasField("history")
               for item in r.history.item}
    summary = {item.key or "/".join(item.nested_key) for r in records if r.HasField("summary")
               for item in r.summary.update}
    return history, summary


def test_an_offline_sweep_writes_its_dashboard_spec_whose_keys_its_runs_logged_and_prints_how_to_sync(
        poolbench_cli, tmp_path):
    result = poolbench_cli(*SWEEP)
    [sweep_dir] = (tmp_path / "outputs" / "dash").iterdir()
    spec = json.loads((sweep_dir / "report" / dashboard.SPEC_FILE).read_text())

    # The printed command, run by a shell, names exactly the sweep's offline runs.
    [sync] = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("wandb sync ")]
    offline = sorted(glob.glob(str(sweep_dir / "*" / "wandb" / "offline-run-*")))
    assert len(offline) == 2  # one W&B run per job
    expanded = subprocess.run(["bash", "-c", f"printf '%s\\n' {sync.removeprefix('wandb sync ')}"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert expanded == offline
    assert f"poolbench-dashboard {shlex.quote(str(sweep_dir))} --entity" in result.stdout

    assert spec["study"] == "dash" and spec["spec"] == dashboard.SPEC_VERSION
    headings = [section["heading"] for section in spec["sections"]]
    assert headings == ["Accuracy against layer, per readout", "Per-layer history of every run", "Timings"]
    [cell] = spec["sections"][0]["grids"]  # one probed (backbone, task)
    assert cell["filters"] == {"backbone": "tiny-bert", "task": "mcid", "mode": "probe"}
    [test_acc, _] = cell["panels"]
    assert test_acc == {"kind": "line", "title": "tiny-bert on mcid: test accuracy by layer", "x": "layer",
                        "y": ["per_layer/test/acc"], "groupby": "pooling"}

    # Every key a panel draws is one the runs logged: history keys against `layer`, summary keys for bars.
    history, summary = logged_keys(next((sweep_dir).glob("*/wandb/offline-run-*/run-*.wandb")))
    panels = [p for section in spec["sections"] for grid in section["grids"] for p in grid["panels"]]
    for panel in panels:
        if panel["kind"] == "line":
            assert panel["x"] in history and set(panel["y"]) <= history, panel
        else:
            assert set(panel["metrics"]) <= summary, panel
    records = list(find_records(sweep_dir))
    assert {r.factors.pooling for r in records} == {"cls", "mean"}  # groupby values the runs carry


def record(backbone: str, task: str, mode: str, pooling: str, layer: int) -> Record:
    factors = Factors(backbone=backbone, family="encoder_mlm", init="pretrained", task=task, mode=mode,
                      pooling=pooling, layer=layer, num_layers=6, seed=0, max_train_examples=None)
    return Record(run_id=f"{backbone}{task}{mode}{pooling}{layer}", status="finished", study="s", factors=factors,
                  config={}, metrics={"test/acc": 0.5})


def test_the_spec_has_a_grid_per_cell_and_builds_a_wandb_report_offline():
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from wandb_workspaces.expr import expr_to_filters

    assert dashboard.PER_LAYER == jobs.PER_LAYER and dashboard.TIMINGS == jobs.TIMINGS  # what jobs.log_metrics logs
    records = [record(b, t, "probe", p, layer) for b in ("minilm-l6", "smollm2-135m") for t in ("mcid", "trec")
               for p in ("cls", "mean") for layer in range(3)]
    records += [record("minilm-l6", "mcid", "finetune", p, 6) for p in ("cls", "mean")]
    records += [replace(record("minilm-l3", "mcid", "probe", "cls", 0), status="failed")]  # no cell of its own
    spec = dashboard.dashboard_spec("s", records)
    grids = {section["heading"]: [grid["filters"] for grid in section["grids"]] for section in spec["sections"]}
    assert grids == {
        "Accuracy against layer, per readout": [{"backbone": b, "task": t, "mode": "probe"}
                                                for b in ("minilm-l6", "smollm2-135m") for t in ("mcid", "trec")],
        "Fine-tuned accuracy, per readout": [{"backbone": "minilm-l6", "task": "mcid", "mode": "finetune"}],
        "Per-layer history of every run": [{"mode": "probe"}],
        "Timings": [{}],
    }

    report = dashboard.build(json.loads(json.dumps(spec)), entity="someone")  # as read back from the file
    panel_grids = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    assert len(panel_grids) == 4 + 1 + 1 + 1
    first = panel_grids[0]
    [runset] = first.runsets
    assert (runset.entity, runset.project) == ("someone", "poolbench")
    filters = expr_to_filters(runset.filters)  # the expression W&B will apply, parsed as W&B parses it
    terms = {(f.key.section, f.key.name): f.value for f in filters.filters}
    assert terms == {("run", "group"): "s", ("config", "backbone"): "minilm-l6", ("config", "task"): "mcid",
                     ("config", "mode"): "probe"}
    line = first.panels[0]
    assert isinstance(line, wr.LinePlot) and line.x == "layer" and line.y == ["per_layer/test/acc"]
    assert line.groupby.name == "pooling"
    timings = panel_grids[-1].panels[1]
    assert isinstance(timings, wr.BarPlot) and timings.metrics == ["timings/encode_s", "timings/train_s"]


def test_poolbench_dashboard_writes_the_spec_and_builds_only_online(tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "sweep"
    for i, pooling in enumerate(("cls", "mean")):
        write_record(sweep_dir / f"{i}_pooling={pooling}" / "records" / f"{pooling}-L6-s0",
                     record("minilm-l6", "mcid", "finetune", pooling, 6))
    assert dashboard.main([str(sweep_dir)]) == 0
    spec = json.loads((sweep_dir / "report" / dashboard.SPEC_FILE).read_text())
    assert spec == dashboard.dashboard_spec("s", list(find_records(sweep_dir)))
    assert f"poolbench-dashboard {sweep_dir} --entity" in capsys.readouterr().out
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert dashboard.main([str(sweep_dir), "--entity", "someone"]) == 1  # nothing can be uploaded offline
    assert "not building" in capsys.readouterr().out
