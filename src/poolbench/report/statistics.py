"""The statistics of the report: pure functions of DataFrames, each statistical choice explained
where it is made.

  mean_with_ci / summarize   per setting, mean, sd, n and a 95% t-interval over seeds
  paired_comparison          one pooling against cls in one cell, on matched seeds: the accuracy
                             difference, a paired bootstrap CI over test examples, an exact McNemar
                             (sign) test, an equivalence test (TOST) within a margin and the minimum
                             detectable difference, all of the seed-averaged per-example differences
  compare_to_cls             every such comparison, Holm-adjusted together, with outcomes
  example_differences        those per-example differences, one row each, for the tests across cells
  across_cells               per family x init x mode x pooling at the final layer: a Wilcoxon
                             signed-rank test of the per-cell differences and, over examples, a
                             sign-flip test, a TOST and the minimum detectable difference, each
                             Holm-adjusted over the groups; a three-way outcome
  flip_table                 per cell and pair of readouts, the examples right under one and wrong
                             under the other

The equivalence test, the minimum detectable difference and the sign-flip test are in
equivalence.py.

Per-example correctness comes as a mapping from a run's dir (the `dir` column of the runs
frame) to a bool Series indexed by test example id (collect.read_all_predictions reads it).
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from poolbench.report.equivalence import (FLIP_EXAMPLES, MARGIN, flips, minimum_detectable_difference, sign_flip_test,
                                         stratified_mean, tost)
from poolbench.report.naming import (CELL, METRICS, REFERENCE, SETTING, VERDICT_GROUP, at_final_layer, pooling_order,
                                     sort_poolings)

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
    part of the family. The step-down rule itself (the i-th smallest of n times n - i + 1, a running
    maximum, capped at 1), equal to statsmodels' multipletests(method="holm") (tested against it), which
    runs a full garbage collection on every call: 0.75 s in a process that imported torch, and a
    report calls it dozens of times."""
    adjusted = pd.Series(np.nan, index=p_values.index)
    tested = p_values.notna()
    if tested.any():
        p = p_values[tested].to_numpy(dtype=float)
        order = np.argsort(p, kind="stable")
        stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
        values = np.empty(len(p))
        values[order] = stepped
        adjusted[tested] = values
    return adjusted


def three_way(p_holm: pd.Series, tost_p_holm: pd.Series) -> np.ndarray:
    """'different' where the difference test rejects, else 'equivalent' where the equivalence test
    does, else 'inconclusive': the data tell neither, and the minimum detectable difference says
    how large a difference could have gone unseen; 'untested' without either test. Both can reject,
    for a real difference smaller than the margin: that is a difference (verdict_lines says it lies
    within the margin)."""
    return np.select([p_holm < ALPHA, tost_p_holm < ALPHA, p_holm.notna() | tost_p_holm.notna()],
                     ["different", "equivalent", "inconclusive"], default="untested")


# A cell's factors, two readouts a and b, their runs indexed by seed and matched, the seeds only one of them ran.
Pair = tuple[dict, str, str, pd.DataFrame, pd.DataFrame, int]


def matched_pairs(runs: pd.DataFrame, first: str | None = None) -> Iterator[Pair]:
    """Every two readouts of each cell in pooling order, or only those whose first readout is
    `first` (cls, first in that order: cls against each other one), on the seeds both ran: the
    cell's factors, readouts a and b, their runs indexed by seed and matched, and how many seeds
    only one of the two ran."""
    for key, cell in runs.groupby(CELL, dropna=False, sort=True):
        by_pooling = {pooling: group.set_index("seed") for pooling, group in cell.groupby("pooling")}
        for a, b in combinations(pooling_order(by_pooling), 2):
            if first is not None and a != first:
                continue
            runs_a, runs_b = by_pooling[a], by_pooling[b]
            seeds = sorted(set(runs_a.index) & set(runs_b.index))
            if seeds:
                yield (dict(zip(CELL, key)), a, b, runs_a.loc[seeds], runs_b.loc[seeds],
                       len(set(runs_a.index) ^ set(runs_b.index)))


def seed_differences(first: pd.Series, second: pd.Series, correct: Mapping[str, pd.Series]) -> list[pd.Series] | None:
    """Per matched seed, the correctness of the run in `second` minus that of the run in `first`
    (run dirs, in seed order), on the test examples both predicted: subtracting id-indexed series
    aligns the examples, dropna keeps those both runs predicted. None unless every run has
    predictions."""
    pairs = list(zip(first, second))
    if not all(a in correct and b in correct for a, b in pairs):
        return None
    return [(correct[b].astype(int) - correct[a].astype(int)).dropna() for a, b in pairs]


