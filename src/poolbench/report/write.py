"""Records -> the study report: tables, confidence intervals, paired tests, figures, a verdict.

Reads records only (poolbench.records), from run or sweep directories or from W&B, and writes
into one output directory:
  runs.csv          one row per analysed run: every factor, its precision, metric, timing, software
                    version and machine
  summary.csv       test accuracy and F1 per setting (every factor but the seed): mean, sd, n and
                    a 95% t-interval over seeds
  comparisons.csv   every pooling against cls in the same cell (every factor but the pooling),
                    seeds matched: paired bootstrap CI over test examples, exact McNemar test,
                    Holm-adjusted p, outcome (win / tie / loss / untested); the equivalence test
                    within ±margin (tost_p, tost_p_holm), the minimum detectable difference at 80%
                    power (mdd, a fraction like diff) and outcome3 (different / equivalent /
                    inconclusive / untested)
  across_cells.csv  per family x init x mode x pooling, the cells (task x backbone) at each
                    backbone's final layer: Wilcoxon signed-rank test over the cells; over their
                    examples, a stratified sign-flip test (perm_p), the equivalence test (tost_p)
                    and mdd; each Holm-adjusted over the groups; outcome3
  flips.csv         per cell and pair of readouts: the test examples right under one and wrong
                    under the other, counts and up to ten ids each way
  table.tex         booktabs table of test accuracy, mean ± sd, final layer, best per row in bold
  *.png             accuracy per task and backbone; accuracy per layer; win/tie/loss against cls
  sink.csv, sink-<backbone>-<task>.png
                    with diagnose records: the "Sink or summary" section (report/sink.py)
  arm_*.csv, intrinsic.csv, arms.png
                    with backbones pretrained here in arms: the arms compared (report/arms.py)
  precision.csv, precision_verdicts.csv
                    with settings run in float32 and another precision: the Precision section (report/precision.py);
                    every other table holds the float32 runs of those settings
  REPORT.md         the question, the runs, the setup, the generated verdict, caveats, tables, figures
  INPUTS.sha256     the fingerprint of what it was built from (records, settings, code commit): a sweep
                    that ends with the same inputs copies the report instead of building it again

Every number and every sentence of the verdict is computed from the records; the statistics are
in statistics.py, the sentences in verdict.py. This module puts the parts together, prints the
summary to the console, and holds the `poolbench-report` CLI and the Hydra callback.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
from datetime import datetime, timezone
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from poolbench.records import Record
from poolbench.report import dashboard
from poolbench.report.arms import arms_section
from poolbench.report.collect import (Collection, ReportError, collect, inputs_fingerprint, read_all_predictions,
                                      read_local, read_wandb, runs_table, sweep_commands)
from poolbench.report.figures import plot_accuracy, plot_layers, plot_win_tie_loss
from poolbench.report.mechanism import mechanism_section
from poolbench.report.equivalence import MARGIN, PERMUTATIONS
from poolbench.report.naming import at_final_layer, values_of
from poolbench.report.precision import PRECISION_OUTPUTS, precision_section
from poolbench.report.protocols import PROTOCOL_OUTPUTS, protocols_section
from poolbench.report.sink import SinkThresholds, sink_option, sink_section
from poolbench.report.statistics import (BOOTSTRAP_RESAMPLES, MIN_WILCOXON_CELLS, across_cells, compare_to_cls,
                                         example_differences, flip_table, summarize)
from poolbench.report.tables import (accuracy_cells, accuracy_grid, across_for_markdown, comparisons_for_markdown,
                                     latex_table, markdown_table)
from poolbench.report.verdict import QUESTION, caveats, points, verdict_lines

log = logging.getLogger(__name__)
INPUTS = "INPUTS.sha256"  # in a report dir: the fingerprint of its records, settings and code (build_report)
console = Console(width=None if sys.stdout.isatty() else 120)  # piped: wide enough for the table


def run_counts(collection: Collection, unavailable_predictions: list[str]) -> pd.DataFrame:
    counts = pd.DataFrame({"runs": ["analysed (finished)", "failed (skipped)", "refused configs (nothing ran)",
                                    "unreadable record dirs (skipped)", "job dirs without a record",
                                    "duplicates counted once", "superseded by a newer config",
                                    "finished without per-example predictions"],
                           "count": [len(collection.finished), len(collection.failed), len(collection.refused),
                                     len(collection.unreadable), len(collection.missing), collection.duplicates,
                                     collection.superseded, len(unavailable_predictions)]})
    if collection.protocols:  # a row only where there are some: reports without them stay as they were
        counts.loc[len(counts)] = ["probe protocol runs (section Protocols only)", len(collection.protocols)]
    if collection.precisions:
        counts.loc[len(counts)] = ["runs in another precision than float32 (section Precision only)",
                                   len(collection.precisions)]
    return counts


def refused_lines(refused: list[Record]) -> list[str]:
    """Refused configs grouped by the reason validation gave: a sweep crossing settings that do
    not combine refuses many jobs for one reason."""
    reasons: dict[str, list[str]] = {}
    for record in refused:
        what = ", ".join(f"{factor}={named_factor(record, factor)}" for factor in ("backbone", "pooling"))
        reasons.setdefault((record.error or "no reason recorded").strip(), []).append(what)
    return [f"- {len(jobs)} jobs ({', '.join(sorted(set(jobs)))}): {reason}" for reason, jobs in reasons.items()]


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
    named = [(factor, named_factor(record, factor))
             for factor in ("backbone", "task", "mode", "pooling", "layer", "seed")]
    what = ", ".join(f"{factor}={value}" for factor, value in named if value is not None)
    error = (record.error or "no error recorded").strip().splitlines()[-1]
    return f"- `{record.dir}` ({what}): {error}"


def setup_section(runs: pd.DataFrame, commands: list[str]) -> list[str]:
    backbones = runs.groupby(["backbone", "family", "init"], dropna=False).agg(
        layers=("num_layers", values_of), dtype=("dtype", values_of), runs=("run_id", "size")).reset_index()
    machines = runs["machine"].fillna("not recorded (a record written before machines were)").value_counts()
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
        "### Machines", "", "The machine each run computed on (CPU model, the flags that decide speed, threads, GPU), "
        "and how many runs it computed (a reused record keeps the machine that computed it):", "",
        *(f"- {machine}: {count} runs" for machine, count in machines.items()), "",
        "### Software and provenance", "",
        *(f"- {column.removeprefix('version/')}: {values_of(runs[column])}" for column in runs if column.startswith("version/")),
        f"- git commits: {values_of(runs['git_commit'])}",
        f"- records created: {created.min()} to {created.max()}" if len(created) else "- records created: –",
        *(f"- produced by: {command}" for command in commands),
        f"- report written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", "",
    ]


def write_report(collection: Collection, out: Path, title: str | None = None, commands: Iterable[str] = (),
                 margin: float = MARGIN, sink: SinkThresholds = SinkThresholds()) -> Path:
    """Analyse the collected runs and write every output into `out`; returns REPORT.md's path.
    `commands`: how the runs and the report were produced, for the provenance section; `margin`:
    the equivalence margin, as a fraction (0.01 = one accuracy point); `sink`: where the Sink-or-summary
    verdict draws its lines. Diagnose runs predict nothing: they enter the Mechanism and the
    Sink-or-summary sections only."""
    if not collection.finished and not collection.protocols:
        raise ReportError(f"no finished runs to report ({len(collection.failed)} failed, "
                          f"{len(collection.unreadable)} unreadable, {len(collection.missing)} without a record)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*PROTOCOL_OUTPUTS, *PRECISION_OUTPUTS):
        (out / name).unlink(missing_ok=True)  # no stale protocol or precision table or figure from an earlier report
    if not collection.finished:
        return write_protocols_only(collection, out, title, commands)
    predictions, unavailable_predictions = read_all_predictions(
        [r for r in collection.finished if r.factors.mode != "diagnose"])
    every_run = runs_table(collection.finished, predictions)
    every_run.to_csv(out / "runs.csv", index=False)
    runs = every_run[every_run["mode"] != "diagnose"]
    studies = ", ".join(sorted(every_run["study"].dropna().astype(str).unique())) or "unnamed study"
    lines = [
        f"# {title or f'poolbench report: {studies}'}", "",
        "## The question", "", QUESTION, "",
        "## Runs", "", markdown_table(run_counts(collection, unavailable_predictions)), "",
    ]
    if collection.failed:
        lines += ["Failed runs:", "", *map(failed_run_line, collection.failed), ""]
    if collection.refused:
        lines += ["Refused configs (validation refused them before any work; by design in a sweep that crosses "
                  "settings which do not combine):", "", *refused_lines(collection.refused), ""]
    if collection.unreadable:
        lines += ["Unreadable record dirs:", "", *(f"- `{entry}`" for entry in collection.unreadable), ""]
    if collection.missing:
        lines += ["Job dirs without a record (killed before writing one, or still running):", "",
                  *(f"- `{entry}`" for entry in collection.missing), ""]
    lines += setup_section(every_run, list(commands))
    summary = summarize(runs) if not runs.empty else pd.DataFrame(columns=["mode", "task", "pooling", "layer"])
    verdict, accuracy = [], pd.DataFrame()
    if not runs.empty:
        accuracy_part, verdict, accuracy = accuracy_lines(runs, summary, predictions, collection,
                                                          unavailable_predictions, out, margin)
        lines += accuracy_part
        if collection.precisions:  # a precision study: the same settings in another precision than float32
            lines += precision_lines(runs, predictions, collection.precisions, out, margin)
    lines += mechanism_section(every_run, summary, out)
    lines += sink_section(every_run, out, sink, summary)
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    print_to_console(collection, unavailable_predictions, accuracy, verdict, report)
    return report


def accuracy_lines(runs: pd.DataFrame, summary: pd.DataFrame, predictions: dict, collection: Collection,
                   unavailable_predictions: list[str], out: Path, margin: float
                   ) -> tuple[list[str], list[str], pd.DataFrame]:
    """The accuracy part of REPORT.md (verdict, caveats, arms, tables, figures) and its files; also the
    verdict lines and the console's accuracy table."""
    correct = {run_dir: run.correct for run_dir, run in predictions.items()}
    comparisons = compare_to_cls(runs, correct, margin)
    across = across_cells(comparisons, example_differences(at_final_layer(runs), correct), margin)
    summary.to_csv(out / "summary.csv", index=False)
    comparisons.to_csv(out / "comparisons.csv", index=False)
    across.to_csv(out / "across_cells.csv", index=False)
    flip_table(runs, correct).to_csv(out / "flips.csv", index=False)
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
    verdict = verdict_lines(across, margin)
    notes = caveats(runs, summary, comparisons, across, collection, unavailable_predictions)
    n_tests = int(comparisons["p"].notna().sum())
    lines = [
        "## Verdict", "",
        f"At each backbone's final layer, each pooling against cls. A cell is one task x backbone; per-cell "
        f"significance is the exact McNemar test on the test examples, Holm-corrected over all {n_tests} "
        f"example-level comparisons in this report; the Wilcoxon signed-rank test over cells is Holm-corrected "
        f"over the {int(across['p'].notna().sum())} groups below. Over the examples of a group's cells, each cell "
        f"weighing the same, a sign-flip test asks whether the readouts differ and a TOST whether they are "
        f"equivalent within ±{points(margin)} accuracy points, each Holm-corrected over the "
        f"{int(across['perm_p'].notna().sum())} groups with per-example predictions; they give the conclusion: "
        f"different, equivalent, or inconclusive with the smallest difference the design detects at 80% power. "
        f"They speak for these cells; the Wilcoxon, where it runs, for cells like them.", "",
        *(verdict or ["No pooling could be compared with cls: no cell holds both."]), "",
        "## Caveats", "", *([f"- {note}" for note in notes] or ["- None found in the data."]), "",
    ]
    if "arm" in runs and runs["arm"].notna().any():  # backbones pretrained here, in arms (report/arms.py)
        lines += arms_section(runs, out)
    if collection.protocols:
        lines += protocols_section(collection.protocols, runs_table(collection.protocols, {}), summary, out)
    lines += [
        "## Test accuracy (%) at the final layer", "",
        "Mean ± sd over seeds; best readout per row in bold. Every layer and setting, with 95% CIs: `summary.csv`.", "",
        markdown_table(accuracy_cells(mean, sd, " ± ", lambda text: f"**{text}**").reset_index()
                       .rename(columns={"label": "backbone"})), "",
        "## Each pooling against cls at the final layer", "",
        f"diff = accuracy(pooling) − accuracy(cls), mean over matched seeds. 95% CI: paired bootstrap over test "
        f"examples ({BOOTSTRAP_RESAMPLES} resamples), each example's difference averaged over seeds. McNemar p: exact "
        f"test on the examples whose seed-averaged difference is not zero (McNemar's own test for one seed); "
        f"'seeds p<0.05' counts seeds whose own McNemar test is significant. TOST Holm p: the equivalence test "
        f"within ±{points(margin)} points (paired t on the seed-averaged per-example differences), Holm over the "
        f"same comparisons; MDD: the difference detectable at 80% power (a fraction, like diff); 3-way: different "
        f"(McNemar), equivalent (TOST), or inconclusive. Every layer: `comparisons.csv`; the examples that flip "
        f"between any two readouts: `flips.csv` (ids; the texts are in the task's test split).", "",
        markdown_table(comparisons_for_markdown(comparisons)), "",
        "## Across cells", "",
        f"Wilcoxon signed-rank test of the per-cell differences, per family x init x mode x pooling (run with at "
        f"least {MIN_WILCOXON_CELLS} cells). perm_p: stratified sign-flip test over the examples of the cells "
        f"({PERMUTATIONS} seeded permutations); tost_p: equivalence within ±{points(margin)} points of the mean "
        f"over cells of the per-cell differences; mdd: the difference it detects at 80% power; outcome3 from "
        f"perm_p_holm and tost_p_holm. Also in `across_cells.csv`.", "",
        markdown_table(across_for_markdown(across)), "",
        "## Figures", "",
    ]
    lines += [f"![{name}]({name})\n\n{caption}\n" for name, caption in figures.items() if drawn[name]] or [
        "No figure had data to draw.", ""]
    lines += ["", "Table for a paper: `table.tex` (booktabs).", ""]
    accuracy = accuracy_cells(mean, sd, " ± ", lambda text: f"[bold]{text}[/bold]").reset_index()
    return lines, verdict, accuracy.rename(columns={"label": "backbone"})


