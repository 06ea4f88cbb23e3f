"""The pretraining arms: small BERTs pretrained here from scratch, identical but for the objective
(poolbench.pretrain), then probed. Does a sentence-level loss make h_0 ([CLS]) a better summary?

  random     the arms' shared initial weights, untrained (control)
  mlm        masked LM on single segments
  mlm_pairs  masked LM on two segments, no sentence loss (format control)
  mlm_nsp    + next-sentence prediction through the pooler (BERT)
  mlm_sop    + sentence-order prediction (ALBERT)

Pretraining seed s of every arm starts from the same initial weights, data order and masks: the arms
are paired by pretraining seed. The unit of replication for a claim about arms is the PRETRAINING
seed: a new one is a new backbone, a new probe seed only a new head on the same backbone. So a
unit's value is its accuracy averaged over probe seeds, every interval and test is over pretraining
seeds, and tasks are averaged within a seed rather than counted as units (they share the backbone).

  arm_accuracy       per arm: mean, sd and 95% t-interval over pretraining seeds
  arm_contrasts      named contrasts, paired by pretraining seed, per task and over tasks, Holm-adjusted
  cls_mean_gap       per arm: cls − mean (and pooler − cls), over pretraining seeds
  intrinsic_table    per arm: held-out pretraining accuracies and the budget
  arm_verdict_lines, plot_arms, arms_section: the sentences, the figure, REPORT.md's section
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from poolbench.report.figures import pooling_colors
from poolbench.report.naming import CELL_BUT_LAYER, format_p, pooling_order
from poolbench.report.statistics import ALPHA, holm, mean_with_ci
from poolbench.report.tables import markdown_table

ARMS = ["random", "mlm", "mlm_pairs", "mlm_nsp", "mlm_sop"]
# name -> (arm, baseline): each pair differs in one thing only.
CONTRASTS = {
    "loss effect": ("mlm_nsp", "mlm_pairs"),  # a sentence loss, on the same two-segment input
    "format effect": ("mlm_pairs", "mlm"),  # two segments instead of one, no sentence loss
    "SOP vs NSP": ("mlm_sop", "mlm_nsp"),  # which sentence loss
    "pretraining vs none": ("mlm", "random"),  # masked-LM training at all
}
GAPS = {"cls − mean": ("cls", "mean"), "pooler − cls": ("pooler", "cls")}  # readout gaps within one arm
INTRINSIC = ["mlm_acc", "nsp_acc", "sop_acc"]
BUDGET = ["steps", "tokens", "epochs", "train_s", "tokens_per_s"]
CORPUS = ["documents", "sentences", "tokens"]
PRETRAIN = [f"pretrain/{name}" for name in [*INTRINSIC, *BUDGET, *(f"corpus_{c}" for c in CORPUS)]]
# What two arms must share to be compared: the mode, the BERT's size (backbone.pretrain.size) and
# the probes' train cap. Different sizes or caps are never averaged together.
STRATUM = ["mode", "size", "max_train_examples"]
UNIT = [*STRATUM, "task", "pooling", "arm", "backbone_seed"]
POOLED = "all tasks"  # the task of a row averaged over tasks
LEARNED_FACTOR = 2  # a trained arm has learned if its MLM accuracy is above this multiple of random's...
# ...and its 95% interval over pretraining seeds clear of random's.
DIFFERENCE = ["task", "n_tasks", "seeds", "n", "unpaired_seeds", "diff", "sd", "ci_low", "ci_high", "half_width"]


def arm_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of pretrained arms (every layer), with the arm and size of their recipe (read from
    the records' config by collect.runs_table, never from the backbone's name, which a user may
    set); columns an older record lacks are NaN (a run without a train cap trained on everything,
    as collect.runs_table writes it)."""
    runs = runs.copy()
    for column in ["arm", "size", "backbone_seed", "test/acc", *PRETRAIN]:
        if column not in runs:
            runs[column] = np.nan
    if "max_train_examples" not in runs:
        runs["max_train_examples"] = "all"
    return runs[runs["arm"].notna()]


