"""report/arms.py on a synthetic runs frame whose answers are known.

The synthetic study: the 5 arms x 3 pretraining seeds of one size ("mini"), probed at their final
layer (4) on 2 tasks with cls, mean, max (and pooler for the sentence-loss arms), 2 probe seeds each:
  acc = BASE[task] + EFFECT[arm][pooling] + SEED_OFFSET[pretraining seed] + wobble(arm, seed) ± JITTER
wobble(arm, pooling, seed) = WOBBLE * (index of the arm in ARMS + of the pooling in POOLINGS) * (seed - 1)
sums to zero over the seeds 0, 1, 2, so every arm's mean is BASE + EFFECT, while the difference
between two arms or two readouts varies a little with the seed (a t-test needs spread). The probe
seeds add +JITTER and -JITTER: their mean is the unit's value.
Layer-2 runs (accuracy 0) and a backbone that is no arm must be ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poolbench.report.arms import (ARMS, POOLED, arm_accuracy, arm_contrasts, arms_section, cls_mean_gap,
                                   intrinsic_table, plot_arms)

TASKS = {"t0": 0.60, "t1": 0.70}
EFFECT = {  # loss effect (mlm_nsp − mlm_pairs): +6 points on cls, 0 on mean and max; format effect 0
    "random": {"cls": 0.00, "mean": 0.02, "max": 0.01},
    "mlm": {"cls": 0.10, "mean": 0.14, "max": 0.12},
    "mlm_pairs": {"cls": 0.10, "mean": 0.14, "max": 0.12},
    "mlm_nsp": {"cls": 0.16, "mean": 0.14, "max": 0.12, "pooler": 0.17},
    "mlm_sop": {"cls": 0.16, "mean": 0.14, "max": 0.12, "pooler": 0.17},
}
SEED_OFFSET = {0: -0.01, 1: 0.0, 2: 0.01}
WOBBLE = 0.002
JITTER = 0.001
MLM_ACC = {"random": 0.001, "mlm": 0.30, "mlm_pairs": 0.29, "mlm_nsp": 0.28, "mlm_sop": 0.27}  # + 0.01 * seed


POOLINGS = ["cls", "mean", "max", "pooler"]


def wobble(arm: str, pooling: str, seed: int) -> float:
    return WOBBLE * (ARMS.index(arm) + POOLINGS.index(pooling)) * (seed - 1)


def unit_value(arm: str, pooling: str, task: str, seed: int) -> float:
    """A unit's accuracy as constructed: what the probe seeds average to."""
    return TASKS[task] + EFFECT[arm][pooling] + SEED_OFFSET[seed] + wobble(arm, pooling, seed)


def pretrain_facts(arm: str, seed: int) -> dict:
    return {"pretrain/mlm_acc": MLM_ACC[arm] + 0.01 * seed,
            "pretrain/nsp_acc": 0.80 + 0.02 * seed if arm == "mlm_nsp" else np.nan,
            "pretrain/sop_acc": 0.70 + 0.02 * seed if arm == "mlm_sop" else np.nan,
            "pretrain/steps": 0.0 if arm == "random" else 1000.0, "pretrain/tokens": 1e6 * (arm != "random"),
            "pretrain/epochs": 2.0 * (arm != "random"), "pretrain/train_s": 100.0 + seed, "pretrain/tokens_per_s": 1e4,
            "pretrain/corpus_documents": 500.0, "pretrain/corpus_sentences": 8000.0, "pretrain/corpus_tokens": 2e5}


def run(arm: str | None, pooling: str, task: str, seed: int | None, probe_seed: int, acc: float, layer: int = 4,
        backbone: str | None = None) -> dict:
    return {"backbone": backbone or f"{arm}-mini", "family": "encoder_mlm", "init": "pretrained", "task": task,
            "mode": "probe", "pooling": pooling, "layer": layer, "num_layers": 4, "seed": probe_seed,
            "max_train_examples": "all", "backbone_seed": seed, "arm": arm, "size": "mini" if arm else None, "test/acc": acc, "test/f1": acc,
            "dir": f"{backbone or arm}/{seed}/{task}/{pooling}/{layer}/{probe_seed}",
            **(pretrain_facts(arm, seed) if arm else {})}