def precision_lines(runs: pd.DataFrame, predictions: dict, others: list[Record], out: Path, margin: float) -> list[str]:
    """The Precision section (report/precision.py): the runs in another precision, with their predictions,
    against the analysed runs of the same settings."""
    other_predictions, _ = read_all_predictions([r for r in others if r.factors.mode != "diagnose"])
    correct = {run_dir: run.correct for run_dir, run in {**predictions, **other_predictions}.items()}
    return precision_section(runs, runs_table(others, other_predictions), correct, margin, out)


def write_protocols_only(collection: Collection, out: Path, title: str | None, commands: Iterable[str]) -> Path:
    """The report of a study that ran only protocols other than full: its runs and the protocols' section."""
    runs = runs_table(collection.protocols, {})
    studies = ", ".join(sorted(runs["study"].dropna().astype(str).unique())) or "unnamed study"
    lines = [f"# {title or f'poolbench report: {studies}'}", "", "## The question", "", QUESTION, "",
             "## Runs", "", markdown_table(run_counts(collection, [])), "",
             *setup_section(runs, list(commands)),
             *protocols_section(collection.protocols, runs, None, out)]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    console.print(f"report: {report}", markup=False)
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


def build_report(roots: list[Path], out: Path, title: str | None = None, commands: Iterable[str] = (),
                 sink: SinkThresholds = SinkThresholds(), unchanged: Path | None = None) -> Path:
    """The report of every record below `roots`, written into `out`; returns REPORT.md's path. With
    `unchanged`, a report directory built before: when it was built from the same records, settings and
    code (its INPUTS fingerprint), it is copied into `out` instead of built again (a study's report takes
    a minute; a re-launched finished study changes nothing)."""
    records, unreadable, missing = read_local(roots)
    fingerprint = None if unreadable or missing else inputs_fingerprint(records, (sink, MARGIN, title))
    before = Path(unchanged) / INPUTS if unchanged else None
    if fingerprint and before and before.is_file() and before.read_text().strip() == fingerprint:
        shutil.copytree(before.parent, out, dirs_exist_ok=True)
        console.print(f"report: its records, settings and code are those of {before.parent}: copied, not rebuilt",
                      markup=False)
        return Path(out) / "REPORT.md"
    report = write_report(collect(records, unreadable, missing), out, title, [*sweep_commands(roots), *commands],
                          sink=sink)
    if fingerprint:
        (Path(out) / INPUTS).write_text(fingerprint + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poolbench-report", description="Records -> tables, tests, figures, verdict.")
    parser.add_argument("runs", nargs="*", type=Path, help="run or sweep directories holding records")
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. results/<study>")
    parser.add_argument("--title", help="the report's title (default: from the study names)")
    parser.add_argument("--from-wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead of (or as well as) dirs")
    parser.add_argument("--group", metavar="STUDY", help="the W&B group (study) to read, with --from-wandb")
    parser.add_argument("--margin", type=float, default=MARGIN,
                        help=f"equivalence margin as a fraction of accuracy (default {MARGIN}: one point)")
    thresholds = parser.add_argument_group("Sink-or-summary thresholds (fractions in [0, 1])")
    for threshold in fields(SinkThresholds):
        thresholds.add_argument(sink_option(threshold.name), dest=f"sink_{threshold.name}", type=float,
                                default=threshold.default, metavar="FRACTION",
                                help=f"{threshold.metadata['help']} (default {threshold.default})".replace("%", "%%"))
    args = parser.parse_args(argv)
    if not args.runs and not args.from_wandb:
        parser.error("give run or sweep directories, or --from-wandb ENTITY/PROJECT --group STUDY")
    if bool(args.from_wandb) != bool(args.group):
        parser.error("--from-wandb and --group go together")
    if not 0 < args.margin < 1:
        parser.error("--margin is a fraction of accuracy between 0 and 1, e.g. 0.01 for one point")
    try:
        sink = SinkThresholds(**{f.name: getattr(args, f"sink_{f.name}") for f in fields(SinkThresholds)})
    except ValueError as error:
        parser.error(str(error))
    command = f"`{shlex.join(['poolbench-report', *(sys.argv[1:] if argv is None else argv)])}`"
    try:
        records, unreadable, missing = read_local(args.runs)
        if args.from_wandb:
            records += read_wandb(args.from_wandb, args.group)
        write_report(collect(records, unreadable, missing), args.out, args.title, [*sweep_commands(args.runs), command],
                     args.margin, sink)
    except ReportError as error:
        console.print(f"poolbench-report: {error}", style="red", markup=False)
        return 1
    return 0


def sweep_summary(sweep_dir: Path) -> tuple[list[str], int]:
    """The end-of-sweep lines (runs finished, of them reused, failed with the first line of each
    reason, refused, unreadable) and the number of failed runs. Refused runs are by design (settings
    that do not combine), not failures."""
    records, unreadable, _ = read_local([sweep_dir])
    by_status: dict[str, list[Record]] = {}
    for record in records:
        by_status.setdefault(record.status, []).append(record)
    finished, failed = by_status.get("finished", []), by_status.get("failed", [])
    reused = sum(record.reused_from is not None for record in finished)
    lines = [f"sweep summary: {len(finished)} runs finished ({len(finished) - reused} computed, {reused} reused), "
             f"{len(failed)} failed, {len(by_status.get('refused', []))} refused (settings that do not combine: by "
             f"design, not a failure), {len(unreadable)} unreadable record dirs",
             f"records: {sweep_dir}"]
    if failed:
        lines += ["failed runs (first line of each reason; the record holds the traceback):",
                  *(failed_run_line(record) for record in failed)]
    return lines, len(failed)


class MultirunReport(Callback):
    """Hydra callback: when a multirun ends, write its report into `<sweep dir>/report/`, and also
    into `out` when given (an experiment sets it to its results/ directory, so that the sweep's one
    command regenerates the shipped study); then print the sweep's summary (with, when its jobs logged
    to W&B, the dashboard spec and the `wandb sync` command of its offline runs) and, when any run failed,
    end the process with exit status 1 so that a cluster script can react (whatever the launcher:
    the callback runs in the launching process). `sink`: Sink-or-summary thresholds by name
    (`hydra.callbacks.report.sink.min_decodable=0.1`; report/sink.py:SinkThresholds), checked here, when
    Hydra makes the callback, before any job runs."""

    def __init__(self, out: str | None = None, sink: Mapping[str, float] | None = None) -> None:
        self.out = out
        self.sink = SinkThresholds.of(sink)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            build_report([sweep_dir], sweep_dir / "report", sink=self.sink, unchanged=self.out)
            if self.out:  # the same report, built once (a large study's report takes a minute)
                shutil.copytree(sweep_dir / "report", self.out, dirs_exist_ok=True)
                console.print(f"report: {Path(self.out) / 'REPORT.md'}", markup=False)
        except ReportError as error:
            # The sweep itself is done; a sweep without a finished run has nothing to report, which
            # is worth a warning, not a traceback after the last job.
            log.warning("no report for %s: %s", sweep_dir, error)
        lines, failed = sweep_summary(sweep_dir)
        lines += dashboard.sweep_lines(sweep_dir, read_local([sweep_dir])[0])
        console.print("\n".join(lines), markup=False, soft_wrap=True)
        if failed:
            # SystemExit, not an Exception: Hydra turns a callback's exceptions into warnings.
            raise SystemExit(1)