def unit_values(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per unit (UNIT: a pretraining seed's backbone, probed on a task with a readout) at
    the backbone's final layer: test accuracy averaged over the probe seeds. A run without a
    pretraining seed belongs to no unit and is left out."""
    rows = arm_rows(runs)
    backbone = [c for c in dict.fromkeys([*CELL_BUT_LAYER, "backbone_seed"]) if c in rows]
    rows = rows[rows["layer"] == rows.groupby(backbone, dropna=False)["layer"].transform("max")]
    return rows.groupby(UNIT)["test/acc"].agg(**{"test/acc": "mean", "probe_seeds": "count"}).reset_index()


def seeds_text(seeds) -> str:
    return ",".join(str(int(seed)) for seed in sorted(seeds))


def in_arm_order(column: pd.Series) -> pd.Series:
    """A sort key: arms in ARMS order (others last), poolings in naming.pooling_order, the rest as is."""
    if column.name == "arm":
        return column.map({arm: i for i, arm in enumerate(ARMS)}).fillna(len(ARMS))
    if column.name == "pooling":
        return column.map({pooling: i for i, pooling in enumerate(pooling_order(column))})
    return column


def arm_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Per mode x size x train cap x task x pooling x arm: the mean, sd, n and 95% t-interval of
    the units' accuracies over pretraining seeds."""
    units = unit_values(runs)
    keys = [*STRATUM, "task", "pooling", "arm"]
    rows = [{**dict(zip(keys, key)), **mean_with_ci(group["test/acc"]), "seeds": seeds_text(group["backbone_seed"])}
            for key, group in units.groupby(keys)]
    accuracy = pd.DataFrame(rows, columns=[*keys, "mean", "sd", "n", "ci_low", "ci_high", "seeds"])
    return accuracy.sort_values(keys, key=in_arm_order, ignore_index=True)


def by_seed_and_task(units: pd.DataFrame, arm: str, pooling: str) -> pd.DataFrame:
    """One arm and readout of one stratum: accuracy per pretraining seed (rows) and task (columns)."""
    chosen = units[(units["arm"] == arm) & (units["pooling"] == pooling)]
    return chosen.pivot(index="backbone_seed", columns="task", values="test/acc")


def paired_t(x: pd.Series, y: pd.Series, seen: pd.Index) -> dict:
    """x − y over the pretraining seeds both have (the pairing the design makes): mean, sd, 95%
    t-interval and the paired t-test (ttest_rel, df = n − 1). `seen`: every seed either side ran,
    those not paired being counted. One seed: no interval, no test. Differences all zero have no
    spread and no evidence of a difference: p = 1 (scipy would divide zero by zero)."""
    seeds = x.index.intersection(y.index).sort_values()
    differences = x[seeds] - y[seeds]
    summary = mean_with_ci(differences)
    if len(seeds) < 2:
        p = np.nan
    elif (differences == 0).all():
        p = 1.0
    else:
        p = float(stats.ttest_rel(x[seeds], y[seeds]).pvalue)
    return {"seeds": seeds_text(seeds), "n": len(seeds), "unpaired_seeds": len(seen) - len(seeds),
            "diff": summary["mean"], "sd": summary["sd"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
            "half_width": summary["ci_high"] - summary["mean"], "p": p}


def paired(a: pd.DataFrame, b: pd.DataFrame) -> list[dict]:
    """a − b (frames of by_seed_and_task) per task both have, then averaged over those tasks: per
    pretraining seed, the mean over the tasks, so the unit stays the pretraining seed. Only seeds
    both sides ran on every task enter the average (a seed missing a task would be a different mean)."""
    tasks = sorted(set(a.columns) & set(b.columns))
    rows = []
    for task in tasks:
        x, y = a[task].dropna(), b[task].dropna()
        rows.append({"task": task, "n_tasks": 1, **paired_t(x, y, x.index.union(y.index))})
    if tasks:
        x, y = a[tasks].dropna().mean(axis=1), b[tasks].dropna().mean(axis=1)
        rows.append({"task": POOLED, "n_tasks": len(tasks), **paired_t(x, y, a.index.union(b.index))})
    return rows


def arm_contrasts(runs: pd.DataFrame) -> pd.DataFrame:
    """Every CONTRAST for each pooling both arms have, per task and over tasks. Two Holm families:
    the rows over tasks (the report's claims), and separately the per-task rows (the detail)."""
    rows = []
    for key, units in unit_values(runs).groupby(STRATUM):
        for name, (arm, baseline) in CONTRASTS.items():
            for pooling in pooling_order(units["pooling"]):
                differences = paired(by_seed_and_task(units, arm, pooling), by_seed_and_task(units, baseline, pooling))
                rows += [{**dict(zip(STRATUM, key)), "contrast": name, "arm": arm, "baseline": baseline,
                          "pooling": pooling, **row} for row in differences]
    contrasts = pd.DataFrame(rows, columns=[*STRATUM, "contrast", "arm", "baseline", "pooling", *DIFFERENCE, "p"])
    pooled = contrasts["task"] == POOLED
    p = contrasts["p"].astype(float)
    contrasts["p_holm"] = pd.concat([holm(p[pooled]), holm(p[~pooled])]).sort_index()
    significant = contrasts["p_holm"] < ALPHA
    contrasts["outcome"] = np.select(
        [significant & (contrasts["diff"] > 0), significant & (contrasts["diff"] < 0), contrasts["p_holm"].notna()],
        ["higher", "lower", "no detectable difference"], default="untested")
    return contrasts


def cls_mean_gap(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm, each GAP between two readouts of the same backbones, per task and over tasks, with
    its t-interval over pretraining seeds. Descriptive: no test, hence no Holm family. Does a
    sentence loss close or flip the cls-vs-mean gap the other arms show?"""
    rows = []
    for key, units in unit_values(runs).groupby(STRATUM):
        for arm in [a for a in ARMS if a in set(units["arm"])]:
            for name, (pooling, reference) in GAPS.items():
                differences = paired(by_seed_and_task(units, arm, pooling), by_seed_and_task(units, arm, reference))
                rows += [{**dict(zip(STRATUM, key)), "arm": arm, "gap": name, **row} for row in differences]
    return pd.DataFrame(rows, columns=[*STRATUM, "arm", "gap", *DIFFERENCE])


def intrinsic_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per size x arm: the held-out pretraining accuracies (mean, sd, n and 95% t-interval over
    pretraining seeds; NaN where the arm has no such head) and the budget (means). The facts are
    the same on every run of one backbone: the first recorded value per pretraining seed."""
    per_backbone = arm_rows(runs).groupby(["size", "arm", "backbone_seed"])[PRETRAIN].first()
    rows = []
    for (size, arm), group in per_backbone.groupby(["size", "arm"]):
        row = {"size": size, "arm": arm, "n_seeds": len(group)}
        for name in INTRINSIC:
            row |= {f"{name}_{stat}": value for stat, value in mean_with_ci(group[f"pretrain/{name}"]).items()}
        rows.append(row | {name: group[f"pretrain/{name}"].mean() for name in BUDGET})
    columns = ["size", "arm", "n_seeds", *(f"{n}_{s}" for n in INTRINSIC for s in ("mean", "sd", "n", "ci_low",
                                                                                   "ci_high")), *BUDGET]
    return pd.DataFrame(rows, columns=columns).sort_values(["size", "arm"], key=in_arm_order, ignore_index=True)


def corpus_line(runs: pd.DataFrame) -> str:
    rows = arm_rows(runs)
    found = {name: rows[f"pretrain/corpus_{name}"].dropna() for name in CORPUS}
    if all(values.empty for values in found.values()):
        return "Pretraining corpus: not recorded."
    return "Pretraining corpus: " + ", ".join(f"{int(values.iloc[0]):,} {name}" if len(values) else f"? {name}"
                                              for name, values in found.items()) + "."


def points(value: float) -> str:
    return f"{100 * value:+.1f}"


def interval(low: float, high: float) -> str:
    return "(no interval)" if pd.isna(low) else f"[{points(low)}, {points(high)}]"


def where(row) -> str:
    cap = "" if row.max_train_examples == "all" else f", {row.max_train_examples} train"
    return f"{row.mode}, {row.size}{cap}"


def over(row) -> str:
    return (f"averaged over {row.n_tasks} task{'s' * (row.n_tasks > 1)}, n={row.n} pretraining seed{'s' * (row.n > 1)}"
            + (f" ({row.unpaired_seeds} unpaired dropped)" if row.unpaired_seeds else ""))


def contrast_line(row) -> str:
    head = (f"- **{row.contrast[0].upper() + row.contrast[1:]} ({row.arm} − {row.baseline}), {row.pooling}, "
            f"{where(row)}**: {points(row.diff)} points {interval(row.ci_low, row.ci_high)} {over(row)}")
    if pd.isna(row.p):
        return f"{head} → untested: a paired t-test needs two pretraining seeds both arms ran."
    head += f", paired t p={format_p(row.p)}, Holm p={format_p(row.p_holm)}"
    if row.outcome != "no detectable difference":
        return f"{head} → {row.outcome}: {row.arm} {'above' if row.diff > 0 else 'below'} {row.baseline}."
    spans = f"it spans ±{100 * row.half_width:.1f} points"
    if row.ci_low <= 0 <= row.ci_high:
        return f"{head} → null result: the interval {interval(row.ci_low, row.ci_high)} includes 0 ({spans})."
    return f"{head} → no detectable difference after Holm, though the unadjusted interval excludes 0 ({spans})."


def gap_line(row) -> str:
    line = (f"- **{row.gap}, {row.arm}, {where(row)}**: {points(row.diff)} points {interval(row.ci_low, row.ci_high)} "
            f"{over(row)}")
    if pd.isna(row.ci_low):
        return f"{line}."
    if row.ci_low <= 0 <= row.ci_high:
        return f"{line} → the interval includes 0."
    first, second = row.gap.split(" − ")
    return f"{line} → {first} {'above' if row.diff > 0 else 'below'} {second}."


def intrinsic_line(size: str, table: pd.DataFrame) -> str:
    """Whether the trained arms learned masked LM beyond the untrained control: if not, the probe
    contrasts compare undertrained backbones and say little about the objectives. The sentence
    tasks' held-out accuracies follow, against their chance level."""
    trained = table[(table["arm"] != "random") & table["mlm_acc_mean"].notna()]
    control = table[(table["arm"] == "random") & table["mlm_acc_mean"].notna()]
    values = "; ".join(f"{row.arm} {100 * row.mlm_acc_mean:.1f}%" for row in trained.itertuples())
    if trained.empty:
        verdict = "no trained arm recorded its held-out MLM accuracy."
    elif control.empty:
        verdict = f"{values}; no random-init control recorded, so whether the arms learned cannot be checked."
    else:
        random = control.iloc[0]
        # An interval's bound is NaN with one pretraining seed: then the comparison is False, only the factor counts.
        not_learned = [row.arm for row in trained.itertuples()
                       if row.mlm_acc_mean <= LEARNED_FACTOR * random["mlm_acc_mean"]
                       or row.mlm_acc_ci_low <= random["mlm_acc_ci_high"]]
        values = f"random {100 * random['mlm_acc_mean']:.1f}%; {values}"
        apart = "95% intervals apart" if trained["mlm_acc_ci_low"].notna().all() and pd.notna(
            random["mlm_acc_ci_high"]) else "no 95% intervals to compare with one pretraining seed"
        verdict = (f"the MLM accuracy of every trained arm exceeds the random-init control (more than "
                   f"{LEARNED_FACTOR}x, {apart}): {values}." if not not_learned else
                   f"{', '.join(not_learned)} did not learn beyond the random-init control (within "
                   f"{LEARNED_FACTOR}x of it, or 95% intervals overlapping): {values}. The pretraining budget is too "
                   f"small for {'this arm' if len(not_learned) == 1 else 'these arms'} to learn masked LM, so their "
                   "probe contrasts say little about the objectives.")
    sentence = [f"{row['arm']} {name[:3].upper()} {100 * row[f'{name}_mean']:.1f}%"
                for _, row in table.iterrows() for name in ("nsp_acc", "sop_acc") if pd.notna(row[f"{name}_mean"])]
    return (f"- **Intrinsic MLM accuracy, {size}**: {verdict}"
            + (f" Held-out sentence-task accuracy (chance 50%): {'; '.join(sentence)}." if sentence else ""))


def arm_verdict_lines(contrasts: pd.DataFrame, gaps: pd.DataFrame, intrinsic: pd.DataFrame) -> list[str]:
    """The section's sentences: the contrasts over tasks, the readout gaps per arm, and whether
    the arms learned at all (first: it qualifies everything else)."""
    return [*(intrinsic_line(size, table) for size, table in intrinsic.groupby("size")),
            *map(contrast_line, contrasts[(contrasts["task"] == POOLED) & (contrasts["n"] > 0)].itertuples()),
            *map(gap_line, gaps[(gaps["task"] == POOLED) & (gaps["n"] > 0)].itertuples())]


def plot_arms(runs: pd.DataFrame, path: Path) -> bool:
    """Final-layer probe accuracy per arm, one panel per task (and size, train cap): each
    pretraining seed's unit value a dot, their mean a bar, readouts side by side."""
    units = unit_values(runs)
    units = units[units["mode"] == "probe"]
    if units.empty:
        return False
    panels = list(units.groupby(["size", "max_train_examples", "task"]))
    arms = [a for a in ARMS if a in set(units["arm"])] + sorted(set(units["arm"]) - set(ARMS))
    colors = pooling_colors(units["pooling"])
    width = 0.8 / len(colors)
    n_cols = min(4, len(panels))
    n_rows = -(-len(panels) // n_cols)
    figure = Figure(figsize=(max(4.0, 0.3 * len(arms) * len(colors)) * n_cols, 3.5 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey=True).ravel()
    for ax, ((size, cap, task), panel) in zip(axes, panels):
        for k, (pooling, color) in enumerate(colors.items()):
            for i, arm in enumerate(arms):
                values = panel.loc[(panel["arm"] == arm) & (panel["pooling"] == pooling), "test/acc"]
                x = i + (k - (len(colors) - 1) / 2) * width
                ax.scatter(np.full(len(values), x), values, color=color, s=10, alpha=0.7)
                if len(values):
                    ax.hlines(values.mean(), x - width / 2.5, x + width / 2.5, color=color, linewidth=2)
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        ax.set_title(f"{task} · {size}" + ("" if cap == "all" else f", {cap} train"))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[::n_cols]:
        ax.set_ylabel("test accuracy (probe)")
    figure.legend(handles=[Patch(color=c, label=p) for p, c in colors.items()], title="pooling",
                  loc="outside right upper")
    figure.savefig(path, dpi=120)
    return True


def number(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:,.2f}".rstrip("0").rstrip(".")


def intrinsic_for_markdown(intrinsic: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracies in percent, mean ± sd over pretraining seeds; the budget's means."""
    def accuracy(mean: float, sd: float) -> str:
        return "–" if pd.isna(mean) else f"{100 * mean:.1f}" + ("" if pd.isna(sd) else f" ± {100 * sd:.1f}")

    shown = {name: list(map(accuracy, intrinsic[f"{name}_mean"], intrinsic[f"{name}_sd"])) for name in INTRINSIC}
    return intrinsic[["size", "arm", "n_seeds"]].assign(**shown, **{n: intrinsic[n].map(number) for n in BUDGET})


def differences_for_markdown(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows averaged over tasks: differences in points with their 95% t-interval (and tests, if any)."""
    frame = frame[frame["task"] == POOLED]
    shown = frame[columns].assign(diff=frame["diff"].map(points), interval=list(map(interval, frame["ci_low"],
                                                                                        frame["ci_high"])))
    if "p" not in frame:
        return shown
    return shown.assign(p=frame["p"].map(format_p), p_holm=frame["p_holm"].map(format_p), outcome=frame["outcome"])


DESIGN = (
    "Small BERTs pretrained here from scratch, identical but for the objective: `random` (the shared initial weights, "
    "untrained: control), `mlm` (masked LM on single segments), `mlm_pairs` (masked LM on two segments, no sentence "
    "loss: format control), `mlm_nsp` (+ next-sentence prediction through the pooler: BERT), `mlm_sop` (+ "
    "sentence-order prediction: ALBERT). Pretraining seed s of every arm starts from the same initial weights, data "
    "order and masks, so arms are compared paired by pretraining seed. The unit of replication is the pretraining "
    "seed: a unit's accuracy is the mean over its probe seeds (repeated measurements of one backbone), and a "
    "difference over tasks is first averaged over the tasks within each pretraining seed. Intervals are 95% "
    "t-intervals over pretraining seeds (df = n − 1); points = percentage points of test accuracy at each "
    "backbone's final layer."
)


def arms_section(runs: pd.DataFrame, out: Path) -> list[str]:
    """REPORT.md's section on the arms; writes arm_accuracy.csv, arm_contrasts.csv, arm_gaps.csv,
    intrinsic.csv and arms.png into `out`."""
    out = Path(out)
    contrasts, gaps, intrinsic = arm_contrasts(runs), cls_mean_gap(runs), intrinsic_table(runs)
    for name, frame in {"arm_accuracy.csv": arm_accuracy(runs), "arm_contrasts.csv": contrasts, "arm_gaps.csv": gaps,
                        "intrinsic.csv": intrinsic}.items():
        frame.to_csv(out / name, index=False)
    drawn = plot_arms(runs, out / "arms.png")
    if not drawn:
        (out / "arms.png").unlink(missing_ok=True)  # no stale figure from an earlier report into this dir
    pooled = contrasts["task"] == POOLED
    return [
        "## Pretraining arms", "", DESIGN, "",
        f"Paired t-tests (ttest_rel) over pretraining seeds, Holm-adjusted over the "
        f"{contrasts.loc[pooled, 'p'].notna().sum()} contrasts averaged over tasks (every contrast, readout and mode "
        f"below) and separately over the {contrasts.loc[~pooled, 'p'].notna().sum()} per-task contrasts "
        "(`arm_contrasts.csv`). A difference smaller than about half an interval's width could go undetected.", "",
        *(arm_verdict_lines(contrasts, gaps, intrinsic) or ["No arm could be compared."]), "",
        "### Pretraining per arm", "",
        f"{corpus_line(runs)} Held-out accuracy (%), mean ± sd over pretraining seeds; budget: means. "
        "`intrinsic.csv`.", "", markdown_table(intrinsic_for_markdown(intrinsic)), "",
        "### Contrasts between arms, averaged over tasks", "",
        "diff = accuracy(arm) − accuracy(baseline), in points. Per task: `arm_contrasts.csv`.", "",
        markdown_table(differences_for_markdown(contrasts, [*STRATUM, "contrast", "arm", "baseline", "pooling",
                                                            "n_tasks", "n", "unpaired_seeds"])), "",
        "### Readout gaps per arm, averaged over tasks", "",
        "In points. Per task: `arm_gaps.csv`; accuracy per arm, task and readout: `arm_accuracy.csv`.", "",
        markdown_table(differences_for_markdown(gaps, [*STRATUM, "arm", "gap", "n_tasks", "n", "unpaired_seeds"])), "",
        *(["![arms.png](arms.png)", "", "Final-layer probe accuracy per arm: a dot per pretraining seed (mean over "
           "probe seeds), a bar at their mean.", ""] if drawn else ["No probe runs of the arms to draw.", ""]),
    ]