COMPARISON_STATS = ["seeds", "n_seeds", "unpaired_seeds", "acc_cls", "acc_pooling", "diff", "n_examples", "n_better",
                    "n_worse", "ci_low", "ci_high", "p", "seed_p_median", "seeds_significant", "evidence", "tost_p",
                    "mdd"]


def paired_comparison(reference: pd.DataFrame, other: pd.DataFrame, correct: Mapping[str, pd.Series],
                      margin: float = MARGIN) -> dict:
    """cls against one other pooling of the same cell; both frames hold the matched seeds, in order.
    `correct`: per run dir, which test examples the run got right (runs without predictions absent).

    The difference is the mean over seeds of the recorded test accuracies. With per-example
    predictions, each example's difference in correctness is averaged over the seeds: the examples,
    shared by every seed, stay the unit that is resampled and tested, so seeds of one example are
    not counted as independent evidence (summing discordant counts over seeds would be). The
    per-seed McNemar p-values are reported alongside (median, and how many seeds reach ALPHA) to
    show whether the seeds agree.

    The same seed-averaged differences are the units of the equivalence test (a paired t TOST:
    is the difference within ±margin?) and of the minimum detectable difference at 80% power
    (equivalence.py), so a tie comes with what it is worth."""
    result = {
        "acc_cls": reference["test/acc"].mean(),
        "acc_pooling": other["test/acc"].mean(),
        "diff": (other["test/acc"].to_numpy() - reference["test/acc"].to_numpy()).mean(),
        "evidence": "cells",
    }
    per_seed = seed_differences(reference["dir"], other["dir"], correct)
    if per_seed is None:
        return result
    per_example = pd.concat(per_seed, axis=1).mean(axis=1)
    if per_example.empty:
        return result  # the two runs share no test example id: nothing to pair
    seed_p = [mcnemar_exact(differences) for differences in per_seed]
    ci_low, ci_high = bootstrap_ci(per_example.to_numpy())
    estimate, se, df = stratified_mean([per_example.to_numpy()], margin)
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
        "tost_p": tost(estimate, se, df, margin),
        "mdd": minimum_detectable_difference(se, df, ALPHA),
    }


def compare_to_cls(runs: pd.DataFrame, correct: Mapping[str, pd.Series], margin: float = MARGIN) -> pd.DataFrame:
    """Every pooling against cls in the same cell, on the seeds both ran (cells without cls are
    counted among the caveats).

    The Holm family is every example-level comparison in this report: all poolings, cells, layers
    and modes together, so no win or loss escapes correction for the number of comparisons made.
    The equivalence tests are Holm-adjusted over the same comparisons, as a family of their own:
    they answer another question of the same data."""
    rows = [{**cell, "pooling": pooling, "seeds": ",".join(map(str, reference.index)), "n_seeds": len(reference),
             "unpaired_seeds": unpaired, **paired_comparison(reference, other, correct, margin)}
            for cell, _, pooling, reference, other, unpaired in matched_pairs(runs, REFERENCE)]
    comparisons = pd.DataFrame(rows, columns=[*CELL, "pooling", *COMPARISON_STATS])
    comparisons["p_holm"] = holm(comparisons["p"].astype(float))
    significant = comparisons["p_holm"] < ALPHA
    comparisons["outcome"] = np.select(
        [significant & (comparisons["diff"] > 0), significant & (comparisons["diff"] < 0), comparisons["p_holm"].notna()],
        ["win", "loss", "tie"], default="untested")
    comparisons["tost_p_holm"] = holm(comparisons["tost_p"].astype(float))
    comparisons["outcome3"] = three_way(comparisons["p_holm"], comparisons["tost_p_holm"])
    return comparisons


