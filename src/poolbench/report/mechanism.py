"""The Mechanism section: what h_0 contains and what it is built from, beside the other readouts.

Reads two kinds of records of the same study:
  probe records of the content probes (probe_length, probe_words, probe_order): what a readout
    CONTAINS, as accuracy per layer with a t-interval over seeds (the seed draws the training
    subsample and the head: the unit of the probes);
  diagnose records (poolbench.diagnose.mode): what a readout LOOKS AT and DEPENDS ON (attention from
    h_0 and the last token, erasure sensitivity by tenth of the text) and what it SEPARATES WITHOUT
    TRAINING (nearest class centroid, k-NN), beside the linear probe of the same task.
Attention and erasure are means over test texts with a t-interval over texts (the text is their
unit); each seed draws another sample of the same test split, so samples overlap and are never
pooled: the section reads the smallest seed's and `mechanism_*.csv` holds every seed. Training-free
accuracies are fitted on the same training rows as the probe of their seed, so they are averaged
over seeds like the probes.

  content_table, attention_table, erasure_table, training_free_table   the tables (every layer)
  mechanism_lines                                                     generated sentences, final layer
  plot_attention, plot_erasure, plot_training_free                    the figures
  mechanism_section                                                   REPORT.md's section
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from poolbench.report.figures import plot_layers, pooling_colors
from poolbench.report.naming import pooling_order
from poolbench.report.statistics import mean_with_ci
from poolbench.report.tables import markdown_table

CONTENT_TASKS = {"probe_length": "sentence length", "probe_words": "word content", "probe_order": "word order"}
BACKBONE = ["family", "backbone", "init", "backbone_seed", "max_train_examples"]  # one backbone of a study
POSITIONS = {"first": "h_0", "last": "last token"}
ATTENTION = ["entropy", "breadth", "self", "special", "content"]
TRAINING_FREE = {"centroid": "nearest centroid", "knn": "k-NN"}
_ERASURE = re.compile(r"^erasure/(?P<pooling>[^/]+)/(?P<bin>\d|all)$")


def diagnose_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["mode"] == "diagnose"]


def _smallest_seed(diagnose: pd.DataFrame) -> pd.DataFrame:
    """The rows of each backbone x task's smallest seed: one sample of texts (see the module note)."""
    first = diagnose.groupby([*BACKBONE, "task"], dropna=False)["seed"].transform("min")
    return diagnose[diagnose["seed"] == first]


