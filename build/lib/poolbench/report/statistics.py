"""The statistics of the report: pure functions of DataFrames, each statistical choice explained
where it is made.

  mean_with_ci / summarize   per setting, mean, sd, n and a 95% t-interval over seeds
  paired_comparison          one pooling against cls in one cell, on matched seeds: the accuracy
                             difference, a paired bootstrap CI over test examples and an exact
                             McNemar (sign) test of the seed-averaged per-example differences
  compare_to_cls             every such comparison, Holm-adjusted together, with an outcome
  across_cells               per family x init x mode x pooling, a Wilcoxon signed-rank test of the
                             per-cell differences at the final layer, Holm-adjusted together

Per-example correctness comes as a mapping from a run's dir (the `dir` column of the runs
frame) to a bool Series indexed by test example id (collect.read_all_predictions reads it).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from poolbench.report.naming import CELL, METRICS, REFERENCE, SETTING, VERDICT_GROUP, at_final_layer, sort_poolings

ALPHA = 0.05  # every test's level, applied to Holm-adjusted p-values
BOOTSTRAP_RESAMPLES = 2000  # resamples of the test examples per percentile interval
BOOTSTRAP_SEED = 0  # one seed for every interval: see bootstrap_ci
# The exact two-sided Wilcoxon test over n cells cannot give p below 2 / 2^n: with fewer than 6
# cells it can never reach 0.05, so it is not run.
MIN_WILCOXON_CELLS = 6


def mean_with_ci(values: pd.Series) -> dict[str, float]:
    """Mean, sd, n and the 95% t-interval over seeds. Seeds are few, hence t rather than normal;
    one seed has no spread and gets no interval (NaN)."""
    values = values.dropna()
    n, mean, sd = len(values), values.mean(), values.std(ddof=1)
    half_width = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) if n > 1 else np.nan
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half_width, "ci_high": mean + half_width}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: test accuracy and F1 over its seeds."""
    rows = []
    for key, group in runs.groupby(SETTING, dropna=False, sort=True):
        row = dict(zip(SETTING, key))
        for metric, name in METRICS.items():
            row |= {f"{name}_{stat}": value for stat, value in mean_with_ci(group[metric]).items()}
        row["seeds"] = ",".join(map(str, sorted(group["seed"])))
        rows.append(row)
    return pd.DataFrame(rows)


def mcnemar_exact(differences: pd.Series) -> float:
    """Exact McNemar test: a two-sided binomial test (p = 1/2) of the examples where the pooling is
    right and cls wrong against those the other way round. Given each example's difference in
    correctness averaged over seeds, it is the sign test of those averages, which is McNemar's test
    itself when there is one seed. No discordant example means no evidence of a difference: p = 1."""
    better, worse = int((differences > 0).sum()), int((differences < 0).sum())
    return 1.0 if better + worse == 0 else stats.binomtest(better, better + worse, 0.5).pvalue