def synthetic_runs() -> pd.DataFrame:
    jitter = {0: JITTER, 1: -JITTER}  # per probe seed
    rows = [run(arm, pooling, task, seed, probe_seed, unit_value(arm, pooling, task, seed) + jitter[probe_seed])
            for arm in ARMS for pooling in EFFECT[arm] for task in TASKS for seed in SEED_OFFSET
            for probe_seed in jitter]
    rows += [run(arm, pooling, "t0", 0, probe_seed, 0.0, layer=2)  # must be ignored: not the final layer
             for arm in ("mlm_pairs", "mlm_nsp") for pooling in ("cls", "mean") for probe_seed in (0, 1)]
    rows += [run(None, "cls", task, None, 0, 0.99, backbone="bert-mini") for task in TASKS]  # no arm: ignored
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return synthetic_runs()


@pytest.fixture(scope="module")
def contrasts(runs) -> pd.DataFrame:
    return arm_contrasts(runs)


def row_of(frame: pd.DataFrame, **where) -> pd.Series:
    chosen = frame[np.logical_and.reduce([frame[column] == value for column, value in where.items()])]
    assert len(chosen) == 1, where
    return chosen.iloc[0]


def test_arm_accuracy_averages_probe_seeds_then_pretraining_seeds(runs):
    accuracy = arm_accuracy(runs)
    assert len(accuracy) == len(TASKS) * sum(len(poolings) for poolings in EFFECT.values())
    assert accuracy["arm"].drop_duplicates().tolist() == ARMS
    nsp = row_of(accuracy, arm="mlm_nsp", pooling="cls", task="t0")
    per_seed = [unit_value("mlm_nsp", "cls", "t0", seed) for seed in SEED_OFFSET]
    assert nsp["mean"] == pytest.approx(0.60 + 0.16) and nsp["n"] == 3 and nsp["seeds"] == "0,1,2"
    assert nsp["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    assert (nsp["ci_low"], nsp["ci_high"]) == pytest.approx((low, high))


def test_the_loss_effect_is_the_constructed_one_with_an_independent_t_interval(contrasts):
    per_seed_nsp = np.array([np.mean([unit_value("mlm_nsp", "cls", t, s) for t in TASKS]) for s in SEED_OFFSET])
    per_seed_pairs = np.array([np.mean([unit_value("mlm_pairs", "cls", t, s) for t in TASKS]) for s in SEED_OFFSET])
    differences = per_seed_nsp - per_seed_pairs
    low, high = stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(), scale=stats.sem(differences))
    loss = row_of(contrasts, contrast="loss effect", pooling="cls", task=POOLED)
    assert (loss["arm"], loss["baseline"]) == ("mlm_nsp", "mlm_pairs")
    assert loss["diff"] == pytest.approx(0.06)
    assert (loss["ci_low"], loss["ci_high"]) == pytest.approx((low, high))
    assert loss["half_width"] == pytest.approx((high - low) / 2)
    assert loss["p"] == pytest.approx(stats.ttest_rel(per_seed_nsp, per_seed_pairs).pvalue)
    for task in TASKS:
        assert row_of(contrasts, contrast="loss effect", pooling="cls", task=task)["diff"] == pytest.approx(0.06)
    assert row_of(contrasts, contrast="pretraining vs none", pooling="cls", task=POOLED)["diff"] == pytest.approx(0.10)


def test_the_pooled_row_counts_pretraining_seeds_not_runs(contrasts):
    """The unit of replication is the pretraining seed: averaged over 2 tasks and 2 probe seeds,
    the row over tasks has n = 3 (the pretraining seeds) and a t-test with df = 2, not n = 12."""
    pooled = contrasts[contrasts["task"] == POOLED]
    assert (pooled["n"] == len(SEED_OFFSET)).all() and (pooled["n_tasks"] == len(TASKS)).all()
    assert (pooled["seeds"] == "0,1,2").all() and (pooled["unpaired_seeds"] == 0).all()
    # Pooler only where both arms have it: SOP vs NSP, not the loss effect (mlm_pairs has no pooler).
    assert set(pooled.loc[pooled["contrast"] == "SOP vs NSP", "pooling"]) == {"cls", "mean", "max", "pooler"}
    assert set(pooled.loc[pooled["contrast"] == "loss effect", "pooling"]) == {"cls", "mean", "max"}


