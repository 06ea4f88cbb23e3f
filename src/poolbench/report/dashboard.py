"""A study's W&B dashboard, built from code: a specification written beside the report, and a W&B
report built from it (`wandb-workspaces`, `poolbench-dashboard`) once the runs are uploaded.

Offline (the default) nothing can be uploaded, so the end of every sweep whose jobs logged to W&B
writes `<sweep dir>/report/dashboard.json` and prints the two commands that publish it: `wandb sync`
of the sweep's offline runs, then `poolbench-dashboard <sweep dir> --entity <entity>`.

The specification (SPEC_VERSION 1) is a JSON object: study, project, title, description and
`sections`, each a heading, a sentence and `grids`; a grid is a set of runs (`filters`: config key ->
value, always within the study's W&B group) and its `panels`:
  - `line`: `y` keys against the history key `x` (jobs.log_metrics logs one row per layer against the
    step metric `layer`), one line per value of the config key `groupby` (mean and min-max over seeds);
    without `groupby`, one line per run;
  - `bar`: the summary keys `metrics`, one bar per value of `groupby` (mean over its runs).
The sections: accuracy against layer per readout (one grid per probed backbone x task, since a
readout's curve means nothing averaged over tasks), fine-tuned accuracy per readout (one grid per
fine-tuned backbone x task), every run's per-layer history (validation and test accuracy and F1), and
timings per backbone (`timings/*`, logged by jobs.log_metrics from the records).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any, Iterable

from poolbench.records import PER_LAYER, TIMINGS, Record
from poolbench.report.collect import read_local

SPEC_VERSION = 1
SPEC_FILE = "dashboard.json"
PROJECT = "poolbench"  # conf/logger/wandb.yaml's project


def line(title: str, y: list[str], groupby: str | None = None) -> dict[str, Any]:
    return {"kind": "line", "title": title, "x": "layer", "y": y, "groupby": groupby}


def bar(title: str, metrics: list[str], groupby: str) -> dict[str, Any]:
    return {"kind": "bar", "title": title, "metrics": metrics, "groupby": groupby}


def cells(records: Iterable[Record], mode: str) -> list[tuple[str, str]]:
    """The (backbone, task) pairs of the study's finished runs of `mode`, in sorted order."""
    return sorted({(r.factors.backbone, r.factors.task) for r in records
                   if r.finished and r.factors is not None and r.factors.mode == mode})


def dashboard_spec(study: str, records: list[Record], project: str = PROJECT) -> dict[str, Any]:
    """The specification of a study's dashboard, from its records (which cells it has)."""
    probed, tuned = cells(records, "probe"), cells(records, "finetune")
    sections = []
    if probed:
        sections.append({
            "heading": "Accuracy against layer, per readout",
            "text": "Test accuracy of the probe at every layer (0 = embeddings), one line per readout: mean "
                    "over seeds, band from min to max.",
            "grids": [{"name": f"{backbone} / {task}", "filters": {"backbone": backbone, "task": task, "mode": "probe"},
                       "panels": [line(f"{backbone} on {task}: test accuracy by layer", [f"{PER_LAYER}/test/acc"],
                                       "pooling"),
                                  line(f"{backbone} on {task}: validation accuracy by layer", [f"{PER_LAYER}/val/acc"],
                                       "pooling")]}
                      for backbone, task in probed]})
    if tuned:
        sections.append({
            "heading": "Fine-tuned accuracy, per readout",
            "text": "Test accuracy of fine-tuning runs at the selected epoch, mean over seeds.",
            "grids": [{"name": f"{backbone} / {task}", "filters": {"backbone": backbone, "task": task,
                                                                  "mode": "finetune"},
                       "panels": [bar(f"{backbone} on {task}: fine-tuned test accuracy", ["test/acc"], "pooling")]}
                      for backbone, task in tuned]})
    if probed:
        sections.append({
            "heading": "Per-layer history of every run",
            "text": "Each probe job's rows against layer, one line per run (no grouping).",
            "grids": [{"name": "probe runs", "filters": {"mode": "probe"},
                       "panels": [line(f"{metric} by layer, each run", [f"{PER_LAYER}/{metric}"])
                                  for metric in ("val/acc", "test/acc", "val/f1", "test/f1")]}]})
    sections.append({
        "heading": "Timings",
        "text": "Seconds per job (from the records' timings), mean per backbone: encoding the features, training "
                "heads or fine-tuning, and the whole job.",
        "grids": [{"name": "all runs", "filters": {},
                   "panels": [bar("seconds per job, by backbone", [f"{TIMINGS}/total_s"], "backbone"),
                              bar("encoding and training seconds, by backbone",
                                  [f"{TIMINGS}/encode_s", f"{TIMINGS}/train_s"], "backbone")]}]})
    return {"spec": SPEC_VERSION, "study": study, "project": project, "title": f"poolbench: {study}",
            "description": f"The runs of study {study} (W&B group {study}), drawn by poolbench-dashboard.",
            "sections": sections}


