"""The Precision section: the same settings run in float32 (the reference) and in another precision
(bfloat16), as a precision study runs them (experiments/precision.yaml).

collect.py keeps a setting's runs in another precision out of every other table (`Collection.precisions`);
here they meet the reference runs of the same setting and seed. A seed draws the same training rows, head
initialisation and minibatch order in both precisions, so runs pair by seed and THE SEED IS THE UNIT OF
REPLICATION: each seed gives one accuracy difference, and the intervals are t-intervals over seeds. Written:
  precision.csv           per setting (backbone, task, pooling, layer; mode, init, training rows): the
                          accuracy in each precision, the mean difference other − reference over the seeds
                          both ran, its 95% t-interval and the paired t-test's p; the vectors' closeness where
                          the runs measured it (mode.reference_dtype: poolbench.closeness): mean and smallest
                          cosine over test texts, linear CKA
  precision_verdicts.csv  per family x init x mode x pooling and layer (each layer, and `final`: each backbone's
                          final layer, as the main verdict), the verdict of each precision on the same cells and
                          seeds (statistics.across_cells) and whether it is the same
The decision the study was run for: verdicts the same and every setting within TOLERANCE -> the resolved
precision becomes the default of probe studies; else float32 stays, naming what moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from poolbench.report.collect import REFERENCE_DTYPE
from poolbench.report.naming import (SETTING, VERDICT_GROUP, at_final_layer, format_p, pooling_order, sort_poolings,
                                     values_of)
from poolbench.report.statistics import ALPHA, across_cells, compare_to_cls, example_differences, mean_with_ci
from poolbench.report.tables import markdown_table
from poolbench.report.verdict import conclusion, points

PRECISION_OUTPUTS = ("precision.csv", "precision_verdicts.csv")
TOLERANCE = 0.003  # the study's rule: every setting's accuracy within 0.3 points
FINAL = "final"  # the verdict row of each backbone's final layer, the one the main verdict reads
CLOSENESS = {"precision/cosine": "cosine", "precision/cosine_min": "cosine_min", "precision/cka": "cka"}


def seed_pairs(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """One row per setting and seed run in both precisions: `acc_ref`, `acc_other`, the two run dirs and
    the other run's closeness metrics."""
    closeness = [column for column in CLOSENESS if column in other]
    left = reference[[*SETTING, "seed", "test/acc", "dir"]].rename(columns={"test/acc": "acc_ref", "dir": "dir_ref"})
    right = other[[*SETTING, "seed", "test/acc", "dir", *closeness]].rename(
        columns={"test/acc": "acc_other", "dir": "dir_other", **CLOSENESS})
    return left.merge(right, on=[*SETTING, "seed"])


