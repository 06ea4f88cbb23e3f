"""The "Sink or summary" section: is h_0 an input-dependent aggregate, or a near-constant attention sink?

Reads the diagnose records of a study (poolbench.diagnose.mode, measures version >= 2), per
backbone x task x layer, from the smallest seed's sample of test texts (as the Mechanism section
does; `sink.csv` holds every seed):
  variance_share   of h_0 (cls) and the other readouts: the share of a readout's energy that
                   varies across inputs (diagnose/dependence.py)
  cka              linear CKA between h_0 and the mean of content states
  massive          share of texts whose h_0 meets Sun et al.'s criterion; ratio: its largest
                   activation over the layer's median (diagnose/massive.py)
  raw, value       content queries' raw and value-weighted attention to position 0
                   (diagnose/sink_attention.py; layers >= 1, BERT- and Llama-type backbones)
  decodable        h_0's k-NN accuracy above the majority floor (training-free, same records)
  ablation         last-layer probe accuracy change when position 0 is mean- or zero-ablated after
                   this layer (diagnose/ablation.py; a few layers only)
and gives each backbone x layer a verdict (`verdict`), a figure per backbone over layers and the
verdict table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from poolbench.report.mechanism import BACKBONE, _smallest_seed, diagnose_runs
from poolbench.report.tables import markdown_table

READOUTS = ("cls", "mean", "mean_nospecial")
ABLATIONS = ("mean", "zero")
POSITIONS = {"first": "h_0", "last": "last token", "content": "content (max)"}


@dataclass(frozen=True)
class SinkThresholds:
    """Where the verdict draws its lines (`verdict`)."""

    # Below 5% of its energy varying across inputs, h_0 is >= 95% one constant offset: a probe reads a
    # residual ~20x smaller than the vector (SmolLM2's h_0 at layers 12-28 measures ~0; every trained
    # encoder's final-layer mean is well above it).
    min_variance_share: float = 0.05
    # Sun et al.'s criterion holds for most texts, not a few outliers.
    massive_share: float = 0.5
    # The value-weighted share of position 0 under half its raw share: attention parked, little moved
    # (Kobayashi et al. 2020 find BERT's norm-based share to [CLS]/[SEP] several times below the raw one).
    value_discount: float = 0.5
    # k-NN on h_0 at least 5 accuracy points above always predicting the majority class.
    min_decodable: float = 0.05
    # Mean-ablating position 0 costs a final probe of another readout (mean, max, last, ...) >= 2 accuracy
    # points: the rest of the model reads h_0's input-specific part (with 64 ablated texts one text is 1.6
    # points, so a smaller drop is noise). Not the cls probe: in a causal decoder the final h_0 is a function
    # of position 0 alone, so ablating position 0 ablates that readout by construction.
    harmful_ablation: float = 0.02


def _column(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame[key] if key in frame else pd.Series(np.nan, index=frame.index)


def sink_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, task, seed and layer: the section's measures (NaN where a record lacks one)."""
    diagnose = diagnose_runs(runs)
    if diagnose.empty or "dependence/cls/variance_share" not in diagnose:
        return pd.DataFrame()
    table = diagnose[[*BACKBONE, "task", "seed", "layer", "num_layers"]].copy()
    for readout in READOUTS:
        table[f"variance_share_{readout}"] = _column(diagnose, f"dependence/{readout}/variance_share")
        table[f"centered_cosine_{readout}"] = _column(diagnose, f"dependence/{readout}/centered_cosine")
    table["cka"] = _column(diagnose, "dependence/cka")
    for position in POSITIONS:
        table[f"ratio_{position}"] = _column(diagnose, f"massive/{position}/ratio")
        table[f"massive_{position}"] = _column(diagnose, f"massive/{position}/massive")
    table["top_dim_first"] = _column(diagnose, "massive/first/top_dim")
    for share in ("raw", "value"):
        for bound in ("", "_low", "_high"):
            table[f"{share}{bound}"] = _column(diagnose, f"sink/{share}{bound}")
    table["decodable"] = _column(diagnose, "geometry/cls/knn") - _column(diagnose, "geometry/floor")
    for kind in ABLATIONS:
        for readout in ("cls", "mean"):
            table[f"ablation_{kind}_{readout}"] = _column(diagnose, f"ablation/{kind}/{readout}/accuracy_change")
        others = [c for c in diagnose if c.startswith(f"ablation/{kind}/") and c.endswith("/accuracy_change")
                  and c != f"ablation/{kind}/cls/accuracy_change"]
        changes = diagnose[others].to_numpy(dtype=float) if others else np.full((len(diagnose), 1), np.nan)
        highs = (diagnose[[f"{c}_high" for c in others]].to_numpy(dtype=float) if others else changes)
        measured = ~np.isnan(changes).all(1)
        worst = np.where(measured, np.nanargmin(np.where(np.isnan(changes), np.inf, changes), axis=1), 0)
        rows = np.arange(len(diagnose))
        # the other readout that lost most, and the upper end of its t-interval over texts
        table[f"ablation_{kind}_others"] = np.where(measured, changes[rows, worst], np.nan)
        table[f"ablation_{kind}_others_high"] = np.where(measured, highs[rows, worst], np.nan)
    return table.sort_values([*BACKBONE, "task", "seed", "layer"]).reset_index(drop=True)


