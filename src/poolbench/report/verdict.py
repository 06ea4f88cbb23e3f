"""The question the report answers, the verdict sentences generated from the tests, and the
caveats read off the data. Every sentence is computed from the frames of statistics.py.
"""

from __future__ import annotations

import pandas as pd

from poolbench.report.collect import Collection
from poolbench.report.equivalence import MARGIN
from poolbench.report.naming import CELL, REFERENCE, format_p
from poolbench.report.statistics import ALPHA, MIN_WILCOXON_CELLS

QUESTION = (
    "Does the final state of the first token ([CLS], h_0) aggregate a sequence's meaning better than "
    "the other readouts of the same backbone: the mean of the token states, their max, or the last "
    "token? Every comparison holds all else equal (backbone, task, layer, mode, seed and the softmax "
    "head); only the readout changes."
)
FEW_SEEDS = 3  # settings with fewer seeds get a caveat: their t-intervals are wide, or absent


def points(difference: float) -> str:
    """An accuracy difference (a fraction) in accuracy points."""
    return f"{100 * difference:.1f}"


def p_is(p: float) -> str:
    """'p=0.031', or 'p<0.001'."""
    text = format_p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def wilcoxon_text(row) -> str:
    if pd.isna(row.p):
        return f"Wilcoxon over cells not run: {row.n_cells} cells, it needs {MIN_WILCOXON_CELLS}"
    return f"Wilcoxon over cells {p_is(row.p)}, Holm {p_is(row.p_holm)}"


def example_tests_text(row, margin: float) -> str:
    return (f"over examples, sign-flip test {p_is(row.perm_p)}, Holm {p_is(row.perm_p_holm)}; "
            f"TOST within ±{points(margin)} points {p_is(row.tost_p)}, Holm {p_is(row.tost_p_holm)}; "
            f"detectable at 80% power: {points(row.mdd)} points")


def conclusion(row, margin: float) -> str:
    """The three-way outcome of the tests over examples: different, equivalent within the margin,
    or inconclusive with the difference that could have gone unseen. Without per-example
    predictions ('untested'), the Wilcoxon over cells decides, where it ran."""
    if row.outcome3 == "equivalent":
        return f"{row.pooling} and cls equivalent within ±{points(margin)} points"
    if row.outcome3 == "inconclusive":
        return f"inconclusive (could not detect less than {points(row.mdd)} points)"
    if row.outcome3 == "untested" and pd.isna(row.p):
        return "no test across cells"
    if row.outcome3 == "untested" and row.p_holm >= ALPHA:
        return "no consistent difference across cells"
    winner, loser = (row.pooling, "cls") if row.mean_diff > 0 else ("cls", row.pooling)
    text = f"{winner} beats {loser} across cells"
    if row.outcome3 == "different" and row.tost_p_holm < ALPHA:
        text += f", by less than {points(margin)} points"  # both tests reject: a real but small difference
    if row.outcome3 == "different" and row.p_holm >= ALPHA:
        text += ", though not consistently cell by cell (Wilcoxon)"
    return text


def verdict_lines(across: pd.DataFrame, margin: float = MARGIN) -> list[str]:
    """One sentence per family x init x mode x pooling, generated from the tests: how the cells went,
    the tests across them, and the conclusion."""
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
        tests = [wilcoxon_text(row)] + ([] if row.outcome3 == "untested" else [example_tests_text(row, margin)])
        lines.append(f"- **{group}, {row.mode}**: {per_cell} ({'; '.join(tests)}) → {conclusion(row, margin)}.")
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
                     "test cannot reach p < 0.05 there, so it is not run; the sign-flip test over examples, which "
                     "needs no minimum, decides those with per-example predictions, for these cells only.")
    if collection.failed or collection.missing:
        notes.append(f"Failed runs ({len(collection.failed)}) and jobs without a record ({len(collection.missing)}) "
                     "leave some cells incomplete.")
    if collection.superseded:
        notes.append(f"{collection.superseded} runs were replaced by newer runs with the same factors but a "
                     "different config: only the newest of each is analysed.")
    precisions = runs["dtype"].fillna("not recorded").value_counts()
    if len(precisions) > 1:
        notes.append("The runs mix precisions (" + ", ".join(f"{dtype}: {n} runs" for dtype, n in sorted(precisions.items()))
                     + "): the verdicts across cells pool cells of each (a setting that ran in both is analysed in "
                     "float32 here, and compared in the Precision section). Report each precision on its own "
                     "(`poolbench-report` on its runs) before comparing them.")
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
