"""The report's Precision section (report/precision.py) on synthetic records whose answers are known.

The synthetic precision study: 4 tasks x 2 encoder_mlm backbones, probed at layers 2 and 4 (the final
one) with seeds 0, 1, 2 in float32 and in bfloat16, on 200 test examples. In float32, cls is right on
the first 100 examples and mean on the first 160; seed s also gets the last s examples right. The
bfloat16 runs are the float32 runs changed as each study says. The unit of replication of every
interval is the seed (one accuracy difference per seed and setting).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poolbench import records
from poolbench.records import Factors, Record, run_identity, write_record
from poolbench.report import main
from poolbench.report.collect import collect, read_local

N_TEST = 200
LAYERS = (2, 4)
TASKS = ["t0", "t1", "t2", "t3"]
BACKBONES = ["enc-a", "enc-b"]
SEEDS = [0, 1, 2]
RIGHT = {"cls": 100, "mean": 160}  # the first examples each pooling gets right in float32
CLOSENESS = {"precision/cosine": 0.999, "precision/cosine_min": 0.98, "precision/cka": 0.997}


def write_run(root: Path, backbone: str, task: str, pooling: str, seed: int, layer: int, dtype: str,
              right: np.ndarray, metrics: dict | None = None) -> None:
    config = {"backbone": {"name": backbone, "family": "encoder_mlm", "init": "pretrained", "dtype": dtype},
              "task": {"name": task, "max_train_examples": None}, "mode": {"name": "probe"},
              "pooling": {"name": pooling}, "seed": seed, "layer": layer}
    labels = np.arange(N_TEST) % 2
    predictions = pd.DataFrame({"id": [f"ex{i}" for i in range(N_TEST)], "label": labels,
                                "prediction": np.where(right, labels, 1 - labels), "probs": [[0.5, 0.5]] * N_TEST})
    write_record(root / f"{dtype}-{backbone}-{task}-{pooling}-L{layer}-s{seed}", Record(
        run_id=run_identity(config), status="finished", study="precision",
        factors=Factors(backbone=backbone, family="encoder_mlm", init="pretrained", task=task, mode="probe",
                        pooling=pooling, layer=layer, num_layers=max(LAYERS), seed=seed, max_train_examples=None),
        metrics={"test/acc": right.mean(), "test/f1": right.mean(), "n_test": N_TEST, **(metrics or {})},
        timings={"total_s": 1.0}, config=config), predictions)


def float32_right(pooling: str, seed: int) -> np.ndarray:
    example = np.arange(N_TEST)
    return (example < RIGHT[pooling]) | (example >= N_TEST - seed)


def write_study(root: Path, bfloat16_right, closeness=lambda task, layer: CLOSENESS) -> Path:
    """Every setting in float32, and in bfloat16 as `bfloat16_right(float32 right, pooling, seed, layer)` says."""
    for backbone in BACKBONES:
        for task in TASKS:
            for pooling in RIGHT:
                for seed in SEEDS:
                    for layer in LAYERS:
                        right = float32_right(pooling, seed)
                        write_run(root, backbone, task, pooling, seed, layer, "float32", right)
                        write_run(root, backbone, task, pooling, seed, layer, "bfloat16",
                                  bfloat16_right(right.copy(), pooling, seed, layer), closeness(task, layer))
    return root


@pytest.fixture(scope="module")
def fast_records():
    """git_commit runs git twice per record; a constant keeps writing records fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "git_commit", lambda: "abc1234")
        yield