def verdict(row: pd.Series | dict, thresholds: SinkThresholds = SinkThresholds()) -> str:
    """"sink": h_0 near-constant AND (massive OR its value share discounted) AND mean-ablating it does not
    cost any other readout's final probe `harmful_ablation` with a t-interval over texts below 0 (where
    measured); "summary": h_0 input-dependent, not
    massive, not discounted, and decodable without training; "mixed" otherwise (e.g. a constant
    embedding-layer [CLS], which is no sink: nothing attends to it yet). Unmeasured evidence counts as
    absent. A harmless mean-ablation does not veto "summary": in an encoder the later layers can
    rebuild h_0's specific part from the other positions."""
    varying = row["variance_share_cls"] >= thresholds.min_variance_share
    massive = row["massive_first"] >= thresholds.massive_share
    discounted = bool(row["value"] < thresholds.value_discount * row["raw"])  # False where not measured (NaN)
    decodable = row["decodable"] >= thresholds.min_decodable
    hurts = bool(row.get("ablation_mean_others", np.nan) <= -thresholds.harmful_ablation
                 and row.get("ablation_mean_others_high", np.nan) < 0)  # and its interval excludes 0
    if not varying and (massive or discounted) and not hurts:
        return "sink"
    if varying and not massive and not discounted and decodable:
        return "summary"
    return "mixed"


def plot_sink(table: pd.DataFrame, path: Path) -> bool:
    """Per backbone (a row), over layers: input dependence, massive ratio of h_0 / last / content,
    raw vs value-weighted attention of content queries to position 0, and the final probes' accuracy
    change when position 0 is mean- or zero-ablated after that layer."""
    if table.empty:
        return False
    names = list(dict.fromkeys(table["backbone"]))
    figure = Figure(figsize=(16.0, 2.8 * len(names)), layout="constrained")
    axes = figure.subplots(len(names), 4, squeeze=False)
    for (dependence, massive, attention, ablation), name in zip(axes, names):
        rows = table[table["backbone"] == name]
        for readout in READOUTS:
            if rows[f"variance_share_{readout}"].notna().any():
                dependence.plot(rows["layer"], rows[f"variance_share_{readout}"], marker=".", label=f"{readout}: variance share")
        dependence.plot(rows["layer"], rows["cka"], linestyle="--", color="black", label="CKA(h_0, content mean)")
        dependence.set(ylim=(-0.02, 1.02), ylabel=f"{name}\ninput dependence", xlabel="layer")
        for position, label in POSITIONS.items():
            massive.plot(rows["layer"], rows[f"ratio_{position}"], marker=".", label=label)
        massive.axhline(1000, color="grey", linewidth=0.8, linestyle=":")
        massive.set(yscale="log", ylabel="max |activation| / median", xlabel="layer")
        measured = rows[rows["raw"].notna()]
        for share, label in (("raw", "raw attention"), ("value", "value-weighted (Kobayashi)")):
            attention.plot(measured["layer"], measured[share], marker=".", label=label)
            attention.fill_between(measured["layer"], measured[f"{share}_low"], measured[f"{share}_high"], alpha=0.2)
        attention.set(ylim=(-0.02, 1.02), ylabel="content queries' share to position 0", xlabel="layer")
        for kind, style in (("mean", "-"), ("zero", ":")):
            for readout in ("cls", "mean"):
                ablated = rows[rows[f"ablation_{kind}_{readout}"].notna()]
                ablation.plot(ablated["layer"], 100 * ablated[f"ablation_{kind}_{readout}"], linestyle=style,
                              marker="o", label=f"{kind}-ablated, {readout} probe")
        ablation.axhline(0, color="grey", linewidth=0.8)
        ablation.set(ylabel="final probe accuracy change (points)", xlabel="position 0 ablated after layer")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    figure.savefig(path, dpi=120)
    return True


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def _points(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:+.1f}"