def setting_differences(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per setting, over its paired seeds: both accuracies, the mean difference other − reference, its 95%
    t-interval and the paired t-test's p (NaN with one seed, or when every seed differs by the same
    amount: no spread to test), and the closeness of the vectors (the same for every seed: the features
    do not depend on it)."""
    rows = []
    for key, group in pairs.groupby(SETTING, dropna=False, sort=True):
        differences = group["acc_other"] - group["acc_ref"]
        interval = mean_with_ci(differences)
        spread = len(group) > 1 and differences.std(ddof=1) > 0
        rows.append({**dict(zip(SETTING, key)), "seeds": len(group), "acc_ref": group["acc_ref"].mean(),
                     "acc_other": group["acc_other"].mean(), "diff": interval["mean"], "ci_low": interval["ci_low"],
                     "ci_high": interval["ci_high"],
                     "p": stats.ttest_rel(group["acc_other"], group["acc_ref"]).pvalue if spread else np.nan,
                     **{name: group[name].mean() if name in group else np.nan for name in CLOSENESS.values()}})
    return sort_poolings(pd.DataFrame(rows), ["mode", "backbone", "task", "layer"]).reset_index(drop=True)


def verdict_class(row) -> str:
    """What a verdict concludes, without the numbers that move with any re-run (the detectable difference,
    the qualifiers of a shown difference): the three-way outcome and, for a difference, its direction.
    Mirrors verdict.conclusion."""
    if row.outcome3 in ("equivalent", "inconclusive"):
        return row.outcome3
    if row.outcome3 == "untested" and pd.isna(row.p):
        return "no test"
    if row.outcome3 == "untested" and row.p_holm >= ALPHA:
        return "no consistent difference"
    return f"{row.pooling} > cls" if row.mean_diff > 0 else f"cls > {row.pooling}"


def layer_verdicts(runs: pd.DataFrame, correct: Mapping[str, pd.Series], margin: float) -> pd.DataFrame:
    """The verdict groups of one precision's runs at every layer and at each backbone's final layer: per
    family x init x mode x pooling x layer, the class (verdict_class) and the sentence (verdict.conclusion)."""
    comparisons, differences = compare_to_cls(runs, correct, margin), example_differences(runs, correct)
    groups = {str(layer): (comparisons[comparisons["layer"] == layer], differences[differences["layer"] == layer])
              for layer in sorted(comparisons["layer"].unique())}
    groups[FINAL] = (comparisons, differences)  # across_cells reads each cell's final layer
    frames = []
    for layer, (at_layer, differences_at_layer) in groups.items():
        across = across_cells(at_layer, differences_at_layer, margin)
        frames.append(across[VERDICT_GROUP].assign(
            layer=layer, verdict=[verdict_class(row) for row in across.itertuples(index=False)],
            sentence=[conclusion(row, margin) for row in across.itertuples(index=False)]))
    columns = [*VERDICT_GROUP, "layer", "verdict", "sentence"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def compare_verdicts(reference: pd.DataFrame, other: pd.DataFrame, correct: Mapping[str, pd.Series],
                     margin: float) -> pd.DataFrame:
    """The verdicts of both precisions on the same cells and seeds (the pairs), side by side, and `same`."""
    ref, oth = layer_verdicts(reference, correct, margin), layer_verdicts(other, correct, margin)
    both = ref.merge(oth, on=[*VERDICT_GROUP, "layer"], how="outer", suffixes=("_ref", "_other"))
    both["same"] = both["verdict_ref"] == both["verdict_other"]
    # Each pooling's layers in order, its final-layer row last.
    layer_rank = {layer: i for i, layer in enumerate(sorted(set(both["layer"]) - {FINAL}, key=int) + [FINAL])}
    pooling_rank = {pooling: i for i, pooling in enumerate(pooling_order(both["pooling"]))}
    ranked = both.assign(pooling_rank=both["pooling"].map(pooling_rank), layer_rank=both["layer"].map(layer_rank))
    return (ranked.sort_values(["family", "init", "mode", "pooling_rank", "layer_rank"])
            .drop(columns=["pooling_rank", "layer_rank"]).reset_index(drop=True))


def setting_name(row) -> str:
    return f"{row.backbone} {row.task} {row.pooling} L{row.layer}"


def decision(settings: pd.DataFrame, verdicts: pd.DataFrame, other: str) -> str:
    """The study's rule as a sentence: identical verdicts and every setting within TOLERANCE -> the resolved
    precision becomes the default for probe studies; else float32 stays, and what moved is named."""
    largest = settings.loc[settings["diff"].abs().idxmax()]
    largest_text = f"largest: {100 * largest['diff']:+.2f} points, {setting_name(largest)}"
    moved = verdicts[~verdicts["same"]]
    outside = settings[settings["diff"].abs() > TOLERANCE]
    if moved.empty and outside.empty:
        return (f"**Decision:** the verdicts are the same in {other} as in {REFERENCE_DTYPE} in all {len(verdicts)} "
                f"groups (family x pooling x layer), and all {len(settings)} settings are within {points(TOLERANCE)} "
                f"points ({largest_text}): by the study's rule, the resolved precision (`backbone.dtype=auto`: {other} "
                f"where the device computes it natively, {REFERENCE_DTYPE} elsewhere) becomes the default for probe "
                f"studies.")
    reasons = []
    if not moved.empty:
        reasons.append(f"{len(moved)} of {len(verdicts)} verdicts moved (" + "; ".join(
            f"{row.family}, {row.pooling} vs cls, layer {row.layer}: {row.verdict_ref} in {REFERENCE_DTYPE}, "
            f"{row.verdict_other} in {other}" for row in moved.itertuples(index=False)) + ")")
    if not outside.empty:
        reasons.append(f"{len(outside)} of {len(settings)} settings differ by more than {points(TOLERANCE)} points "
                       f"({largest_text})")
    return f"**Decision:** keep {REFERENCE_DTYPE} as the default for probe studies: " + "; ".join(reasons) + "."


def _points_with_ci(row) -> str:
    interval = "" if pd.isna(row.ci_low) else f" [{100 * row.ci_low:+.2f}, {100 * row.ci_high:+.2f}]"
    return f"{100 * row.diff:+.2f}{interval}"


def settings_for_markdown(settings: pd.DataFrame, other: str) -> pd.DataFrame:
    final = at_final_layer(settings)
    return pd.DataFrame({
        "backbone": final["backbone"], "task": final["task"], "pooling": final["pooling"], "layer": final["layer"],
        REFERENCE_DTYPE: (100 * final["acc_ref"]).map("{:.1f}".format),
        other: (100 * final["acc_other"]).map("{:.1f}".format),
        "diff (points) [95% CI]": [_points_with_ci(row) for row in final.itertuples(index=False)],
        "paired t p": final["p"].map(format_p), "seeds": final["seeds"],
    })


def closeness_for_markdown(settings: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and pooling, one column per layer: the lowest over tasks of the mean cosine and of the
    linear CKA, "cosine / CKA" ("–" where a readout is constant over texts: CKA is undefined)."""
    lowest = settings.groupby(["backbone", "pooling", "layer"], dropna=False)[["cosine", "cka"]].min().reset_index()
    # Six decimals: bfloat16 keeps about three significant digits, so cosines sit within 1e-4 of 1.
    lowest["text"] = [f"{cos:.6f} / " + ("–" if pd.isna(cka) else f"{cka:.6f}")
                      for cos, cka in zip(lowest["cosine"], lowest["cka"])]
    grid = lowest.pivot(index=["backbone", "pooling"], columns="layer", values="text").fillna("")
    grid.columns = [f"L{layer}" for layer in grid.columns]
    return sort_poolings(grid.reset_index(), ["backbone"])