def bootstrap_ci(per_example: np.ndarray) -> tuple[float, float]:
    """Percentile 95% CI of the mean difference, resampling test examples with replacement. Seeded
    per call, so a comparison's interval does not depend on which comparisons ran before it."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    resampled_means = rng.choice(per_example, size=(BOOTSTRAP_RESAMPLES, len(per_example))).mean(axis=1)
    low, high = np.percentile(resampled_means, [2.5, 97.5])
    return float(low), float(high)


def holm(p_values: pd.Series) -> pd.Series:
    """Holm-adjusted p-values over the tested entries; untested (NaN) entries stay NaN and are not
    part of the family."""
    adjusted = pd.Series(np.nan, index=p_values.index)
    tested = p_values.notna()
    if tested.any():
        adjusted[tested] = multipletests(p_values[tested], method="holm")[1]
    return adjusted


COMPARISON_STATS = ["seeds", "n_seeds", "unpaired_seeds", "acc_cls", "acc_pooling", "diff", "n_examples", "n_better",
                    "n_worse", "ci_low", "ci_high", "p", "seed_p_median", "seeds_significant", "evidence"]


def paired_comparison(reference: pd.DataFrame, other: pd.DataFrame, correct: Mapping[str, pd.Series]) -> dict:
    """cls against one other pooling of the same cell; both frames hold the matched seeds, in order.
    `correct`: per run dir, which test examples the run got right (runs without predictions absent).

    The difference is the mean over seeds of the recorded test accuracies. With per-example
    predictions, each example's difference in correctness is averaged over the seeds: the examples,
    shared by every seed, stay the unit that is resampled and tested, so seeds of one example are
    not counted as independent evidence (summing discordant counts over seeds would be). The
    per-seed McNemar p-values are reported alongside (median, and how many seeds reach ALPHA) to
    show whether the seeds agree."""
    result = {
        "acc_cls": reference["test/acc"].mean(),
        "acc_pooling": other["test/acc"].mean(),
        "diff": (other["test/acc"].to_numpy() - reference["test/acc"].to_numpy()).mean(),
        "evidence": "cells",
    }
    pairs = list(zip(reference["dir"], other["dir"]))
    if not all(a in correct and b in correct for a, b in pairs):
        return result
    # Subtracting id-indexed series aligns the examples; dropna keeps those both runs predicted.
    per_seed = [(correct[b].astype(int) - correct[a].astype(int)).dropna() for a, b in pairs]
    per_example = pd.concat(per_seed, axis=1).mean(axis=1)
    if per_example.empty:
        return result  # the two runs share no test example id: nothing to pair
    seed_p = [mcnemar_exact(differences) for differences in per_seed]
    ci_low, ci_high = bootstrap_ci(per_example.to_numpy())
    return result | {
        "n_examples": len(per_example),
        "n_better": int((per_example > 0).sum()),
        "n_worse": int((per_example < 0).sum()),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p": mcnemar_exact(per_example),
        "seed_p_median": float(np.median(seed_p)),
        "seeds_significant": sum(p < ALPHA for p in seed_p),
        "evidence": "examples",
    }


def compare_to_cls(runs: pd.DataFrame, correct: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Every pooling against cls in the same cell, on the seeds both ran.

    The Holm family is every example-level comparison in this report: all poolings, cells, layers
    and modes together, so no win or loss escapes correction for the number of comparisons made."""
    rows = []
    for key, cell in runs.groupby(CELL, dropna=False, sort=True):
        by_pooling = {pooling: group.set_index("seed") for pooling, group in cell.groupby("pooling")}
        reference = by_pooling.pop(REFERENCE, None)
        if reference is None:
            continue  # counted among the caveats
        for pooling, other in by_pooling.items():
            seeds = sorted(set(reference.index) & set(other.index))
            if not seeds:
                continue
            rows.append({
                **dict(zip(CELL, key)),
                "pooling": pooling,
                "seeds": ",".join(map(str, seeds)),
                "n_seeds": len(seeds),
                "unpaired_seeds": len(set(reference.index) ^ set(other.index)),
                **paired_comparison(reference.loc[seeds], other.loc[seeds], correct),
            })
    comparisons = pd.DataFrame(rows, columns=[*CELL, "pooling", *COMPARISON_STATS])
    comparisons["p_holm"] = holm(comparisons["p"].astype(float))
    significant = comparisons["p_holm"] < ALPHA
    comparisons["outcome"] = np.select(
        [significant & (comparisons["diff"] > 0), significant & (comparisons["diff"] < 0), comparisons["p_holm"].notna()],
        ["win", "loss", "tie"], default="untested")
    return comparisons


def wilcoxon_over_cells(differences: pd.Series) -> float:
    """Wilcoxon signed-rank test of the per-cell mean differences; NaN with too few cells."""
    if len(differences) < MIN_WILCOXON_CELLS:
        return np.nan
    if (differences == 0).all():
        return 1.0  # every cell tied: no evidence of a difference (scipy would warn and divide by zero)
    return float(stats.wilcoxon(differences).pvalue)


def across_cells(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per family x init x mode x pooling, how the cells at the final layer went, and whether the
    differences are consistent across cells. Holm family: these Wilcoxon tests."""
    rows = []
    for key, group in at_final_layer(comparisons).groupby(VERDICT_GROUP, dropna=False, sort=True):
        differences = group["diff"].dropna()
        rows.append({
            **dict(zip(VERDICT_GROUP, key)),
            "n_cells": len(differences),
            "n_higher": int((differences > 0).sum()),
            "n_lower": int((differences < 0).sum()),
            "n_tested": int(group["p"].notna().sum()),
            "n_win": int((group["outcome"] == "win").sum()),
            "n_loss": int((group["outcome"] == "loss").sum()),
            "mean_diff": differences.mean(),
            "median_diff": differences.median(),
            "p": wilcoxon_over_cells(differences),
        })
    across = pd.DataFrame(rows, columns=[*VERDICT_GROUP, "n_cells", "n_higher", "n_lower", "n_tested", "n_win",
                                         "n_loss", "mean_diff", "median_diff", "p"])
    across["p_holm"] = holm(across["p"].astype(float))
    return sort_poolings(across, ["family", "init", "mode"])
