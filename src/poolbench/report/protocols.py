"""The probe protocols' section (poolbench.protocols): few-shot beside full-data accuracy, learning
curves, minimum description length beside accuracy, and selectivity against a control task.

Records of a protocol other than `full` are kept out of every other table and test (collect.py sets
them apart): they share their factors with the full probe's runs, and mixing them would average two
experiments as seeds. Here each protocol is summarised per setting (every factor but the seed: mean
and sd over seeds), and written as
  few_shot.csv        per setting and layer: few-shot test accuracy (mean over the subsamples, then
                      over seeds) beside the full probe's
  learning_curve.csv  per setting, layer and training size: rows trained on, test accuracy
  mdl.csv             per setting and layer: online and uniform codelength (bits), compression, accuracy
  selectivity.csv     per setting and layer: task and control accuracy, selectivity
  learning_curves.png, mdl.png, selectivity.png
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter

from poolbench.records import Record
from poolbench.report.collect import protocol_of
from poolbench.report.figures import pooling_colors
from poolbench.report.naming import SETTING, at_final_layer, sort_poolings, with_labels
from poolbench.report.tables import markdown_table

PROTOCOL_OUTPUTS = ("few_shot.csv", "learning_curve.csv", "mdl.csv", "selectivity.csv", "learning_curves.png",
                    "mdl.png", "selectivity.png")
CURVE_METRIC = re.compile(r"curve/(?P<size>[^/]+)/(?P<metric>n_train|test/acc)$")
KEY = ["task", "label", "pooling"]


def _mean_sd(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: mean and sd over seeds of each column, and the number of seeds."""
    grouped = frame.groupby(SETTING, dropna=False)
    out = grouped[columns].mean().add_suffix("_mean").join(grouped[columns].std(ddof=1).add_suffix("_sd"))
    return out.join(grouped.size().rename("seeds")).reset_index()


def _percent(mean: float, sd: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f}" + ("" if pd.isna(sd) else f" ± {100 * sd:.1f}")