def test_holm_families_and_outcomes(contrasts):
    pooled = contrasts[contrasts["task"] == POOLED]
    assert len(pooled) == 13 and len(contrasts) == 13 * (len(TASKS) + 1)
    smallest = pooled["p"].min()
    assert pooled["p_holm"].max() <= 1 and pooled.loc[pooled["p"].idxmin(), "p_holm"] == pytest.approx(13 * smallest)
    assert row_of(contrasts, contrast="loss effect", pooling="cls", task=POOLED)["outcome"] == "higher"
    assert row_of(contrasts, contrast="pretraining vs none", pooling="cls", task=POOLED)["outcome"] == "higher"
    assert (pooled.loc[pooled["diff"].abs() < 1e-9, "outcome"] == "no detectable difference").all()


def test_unpaired_pretraining_seeds_are_dropped_and_counted(runs):
    # mlm_pairs lacks pretraining seed 2 on t1: t0 keeps 3 pairs, t1 and the average over tasks 2.
    gap = (runs["arm"] == "mlm_pairs") & (runs["backbone_seed"] == 2) & (runs["task"] == "t1")
    contrasts = arm_contrasts(runs[~gap])
    loss = {task: row_of(contrasts, contrast="loss effect", pooling="cls", task=task) for task in [*TASKS, POOLED]}
    assert (loss["t0"]["n"], loss["t0"]["unpaired_seeds"]) == (3, 0)
    assert (loss["t1"]["n"], loss["t1"]["unpaired_seeds"], loss["t1"]["seeds"]) == (2, 1, "0,1")
    assert (loss[POOLED]["n"], loss[POOLED]["unpaired_seeds"], loss[POOLED]["seeds"]) == (2, 1, "0,1")
    nsp = [np.mean([unit_value("mlm_nsp", "cls", t, s) for t in TASKS]) for s in (0, 1)]
    pairs = [np.mean([unit_value("mlm_pairs", "cls", t, s) for t in TASKS]) for s in (0, 1)]
    assert loss[POOLED]["p"] == pytest.approx(stats.ttest_rel(nsp, pairs).pvalue)
    one_seed = arm_contrasts(runs[runs["backbone_seed"].isin([0]) | runs["arm"].isna()])
    assert (one_seed["n"] == 1).all() and one_seed["p"].isna().all() and (one_seed["outcome"] == "untested").all()


def test_cls_mean_gap_and_pooler_gap_per_arm(runs):
    gaps = cls_mean_gap(runs)
    pooled = gaps[gaps["task"] == POOLED]
    for arm in ARMS:
        gap = row_of(pooled, arm=arm, gap="cls − mean")
        assert gap["diff"] == pytest.approx(EFFECT[arm]["cls"] - EFFECT[arm]["mean"]) and gap["n"] == 3
    assert set(pooled.loc[pooled["gap"] == "pooler − cls", "arm"]) == {"mlm_nsp", "mlm_sop"}
    assert row_of(pooled, arm="mlm_nsp", gap="pooler − cls")["diff"] == pytest.approx(0.01)


def test_intrinsic_table_means_and_sds(runs):
    intrinsic = intrinsic_table(runs)
    assert intrinsic["arm"].tolist() == ARMS and (intrinsic["n_seeds"] == 3).all()
    mlm = row_of(intrinsic, arm="mlm")
    assert mlm["mlm_acc_mean"] == pytest.approx(0.31) and mlm["mlm_acc_sd"] == pytest.approx(0.01)
    assert np.isnan(mlm["nsp_acc_mean"]) and mlm["nsp_acc_n"] == 0
    nsp = row_of(intrinsic, arm="mlm_nsp")
    assert nsp["nsp_acc_mean"] == pytest.approx(0.82) and nsp["nsp_acc_sd"] == pytest.approx(0.02)
    assert nsp["steps"] == 1000 and nsp["train_s"] == pytest.approx(101.0)


