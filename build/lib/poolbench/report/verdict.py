"""The question the report answers, the verdict sentences generated from the tests, and the
caveats read off the data. Every sentence is computed from the frames of statistics.py.
"""

from __future__ import annotations

import pandas as pd

from poolbench.report.collect import Collection
from poolbench.report.naming import CELL, REFERENCE, format_p
from poolbench.report.statistics import ALPHA, MIN_WILCOXON_CELLS

QUESTION = (
    "Does the final state of the first token ([CLS], h_0) aggregate a sequence's meaning better than "
    "the other readouts of the same backbone: the mean of the token states, their max, or the last "
    "token? Every comparison holds all else equal (backbone, task, layer, mode, seed and the softmax "
    "head); only the readout changes."
)
FEW_SEEDS = 3  # settings with fewer seeds get a caveat: their t-intervals are wide, or absent


def verdict_lines(across: pd.DataFrame) -> list[str]:
    """One sentence per family x init x mode x pooling, generated from the tests."""
    lines = []
    for row in across.itertuples(index=False):
        group = row.family if row.init == "pretrained" else f"{row.family} ({row.init} init)"
        pooling = row.pooling
        if row.n_tested == row.n_cells:
            per_cell = (f"{pooling} > cls on {row.n_higher} of {row.n_cells} cells, significant on {row.n_win} "
                        f"after Holm; {pooling} < cls on {row.n_lower}, significant on {row.n_loss}")
        else:
            per_cell = (f"{pooling} > cls on {row.n_higher} of {row.n_cells} cells, {pooling} < cls on "
                        f"{row.n_lower}; per-example tests on {row.n_tested} of them ({row.n_win} significant "
                        f"wins, {row.n_loss} losses after Holm)")
        if pd.isna(row.p):
            across_test = f"Wilcoxon over cells not run: {row.n_cells} cells, it needs {MIN_WILCOXON_CELLS}"
            conclusion = "no test across cells"
        else:
            across_test = f"Wilcoxon over cells p={format_p(row.p)}, Holm p={format_p(row.p_holm)}"
            if row.p_holm >= ALPHA:
                conclusion = "no consistent difference across cells"
            elif row.mean_diff > 0:
                conclusion = f"{pooling} beats cls across cells"
            else:
                conclusion = f"cls beats {pooling} across cells"
        lines.append(f"- **{group}, {row.mode}**: {per_cell} ({across_test}) → {conclusion}.")
    return lines


def caveats(runs: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame, across: pd.DataFrame,
            collection: Collection, unavailable_predictions: list[str]) -> list[str]:
    """Limits of the evidence, read off the data."""
    notes = []
    few_seeds = summary["acc_n"] < FEW_SEEDS
    if few_seeds.any():
        notes.append(f"{few_seeds.sum()} of {len(summary)} settings have fewer than {FEW_SEEDS} seeds (fewest: "
                     f"{summary['acc_n'].min()}): their t-intervals over seeds are wide, and with one seed there is none.")
    if unavailable_predictions:
        notes.append(f"{len(unavailable_predictions)} runs lack readable per-example predictions: "
                     f"{(comparisons['evidence'] == 'cells').sum()} comparisons have no bootstrap CI or McNemar test "
                     "and count only in the Wilcoxon tests across cells.")
    at_budget = runs["at_epoch_budget"].eq(True)  # None: the record does not say
    if at_budget.any():
        notes.append(f"{at_budget.sum()} of {len(runs)} runs selected the last epoch they were allowed "
                     "(trainer.max_epochs or mode.max_epochs): they may be undertrained, and more epochs could "
                     "change the ranking.")
    unpaired = comparisons["unpaired_seeds"] > 0
    if unpaired.any():
        notes.append(f"{unpaired.sum()} comparisons leave seeds out that only one of the two readouts ran; "
                     "only seeds present for both are paired.")
    without_cls = runs.groupby(CELL, dropna=False)["pooling"].agg(lambda poolings: REFERENCE not in set(poolings))
    if without_cls.any():
        notes.append(f"{without_cls.sum()} cells have no cls run, so nothing to compare their readouts with.")
    too_few = across["p"].isna()
    if too_few.any():
        notes.append(f"{too_few.sum()} verdict groups have fewer than {MIN_WILCOXON_CELLS} cells: the exact Wilcoxon "
                     "test cannot reach p < 0.05 there, so it is not run.")
    if collection.failed or collection.missing:
        notes.append(f"Failed runs ({len(collection.failed)}) and jobs without a record ({len(collection.missing)}) "
                     "leave some cells incomplete.")
    if collection.superseded:
        notes.append(f"{collection.superseded} runs were replaced by newer runs with the same factors but a "
                     "different config: only the newest of each is analysed.")
    commits = runs["git_commit"].dropna().unique()
    dirty = any(str(commit).endswith("+dirty") for commit in commits)
    if len(commits) > 1:
        notes.append(f"The runs come from {len(commits)} code versions{', some with uncommitted changes' if dirty else ''}.")
    elif dirty:
        notes.append(f"The runs come from one code version with uncommitted changes ({commits[0]}).")
    for column in [c for c in runs if c.startswith("version/")]:
        if runs[column].nunique() > 1:
            notes.append(f"{column.removeprefix('version/')} differs between runs: "
                         f"{', '.join(sorted(map(str, runs[column].dropna().unique())))}.")
    return notes
