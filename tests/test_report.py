"""report.py on synthetic records whose answers are known.

The synthetic study: 4 tasks x 2 encoder_mlm backbones, probed at their final layer (4) with
seeds 0 and 1, on 200 test examples. cls is right on the first 100 examples, mean on the first 160
(60 more, never fewer), max exactly as cls; seed s also gets the last s examples right, whatever
the pooling. One cell is also probed at layer 2.
Next to the runs lie one failed run, one unreadable record, one job dir that never wrote a record,
and one finished run copied into a second sweep dir.
"""

from __future__ import annotations

import importlib
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import wandb
from omegaconf import OmegaConf

from poolbench import records
from poolbench.records import Factors, Record, run_identity, write_record
from poolbench.report import (
    MultirunReport,
    ReportError,
    bootstrap_ci,
    holm,
    main,
    mcnemar_exact,
    mean_with_ci,
    read_wandb,
    wandb_record,
)
from poolbench.machine import machine_facts
from poolbench.report.collect import machine_name, wandb_layer_records

N_TEST = 200
NUM_LAYERS = 4
TASKS = ["t0", "t1", "t2", "t3"]
BACKBONES = ["enc-a", "enc-b"]
SEEDS = [0, 1]
RIGHT = {"cls": 100, "mean": 160, "max": 100}  # the first examples each pooling gets right


def run_config(backbone: str, task: str, pooling: str, seed: int, layer: int) -> dict:
    return {"backbone": {"name": backbone, "family": "encoder_mlm", "init": "pretrained"},
            "task": {"name": task, "max_train_examples": None}, "mode": {"name": "probe"},
            "pooling": {"name": pooling}, "seed": seed, "layer": layer}


def run_factors(config: dict, layer: int | str, num_layers: int | None) -> Factors:
    """The factors of a synthetic run, as the job owner names them."""
    return Factors(backbone=config["backbone"]["name"], family=config["backbone"]["family"],
                   init=config["backbone"]["init"], task=config["task"]["name"], mode=config["mode"]["name"],
                   pooling=config["pooling"]["name"], layer=layer, num_layers=num_layers, seed=config["seed"],
                   max_train_examples=config["task"]["max_train_examples"])


def write_run(run_dir: Path, backbone: str, task: str, pooling: str, seed: int, layer: int = NUM_LAYERS,
              dtype: str | None = None) -> None:
    """A finished run right on the first RIGHT[pooling] and the last `seed` test examples; `dtype`:
    the precision its config records (none, like the records of the main synthetic study)."""
    example = np.arange(N_TEST)
    right = (example < RIGHT[pooling]) | (example >= N_TEST - seed)
    n_right = int(right.sum())
    labels = example % 2
    predictions = pd.DataFrame({
        "id": [f"ex{i}" for i in example],
        "label": labels,
        "prediction": np.where(right, labels, 1 - labels),
        "probs": [[0.5, 0.5]] * N_TEST,
    })
    config = run_config(backbone, task, pooling, seed, layer)
    if dtype is not None:
        config["backbone"]["dtype"] = dtype
    write_record(run_dir, Record(
        run_id=run_identity(config), status="finished", study="synthetic",
        factors=run_factors(config, layer, NUM_LAYERS),
        metrics={"test/acc": n_right / N_TEST, "test/f1": n_right / N_TEST, "n_test": N_TEST},
        timings={"total_s": 1.0}, config=config,
    ), predictions)