def test_arms_section_writes_the_csvs_the_figure_and_the_verdict(runs, tmp_path):
    lines = arms_section(runs, tmp_path)
    for name in ["arm_accuracy.csv", "arm_contrasts.csv", "arm_gaps.csv", "intrinsic.csv", "arms.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    text = "\n".join(lines)
    assert lines[0] == "## Pretraining arms" and "](arms.png)" in text
    assert "- **Loss effect (mlm_nsp − mlm_pairs), cls, probe, mini**: +6.0 points [" in text
    assert "n=3 pretraining seeds" in text and "→ higher: mlm_nsp above mlm_pairs." in text
    null = next(line for line in lines if line.startswith("- **Loss effect (mlm_nsp − mlm_pairs), mean"))
    assert "→ null result: the interval [" in null and "] includes 0 (it spans ±" in null
    assert "the MLM accuracy of every trained arm exceeds the random-init control" in text
    assert "Held-out sentence-task accuracy (chance 50%): mlm_nsp NSP 82.0%; mlm_sop SOP 72.0%." in text
    assert "- **cls − mean, mlm_nsp, probe, mini**: +2.0 points" in text and "→ cls above mean." in text
    assert "Holm-adjusted over the 13 contrasts averaged over tasks" in text
    assert "500 documents, 8,000 sentences, 200,000 tokens" in text
    assert len(pd.read_csv(tmp_path / "arm_contrasts.csv")) == 13 * (len(TASKS) + 1)


def test_arms_that_did_not_learn_are_named(runs, tmp_path):
    """random: 0.1, 1.1, 2.1% (mean 1.1%, 95% interval up to 3.6%). mlm_sop within 2x of it; mlm_pairs
    at 3, 4, 5% is above 2x but its interval (down to 1.5%) overlaps random's."""
    undertrained = runs.copy()
    sop, pairs = undertrained["arm"] == "mlm_sop", undertrained["arm"] == "mlm_pairs"
    undertrained.loc[sop, "pretrain/mlm_acc"] = 0.0015 + 0.0001 * undertrained.loc[sop, "backbone_seed"]
    undertrained.loc[pairs, "pretrain/mlm_acc"] = 0.03 + 0.01 * undertrained.loc[pairs, "backbone_seed"]
    text = "\n".join(arms_section(undertrained, tmp_path))
    assert "mlm_pairs, mlm_sop did not learn beyond the random-init control" in text
    assert "The pretraining budget is too small for these arms to learn masked LM" in text
    undertrained.loc[pairs, "pretrain/mlm_acc"] = runs.loc[pairs, "pretrain/mlm_acc"]
    text = "\n".join(arms_section(undertrained, tmp_path))
    assert "mlm_sop did not learn" in text and "too small for this arm" in text


def test_older_records_without_pretraining_facts_do_not_crash(runs, tmp_path):
    older = runs.drop(columns=[column for column in runs if column.startswith("pretrain/")])
    text = "\n".join(arms_section(older, tmp_path))
    assert "Pretraining corpus: not recorded." in text and "no trained arm recorded its held-out MLM accuracy" in text
    assert "→ higher: mlm_nsp above mlm_pairs." in text


def test_no_arm_runs_draw_no_figure(runs, tmp_path):
    assert not plot_arms(runs[runs["arm"].isna()], tmp_path / "arms.png")
    assert not plot_arms(runs.drop(columns=["arm", "backbone_seed"]), tmp_path / "arms.png")
    assert not (tmp_path / "arms.png").exists()
    assert plot_arms(runs, tmp_path / "arms.png") and (tmp_path / "arms.png").stat().st_size > 0


def test_the_size_is_the_recipe_s_whatever_the_backbone_is_called(runs, tmp_path):
    """The size comes from the records' config (backbone.pretrain.size), as the arm does: backbones
    renamed by the user stay one size, and collect.runs_table reads it from the record."""
    from poolbench.records import Factors, Record
    from poolbench.report.collect import runs_table

    renamed = runs.assign(backbone=runs["backbone"].where(runs["arm"].isna(), "my-bert"))
    assert set(arm_accuracy(renamed)["size"]) == {"mini"} and set(intrinsic_table(renamed)["size"]) == {"mini"}
    factors = Factors(backbone="my-bert", family="encoder_nsp", init="pretrained", task="t0", mode="probe",
                      pooling="cls", layer=2, num_layers=2, seed=0, max_train_examples=None, backbone_seed=1)
    config = {"backbone": {"name": "my-bert", "pretrain": {"arm": "mlm_nsp", "size": "small", "seed": 1}}}
    table = runs_table([Record(run_id="r", status="finished", study="s", factors=factors, config=config,
                               metrics={"test/acc": 0.5}, dir=str(tmp_path))], {})
    assert table.loc[0, ["arm", "size"]].tolist() == ["mlm_nsp", "small"]
