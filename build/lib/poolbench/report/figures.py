"""Figures: accuracy at the final layer, accuracy per layer, win / tie / loss against cls.

Each is drawn on a matplotlib.figure.Figure, which renders with the Agg canvas, so importing the
report never switches the pyplot backend of whoever imports it. A plot function returns whether
it had data to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from poolbench.report.naming import at_final_layer, pooling_order, with_labels


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