@pytest.fixture(scope="module")
def fast_records():
    """git_commit runs git twice per record; a constant keeps writing records fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "git_commit", lambda: "abc1234")
        yield


@pytest.fixture(scope="module")
def study(tmp_path_factory, fast_records) -> Path:
    root = tmp_path_factory.mktemp("study")
    sweep = root / "sweep1"
    for task in TASKS:
        for backbone in BACKBONES:
            for pooling in RIGHT:
                for seed in SEEDS:
                    write_run(sweep / f"{backbone}-{task}-{pooling}-{seed}", backbone, task, pooling, seed)
    for pooling in RIGHT:
        for seed in SEEDS:
            write_run(sweep / f"layer2-{pooling}-{seed}", "enc-a", "t0", pooling, seed, layer=2)
    # A finished run reused by a second sweep: the same record in two places, one run.
    shutil.copytree(sweep / "enc-a-t0-cls-0", root / "sweep2" / "reused")
    failed = run_config("enc-b", "t3", "last", 0, NUM_LAYERS)
    write_record(sweep / "failed", Record(run_id="failed-run", status="failed", study="synthetic",
                                          factors=run_factors(failed, NUM_LAYERS, None), config=failed,
                                          error="Traceback (most recent call last):\nRuntimeError: out of memory"))
    (sweep / "garbled").mkdir()
    (sweep / "garbled" / records.RECORD_FILE).write_text("{not json")
    (sweep / "killed" / ".hydra").mkdir(parents=True)
    (sweep / "killed" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return root


@pytest.fixture(scope="module")
def report_dir(study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main([str(study), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def comparisons(report_dir) -> pd.DataFrame:
    return pd.read_csv(report_dir / "comparisons.csv")


def test_identical_predictions_give_a_ci_around_zero_and_p_one(comparisons):
    assert mcnemar_exact(pd.Series(np.zeros(N_TEST))) == 1.0
    assert bootstrap_ci(np.zeros(N_TEST)) == (0.0, 0.0)
    same = comparisons[comparisons["pooling"] == "max"]
    assert len(same) == len(TASKS) * len(BACKBONES) + 1
    assert (same["ci_low"] <= 0).all() and (same["ci_high"] >= 0).all()
    assert (same["p"] == 1.0).all() and (same["p_holm"] == 1.0).all()
    assert (same["diff"] == 0).all() and (same["outcome"] == "tie").all()


def test_a_pooling_right_on_60_more_examples_is_significant(comparisons):
    assert mcnemar_exact(pd.Series([1] * 60 + [0] * 140)) == pytest.approx(2 * 0.5**60)
    better = comparisons[comparisons["pooling"] == "mean"]
    assert (better["n_examples"] == N_TEST).all()
    assert (better["n_better"] == 60).all() and (better["n_worse"] == 0).all()
    assert better["diff"].to_numpy() == pytest.approx(60 / N_TEST)
    assert (better["ci_low"] > 0).all() and (better["ci_low"] <= 0.3).all() and (better["ci_high"] >= 0.3).all()
    assert (better["p_holm"] < 1e-10).all() and (better["outcome"] == "win").all()
    assert (better["seeds_significant"] == len(SEEDS)).all()


def test_holm_matches_a_hand_calculation():
    raw = pd.Series([0.01, np.nan, 0.04, 0.03])
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03; max(0.03, 2 * 0.03) = 0.06; max(0.06, 1 * 0.04) = 0.06
    adjusted = holm(raw)
    assert adjusted.tolist() == pytest.approx([0.03, np.nan, 0.06, 0.06], nan_ok=True)
    # sorted 0.2, 0.3, 0.45 -> 3 * 0.2 = 0.6; max(0.6, 2 * 0.3) = 0.6; max(0.6, 1 * 0.45) = 0.6 (running maximum)
    assert holm(pd.Series([0.45, 0.2, 0.3])).tolist() == pytest.approx([0.6, 0.6, 0.6])
    # 4 * 0.3 = 1.2: an adjusted p-value is capped at 1
    assert holm(pd.Series([0.3, 0.3, 0.3, 0.3])).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_holm_is_statsmodels_holm():
    """Against the reference implementation, on random p-values with ties, a p of 1 and NaNs (untested).
    Unit: one family of p-values."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        raw = pd.Series(rng.random(n) ** 3)
        raw.iloc[n // 2] = raw.iloc[0]
        raw.iloc[-1] = 1.0 if n > 1 else raw.iloc[-1]
        assert holm(raw).to_numpy() == pytest.approx(multipletests(raw, method="holm")[1], abs=1e-15)
        with_nan = pd.concat([raw, pd.Series([np.nan])], ignore_index=True)
        assert holm(with_nan).iloc[:n].to_numpy() == pytest.approx(multipletests(raw, method="holm")[1], abs=1e-15)
        assert np.isnan(holm(with_nan).iloc[n])


def test_one_seed_gives_no_interval_and_two_seeds_a_t_interval():
    one = mean_with_ci(pd.Series([0.7]))
    assert one["mean"] == 0.7 and one["n"] == 1 and np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])
    two = mean_with_ci(pd.Series([0.6, 0.8]))
    assert two["ci_low"] == pytest.approx(0.7 - 12.7062 * 0.1, abs=1e-3)  # t(0.975, 1) * sd / sqrt(2), sd = 0.1414