def _ranks(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rank of each readout within its cell (1 = best), from the column's means."""
    cell = [c for c in SETTING if c != "pooling"]
    return frame.groupby(cell, dropna=False)[column].rank(ascending=False, method="min")


def few_shot_table(runs: pd.DataFrame, full_summary: pd.DataFrame | None) -> pd.DataFrame:
    """Per setting and layer: few-shot accuracy beside the full probe's (same backbone, task, readout,
    layer and training rows), with the readouts' ranks under each."""
    table = _mean_sd(runs, ["test/acc", "few_shot/test_acc_sd", "n_train"])
    if full_summary is not None and not full_summary.empty:
        full = full_summary[SETTING + ["acc_mean", "acc_sd"]].rename(columns={"acc_mean": "full_acc_mean",
                                                                             "acc_sd": "full_acc_sd"})
        table = table.merge(full, on=SETTING, how="left")
    else:
        table = table.assign(full_acc_mean=np.nan, full_acc_sd=np.nan)
    return table.assign(rank_few_shot=_ranks(table, "test/acc_mean"), rank_full=_ranks(table, "full_acc_mean"))


def curve_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long: one row per setting, layer and training size (mean and sd over seeds)."""
    rows = []
    sizes = sorted({m["size"] for column in runs for m in [CURVE_METRIC.match(column)] if m})
    for size in sizes:
        part = runs[SETTING + ["seed", f"curve/{size}/n_train", f"curve/{size}/test/acc"]].rename(
            columns={f"curve/{size}/n_train": "n_train", f"curve/{size}/test/acc": "test/acc"})
        rows.append(part.dropna(subset=["test/acc"]).assign(size=size))
    long = pd.concat(rows, ignore_index=True)
    grouped = long.groupby([*SETTING, "size"], dropna=False)
    return grouped.agg(n_train=("n_train", "mean"), acc_mean=("test/acc", "mean"), acc_sd=("test/acc", "std"),
                       seeds=("seed", "size")).reset_index()


def _panel_grid(frame: pd.DataFrame, columns_per_task: int = 1):
    """Figure and axes: a row per backbone label, a column per task (x columns_per_task)."""
    labels, tasks = sorted(frame["label"].unique()), sorted(frame["task"].unique())
    figure = Figure(figsize=(3.6 * len(tasks) * columns_per_task, 2.8 * len(labels)), layout="constrained")
    axes = figure.subplots(len(labels), len(tasks) * columns_per_task, squeeze=False)
    return figure, axes, labels, tasks


def _legend(figure: Figure, poolings) -> None:
    figure.legend(handles=[Patch(color=c, label=p) for p, c in pooling_colors(poolings).items()], title="pooling",
                  loc="outside right upper")


def plot_learning_curves(curve: pd.DataFrame, path: Path) -> bool:
    """Test accuracy against training rows (log scale) at the final layer: a panel per backbone x
    task, a line per readout, the band ± 1 sd over seeds."""
    final = with_labels(at_final_layer(curve))
    if final.empty:
        return False
    figure, axes, labels, tasks = _panel_grid(final)
    colors = pooling_colors(final["pooling"])
    for i, label in enumerate(labels):
        for j, task in enumerate(tasks):
            ax, panel = axes[i][j], final[(final["label"] == label) & (final["task"] == task)]
            for pooling, color in colors.items():
                line = panel[panel["pooling"] == pooling].sort_values("n_train")
                ax.plot(line["n_train"], line["acc_mean"], marker="o", markersize=3, color=color)
                sd = line["acc_sd"].fillna(0)
                ax.fill_between(line["n_train"], line["acc_mean"] - sd, line["acc_mean"] + sd, color=color, alpha=0.2)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # the decades only: minor labels overlap
            ax.set_title(f"{label} · {task}", fontsize=9)
            ax.set_xlabel("training examples")
        axes[i][0].set_ylabel("test accuracy")
    _legend(figure, final["pooling"])
    figure.savefig(path, dpi=120)
    return True


def _per_layer(frame: pd.DataFrame, path: Path, panels: list[tuple[str, str]]) -> bool:
    """Per layer, a line per readout (± 1 sd over seeds); per backbone x task one panel per (column, y label)."""
    data = with_labels(frame)
    if data.empty:
        return False
    figure, axes, labels, tasks = _panel_grid(data, len(panels))
    colors = pooling_colors(data["pooling"])
    for i, label in enumerate(labels):
        for j, task in enumerate(tasks):
            cell = data[(data["label"] == label) & (data["task"] == task)]
            for k, (column, ylabel) in enumerate(panels):
                ax = axes[i][j * len(panels) + k]
                for pooling, color in colors.items():
                    line = cell[cell["pooling"] == pooling].sort_values("layer")
                    sd = line[f"{column}_sd"].fillna(0)
                    ax.plot(line["layer"], line[f"{column}_mean"], marker="o", markersize=3, color=color)
                    ax.fill_between(line["layer"], line[f"{column}_mean"] - sd, line[f"{column}_mean"] + sd,
                                    color=color, alpha=0.2)
                ax.set_title(f"{label} · {task}", fontsize=9)
                ax.set_xlabel("layer (0 = embeddings)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylabel(ylabel)
    _legend(figure, data["pooling"])
    figure.savefig(path, dpi=120)
    return True


def _final_rows(table: pd.DataFrame, percents: dict[str, str], numbers: dict[str, tuple[str, str]] | None = None
                ) -> pd.DataFrame:
    """The final layer's rows as text: task, backbone, pooling, then `percents` {name: metric} as
    "mean ± sd" in percent (from <metric>_mean and <metric>_sd), and `numbers` {name: (column, format)}."""
    final = sort_poolings(with_labels(at_final_layer(table)), ["task", "label"])
    out = final[KEY].rename(columns={"label": "backbone"})
    for name, metric in percents.items():
        out[name] = [_percent(m, s) for m, s in zip(final[f"{metric}_mean"], final[f"{metric}_sd"])]
    for name, (column, form) in (numbers or {}).items():
        out[name] = [form.format(value) for value in final[column]]
    return out.reset_index(drop=True)


def protocols_section(records: list[Record], runs: pd.DataFrame, full_summary: pd.DataFrame | None, out: Path
                      ) -> list[str]:
    """Markdown of the protocols' section; writes its CSVs and figures into `out`. `runs` is the
    runs table of `records` (collect.runs_table), `full_summary` the full probe's summary."""
    protocols = {r.dir: protocol_of(r) for r in records}
    runs = runs.assign(protocol=runs["dir"].map(protocols))
    lines = ["## Protocols", "",
             "The same cached vectors under the protocols other studies cite (`mode.protocol`). Every table is at "
             "each backbone's final layer, mean ± sd over seeds (percent); every layer is in the CSVs.", ""]
    figures = []
    few = runs[runs["protocol"] == "few_shot"]
    if not few.empty:
        table = few_shot_table(few, full_summary)
        table.to_csv(out / "few_shot.csv", index=False)
        text = _final_rows(table, {"full probe": "full_acc", "few-shot": "test/acc"})
        final = sort_poolings(with_labels(at_final_layer(table)), ["task", "label"])
        for name, column in (("rank full", "rank_full"), ("rank few-shot", "rank_few_shot")):
            text[name] = [("–" if pd.isna(rank) else str(int(rank))) for rank in final[column]]
        per_label, repeats, max_iter = (_config_values(records, "few_shot", key) for key in ("per_label", "repeats",
                                                                                              "max_iter"))
        lines += ["### Few-shot (MTEB's classification protocol)", "",
                  f"{per_label} training examples per label, {repeats} seeded stratified subsamples of the training "
                  f"rows per seed, sklearn's LogisticRegression (C = 1, max_iter = {max_iter}) on the vectors as they are, "
                  "test accuracy averaged over the subsamples (poolbench/protocols/few_shot.py says where this "
                  "differs from MTEB). Beside it the full probe on all training rows; rank = the readout's place in "
                  "its cell (1 = best) under each protocol: does the ordering hold?", "",
                  markdown_table(text), ""]
    curve = runs[runs["protocol"] == "learning_curve"]
    if not curve.empty:
        table = curve_table(curve)
        table.to_csv(out / "learning_curve.csv", index=False)
        if plot_learning_curves(table, out / "learning_curves.png"):
            figures.append(("learning_curves.png", "Learning curves at the final layer: the full probe's head "
                            "on n examples per label and on fractions of the training rows (nested subsets of one "
                            "seeded shuffle), ± 1 sd over seeds."))
    mdl = runs[runs["protocol"] == "mdl"]
    if not mdl.empty:
        table = _mean_sd(mdl, ["mdl/online_bits", "mdl/compression", "test/acc", "mdl/uniform_bits"])
        table.to_csv(out / "mdl.csv", index=False)
        text = _final_rows(table, {"test accuracy": "test/acc"},
                           {"online bits": ("mdl/online_bits_mean", "{:,.0f}"),
                            "uniform bits": ("mdl/uniform_bits_mean", "{:,.0f}"),
                            "compression": ("mdl/compression_mean", "{:.2f}")})
        text = text[[*text.columns[:3], "online bits", "uniform bits", "compression", "test accuracy"]]
        lines += ["### Minimum description length (online code)", "",
                  "Voita & Titov (2020): the training rows in a seeded order, blocks ending at "
                  f"{_config_values(records, 'mdl', 'blocks')} % of them, the first block sent uniformly, each later "
                  "one with the full probe's head trained on the rows before it. Fewer bits (higher compression = "
                  "uniform / online) = the labels are easier to extract from the readout. Accuracy: the head on all "
                  "rows.", "", markdown_table(text), ""]
        if _per_layer(table, out / "mdl.png", [("mdl/online_bits", "online codelength (bits)"),
                                                ("test/acc", "test accuracy")]):
            figures.append(("mdl.png", "Online codelength (left of each pair) beside test accuracy (right), per "
                            "layer, ± 1 sd over seeds."))
    control = runs[runs["protocol"] == "control"]
    if not control.empty:
        table = _mean_sd(control, ["test/acc", "control/test/acc", "selectivity", "control/test_majority"])
        table.to_csv(out / "selectivity.csv", index=False)
        text = _final_rows(table, {"task accuracy": "test/acc", "control accuracy": "control/test/acc",
                                   "selectivity": "selectivity", "control majority": "control/test_majority"})
        lines += ["### Selectivity (control task)", "",
                  "Hewitt & Liang (2019), adapted to sentences: the control label is a seeded random function of the "
                  "text's first content word that keeps the task's label distribution. Selectivity = task accuracy − "
                  "control accuracy, the same head on the same rows: high when the readout gives the task more than "
                  "the probe could memorise from the surface word.", "", markdown_table(text), ""]
        if _per_layer(table, out / "selectivity.png", [("selectivity", "selectivity (task − control)")]):
            figures.append(("selectivity.png", "Selectivity per layer, ± 1 sd over seeds."))
    lines += [f"![{name}]({name})\n\n{caption}\n" for name, caption in figures]
    return lines


def _config_values(records: list[Record], protocol: str, key: str) -> str:
    values = {str((r.config.get("mode") or {}).get(protocol, {}).get(key)) for r in records
              if protocol_of(r) == protocol}
    return ", ".join(sorted(values))
