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
  decodable        h_0's accuracy above the majority floor: the better of its training-free k-NN
                   (same records) and its linear probe (the study's probe records of cls on the same
                   backbone, task and layer, mean over seeds), where the study has one
  ablation         last-layer probe accuracy change when position 0 is mean- or zero-ablated after
                   this layer (diagnose/ablation.py; the layers `mode.ablation_layers` picks)
and gives each backbone x layer a verdict (`verdict`, the issue's definition), a figure per backbone
over layers (`sink-<backbone>.png`), the verdict table, the probe accuracy of the sink-free mean
(`mean_nosink`) beside the plain mean, and, with backbones pretrained here in arms, whether the NSP
loss turns a sink into a summary (`nsp_lines`: the arms paired by pretraining seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from poolbench.report.arms import paired_t
from poolbench.report.mechanism import BACKBONE, _smallest_seed, diagnose_runs
from poolbench.report.naming import backbone_label
from poolbench.report.statistics import mean_with_ci
from poolbench.report.tables import markdown_table

READOUTS = ("cls", "mean", "mean_nospecial")
ABLATIONS = ("mean", "zero")
POSITIONS = {"first": "h_0", "last": "last token", "content": "content (max)"}


@dataclass(frozen=True)
class SinkThresholds:
    """Where the verdict draws its lines (`verdict`). Each field's help (its metadata) says why it sits where
    it does; `poolbench-report --sink-<field> VALUE` and the sweep callback's `sink:` mapping
    (`hydra.callbacks.report.sink.<field>=VALUE`) set them. Every threshold is a fraction in [0, 1]."""

    min_variance_share: float = field(default=0.05, metadata={"help": (
        "h_0 is input-dependent when at least this share of its energy varies across inputs; below it, h_0 is "
        ">= 95% one constant offset and a probe reads a residual ~20x smaller than the vector (SmolLM2's h_0 at "
        "layers 12-28 measures ~0; every trained encoder's final-layer mean is well above it)")})
    massive_share: float = field(default=0.5, metadata={"help": (
        "h_0 is massive when Sun et al.'s criterion holds for at least this share of texts (most texts, not a "
        "few outliers)")})
    value_discount: float = field(default=0.5, metadata={"help": (
        "h_0's value share is small when content queries' value-weighted share to position 0 is under this "
        "fraction of their raw share: attention parked, little moved (Kobayashi et al. 2020 find BERT's "
        "norm-based share to [CLS]/[SEP] several times below the raw one)")})
    min_decodable: float = field(default=0.05, metadata={"help": (
        "h_0 is decodable when its k-NN or linear-probe accuracy is at least this far (a fraction: 0.05 = 5 "
        "points) above always predicting the majority class")})
    harmful_ablation: float = field(default=0.02, metadata={"help": (
        "mean-ablating position 0 hurts when it costs another readout's final probe (mean, max, last, ...) at "
        "least this much accuracy with a 95% interval over texts below 0 (with 64 ablated texts one text is 1.6 "
        "points). Not the cls probe: in a causal decoder the final h_0 is a function of position 0 alone, so "
        "ablating position 0 ablates that readout by construction")})

    def __post_init__(self) -> None:
        for threshold in fields(self):
            value = getattr(self, threshold.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"sink threshold {threshold.name}={value!r} ({sink_option(threshold.name)}, or "
                                 f"hydra.callbacks.report.sink.{threshold.name}) is out of range: a fraction in [0, 1] "
                                 f"(default {threshold.default}).")

    @classmethod
    def of(cls, overrides: Mapping[str, Any] | None) -> "SinkThresholds":
        """The defaults with `overrides` (the callback's `sink:` mapping); an unknown name is an error naming
        the known ones."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown sink thresholds {unknown}: use {', '.join(f.name for f in fields(cls))}.")
        return cls(**overrides)


def sink_option(name: str) -> str:
    """The poolbench-report option of a SinkThresholds field: --sink-min-decodable for min_decodable."""
    return f"--sink-{name.replace('_', '-')}"


def _column(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame[key] if key in frame else pd.Series(np.nan, index=frame.index)


def _probe_above_floor(table: pd.DataFrame, summary: pd.DataFrame | None) -> pd.Series:
    """The cls linear probe's test accuracy (mean over seeds) on the same backbone, task and layer, minus the
    diagnose records' majority floor; NaN where the study has no such probe."""
    if summary is None or summary.empty or "mode" not in summary:
        return pd.Series(np.nan, index=table.index)
    keys = [*BACKBONE, "task", "layer"]
    probe = summary[(summary["mode"] == "probe") & (summary["pooling"] == "cls")]
    probe = probe[[*keys, "acc_mean"]].rename(columns={"acc_mean": "probe_cls"})
    seed = {"backbone_seed": lambda frame: pd.to_numeric(frame["backbone_seed"])}  # None (object) and NaN alike
    merged = table[keys].assign(**seed).merge(probe.assign(**seed), on=keys, how="left")
    return pd.Series(merged["probe_cls"].to_numpy(dtype=float), index=table.index) - table["floor"]


def sink_table(runs: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per backbone, task, seed and layer: the section's measures (NaN where a record lacks one); `summary`
    (statistics.summarize of the study's probe runs) adds the cls probe to the decodability."""
    diagnose = diagnose_runs(runs)
    if diagnose.empty or "dependence/cls/variance_share" not in diagnose:
        return pd.DataFrame()
    table = diagnose[[*BACKBONE, "task", "seed", "layer", "num_layers"]].copy()
    table["arm"] = _column(diagnose, "arm")
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
    table["floor"] = _column(diagnose, "geometry/floor")
    table["knn_above_floor"] = _column(diagnose, "geometry/cls/knn") - table["floor"]
    table["probe_above_floor"] = _probe_above_floor(table, summary)
    table["decodable"] = np.fmax(table["knn_above_floor"], table["probe_above_floor"])  # either one, NaN-aware
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


def evidence(row: pd.Series | Mapping[str, Any], thresholds: SinkThresholds = SinkThresholds()) -> dict[str, bool]:
    """The verdict's yes/no facts of one backbone x layer; a measure a record lacks (NaN, or no key) is False:
    varying      h_0's variance share >= min_variance_share (input-dependent after centering)
    decodable    its k-NN or linear probe >= min_decodable above the majority floor
    massive      Sun et al.'s criterion for >= massive_share of the texts
    discounted   value-weighted share to position 0 < value_discount x the raw share
    ablated      position 0 was mean-ablated after this layer
    hurts        that cost another readout's final probe >= harmful_ablation, its t-interval over texts below 0"""
    def value(key: str) -> float:
        found = row.get(key, np.nan)
        return np.nan if found is None else float(found)

    ablated = not np.isnan(value("ablation_mean_others"))
    return {
        "varying": value("variance_share_cls") >= thresholds.min_variance_share,
        "decodable": value("decodable") >= thresholds.min_decodable,
        "massive": value("massive_first") >= thresholds.massive_share,
        "discounted": value("value") < thresholds.value_discount * value("raw"),
        "ablated": ablated,
        "hurts": ablated and value("ablation_mean_others") <= -thresholds.harmful_ablation
                 and value("ablation_mean_others_high") < 0,
    }


def verdict(row: pd.Series | Mapping[str, Any], thresholds: SinkThresholds = SinkThresholds()) -> str:
    """The issue's definition, over `evidence`:
    "sink"     near-constant (not varying), NOT decodable, an attention-sink signature (massive, or its
               value share discounted), and mean-ablating it hurts no other readout;
    "summary"  input-dependent (varying), decodable, and mean-ablating it hurts another readout;
    "mixed"    otherwise: e.g. a near-constant h_0 whose small varying part a k-NN or probe still decodes
               (MiniLM-L6's middle layers), or a constant embedding-layer [CLS] (no sink: nothing attends yet).
    The mean-ablation is measured after a few layers only (never the embeddings or the final layer): where it
    was not, it vetoes neither verdict, which then rests on the other evidence. Either signature makes a sink:
    Sun et al.'s massive activations and Kobayashi et al.'s discounted values are two faces of one sink, and
    requiring both would refuse the verdict to a massive, constant h_0 whose value vector is long
    (SmolLM2's, whose value-weighted share reaches 80%)."""
    facts = evidence(row, thresholds)
    if not facts["varying"] and not facts["decodable"] and (facts["massive"] or facts["discounted"]) \
            and not facts["hurts"]:
        return "sink"
    if facts["varying"] and facts["decodable"] and (facts["hurts"] or not facts["ablated"]):
        return "summary"
    return "mixed"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_sink(rows: pd.DataFrame, path: Path) -> None:
    """One backbone over layers: input dependence, massive ratio of h_0 / last / content, raw vs value-weighted
    attention of content queries to position 0, and the final probes' accuracy change when position 0 is
    mean- or zero-ablated after that layer."""
    name = rows["backbone"].iloc[0]
    figure = Figure(figsize=(16.0, 3.2), layout="constrained")
    dependence, massive, attention, ablation = figure.subplots(1, 4)
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
    for ax in (dependence, massive, attention, ablation):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    figure.savefig(path, dpi=120)


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def _points(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:+.1f}"


def verdict_table(table: pd.DataFrame, thresholds: SinkThresholds) -> pd.DataFrame:
    """The markdown table's rows: one per backbone, task and layer, with the evidence beside the verdict."""
    return pd.DataFrame({
        "backbone": [backbone_label(row) for _, row in table.iterrows()], "task": table["task"],
        "layer": table["layer"],
        "h_0 varying": table["variance_share_cls"].map(_percent), "CKA": table["cka"].map("{:.2f}".format),
        "massive (Sun)": table["massive_first"].map(lambda s: "–" if pd.isna(s) else
                                                    ("yes" if s >= thresholds.massive_share else "no")),
        "ratio": table["ratio_first"].map(lambda r: "–" if pd.isna(r) else f"{r:,.0f}"), "raw → pos 0": table["raw"].map(_percent),
        "value → pos 0": table["value"].map(_percent), "k-NN − floor": table["knn_above_floor"].map(_points),
        "probe − floor": table["probe_above_floor"].map(_points),
        "mean-abl. Δcls": table["ablation_mean_cls"].map(_points),
        "mean-abl. Δothers": table["ablation_mean_others"].map(_points),
        "zero-abl. Δothers": table["ablation_zero_others"].map(_points), "verdict": table["verdict"]})


# --------------------------------------------------------------------------- the sink-free mean's accuracy

ACCURACY_READOUTS = ("cls", "mean", "mean_nosink", "last")
BACKBONE_NAME = ["family", "backbone", "init", "max_train_examples"]  # a backbone, its pretraining seeds together


def nosink_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and task at its final probed layer: the probe's test accuracy of cls, mean, mean_nosink and
    last (mean and t-interval over units), and mean_nosink − mean paired by unit. A unit is a (pretraining
    seed, probe seed) pair: the probe seed for a packaged backbone, the pretraining seed for the arms of a
    study that ties the two (experiments/sink.yaml). Empty without probe runs of mean_nosink."""
    probe = runs[(runs["mode"] == "probe") & runs["pooling"].isin(ACCURACY_READOUTS)] if "mode" in runs else runs
    if probe.empty or "mean_nosink" not in set(probe["pooling"]):
        return pd.DataFrame()
    probe = probe.assign(unit_seed=probe["backbone_seed"].fillna(-1))
    probe = probe[probe["layer"] == probe.groupby([*BACKBONE_NAME, "task"], dropna=False)["layer"].transform("max")]
    rows = []
    for key, group in probe.groupby([*BACKBONE_NAME, "task"], dropna=False, sort=True):
        units = group.pivot_table(index=["unit_seed", "seed"], columns="pooling", values="test/acc")
        row = dict(zip([*BACKBONE_NAME, "task"], key), layer=int(group["layer"].iloc[0]), units=len(units))
        for pooling in ACCURACY_READOUTS:
            stats = mean_with_ci(units[pooling]) if pooling in units else {"mean": np.nan, "ci_low": np.nan,
                                                                           "ci_high": np.nan, "n": 0}
            row |= {pooling: stats["mean"], f"{pooling}_low": stats["ci_low"], f"{pooling}_high": stats["ci_high"]}
        if {"mean", "mean_nosink"} <= set(units):
            stats = mean_with_ci((units["mean_nosink"] - units["mean"]).dropna())
            row |= {"nosink_minus_mean": stats["mean"], "nosink_minus_mean_low": stats["ci_low"],
                    "nosink_minus_mean_high": stats["ci_high"], "paired_units": stats["n"]}
        rows.append(row)
    return pd.DataFrame(rows)


def _accuracy(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "–"
    return f"{100 * value:.1f}%" + ("" if pd.isna(low) else f" [{100 * low:.1f}, {100 * high:.1f}]")


def nosink_lines(accuracy: pd.DataFrame) -> list[str]:
    """A sentence per backbone and task, and the table."""
    if accuracy.empty:
        return []
    lines = ["### The sink-free mean", "",
             "`mean_nosink` averages the real tokens without position 0 and without any position whose activation is "
             "massive at that layer (Sun et al.'s criterion): for an encoder it drops [CLS], for a decoder without BOS "
             "(SmolLM2) the first word, the sink the plain mean includes. Linear-probe test accuracy at the final "
             "layer, mean and 95% t-interval over seeds (a backbone pretrained here: over its pretraining seeds); "
             "every layer of every readout is in `layers.png` and `summary.csv`.", ""]
    for row in accuracy.itertuples(index=False):
        if pd.isna(getattr(row, "nosink_minus_mean", np.nan)):
            continue
        interval = ("" if pd.isna(row.nosink_minus_mean_low) else
                    f" [{100 * row.nosink_minus_mean_low:+.1f}, {100 * row.nosink_minus_mean_high:+.1f}]")
        includes = (not pd.isna(row.nosink_minus_mean_low)
                    and row.nosink_minus_mean_low <= 0 <= row.nosink_minus_mean_high)
        lines.append(f"- {row.backbone} on {row.task} (layer {row.layer}): mean_nosink "
                     f"{_accuracy(row.mean_nosink, row.mean_nosink_low, row.mean_nosink_high)} vs mean "
                     f"{_accuracy(row.mean, row.mean_low, row.mean_high)}: {100 * row.nosink_minus_mean:+.1f} points"
                     f"{interval}, paired over {row.paired_units} seed{'s' * (row.paired_units != 1)}"
                     + (" (the interval includes 0)." if includes else "."))
    table = pd.DataFrame({"backbone": accuracy["backbone"], "task": accuracy["task"], "layer": accuracy["layer"],
                          **{p: [_accuracy(*values) for values in accuracy[[p, f"{p}_low", f"{p}_high"]].itertuples(
                              index=False)] for p in ACCURACY_READOUTS}})
    return [*lines, "", markdown_table(table), ""]


# --------------------------------------------------------------------------- the pretraining arms

NSP_PAIR = ("mlm_nsp", "mlm_pairs")  # the loss effect: the same two-segment input with and without the NSP loss


def _counts(verdicts: pd.Series) -> str:
    return ", ".join(f"{(verdicts == v).sum()} {v}" for v in ("sink", "summary", "mixed"))


def nsp_lines(first: pd.DataFrame) -> list[str]:
    """Does the NSP loss turn a sink into a summary? Per task, the final-layer verdict and evidence of h_0 in
    mlm_nsp against mlm_pairs (report/arms.py's loss effect), paired by pretraining seed (the unit), from each
    backbone's smallest diagnose seed (`first`); stated as a null result when no seed's h_0 turns from sink to
    summary and the paired intervals of its variance share and decodability include 0. [] without both arms."""
    arms = first[first["arm"].isin(NSP_PAIR) & first["backbone_seed"].notna()]
    return [line for task, rows in arms.groupby("task", sort=True) for line in _nsp_task_lines(task, rows)]


def _nsp_task_lines(task: str, arms: pd.DataFrame) -> list[str]:
    if set(arms["arm"]) != set(NSP_PAIR):
        return []
    final = arms[arms["layer"] == arms["num_layers"]].set_index(["arm", "backbone_seed"]).sort_index()
    nsp, pairs = final.loc[NSP_PAIR[0]], final.loc[NSP_PAIR[1]]
    seeds = nsp.index.intersection(pairs.index).sort_values()
    if seeds.empty:
        return []
    nsp, pairs = nsp.loc[seeds], pairs.loc[seeds]
    seen = final.index.get_level_values("backbone_seed").unique()
    share = paired_t(nsp["variance_share_cls"], pairs["variance_share_cls"], seen)
    decodable = paired_t(nsp["decodable"], pairs["decodable"], seen)
    turned = int(((pairs["verdict"] == "sink") & (nsp["verdict"] == "summary")).sum())
    layer = int(nsp["layer"].max())
    transitions = "; ".join(f"p{int(seed)}: {pairs.loc[seed, 'verdict']} → {nsp.loc[seed, 'verdict']}"
                            for seed in seeds)
    layers = arms.groupby("arm")["verdict"].apply(lambda v: (v == "sink").sum())

    def moved(name: str, stats: dict) -> str:
        interval = ("no interval: one seed" if pd.isna(stats["ci_low"]) else
                    f"[{100 * stats['ci_low']:+.1f}, {100 * stats['ci_high']:+.1f}]")
        return f"{name} by {100 * stats['diff']:+.1f} points ({interval})"

    line = (f"- **Does the NSP loss turn a sink into a summary?** On {task}, at the final layer ({layer}), h_0 "
            f"without the NSP loss ({NSP_PAIR[1]}) is {_counts(pairs['verdict'])} and with it ({NSP_PAIR[0]}) "
            f"{_counts(nsp['verdict'])} of {len(seeds)} pretraining seeds, paired by seed ({transitions}); the NSP loss moves h_0's "
            f"{moved('variance share', share)} and its {moved('decodability above the floor', decodable)}, "
            f"n = {len(seeds)} pretraining seeds. Over every layer and seed: {int(layers.get(NSP_PAIR[1], 0))} sink layers "
            f"without NSP, {int(layers.get(NSP_PAIR[0], 0))} with it.")
    includes = all(pd.isna(s["ci_low"]) or s["ci_low"] <= 0 <= s["ci_high"] for s in (share, decodable))
    if turned == 0 and includes:
        why = ("there is no sink to turn: without NSP the final h_0 is a sink in none of the seeds"
               if not (pairs["verdict"] == "sink").any() else "no seed's h_0 turns from sink to summary")
        return [f"{line} → **null result**: {why}, and the paired intervals include 0.", ""]
    if turned == len(seeds) and not includes:
        return [f"{line} → yes: h_0 turns from sink to summary in every pretraining seed.", ""]
    return [f"{line} → h_0 turns from sink to summary in {turned} of {len(seeds)} pretraining seeds"
            + ("" if includes else "; an interval excludes 0") + ".", ""]


# --------------------------------------------------------------------------- the section

def _definition(thresholds: SinkThresholds) -> str:
    t = thresholds
    return ("Verdict per layer, the definition of a sink and of a summary: **sink** = h_0 is near-constant (under "
            f"{t.min_variance_share:.0%} of its energy varies across inputs), NOT decodable (neither its k-NN nor its "
            f"linear probe is {100 * t.min_decodable:g} accuracy points above the majority floor), carries an "
            f"attention-sink signature (massive for at least {t.massive_share:.0%} of the texts, or a value-weighted "
            f"share to position 0 under {t.value_discount:.0%} of its raw share), and mean-ablating it (Sun et al.: position 0 replaced after the "
            "layer by its mean over training texts) costs no other readout's final probe; **summary** = h_0 varies "
            f"by at least {t.min_variance_share:.0%}, is decodable, and mean-ablating it costs another readout's final "
            f"probe at least {100 * t.harmful_ablation:g} points with a 95% interval over texts below 0; **mixed** "
            "otherwise. The ablation is measured after the layers `mode.ablation_layers` picks (never the embeddings or "
            "the final layer); where it was not, it vetoes neither verdict. Δ in accuracy points; Δothers is the worst of mean, "
            "max, last and the nospecial readouts (the cls probe is not evidence: a decoder's final h_0 is position "
            "0's by construction); zero-ablation beside it as the contrast. Thresholds: `poolbench-report "
            "--sink-<name> VALUE` or, after a sweep, `hydra.callbacks.report.sink.<name>=VALUE` "
            "(`report/sink.py:SinkThresholds`).")


def sink_section(runs: pd.DataFrame, out: Path, thresholds: SinkThresholds = SinkThresholds(),
                 summary: pd.DataFrame | None = None) -> list[str]:
    """REPORT.md's "Sink or summary" section, `sink.csv` and one `sink-<backbone>-<task>.png` per backbone and
    task (`-random` after the name of a random-init control); [] without diagnose records of measures version >= 2. `summary`: the probe runs' summary
    (statistics.summarize), whose cls probe joins the decodability."""
    for stale in Path(out).glob("sink*.png"):
        stale.unlink()
    table = sink_table(runs, summary)
    if table.empty:
        return []
    table["verdict"] = [verdict(row, thresholds) for _, row in table.iterrows()]
    table.to_csv(out / "sink.csv", index=False)
    first = _smallest_seed(table)
    counts = first.assign(label=[backbone_label(row) for _, row in first.iterrows()]).groupby(
        "label", sort=False)["verdict"].value_counts().unstack(fill_value=0)
    lines = ["## Sink or summary: is h_0 an input-dependent aggregate or a near-constant attention sink?", "",
             "Per layer, from the smallest seed's sample of test texts: the share of h_0's energy that varies across "
             "inputs (variance share; a constant vector, however large, has 0), linear CKA between h_0 and the mean of "
             "content states, whether h_0 carries massive activations (Sun et al. 2024: > 100 and > 1,000x the layer's "
             "median, for most texts), the raw vs value-weighted attention content tokens give position 0 "
             "(Kobayashi et al. 2020, output projection included), and how far h_0 is decodable (k-NN and linear "
             "probe above the majority floor).", "", _definition(thresholds), ""]
    for name, row in counts.iterrows():
        lines.append(f"- {name}: " + ", ".join(f"{row.get(v, 0)} {v}" for v in ("summary", "sink", "mixed"))
                     + f" of {int(row.sum())} layers.")
    lines += ["", *nsp_lines(first)]
    lines += nosink_lines(nosink_accuracy(runs))
    lines += ["### Verdict per layer", "", markdown_table(verdict_table(first, thresholds)), ""]
    for (name, init, task), rows in first.groupby(["backbone", "init", "task"], sort=False):
        rows = rows[rows["backbone_seed"].fillna(-1) == rows["backbone_seed"].fillna(-1).min()]
        path = out / f"sink-{_slug(name)}{'' if init == 'pretrained' else f'-{init}'}-{_slug(task)}.png"
        seed = "" if rows["backbone_seed"].isna().all() else " (the smallest pretraining seed's backbone)"
        plot_sink(rows, path)
        lines += [f"![{path.name}]({path.name})", "",
                  f"`{path.name}`: {backbone_label(rows.iloc[0])} on {task}{seed}, over layers: input dependence (variance share per readout, "
                  "CKA), h_0's / the last token's / the most extreme content token's largest activation over the "
                  "layer's median (log scale; dotted: Sun et al.'s 1,000x), content queries' raw vs value-weighted "
                  "attention to position 0 (95% band over texts), and the final probes' accuracy change when position "
                  "0 is mean- (solid) or zero-ablated (dotted) after a layer.", ""]
    return lines + ["Every layer and seed, with the evidence behind each verdict: `sink.csv`.", ""]