def test_failed_unreadable_missing_and_duplicate_runs_are_counted(report_dir):
    report = (report_dir / "REPORT.md").read_text()
    n_finished = (len(TASKS) * len(BACKBONES) + 1) * len(RIGHT) * len(SEEDS)
    for what, count in [("analysed (finished)", n_finished), ("failed (skipped)", 1),
                        ("unreadable record dirs (skipped)", 1), ("job dirs without a record", 1),
                        ("duplicates counted once", 1), ("finished without per-example predictions", 0)]:
        assert f"| {what} | {count} |" in report
    assert "RuntimeError: out of memory" in report
    assert len(pd.read_csv(report_dir / "runs.csv")) == n_finished


def test_report_files_exist_and_the_verdict_follows_the_data(report_dir):
    for name in ["REPORT.md", "runs.csv", "summary.csv", "comparisons.csv", "across_cells.csv", "table.tex",
                 "accuracy.png", "layers.png", "win_tie_loss.png"]:
        assert (report_dir / name).stat().st_size > 0, name
    report = (report_dir / "REPORT.md").read_text()
    cells = len(TASKS) * len(BACKBONES)
    assert (f"- **encoder_mlm, probe**: mean > cls on {cells} of {cells} cells, significant on {cells} after Holm; "
            "mean < cls on 0, significant on 0") in report
    assert re.search(r"mean > cls on 8 of 8 cells.*→ mean beats cls across cells\.", report)
    # max is cls, example for example: 8 cells x 200 examples without a disagreement are equivalent within a point.
    assert re.search(r"max > cls on 0 of 8 cells, significant on 0 after Holm.*"
                     r"→ max and cls equivalent within ±1\.0 points\.", report)
    assert "fewer than 3 seeds" in report
    for figure in ["accuracy.png", "layers.png", "win_tie_loss.png"]:
        assert f"]({figure})" in report
    summary = pd.read_csv(report_dir / "summary.csv")
    assert len(summary) == (cells + 1) * len(RIGHT) and (summary["acc_n"] == len(SEEDS)).all()
    table = (report_dir / "table.tex").read_text()
    assert r"\toprule" in table and r"\textbf{80.2 $\pm$ 0.4}" in table and "enc-a" in table


def test_the_setup_lists_the_machine_every_run_ran_on(report_dir):
    report = (report_dir / "REPORT.md").read_text()
    n_finished = (len(TASKS) * len(BACKBONES) + 1) * len(RIGHT) * len(SEEDS)
    # Every synthetic record was written here, in this process: one machine, every run.
    assert f"- {machine_name(machine_facts())}: {n_finished} runs" in report
    assert machine_facts()["cpu"] in report
    assert "mix precisions" not in report  # one precision (unrecorded): nothing to warn about


def test_a_study_mixing_precisions_says_so_and_keeps_the_precision_per_run(tmp_path, fast_records):
    """enc-a ran in float32, enc-b in bfloat16: the runs table names each run's precision, and the
    caveats say the verdicts pool both. Unit: one run per (backbone, task, pooling, seed)."""
    for backbone, dtype in [("enc-a", "float32"), ("enc-b", "bfloat16")]:
        for task in TASKS[:2]:
            for pooling in ("cls", "mean"):
                for seed in SEEDS:
                    write_run(tmp_path / "runs" / f"{backbone}-{task}-{pooling}-{seed}", backbone, task, pooling,
                              seed, dtype=dtype)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert runs.groupby("backbone")["dtype"].agg(set).to_dict() == {"enc-a": {"float32"}, "enc-b": {"bfloat16"}}
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "The runs mix precisions (bfloat16: 8 runs, float32: 8 runs)" in report