def report_of(root: Path, out: Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    assert main([str(root), "--out", str(out)]) == 0
    return ((out / "REPORT.md").read_text(), pd.read_csv(out / "precision.csv"),
            pd.read_csv(out / "precision_verdicts.csv"))


def one_more_right_at_seed_0(right: np.ndarray, pooling: str, seed: int, layer: int) -> np.ndarray:
    right[190] |= seed == 0  # example 190 is wrong in float32 for every pooling and seed 0..2
    return right


@pytest.fixture(scope="module")
def close_study(tmp_path_factory, fast_records):
    """bfloat16 gets one more example right at seed 0 only: per-seed differences 0.5, 0, 0 points."""
    root = tmp_path_factory.mktemp("close")
    return report_of(write_study(root / "runs", one_more_right_at_seed_0), root / "report")


def test_the_difference_per_setting_is_a_t_interval_over_seeds(close_study):
    _, settings, _ = close_study
    assert len(settings) == len(BACKBONES) * len(TASKS) * len(RIGHT) * len(LAYERS)
    assert (settings["seeds"] == len(SEEDS)).all()
    # Differences 1/200, 0, 0: mean 1/600, sd 1/200/sqrt(3); half-width t(0.975, 2) sd / sqrt(3).
    mean, sd = 1 / 600, (1 / 200) / np.sqrt(3)
    half = 4.302653 * sd / np.sqrt(3)  # t(0.975, 2) from a table
    assert stats.t.ppf(0.975, 2) == pytest.approx(4.302653, rel=1e-6)
    assert settings["diff"].to_numpy() == pytest.approx(mean)
    assert settings["ci_low"].to_numpy() == pytest.approx(mean - half, rel=1e-5)
    assert settings["ci_high"].to_numpy() == pytest.approx(mean + half, rel=1e-5)
    # The paired t statistic is mean / (sd / sqrt(3)) = 1; with 2 degrees of freedom p = 1 - 1/sqrt(3).
    assert settings["p"].to_numpy() == pytest.approx(1 - 1 / np.sqrt(3))
    assert settings["acc_ref"].to_numpy() + mean == pytest.approx(settings["acc_other"].to_numpy())
    assert (settings["cosine"] == 0.999).all() and (settings["cka"] == 0.997).all()


def test_identical_verdicts_within_the_tolerance_make_the_resolved_precision_the_default(close_study):
    report, _, verdicts = close_study
    # encoder_mlm x mean at layers 2, 4 and final: mean beats cls in both precisions.
    assert len(verdicts) == 3 and verdicts["same"].all()
    assert set(verdicts["layer"].astype(str)) == {"2", "4", "final"}
    assert (verdicts["verdict_ref"] == "mean > cls").all() and (verdicts["verdict_other"] == "mean > cls").all()
    assert ("**Decision:** the verdicts are the same in bfloat16 as in float32 in all 3 groups (family x pooling x "
            "layer), and all 32 settings are within 0.3 points (largest: +0.17 points") in report
    assert "becomes the default for probe studies" in report and "keep float32" not in report


def test_the_other_precision_stays_out_of_every_other_table(close_study, tmp_path):
    report, _, _ = close_study
    n = len(BACKBONES) * len(TASKS) * len(RIGHT) * len(SEEDS) * len(LAYERS)
    assert f"| analysed (finished) | {n} |" in report
    assert f"| runs in another precision than float32 (section Precision only) | {n} |" in report
    assert "mix precisions" not in report and "| superseded by a newer config | 0 |" in report
    # A setting that ran in bfloat16 only is analysed as it ran: nothing to pair it with.
    write_run(tmp_path, "enc-c", "t0", "cls", 0, 4, "bfloat16", float32_right("cls", 0))
    write_run(tmp_path, "enc-a", "t0", "cls", 0, 4, "float32", float32_right("cls", 0))
    write_run(tmp_path, "enc-a", "t0", "cls", 0, 4, "bfloat16", float32_right("cls", 0))
    collection = collect(*read_local([tmp_path]))
    assert sorted((r.factors.backbone, r.config["backbone"]["dtype"]) for r in collection.finished) == [
        ("enc-a", "float32"), ("enc-c", "bfloat16")]
    assert [(r.factors.backbone, r.config["backbone"]["dtype"]) for r in collection.precisions] == [
        ("enc-a", "bfloat16")]


def test_a_readout_compared_with_itself_has_difference_zero(tmp_path, fast_records):
    report, settings, verdicts = report_of(
        write_study(tmp_path / "runs", lambda right, *_: right,
                    closeness=lambda task, layer: {"precision/cosine": 1.0, "precision/cosine_min": 1.0,
                                                   "precision/cka": 1.0}), tmp_path / "report")
    assert (settings["diff"] == 0).all() and (settings["ci_low"] == 0).all() and (settings["ci_high"] == 0).all()
    assert settings["p"].isna().all()  # no spread over seeds: nothing to test
    assert verdicts["same"].all() and "becomes the default for probe studies" in report
    assert "| enc-a | cls | 1.000000 / 1.000000 | 1.000000 / 1.000000 |" in report


def test_a_verdict_that_moves_keeps_float32_and_is_named(tmp_path, fast_records):
    def mean_as_cls_at_the_final_layer(right, pooling, seed, layer):
        return float32_right("cls", seed) if pooling == "mean" and layer == max(LAYERS) else right

    def lower_on_t2(task, layer):
        return {**CLOSENESS, "precision/cosine": 0.95 if task == "t2" else 0.999}

    report, settings, verdicts = report_of(write_study(tmp_path / "runs", mean_as_cls_at_the_final_layer, lower_on_t2),
                                           tmp_path / "report")
    moved = verdicts[~verdicts["same"]]
    assert sorted(moved["layer"].astype(str)) == ["4", "final"]
    assert (moved["verdict_ref"] == "mean > cls").all() and (moved["verdict_other"] == "equivalent").all()
    assert verdicts.loc[verdicts["layer"].astype(str) == "2", "same"].all()
    assert ("**Decision:** keep float32 as the default for probe studies: 2 of 3 verdicts moved (encoder_mlm, mean "
            "vs cls, layer 4: mean > cls in float32, equivalent in bfloat16; encoder_mlm, mean vs cls, layer final: "
            "mean > cls in float32, equivalent in bfloat16); 8 of 32 settings differ by more than 0.3 points "
            "(largest: -30.00 points") in report
    outside = settings[settings["diff"].abs() > 0.003]
    assert len(outside) == 8 and (outside["pooling"] == "mean").all() and (outside["layer"] == 4).all()
    # The closeness table shows the lowest over tasks: t2's.
    assert re.search(r"\| enc-a \| mean \| 0\.950000 / 0\.997000 \| 0\.950000 / 0\.997000 \|", report)


def test_a_study_in_one_precision_has_no_precision_section(tmp_path, fast_records):
    for seed in SEEDS:
        for pooling in RIGHT:
            write_run(tmp_path / "runs", "enc-a", "t0", pooling, seed, 4, "float32", float32_right(pooling, seed))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert "## Precision" not in (tmp_path / "report" / "REPORT.md").read_text()
    assert not (tmp_path / "report" / "precision.csv").exists()