def runs_filter(study: str, filters: dict[str, str]) -> str:
    """A W&B filter expression: the study's group and each config key's value."""
    terms = [f"Metric('Group') == {study!r}", *(f"Config({key!r}) == {value!r}" for key, value in filters.items())]
    return " and ".join(terms)


def build(spec: dict[str, Any], entity: str):
    """The spec as a `wandb_workspaces` report (not saved: `.save()` uploads it)."""
    import wandb_workspaces.reports.v2 as wr

    def panel(settings: dict[str, Any]):
        groupby = wr.Config(settings["groupby"]) if settings.get("groupby") else None
        if settings["kind"] == "line":
            return wr.LinePlot(title=settings["title"], x=settings["x"], y=settings["y"], groupby=groupby)
        return wr.BarPlot(title=settings["title"], metrics=settings["metrics"], groupby=groupby)

    blocks = [wr.P(spec["description"])]
    for section in spec["sections"]:
        blocks += [wr.H1(section["heading"]), wr.P(section["text"])]
        blocks += [wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=spec["project"], name=grid["name"],
                                                   filters=runs_filter(spec["study"], grid["filters"]))],
                                panels=[panel(settings) for settings in grid["panels"]])
                   for grid in section["grids"]]
    return wr.Report(entity=entity, project=spec["project"], title=spec["title"], description=spec["description"],
                     blocks=blocks)


def write_spec(sweep_dir: Path, spec: dict[str, Any]) -> Path:
    path = Path(sweep_dir) / "report" / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2))
    return path


def wandb_run_dirs(sweep_dir: Path) -> tuple[list[Path], list[Path]]:
    """The W&B run dirs of a sweep's jobs (conf/logger/wandb.yaml: in each job dir): offline, and synced."""
    wandb_dirs = sorted(Path(sweep_dir).glob("*/wandb"))
    return ([p for d in wandb_dirs for p in sorted(d.glob("offline-run-*"))],
            [p for d in wandb_dirs for p in sorted(d.glob("run-*")) if p.is_dir()])


def sweep_lines(sweep_dir: Path, records: list[Record]) -> list[str]:
    """After a sweep whose jobs logged to W&B: the dashboard spec of its study (its records') written into
    `<sweep dir>/report/`, and what to run to upload the offline runs and build the dashboard. No W&B
    run, or no record naming the study: nothing."""
    offline, online = wandb_run_dirs(sweep_dir)
    study = next((r.study for r in records if r.study), None)
    if not offline and not online or study is None:
        return []
    lines = [f"W&B dashboard specification: {write_spec(sweep_dir, dashboard_spec(study, records))}"]
    if offline:
        lines += [f"W&B: {len(offline)} offline runs in {sweep_dir}/*/wandb/ (nothing was uploaded). "
                  "To upload them (after `wandb login`), then build the dashboard:",
                  f"  wandb sync {shlex.quote(str(sweep_dir))}/*/wandb/offline-run-*"]
    else:
        lines.append("To build the dashboard:")
    lines.append(f"  poolbench-dashboard {shlex.quote(str(sweep_dir))} --entity <your W&B entity>")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`poolbench-dashboard`: write a study's dashboard spec; with --entity, also build it in W&B."""
    parser = argparse.ArgumentParser(prog="poolbench-dashboard", description=main.__doc__)
    parser.add_argument("sweep", type=Path, help="a sweep directory (its records name the study and its cells)")
    parser.add_argument("--entity", help="the W&B entity to build the report in (needs `wandb login`); "
                                         "without it, only the specification is written")
    parser.add_argument("--project", default=PROJECT, help="the W&B project of the runs (default: %(default)s)")
    args = parser.parse_args(argv)
    records, _, _ = read_local([args.sweep])
    studies = sorted({r.study for r in records if r.study})
    if len(studies) != 1:
        parser.error(f"{args.sweep} holds records of {len(studies)} studies ({', '.join(studies) or 'none'}): "
                     "give one sweep directory of one study")
    spec = dashboard_spec(studies[0], records, args.project)
    print(f"specification: {write_spec(args.sweep, spec)}")
    if args.entity is None:
        print(f"to build it in W&B: poolbench-dashboard {shlex.quote(str(args.sweep))} --entity <your W&B entity>")
        return 0
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        print(f"WANDB_MODE={os.environ['WANDB_MODE']}: not building; run again online (WANDB_MODE=online)")
        return 1
    report = build(spec, args.entity).save()
    print(f"dashboard: {report.url}")
    return 0