def test_the_multirun_callback_writes_a_report_into_the_sweep_dir(tmp_path, fast_records):
    for pooling in ("cls", "mean"):
        write_run(tmp_path / f"0_{pooling}", "enc-a", "t0", pooling, seed=0)
    MultirunReport(out=str(tmp_path / "results")).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "mean > cls on 1 of 1 cells" in report and "Wilcoxon over cells not run" in report
    # An experiment's results/ directory gets the same report, built once.
    assert (tmp_path / "results" / "REPORT.md").read_text() == report
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(
        p.name for p in (tmp_path / "report").iterdir())


def test_a_relaunched_sweep_copies_the_report_its_unchanged_records_built_and_rebuilds_otherwise(
        tmp_path, fast_records, monkeypatch):
    collect = importlib.import_module("poolbench.report.collect")  # the module (the package exports a function so named)
    monkeypatch.setattr(collect, "git_commit", lambda: "abc1234")  # a clean checkout
    for pooling in ("cls", "mean"):
        write_run(tmp_path / "sweep1" / f"0_{pooling}", "enc-a", "t0", pooling, seed=0)
    MultirunReport(out=str(tmp_path / "results")).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep1")}}}))
    (tmp_path / "results" / "built-once").touch()  # only a copy of results/ carries it to a sweep dir

    def relaunch(sweep: str, **thresholds) -> set[str]:
        shutil.copytree(tmp_path / "sweep1", tmp_path / sweep, ignore=shutil.ignore_patterns("report"))
        MultirunReport(out=str(tmp_path / "results"), sink=thresholds).on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / sweep)}}}))
        return {path.name for path in (tmp_path / sweep / "report").iterdir()}

    # The same records, settings and code: copied. A threshold changed, or uncommitted code: built.
    assert "built-once" in relaunch("sweep2")
    assert "built-once" not in relaunch("sweep3", min_decodable=0.25)
    monkeypatch.setattr(collect, "git_commit", lambda: "abc1234+dirty")
    assert "built-once" not in relaunch("sweep4") and "INPUTS.sha256" not in relaunch("sweep5")


def test_a_sweep_without_finished_runs_reports_nothing_and_ends_with_exit_status_1(tmp_path, fast_records):
    write_record(tmp_path / "failed", Record(run_id="x", status="failed", study=None, factors=None, config={},
                                             error="boom"))
    with pytest.raises(SystemExit) as ended:  # a failed run: the sweep's exit status says so
        MultirunReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert ended.value.code == 1
    assert not (tmp_path / "report" / "REPORT.md").exists()
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 1


def fake_wandb_run(number: int, task: str, pooling: str, seed: int = 0) -> SimpleNamespace:
    """A W&B run as the API returns one of a layer=-1 job (jobs.make_logger, jobs.log_metrics): the
    factors as configured (layer -1, depth unknown), the metrics plain and as L<layer>/<metric>, and
    the last history row drawn against layer (`layer`, `per_layer/<metric>`), which is no metric."""
    config = run_config("enc-a", task, pooling, seed, -1)
    accuracy = (RIGHT[pooling] + number) / N_TEST
    metrics = {"val/acc": accuracy, "val/f1": accuracy, "test/acc": accuracy, "test/f1": accuracy}
    return SimpleNamespace(
        config={**asdict(run_factors(config, -1, None)), "run_id": run_identity(config), "config": config},
        id=f"wandb{number}{pooling}", state="finished", group="synthetic",
        summary_metrics={**metrics, **{f"L{NUM_LAYERS}/{k}": v for k, v in metrics.items()}, "_runtime": 3.0,
                         "layer": NUM_LAYERS, **{f"per_layer/{k}": v for k, v in metrics.items()},
                         "_wandb": {"runtime": 3}},
        path=["entity", "project", f"run{number}-{pooling}-{seed}"], commit="abc1234",
        created_at="2026-01-01T00:00:00")