def verdict_table(table: pd.DataFrame, thresholds: SinkThresholds) -> pd.DataFrame:
    """The markdown table's rows: one per backbone, task and layer, with the evidence beside the verdict."""
    return pd.DataFrame({
        "backbone": table["backbone"], "task": table["task"], "layer": table["layer"],
        "h_0 varying": table["variance_share_cls"].map(_percent), "CKA": table["cka"].map("{:.2f}".format),
        "massive (Sun)": table["massive_first"].map(lambda s: "–" if pd.isna(s) else
                                                    ("yes" if s >= thresholds.massive_share else "no")),
        "ratio": table["ratio_first"].map(lambda r: "–" if pd.isna(r) else f"{r:,.0f}"), "raw → pos 0": table["raw"].map(_percent),
        "value → pos 0": table["value"].map(_percent), "k-NN − floor": table["decodable"].round(3),
        "mean-abl. Δcls": table["ablation_mean_cls"].map(_points),
        "mean-abl. Δothers": table["ablation_mean_others"].map(_points),
        "zero-abl. Δothers": table["ablation_zero_others"].map(_points), "verdict": table["verdict"]})


def sink_section(runs: pd.DataFrame, out: Path, thresholds: SinkThresholds = SinkThresholds()) -> list[str]:
    """REPORT.md's "Sink or summary" section, `sink.csv` and `sink.png`; [] without diagnose records
    of measures version >= 2."""
    table = sink_table(runs)
    if table.empty:
        (out / "sink.png").unlink(missing_ok=True)
        return []
    table["verdict"] = [verdict(row, thresholds) for _, row in table.iterrows()]
    table.to_csv(out / "sink.csv", index=False)
    first = _smallest_seed(table)
    drawn = plot_sink(first, out / "sink.png")
    counts = first.groupby("backbone")["verdict"].value_counts().unstack(fill_value=0)
    lines = ["## Sink or summary: is h_0 an input-dependent aggregate or a near-constant attention sink?", "",
             "Per layer, from the smallest seed's sample of test texts: the share of h_0's energy that varies across "
             "inputs (variance share; a constant vector, however large, has 0), linear CKA between h_0 and the mean of "
             "content states, whether h_0 carries massive activations (Sun et al. 2024: > 100 and > 1,000x the layer's "
             "median, for most texts), and the raw vs value-weighted attention content tokens give position 0 "
             "(Kobayashi et al. 2020, output projection included). Verdict: **sink** = h_0 varies by less than "
             f"{thresholds.min_variance_share:.0%} of its energy and is massive or its value share is under "
             f"{thresholds.value_discount:.0%} of its raw share; **summary** = it varies, is neither, and its k-NN "
             f"accuracy is >= {thresholds.min_decodable:.0%} above the majority floor; **mixed** otherwise. A sink "
             "must also survive mean-ablation (Sun et al.): replacing position 0 after the layer by its mean over "
             "training texts costs no other readout's final probe (logistic regression fitted on unablated training "
             f"vectors) {thresholds.harmful_ablation:.0%} or more with a 95% interval over texts below 0 (measured at a few layers; Δ in accuracy points, "
             "Δothers the worst of mean, max, last and the nospecial readouts; zero-ablation beside it as the "
             "contrast). The variance share is relative to the vector's energy: a massive constant dimension "
             "shrinks it, so a near-constant h_0 can still be decodable (k-NN − floor); read the two together.", ""]
    for name, row in counts.iterrows():
        lines.append(f"- {name}: " + ", ".join(f"{row.get(v, 0)} {v}" for v in ("summary", "sink", "mixed"))
                     + f" of {int(row.sum())} layers.")
    lines += ["", markdown_table(verdict_table(first, thresholds)), ""]
    if drawn:
        lines += ["![sink.png](sink.png)", "", "Per backbone: input dependence (variance share per readout, CKA), "
                  "h_0's / the last token's / the most extreme content token's largest activation over the layer's median "
                  "(log scale; dotted: Sun et al.'s 1,000x), and content queries' raw vs value-weighted attention to "
                  "position 0 (95% band over texts), and the final probes' accuracy change when position 0 is mean- "
                  "(solid) or zero-ablated (dotted) after a layer.", ""]
    return lines + ["Every layer and seed: `sink.csv`.", ""]
