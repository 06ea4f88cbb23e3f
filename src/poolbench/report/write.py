"""Records -> the study report: tables, confidence intervals, paired tests, figures, a verdict.

Reads records only (poolbench.records), from run or sweep directories or from W&B, and writes
into one output directory:
  runs.csv          one row per analysed run: every factor, metric, timing and software version
  summary.csv       test accuracy and F1 per setting (every factor but the seed): mean, sd, n and
                    a 95% t-interval over seeds
  comparisons.csv   every pooling against cls in the same cell (every factor but the pooling),
                    seeds matched: paired bootstrap CI over test examples, exact McNemar test,
                    Holm-adjusted p, outcome (win / tie / loss / untested)
  across_cells.csv  per family x init x mode x pooling: Wilcoxon signed-rank test over the cells
                    (task x backbone) at each backbone's final layer, Holm-adjusted
  table.tex         booktabs table of test accuracy, mean ± sd, final layer, best per row in bold
  *.png             accuracy per task and backbone; accuracy per layer; win/tie/loss against cls
  REPORT.md         the question, the runs, the setup, the generated verdict, caveats, tables, figures

Every number and every sentence of the verdict is computed from the records; the statistical
choices are explained where they are made.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import seaborn as sns
from hydra.experimental.callback import Callback
from matplotlib.colors import ListedColormap
# Figures are drawn on matplotlib.figure.Figure objects, which render with the Agg canvas, so
# importing this module never switches the pyplot backend of whoever imports it.
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from poolbench.records import Record
from poolbench.report.collect import (Collection, ReportError, collect, read_all_predictions, read_local, read_wandb,
                                      runs_table, sweep_commands)
from poolbench.report.naming import (CELL, REFERENCE, at_final_layer, format_p, pooling_order, sort_poolings, values_of,
                                     with_labels)
from poolbench.report.statistics import (ALPHA, BOOTSTRAP_RESAMPLES, MIN_WILCOXON_CELLS, across_cells, compare_to_cls,
                                         summarize)

log = logging.getLogger(__name__)
console = Console(width=None if sys.stdout.isatty() else 120)  # piped: wide enough for the table

FEW_SEEDS = 3

QUESTION = (
    "Does the final state of the first token ([CLS], h_0) aggregate a sequence's meaning better than "
    "the other readouts of the same backbone: the mean of the token states, their max, or the last "
    "token? Every comparison holds all else equal (backbone, task, layer, mode, seed and the softmax "
    "head); only the readout changes."
)


# ---------------------------------------------------------------- verdict and caveats


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


# ---------------------------------------------------------------- tables


def accuracy_grid(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sd of test accuracy at the final layer: rows mode x task x backbone, one column per pooling."""
    final = with_labels(at_final_layer(summary))
    index = ["mode", "task", "label"]
    columns = pooling_order(final["pooling"])
    mean = final.pivot(index=index, columns="pooling", values="acc_mean")[columns]
    sd = final.pivot(index=index, columns="pooling", values="acc_sd")[columns]
    return mean, sd


def accuracy_cells(mean: pd.DataFrame, sd: pd.DataFrame, plus_minus: str, bold: Callable[[str], str]) -> pd.DataFrame:
    """Accuracy in percent, "mean ± sd" (just the mean with one seed), the best of each row in bold."""
    best = mean.eq(mean.max(axis=1), axis=0)

    def cell(m: float, s: float, is_best: bool) -> str:
        if pd.isna(m):
            return ""
        text = f"{100 * m:.1f}" + ("" if pd.isna(s) else f"{plus_minus}{100 * s:.1f}")
        return bold(text) if is_best else text

    return pd.DataFrame({p: [cell(m, s, b) for m, s, b in zip(mean[p], sd[p], best[p])] for p in mean.columns},
                        index=mean.index)


def latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def latex_table(mean: pd.DataFrame, sd: pd.DataFrame) -> str:
    cells = accuracy_cells(mean, sd, r" $\pm$ ", lambda text: rf"\textbf{{{text}}}")
    header = " & ".join(["Mode", "Task", "Backbone", *map(latex_escape, cells.columns)]) + r" \\"
    body = [" & ".join([*(latex_escape(str(part)) for part in index), *row]) + r" \\"
            for index, row in zip(cells.index, cells.to_numpy())]
    return "\n".join([
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Test accuracy (\%, mean $\pm$ sd over seeds) of each readout at each backbone's final layer. "
        r"Best readout per row in bold.}",
        rf"\begin{{tabular}}{{lll{'r' * len(cells.columns)}}}",
        r"\toprule",
        header,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of a frame's cells as text (pandas' to_markdown needs tabulate)."""
    def text(value: Any) -> str:
        if isinstance(value, float):
            value = "–" if np.isnan(value) else f"{value:.3f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(text, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(text, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def pooling_colors(poolings: Iterable[str]) -> dict[str, Any]:
    order = pooling_order(poolings)
    return dict(zip(order, sns.color_palette("colorblind", len(order))))


def plot_accuracy(summary: pd.DataFrame, path: Path) -> bool:
    """Bars of test accuracy at the final layer with 95% CI over seeds: one panel per (mode, task)
    that has runs, four panels a row."""
    final = with_labels(at_final_layer(summary))
    if final.empty:
        return False
    panels = list(final.groupby(["mode", "task"]))  # sorted by (mode, task)
    colors = pooling_colors(final["pooling"])
    width = 0.8 / len(colors)
    n_cols = min(4, len(panels))
    n_rows = -(-len(panels) // n_cols)
    most_labels = max(panel["label"].nunique() for _, panel in panels)
    figure = Figure(figsize=(max(4.0, 0.4 * most_labels * len(colors)) * n_cols, 4.0 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey=True).ravel()
    for ax, ((mode, task), panel) in zip(axes, panels):
        labels = sorted(panel["label"].unique())
        for k, (pooling, color) in enumerate(colors.items()):
            bars = panel[panel["pooling"] == pooling].set_index("label").reindex(labels)
            positions = np.arange(len(labels)) + (k - (len(colors) - 1) / 2) * width
            ax.bar(positions, bars["acc_mean"], width, color=color,
                   yerr=bars["acc_mean"] - bars["acc_ci_low"], capsize=2)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(f"{task} · {mode}")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[::n_cols]:
        ax.set_ylabel("test accuracy")
    figure.legend(handles=[Patch(color=c, label=p) for p, c in colors.items()], title="pooling", loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


def plot_layers(summary: pd.DataFrame, path: Path) -> bool:
    """Test accuracy per layer for probe runs, one line per pooling with its 95% CI band; panels
    backbone x task. Only cells probed at more than one layer."""
    probe = with_labels(summary[summary["mode"] == "probe"])
    if probe.empty:
        return False
    probe = probe[probe.groupby(["task", "label"])["layer"].transform("nunique") > 1]
    if probe.empty:
        return False
    labels, tasks = sorted(probe["label"].unique()), sorted(probe["task"].unique())
    colors = pooling_colors(probe["pooling"])
    figure = Figure(figsize=(4.0 * len(tasks), 3.0 * len(labels)), layout="constrained")
    axes = figure.subplots(len(labels), len(tasks), squeeze=False, sharey=True)
    for i, label in enumerate(labels):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            panel = probe[(probe["label"] == label) & (probe["task"] == task)]
            for pooling, color in colors.items():
                line = panel[panel["pooling"] == pooling].sort_values("layer")
                ax.plot(line["layer"], line["acc_mean"], marker="o", markersize=3, color=color)
                ax.fill_between(line["layer"], line["acc_ci_low"], line["acc_ci_high"], color=color, alpha=0.2)
            ax.set_title(f"{label} · {task}", fontsize=9)
            ax.set_xlabel("layer (0 = embeddings)")
        axes[i][0].set_ylabel("test accuracy (probe)")
    figure.legend(handles=[Patch(color=c, label=p) for p, c in colors.items()], title="pooling", loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


def plot_win_tie_loss(comparisons: pd.DataFrame, path: Path) -> bool:
    """Each pooling against cls at the final layer: win / tie / loss after Holm, annotated with the
    accuracy difference. Drawn only when some comparison was tested per example."""
    final = with_labels(at_final_layer(comparisons))
    if final["p"].notna().sum() == 0:
        return False
    final = final.assign(row=final["mode"] + " | " + final["task"] + " | " + final["label"],
                         score=final["outcome"].map({"win": 1.0, "tie": 0.0, "loss": -1.0}))
    columns = pooling_order(final["pooling"])
    score = final.pivot(index="row", columns="pooling", values="score")[columns]
    annotation = final.pivot(index="row", columns="pooling", values="diff")[columns].map(
        lambda d: "" if pd.isna(d) else f"{d:+.3f}")
    outcome_colors = {"loss": "#d55e00", "tie": "#d9d9d9", "win": "#009e73"}
    # Wide enough for the row labels ("probe | banking77 | smollm2-135m, 2000 train"): ~0.08 in a character.
    label_width = 0.08 * max(len(row) for row in score.index)
    figure = Figure(figsize=(label_width + 1.5 + 1.3 * len(columns), 1.0 + 0.35 * len(score)), layout="constrained")
    ax = figure.subplots()
    # Scores -1, 0, 1 fall in the three equal bins of [-1.5, 1.5]; untested (NaN) cells stay blank.
    sns.heatmap(score, ax=ax, cmap=ListedColormap(list(outcome_colors.values())), vmin=-1.5, vmax=1.5,
                annot=annotation.to_numpy(), fmt="", cbar=False, linewidths=0.5, linecolor="white")
    ax.set_xlabel("pooling vs cls")
    ax.set_ylabel("")
    handles = [Patch(color=c, label=o) for o, c in outcome_colors.items()]
    figure.legend(handles=handles + [Patch(facecolor="white", edgecolor="grey", label="untested")],
                  loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


# ---------------------------------------------------------------- the report


def run_counts(collection: Collection, unavailable_predictions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"runs": ["analysed (finished)", "failed (skipped)", "unreadable record dirs (skipped)",
                                  "job dirs without a record", "duplicates counted once",
                                  "superseded by a newer config", "finished without per-example predictions"],
                         "count": [len(collection.finished), len(collection.failed), len(collection.unreadable),
                                   len(collection.missing), collection.duplicates, collection.superseded,
                                   len(unavailable_predictions)]})


def named_factor(record: Record, factor: str) -> Any:
    """A factor of a failed run: from its factors, else from its resolved config (failed records of
    schema 1 carry no factors; a job that failed early may not have known them all)."""
    value = getattr(record.factors, factor) if record.factors is not None else None
    if value is not None or factor in ("layer", "seed"):
        return record.config.get(factor) if value is None else value
    node = record.config.get(factor) or {}
    # Configs before the pooling node was renamed called its name `strategy`.
    return node.get("name", node.get("strategy")) if factor == "pooling" else node.get("name")


def failed_run_line(record: Record) -> str:
    named = [(factor, named_factor(record, factor)) for factor in ("backbone", "task", "mode", "pooling", "layer", "seed")]
    what = ", ".join(f"{factor}={value}" for factor, value in named if value is not None)
    error = (record.error or "no error recorded").strip().splitlines()[-1]
    return f"- `{record.dir}` ({what}): {error}"


def setup_section(runs: pd.DataFrame, commands: list[str]) -> list[str]:
    backbones = runs.groupby(["backbone", "family", "init"], dropna=False).agg(
        layers=("num_layers", values_of), runs=("run_id", "size")).reset_index()
    tasks = runs.groupby("task").agg(n_test=("n_test", values_of), labels=("n_labels", values_of),
                                     train_examples=("n_train", values_of),  # what was trained on, not the cap
                                     runs=("run_id", "size")).reset_index()
    layers = runs.groupby("mode")["layer"].agg(values_of)
    created = runs["created"].dropna()
    return [
        "## Setup", "",
        f"Studies: {values_of(runs['study'])}. Modes: {values_of(runs['mode'])}. "
        f"Poolings: {values_of(runs['pooling'])}. Seeds: {values_of(runs['seed'])}.", "",
        "Layers (0 = embeddings) per mode: " + "; ".join(f"{mode}: {values}" for mode, values in layers.items()) + ".", "",
        "### Backbones", "", markdown_table(backbones), "",
        "### Tasks", "", "n_test and train_examples (the rows a run trained on: a cap such as 2000 stops at the split's size) "
        "from the records' metrics; labels: the width of the predicted distribution.", "",
        markdown_table(tasks), "",
        "### Software and provenance", "",
        *(f"- {column.removeprefix('version/')}: {values_of(runs[column])}" for column in runs if column.startswith("version/")),
        f"- git commits: {values_of(runs['git_commit'])}",
        f"- records created: {created.min()} to {created.max()}" if len(created) else "- records created: –",
        *(f"- produced by: {command}" for command in commands),
        f"- report written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", "",
    ]


def comparisons_for_markdown(comparisons: pd.DataFrame) -> pd.DataFrame:
    final = sort_poolings(with_labels(at_final_layer(comparisons)), ["mode", "task", "label"])
    return pd.DataFrame({
        "mode": final["mode"], "task": final["task"], "backbone": final["label"], "layer": final["layer"],
        "pooling": final["pooling"], "seeds": final["n_seeds"],
        "acc cls": final["acc_cls"], "acc pooling": final["acc_pooling"],
        "diff": final["diff"].map(lambda d: f"{d:+.3f}"),
        "95% CI (examples)": [("–" if pd.isna(low) else f"[{low:+.3f}, {high:+.3f}]")
                              for low, high in zip(final["ci_low"], final["ci_high"])],
        "McNemar p": final["p"].map(format_p), "Holm p": final["p_holm"].map(format_p),
        "seeds p<0.05": final["seeds_significant"], "outcome": final["outcome"],
    })


def across_for_markdown(across: pd.DataFrame) -> pd.DataFrame:
    return across.assign(p=across["p"].map(format_p), p_holm=across["p_holm"].map(format_p),
                         mean_diff=across["mean_diff"].map(lambda d: f"{d:+.3f}"),
                         median_diff=across["median_diff"].map(lambda d: f"{d:+.3f}"))


def write_report(collection: Collection, out: Path, title: str | None = None, commands: Iterable[str] = ()) -> Path:
    """Analyse the collected runs and write every output into `out`; returns REPORT.md's path.
    `commands`: how the runs and the report were produced, for the provenance section."""
    if not collection.finished:
        raise ReportError(f"no finished runs to report ({len(collection.failed)} failed, "
                          f"{len(collection.unreadable)} unreadable, {len(collection.missing)} without a record)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictions, unavailable_predictions = read_all_predictions(collection.finished)
    runs = runs_table(collection.finished, predictions)
    summary = summarize(runs)
    comparisons = compare_to_cls(runs, {run_dir: run.correct for run_dir, run in predictions.items()})
    across = across_cells(comparisons)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    comparisons.to_csv(out / "comparisons.csv", index=False)
    across.to_csv(out / "across_cells.csv", index=False)
    mean, sd = accuracy_grid(summary)
    (out / "table.tex").write_text(latex_table(mean, sd))

    figures = {
        "accuracy.png": "Test accuracy at each backbone's final layer, 95% t-interval over seeds.",
        "layers.png": "Probe test accuracy per layer, 95% t-interval band over seeds.",
        "win_tie_loss.png": "Each pooling against cls at the final layer: win / loss = significant after Holm.",
    }
    drawn = {
        "accuracy.png": plot_accuracy(summary, out / "accuracy.png"),
        "layers.png": plot_layers(summary, out / "layers.png"),
        "win_tie_loss.png": plot_win_tie_loss(comparisons, out / "win_tie_loss.png"),
    }
    for name, was_drawn in drawn.items():
        if not was_drawn:
            (out / name).unlink(missing_ok=True)  # no stale figure from an earlier report into this dir
    verdict = verdict_lines(across)
    notes = caveats(runs, summary, comparisons, across, collection, unavailable_predictions)
    studies = ", ".join(sorted(runs["study"].dropna().astype(str).unique())) or "unnamed study"

    n_tests = int(comparisons["p"].notna().sum())
    lines = [
        f"# {title or f'poolbench report: {studies}'}", "",
        "## The question", "", QUESTION, "",
        "## Runs", "", markdown_table(run_counts(collection, unavailable_predictions)), "",
    ]
    if collection.failed:
        lines += ["Failed runs:", "", *map(failed_run_line, collection.failed), ""]
    if collection.unreadable:
        lines += ["Unreadable record dirs:", "", *(f"- `{entry}`" for entry in collection.unreadable), ""]
    if collection.missing:
        lines += ["Job dirs without a record (killed before writing one, or still running):", "",
                  *(f"- `{entry}`" for entry in collection.missing), ""]
    lines += setup_section(runs, list(commands))
    lines += [
        "## Verdict", "",
        f"At each backbone's final layer, each pooling against cls. A cell is one task x backbone; per-cell "
        f"significance is the exact McNemar test on the test examples, Holm-corrected over all {n_tests} "
        f"example-level comparisons in this report; the Wilcoxon signed-rank test over cells is Holm-corrected "
        f"over the {int(across['p'].notna().sum())} groups below.", "",
        *(verdict or ["No pooling could be compared with cls: no cell holds both."]), "",
        "## Caveats", "", *([f"- {note}" for note in notes] or ["- None found in the data."]), "",
        "## Test accuracy (%) at the final layer", "",
        "Mean ± sd over seeds; best readout per row in bold. Every layer and setting, with 95% CIs: `summary.csv`.", "",
        markdown_table(accuracy_cells(mean, sd, " ± ", lambda text: f"**{text}**").reset_index()
                       .rename(columns={"label": "backbone"})), "",
        "## Each pooling against cls at the final layer", "",
        f"diff = accuracy(pooling) − accuracy(cls), mean over matched seeds. 95% CI: paired bootstrap over test "
        f"examples ({BOOTSTRAP_RESAMPLES} resamples), each example's difference averaged over seeds. McNemar p: exact "
        f"test on the examples whose seed-averaged difference is not zero (McNemar's own test for one seed); "
        f"'seeds p<0.05' counts seeds whose own McNemar test is significant. Every layer: `comparisons.csv`.", "",
        markdown_table(comparisons_for_markdown(comparisons)), "",
        "## Across cells", "",
        f"Wilcoxon signed-rank test of the per-cell differences, per family x init x mode x pooling (run with at "
        f"least {MIN_WILCOXON_CELLS} cells). Also in `across_cells.csv`.", "",
        markdown_table(across_for_markdown(across)), "",
        "## Figures", "",
    ]
    lines += [f"![{name}]({name})\n\n{caption}\n" for name, caption in figures.items() if drawn[name]] or [
        "No figure had data to draw.", ""]
    lines += ["", "Table for a paper: `table.tex` (booktabs)."]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")

    accuracy = accuracy_cells(mean, sd, " ± ", lambda text: f"[bold]{text}[/bold]").reset_index()
    print_to_console(collection, unavailable_predictions, accuracy.rename(columns={"label": "backbone"}), verdict,
                     report)
    return report


def print_to_console(collection: Collection, unavailable_predictions: list[str], accuracy: pd.DataFrame,
                     verdict: list[str], report: Path) -> None:
    counts = Table(title="poolbench report")
    counts.add_column("runs")
    counts.add_column("count", justify="right")
    for row in run_counts(collection, unavailable_predictions).itertuples(index=False):
        counts.add_row(row.runs, str(row.count))
    console.print(counts)
    table = Table(title="test accuracy (%) at the final layer, mean ± sd over seeds (best in bold)")
    for column in accuracy.columns:
        table.add_column(str(column), justify="left" if column in ("mode", "task", "backbone") else "right")
    for row in accuracy.itertuples(index=False):
        table.add_row(*map(str, row))
    console.print(table)
    for line in verdict:
        console.print(line.removeprefix("- ").replace("**", ""), markup=False)
    console.print(f"report: {report}", markup=False)


def build_report(roots: list[Path], out: Path, title: str | None = None, commands: Iterable[str] = ()) -> Path:
    """The report of every record below `roots`, written into `out`; returns REPORT.md's path."""
    return write_report(collect(*read_local(roots)), out, title, [*sweep_commands(roots), *commands])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poolbench-report", description="Records -> tables, tests, figures, verdict.")
    parser.add_argument("runs", nargs="*", type=Path, help="run or sweep directories holding records")
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. results/<study>")
    parser.add_argument("--title", help="the report's title (default: from the study names)")
    parser.add_argument("--from-wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead of (or as well as) dirs")
    parser.add_argument("--group", metavar="STUDY", help="the W&B group (study) to read, with --from-wandb")
    args = parser.parse_args(argv)
    if not args.runs and not args.from_wandb:
        parser.error("give run or sweep directories, or --from-wandb ENTITY/PROJECT --group STUDY")
    if bool(args.from_wandb) != bool(args.group):
        parser.error("--from-wandb and --group go together")
    command = f"`{shlex.join(['poolbench-report', *(sys.argv[1:] if argv is None else argv)])}`"
    try:
        records, unreadable, missing = read_local(args.runs)
        if args.from_wandb:
            records += read_wandb(args.from_wandb, args.group)
        write_report(collect(records, unreadable, missing), args.out, args.title, [*sweep_commands(args.runs), command])
    except ReportError as error:
        console.print(f"poolbench-report: {error}", style="red", markup=False)
        return 1
    return 0


class MultirunReport(Callback):
    """Hydra callback: when a multirun ends, write its report into `<sweep dir>/report/`."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            build_report([sweep_dir], sweep_dir / "report")
        except ReportError as error:
            # The sweep itself is done; a sweep without a finished run has nothing to report, which
            # is worth a warning, not a traceback after the last job.
            log.warning("no report for %s: %s", sweep_dir, error)