def precision_section(runs: pd.DataFrame, others: pd.DataFrame, correct: Mapping[str, pd.Series], margin: float,
                      out: Path) -> list[str]:
    """REPORT.md's Precision section and its CSVs, for each precision in `others` (runs of settings that
    also ran in REFERENCE_DTYPE, collect.Collection.precisions) against `runs` (the analysed runs)."""
    others = others[others["mode"] != "diagnose"]
    reference = runs[runs["dtype"].fillna(REFERENCE_DTYPE) == REFERENCE_DTYPE]
    lines = ["## Precision", ""]
    setting_frames, verdict_frames = [], []
    for other, other_runs in others.groupby("dtype", sort=True):
        pairs = seed_pairs(reference, other_runs)
        if pairs.empty:
            continue
        # Both precisions' verdicts from the same settings and seeds: the pairs.
        paired_ref = reference[reference["dir"].isin(pairs["dir_ref"])]
        paired_other = other_runs[other_runs["dir"].isin(pairs["dir_other"])]
        settings = setting_differences(pairs)
        verdicts = compare_verdicts(paired_ref, paired_other, correct, margin)
        setting_frames.append(settings.assign(reference=REFERENCE_DTYPE, precision=other))
        verdict_frames.append(verdicts.assign(reference=REFERENCE_DTYPE, precision=other))
        measured = settings["cosine"].notna().any()
        lines += [
            f"{other} against {REFERENCE_DTYPE}: {len(settings)} settings (backbone x task x pooling x layer) run in "
            f"both, {len(pairs)} runs of each, paired by seed. A seed draws the same training rows, head "
            f"initialisation and minibatch order in both precisions: the seed is the unit of replication, each "
            f"gives one difference, and intervals are 95% t-intervals over seeds (p: paired t-test over seeds). "
            f"The {other} runs computed on: {values_of(paired_other['machine'].fillna('not recorded'))}.", "",
            decision(settings, verdicts, other), "",
            f"### Accuracy: {other} − {REFERENCE_DTYPE}, final layer", "",
            f"Test accuracy (%) as the mean over seeds in each precision; diff in points. Every layer: `precision.csv` "
            f"(largest |diff| over all {len(settings)} settings: {100 * settings['diff'].abs().max():.2f} points).", "",
            markdown_table(settings_for_markdown(settings, other)), "",
            "### Verdicts in both precisions", "",
            f"Per family x pooling x layer (`{FINAL}`: each backbone's final layer, as in the Verdict section), "
            f"the verdict of the tests across cells (statistics.across_cells, ±{points(margin)} points) in each "
            f"precision on the same cells and seeds; same = the same outcome and direction (the detectable "
            f"difference may move). Also in `precision_verdicts.csv`.", "",
            markdown_table(verdicts[[*VERDICT_GROUP, "layer", "sentence_ref", "sentence_other", "same"]].rename(
                columns={"sentence_ref": REFERENCE_DTYPE, "sentence_other": other})), "",
            "### How close the vectors are", "",
        ]
        if measured:
            lines += [f"Per layer, on the test split: the cosine between a text's {REFERENCE_DTYPE} and {other} "
                      f"vector, averaged over texts, and the linear CKA of the two matrices (1: the same geometry up to a "
                      f"rotation and a scale), each the lowest over tasks. Per task, with the smallest cosine of any "
                      f"text: `precision.csv`.", "", markdown_table(closeness_for_markdown(settings)), ""]
        else:
            lines += [f"Not measured: the {other} runs were not given `mode.reference_dtype={REFERENCE_DTYPE}` "
                      "(experiments/precision.yaml sets it).", ""]
    if not setting_frames:
        return lines + [f"No setting ran in both {REFERENCE_DTYPE} and another precision with the same seed.", ""]
    pd.concat(setting_frames, ignore_index=True).to_csv(out / "precision.csv", index=False)
    pd.concat(verdict_frames, ignore_index=True).to_csv(out / "precision_verdicts.csv", index=False)
    return lines