def _bounded(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    return pd.DataFrame({"value": rows[key], "low": rows.get(f"{key}_low"), "high": rows.get(f"{key}_high")})


def attention_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, task, layer >= 1, position and metric: mean over texts and its t-interval."""
    frames = []
    for position in POSITIONS:
        for metric in ATTENTION:
            key = f"attention/{position}/{metric}"
            if key not in runs:
                continue
            rows = runs[runs[key].notna()]
            frames.append(pd.concat([rows[[*BACKBONE, "task", "seed", "layer", "num_layers", "n_attention_texts"]]
                                     .assign(position=position, metric=metric), _bounded(rows, key)], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def erasure_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, task, layer, readout and tenth ("0".."9", "all"): mean 1 - cos over texts, t-interval."""
    frames = []
    for key in runs.columns:
        if (match := _ERASURE.match(key)) is None:
            continue
        rows = runs[runs[key].notna()]
        frames.append(pd.concat([rows[[*BACKBONE, "task", "seed", "layer", "num_layers", "n_erasure_texts"]]
                                 .assign(pooling=match["pooling"], bin=match["bin"]), _bounded(rows, key)], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_free_table(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, task, layer and readout: training-free accuracies (mean and t-interval over seeds),
    anisotropy, the majority floor, cos(cls, mean), and the linear probe's accuracy on the same task."""
    diagnose = diagnose_runs(runs)
    rows = []
    for key, group in diagnose.groupby([*BACKBONE, "task", "layer"], dropna=False, sort=True):
        for pooling in pooling_order(c.split("/")[1] for c in group.columns
                                     if c.startswith("geometry/") and c.endswith("/centroid")):
            row = dict(zip([*BACKBONE, "task", "layer"], key), pooling=pooling, seeds=len(group))
            for name in ("centroid", "knn"):
                stats = mean_with_ci(group[f"geometry/{pooling}/{name}"])
                row |= {name: stats["mean"], f"{name}_low": stats["ci_low"], f"{name}_high": stats["ci_high"]}
            row |= {"anisotropy": group[f"geometry/{pooling}/anisotropy"].mean(), "floor": group["geometry/floor"].mean(),
                    "cls_mean_cosine": group["geometry/cls_mean_cosine"].mean(), "num_layers": group["num_layers"].max()}
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if summary.empty:  # diagnose records without probe records: no linear probe to set beside them
        return table.assign(linear=np.nan, linear_low=np.nan, linear_high=np.nan)
    probe = summary[summary["mode"] == "probe"][[*BACKBONE, "task", "layer", "pooling", "acc_mean", "acc_ci_low",
                                                 "acc_ci_high"]]
    probe = probe.rename(columns={"acc_mean": "linear", "acc_ci_low": "linear_low", "acc_ci_high": "linear_high"})
    return table.merge(probe, on=[*BACKBONE, "task", "layer", "pooling"], how="left")


def content_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The content probes' accuracy (mean and t-interval over seeds) per backbone, task, layer, readout."""
    content = summary[(summary["mode"] == "probe") & summary["task"].isin(CONTENT_TASKS)]
    if content.empty:
        return pd.DataFrame()
    return content[[*BACKBONE, "task", "layer", "num_layers", "pooling", "acc_mean", "acc_ci_low", "acc_ci_high",
                     "acc_n"]]


def _final(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["layer"] == frame["num_layers"]] if not frame.empty else frame


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def _interval(row: pd.Series | dict, value: str, low: str, high: str, scale: float = 100, digits: int = 1) -> str:
    """'64.2% [61.0, 67.4]'-style text of a value and its interval (no interval: the value alone)."""
    unit = "%" if scale == 100 else ""
    text = f"{scale * row[value]:.{digits}f}{unit}"
    if pd.notna(row.get(low)) and pd.notna(row.get(high)):
        text += f" [{scale * row[low]:.{digits}f}, {scale * row[high]:.{digits}f}]"
    return text


def _name(backbone: pd.Series | dict) -> str:
    name = str(backbone["backbone"])
    return name + (f" p{int(backbone['backbone_seed'])}" if pd.notna(backbone.get("backbone_seed")) else "")


def _content_sentence(name: str, content: pd.DataFrame) -> str | None:
    if content.empty:  # a study of diagnose records without content probes
        return None
    parts = []
    for task, what in CONTENT_TASKS.items():
        rows = content[content["task"] == task].set_index("pooling")
        if "cls" not in rows.index or "mean" not in rows.index:
            continue
        cls, mean = rows.loc["cls"], rows.loc["mean"]
        parts.append(f"{what} {_interval(cls, 'acc_mean', 'acc_ci_low', 'acc_ci_high')} vs mean "
                     f"{_interval(mean, 'acc_mean', 'acc_ci_low', 'acc_ci_high')}")
    if not parts:
        return None
    seeds = int(content["acc_n"].max())
    return (f"**{name}**, final layer: the linear probe recovers from h_0 " + "; ".join(parts) +
            f" (test accuracy, 95% CI over {seeds} seeds; `content_probes.png`, table `mechanism_content.csv`).")


def _attention_sentence(name: str, attention: pd.DataFrame) -> str | None:
    rows = attention[attention["position"] == "first"].set_index("metric")
    if rows.empty:
        return None
    n = int(rows["n_attention_texts"].iloc[0])
    value = {metric: rows.loc[metric] for metric in ATTENTION}
    return (f"{name}'s h_0 at the final layer attends with entropy {_interval(value['entropy'], 'value', 'low', 'high', 1, 2)}"
            f" nats (breadth {_interval(value['breadth'], 'value', 'low', 'high', 1, 2)}: 1 is uniform over the "
            f"text), {_interval(value['self'], 'value', 'low', 'high')} on itself, "
            f"{_interval(value['special'], 'value', 'low', 'high')} on the other special tokens and "
            f"{_interval(value['content'], 'value', 'low', 'high')} on content tokens (mean over heads, then over "
            f"{n} test texts, 95% CI over texts; `attention.png`).")


def _erasure_sentence(name: str, erasure: pd.DataFrame) -> str | None:
    rows = erasure.set_index(["pooling", "bin"])
    if ("cls", "all") not in rows.index or ("mean", "all") not in rows.index:
        return None
    cls_all, mean_all = rows.loc[("cls", "all")], rows.loc[("mean", "all")]
    text = (f"Erasing one content token moves h_0 by {_interval(cls_all, 'value', 'low', 'high', 1, 3)} (1 − cos) "
            f"and the mean by {_interval(mean_all, 'value', 'low', 'high', 1, 3)}")
    if ("cls", "0") in rows.index and ("cls", "9") in rows.index:
        text += (f"; h_0 moves by {rows.loc[('cls', '0'), 'value']:.3f} for a token in the text's first tenth and "
                 f"{rows.loc[('cls', '9'), 'value']:.3f} in its last")
    return text + f" ({int(cls_all['n_erasure_texts'])} texts; `erasure.png`)."


def _training_free_sentence(name: str, geometry: pd.DataFrame) -> str | None:
    rows = geometry.set_index("pooling")
    if "cls" not in rows.index or "mean" not in rows.index:
        return None
    cls, mean = rows.loc["cls"], rows.loc["mean"]
    text = (f"On {cls['task']}, nearest-centroid accuracy is {_pct(cls['centroid'])} from h_0 vs {_pct(mean['centroid'])} "
            f"from the mean, k-NN {_pct(cls['knn'])} vs {_pct(mean['knn'])}")
    if pd.notna(cls.get("linear")) and pd.notna(mean.get("linear")):
        text += f", the linear probe {_pct(cls['linear'])} vs {_pct(mean['linear'])}"
    return (text + f" (majority floor {_pct(cls['floor'])}); cos(h_0, mean) = {cls['cls_mean_cosine']:.2f}, anisotropy "
            f"of h_0 {cls['anisotropy']:.2f} vs the mean's {mean['anisotropy']:.2f} (`training_free.png`).")


def mechanism_lines(content: pd.DataFrame, attention: pd.DataFrame, erasure: pd.DataFrame,
                    geometry: pd.DataFrame) -> list[str]:
    """One paragraph per backbone, final layer: every number is a row of the tables of this section."""
    frames = [_final(f) for f in (content, attention, erasure, geometry)]
    keys = pd.concat([f[BACKBONE] for f in frames if not f.empty]).drop_duplicates()
    lines = []
    for _, backbone in keys.sort_values(["family", "backbone"]).iterrows():
        def of(frame: pd.DataFrame) -> pd.DataFrame:
            if frame.empty:
                return frame
            same = np.logical_and.reduce([(frame[c] == backbone[c]) | (frame[c].isna() & pd.isna(backbone[c]))
                                          for c in BACKBONE])
            return frame[same]

        name = _name(backbone)
        sentences = [_content_sentence(name, of(frames[0])), _attention_sentence(name, of(frames[1])),
                     _erasure_sentence(name, of(frames[2])), _training_free_sentence(name, of(frames[3]))]
        sentences = [s for s in sentences if s]
        if sentences:
            lines.append(f"- ({backbone['family']}) " + " ".join(sentences))
    return lines


# ---------------------------------------------------------------------------------------------
# Figures

def plot_attention(attention: pd.DataFrame, path: Path) -> bool:
    """Per layer, a line per backbone with its 95% band over texts: panels position x (entropy, special, content)."""
    if attention.empty:
        return False
    metrics = ["entropy", "breadth", "special", "content"]
    names = sorted(attention["backbone"].unique())
    colors = dict(zip(names, sns.color_palette("colorblind", len(names))))
    figure = Figure(figsize=(3.6 * len(metrics), 3.0 * len(POSITIONS)), layout="constrained")
    axes = figure.subplots(len(POSITIONS), len(metrics), squeeze=False)
    for i, (position, label) in enumerate(POSITIONS.items()):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for name in names:
                line = attention[(attention["backbone"] == name) & (attention["position"] == position)
                                 & (attention["metric"] == metric)].sort_values("layer")
                ax.plot(line["layer"], line["value"], marker="o", markersize=3, color=colors[name])
                ax.fill_between(line["layer"], line["low"], line["high"], color=colors[name], alpha=0.2)
            ax.set_title(f"{label}: {metric}" + (" (nats)" if metric == "entropy" else ""), fontsize=9)
            ax.set_xlabel("layer")
    figure.legend(handles=[Line2D([], [], color=c, label=n) for n, c in colors.items()], loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


def plot_erasure(erasure: pd.DataFrame, path: Path) -> bool:
    """At each backbone's final layer: a heat map readout x tenth of the text, 1 - cos when one token there is erased."""
    final = _final(erasure)
    if final.empty:
        return False
    names = sorted(final["backbone"].unique())
    figure = Figure(figsize=(6.0, 1.2 + 1.6 * len(names)), layout="constrained")
    axes = figure.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        panel = final[final["backbone"] == name]
        grid = panel.pivot_table(index="pooling", columns="bin", values="value")
        grid = grid.reindex(index=pooling_order(grid.index), columns=[c for c in [*"0123456789", "all"] if c in grid])
        sns.heatmap(grid, ax=ax, cmap="viridis", annot=True, fmt=".2f", annot_kws={"fontsize": 7}, cbar=False)
        ax.set_title(f"{name}, layer {int(panel['layer'].iloc[0])}: 1 − cos after erasing one token", fontsize=9)
        ax.set_xlabel("tenth of the text (all = every erased position)")
        ax.set_ylabel("")
    figure.savefig(path, dpi=120)
    return True


def plot_training_free(geometry: pd.DataFrame, path: Path) -> bool:
    """Per backbone, accuracy per layer: linear probe (solid), nearest centroid (dashed), k-NN (dotted), a
    colour per readout, the majority floor in grey."""
    if geometry.empty:
        return False
    names = sorted(geometry["backbone"].unique())
    colors = pooling_colors(geometry["pooling"])
    styles = {"linear": "-", "centroid": "--", "knn": ":"}
    figure = Figure(figsize=(4.0 * len(names), 3.4), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        panel = geometry[geometry["backbone"] == name]
        for pooling, color in colors.items():
            line = panel[panel["pooling"] == pooling].sort_values("layer")
            for column, style in styles.items():
                ax.plot(line["layer"], line[column], linestyle=style, color=color)
        floor = panel.groupby("layer")["floor"].mean()
        ax.plot(floor.index, floor.to_numpy(), color="grey", linewidth=0.8)
        ax.set_title(f"{name} · {panel['task'].iloc[0]}", fontsize=9)
        ax.set_xlabel("layer")
    axes[0][0].set_ylabel("test accuracy")
    handles = [Line2D([], [], color=c, label=p) for p, c in colors.items()]
    handles += [Line2D([], [], color="black", linestyle=s, label={"linear": "linear probe", **TRAINING_FREE}[k])
                for k, s in styles.items()] + [Line2D([], [], color="grey", label="majority floor")]
    figure.legend(handles=handles, loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


# ---------------------------------------------------------------------------------------------
# The section

def _final_table(frame: pd.DataFrame, index: list[str], columns: str, value: str) -> pd.DataFrame:
    return _final(frame).pivot_table(index=index, columns=columns, values=value, aggfunc="first").reset_index()


def mechanism_section(runs: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[str]:
    """REPORT.md's Mechanism section, its CSVs and figures; [] when the study has neither diagnose
    records nor content probes."""
    diagnose = diagnose_runs(runs)
    content = content_table(summary)
    if diagnose.empty and content.empty:
        return []
    first = _smallest_seed(diagnose)
    attention, erasure = attention_table(first), erasure_table(first)
    geometry = training_free_table(runs, summary)
    tables = {"mechanism_content.csv": content, "mechanism_attention.csv": attention_table(diagnose),
              "mechanism_erasure.csv": erasure_table(diagnose), "mechanism_training_free.csv": geometry}
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
    figures = {
        "content_probes.png": ("Content probes: test accuracy per layer, a line per readout, 95% band over seeds.",
                               plot_layers(summary[summary["task"].isin(CONTENT_TASKS)], out / "content_probes.png")),
        "attention.png": ("Attention from h_0 and from the last token per layer (mean over heads, then texts; 95% "
                          "band over texts).", plot_attention(attention, out / "attention.png")),
        "erasure.png": ("Erasure sensitivity at the final layer, by tenth of the text.", plot_erasure(erasure, out / "erasure.png")),
        "training_free.png": ("Training-free (nearest centroid, k-NN) beside linear-probe accuracy, per layer.",
                              plot_training_free(geometry, out / "training_free.png")),
    }
    lines = ["## Mechanism: what h_0 contains and what it is built from", "",
             "What a readout CONTAINS: linear probes for a sentence's length (6 balanced bins), which of 100 words it "
             "holds, and whether two adjacent words were swapped (chance 1/6, 1/100, 1/2). What h_0 LOOKS AT: its "
             "attention row per layer, split into itself, the other special tokens ([SEP], EOS) and content tokens. "
             "What it DEPENDS ON: 1 − cos between the readout of a text and of the same text with one content token "
             "replaced by the mask token (decoders: a space). What its geometry SEPARATES without training: nearest "
             "class centroid and k-NN by cosine, fitted on the probe's training rows. Attention and erasure: the "
             "smallest seed's sample of test texts, 95% CI over texts (other seeds' samples overlap it; all in the CSVs); "
             "accuracies: 95% CI over seeds.", "", *mechanism_lines(content, attention, erasure, geometry), ""]
    if not content.empty:
        table = _final(content).assign(acc=lambda f: f.apply(lambda r: _interval(r, "acc_mean", "acc_ci_low", "acc_ci_high"), axis=1))
        lines += ["Content probes at the final layer (test accuracy, 95% CI over seeds):", "",
                  markdown_table(_final_table(table, ["backbone", "task"], "pooling", "acc")), ""]
    if not attention.empty:
        table = _final(attention).assign(text=lambda f: [
            _interval(r, "value", "low", "high", 1 if r["metric"] in ("entropy", "breadth") else 100,
                      2 if r["metric"] in ("entropy", "breadth") else 1) for _, r in f.iterrows()])
        lines += ["Attention at the final layer (entropy in nats; breadth = exp(entropy) / tokens; masses in %):", "",
                  markdown_table(_final_table(table, ["backbone", "position"], "metric", "text")), ""]
    if not geometry.empty:
        table = _final(geometry)[["backbone", "task", "pooling", "linear", "centroid", "knn", "floor", "anisotropy"]]
        lines += ["Training-free and linear accuracy at the final layer (mean over seeds):", "",
                  markdown_table(table.round(3)), ""]
    lines += [f"![{name}]({name})\n\n{caption}\n" for name, (caption, drawn) in figures.items() if drawn]
    for name, (_, drawn) in figures.items():
        if not drawn:
            (out / name).unlink(missing_ok=True)
    return lines + ["Every layer and seed: " + ", ".join(f"`{name}`" for name in tables) + ".", ""]