def example_differences(runs: pd.DataFrame, correct: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Per cell and pooling, each test example's difference in correctness from cls averaged over
    the matched seeds, as paired_comparison computes it: one row per example (columns: the cell,
    pooling, id, diff), for the tests across cells. Comparisons without predictions have none."""
    columns = [*CELL, "pooling", "id", "diff"]
    frames = []
    for cell, _, pooling, reference, other, _ in matched_pairs(runs, REFERENCE):
        per_seed = seed_differences(reference["dir"], other["dir"], correct)
        if per_seed is not None:
            per_example = pd.concat(per_seed, axis=1).mean(axis=1)
            frames.append(pd.DataFrame({**cell, "pooling": pooling, "id": per_example.index,
                                        "diff": per_example.to_numpy()}, columns=columns))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def flip_table(runs: pd.DataFrame, correct: Mapping[str, pd.Series], examples: int = FLIP_EXAMPLES) -> pd.DataFrame:
    """Per cell and pair of readouts a, b (every pair, in pooling order), on matched seeds: how many
    test examples a gets right and b wrong and the converse, with up to `examples` ids of each
    (equivalence.flips: the sign of the seed-averaged difference decides). Ids joined by commas."""
    rows = []
    for cell, a, b, runs_a, runs_b, _ in matched_pairs(runs):
        per_seed = seed_differences(runs_b["dir"], runs_a["dir"], correct)  # a's correctness minus b's
        if per_seed is None:
            continue
        found = flips(pd.concat(per_seed, axis=1).mean(axis=1), examples)
        ids = {key: ",".join(map(str, value)) for key, value in found.items() if key.startswith("ids_")}
        rows.append({**cell, "readout_a": a, "readout_b": b, "seeds": ",".join(map(str, runs_a.index)), **found, **ids})
    return pd.DataFrame(rows, columns=[*CELL, "readout_a", "readout_b", "seeds", "n_a_right_b_wrong",
                                       "n_b_right_a_wrong", "ids_a_right_b_wrong", "ids_b_right_a_wrong"])


def wilcoxon_over_cells(differences: pd.Series) -> float:
    """Wilcoxon signed-rank test of the per-cell mean differences; NaN with too few cells."""
    if len(differences) < MIN_WILCOXON_CELLS:
        return np.nan
    if (differences == 0).all():
        return 1.0  # every cell tied: no evidence of a difference (scipy would warn and divide by zero)
    return float(stats.wilcoxon(differences).pvalue)


def example_tests(differences: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Per verdict group, over the per-example differences of its cells: the stratified sign-flip
    test of no difference, the TOST of a difference within ±margin and the minimum detectable
    difference at 80% power (equivalence.py), all weighing each cell the same. Unlike the Wilcoxon
    over cells, they run with any number of cells, and they speak for these cells."""
    rows = []
    for key, group in differences.groupby(VERDICT_GROUP, dropna=False, sort=True):
        cells = [cell["diff"].to_numpy(dtype=float) for _, cell in group.groupby(CELL, dropna=False)]
        estimate, se, df = stratified_mean(cells, margin)
        rows.append({**dict(zip(VERDICT_GROUP, key)), "perm_p": sign_flip_test(cells),
                     "tost_p": tost(estimate, se, df, margin), "mdd": minimum_detectable_difference(se, df, ALPHA)})
    return pd.DataFrame(rows, columns=[*VERDICT_GROUP, "perm_p", "tost_p", "mdd"])


def across_cells(comparisons: pd.DataFrame, differences: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Per family x init x mode x pooling, how the cells at the final layer went, whether the
    differences are consistent across cells (Wilcoxon), and, from the per-example `differences`
    (example_differences) of the same cells, example_tests and the three-way outcome they give.
    Holm families: the Wilcoxon tests, the sign-flip tests and the TOSTs, each over the groups."""
    final = at_final_layer(comparisons)
    rows = []
    for key, group in final.groupby(VERDICT_GROUP, dropna=False, sort=True):
        per_cell = group["diff"].dropna()
        rows.append({
            **dict(zip(VERDICT_GROUP, key)),
            "n_cells": len(per_cell),
            "n_higher": int((per_cell > 0).sum()),
            "n_lower": int((per_cell < 0).sum()),
            "n_tested": int(group["p"].notna().sum()),
            "n_win": int((group["outcome"] == "win").sum()),
            "n_loss": int((group["outcome"] == "loss").sum()),
            "mean_diff": per_cell.mean(),
            "median_diff": per_cell.median(),
            "p": wilcoxon_over_cells(per_cell),
        })
    across = pd.DataFrame(rows, columns=[*VERDICT_GROUP, "n_cells", "n_higher", "n_lower", "n_tested", "n_win",
                                         "n_loss", "mean_diff", "median_diff", "p"])
    across["p_holm"] = holm(across["p"].astype(float))
    # The same cells as the comparisons above: the final layer of each, as at_final_layer(comparisons) finds it.
    of_final_cells = differences.merge(final[[*CELL, "pooling"]], on=[*CELL, "pooling"])
    across = across.merge(example_tests(of_final_cells, margin), on=VERDICT_GROUP, how="left")
    across["perm_p_holm"] = holm(across["perm_p"].astype(float))
    across["tost_p_holm"] = holm(across["tost_p"].astype(float))
    across["outcome3"] = three_way(across["perm_p_holm"], across["tost_p_holm"])
    return sort_poolings(across[[*VERDICT_GROUP, "n_cells", "n_higher", "n_lower", "n_tested", "n_win", "n_loss",
                                 "mean_diff", "median_diff", "p", "p_holm", "perm_p", "perm_p_holm", "tost_p",
                                 "tost_p_holm", "mdd", "outcome3"]], ["family", "init", "mode"])