def test_a_study_of_local_and_wandb_runs_reports_them_together(study, tmp_path, monkeypatch):
    """W&B runs of cells the local records lack (t4, t5) and of one they hold (t0) join the local
    study at the absolute final layer (4, from their L4/ keys), not as a second "final" layer -1."""
    runs = [fake_wandb_run(i, task, pooling, seed) for i, task in enumerate(["t0", "t4", "t5"])
            for pooling in ("cls", "mean") for seed in (5, 6)]
    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(runs=lambda path, filters: runs))
    assert main([str(study), "--from-wandb", "entity/project", "--group", "synthetic", "--out", str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    t0 = summary[(summary["task"] == "t0") & (summary["backbone"] == "enc-a") & (summary["pooling"] == "cls")]
    assert sorted(t0["layer"]) == [2, 4] and int(t0.loc[t0["layer"] == 4, "acc_n"].iloc[0]) == 4  # 2 local + 2 W&B seeds
    assert set(summary.loc[summary["task"].isin(["t4", "t5"]), "layer"]) == {4}
    assert "| probe | t5 | enc-a | 51.0 ± 0.0 | **81.0 ± 0.0** |" in (tmp_path / "REPORT.md").read_text()


def test_a_wandb_run_of_every_layer_is_a_record_per_layer():
    """A layer=all job logs one W&B run with L0..L4 keys and its run ids in layer order."""
    run = fake_wandb_run(0, "t0", "mean")
    config = run.config["config"]
    run.config |= {"layer": "all", "run_id": [f"id{layer}" for layer in range(NUM_LAYERS + 1)]}
    run.summary_metrics = {f"L{layer}/test/acc": layer / 10 for layer in range(NUM_LAYERS + 1)} | {
        "pretrain/mlm_acc": 0.3}
    layers = wandb_layer_records(run)
    assert [(r.factors.layer, r.factors.num_layers, r.run_id) for r in layers] == [
        (layer, NUM_LAYERS, f"id{layer}") for layer in range(NUM_LAYERS + 1)]
    assert layers[2].metrics == {"test/acc": 0.2, "pretrain/mlm_acc": 0.3} and layers[2].config == config


def test_wandb_runs_without_predictions_fall_back_to_tests_across_cells(tmp_path, monkeypatch):
    tasks = [f"t{i}" for i in range(6)]
    runs = [fake_wandb_run(i, task, pooling) for i, task in enumerate(tasks) for pooling in ("cls", "mean")]
    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(runs=lambda path, filters: runs))
    assert main(["--from-wandb", "entity/project", "--group", "synthetic", "--out", str(tmp_path)]) == 0
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    assert len(comparisons) == 6 and (comparisons["evidence"] == "cells").all()
    assert comparisons["p"].isna().all() and (comparisons["outcome"] == "untested").all()
    report = (tmp_path / "REPORT.md").read_text()
    # Six cells all in favour of mean: the exact two-sided Wilcoxon p is 2 / 2^6.
    assert "mean > cls on 6 of 6 cells" in report and "Wilcoxon over cells p=0.031" in report
    assert "→ mean beats cls across cells" in report
    assert not (tmp_path / "win_tie_loss.png").exists()


def test_a_wandb_run_keeps_the_run_id_it_logged_else_its_wandb_id():
    run = fake_wandb_run(0, "t0", "cls")
    assert wandb_record(run).run_id == run.config["run_id"]
    del run.config["run_id"]
    assert wandb_record(run).run_id == run.id


def test_a_wandb_runs_logged_timings_are_its_timings_not_metrics():
    run = fake_wandb_run(0, "t0", "cls")
    run.summary_metrics |= {"timings/encode_s": 2.0, "timings/total_s": 5.0}  # jobs.log_metrics
    record = wandb_record(run)
    assert record.timings == {"encode_s": 2.0, "total_s": 5.0}
    assert not any(key.startswith("timings/") for key in record.metrics)
    assert wandb_record(fake_wandb_run(0, "t0", "cls")).timings == {"total_s": 3.0}  # logged before: W&B's run time


def test_wandb_without_an_api_key_says_what_to_do(monkeypatch):
    def no_key():
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "Api", no_key)
    with pytest.raises(ReportError, match="set WANDB_API_KEY or use local record dirs"):
        read_wandb("entity/project", "synthetic")
