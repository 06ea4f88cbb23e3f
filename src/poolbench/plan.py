"""The plan of a sweep, before launching it: how many jobs, how many finished, how long the rest.

`poolbench -m <sweep> +plan=true` composes every job of the sweep once (cli.py), names each job's
runs as the job owner would (`jobs.plan_job`: nothing is built, converted or loaded) and looks them
up in the output root's index of finished runs. A job is finished when every one of its runs is.

The time estimate is rough by design: per (backbone, task, mode) cell, the mean wall time of the
jobs that finished before (a record's `timings.total_s` is its job's, shared by the job's layers),
times the cell's jobs still to run. A probe cell's first job also pays for encoding its features,
so a cell whose features are cached runs faster than its past mean. Cells with no finished job yet
are listed as unknown, not guessed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Iterable

from poolbench.jobs import PlannedJob
from poolbench.records import finished_records

Cell = tuple[str, str, str]  # backbone, task, mode


def past_job_seconds(output_root: Path) -> dict[Cell, float]:
    """Per cell, the mean wall time of the finished jobs in the output root's index."""
    per_job: dict[tuple[Cell, str], float] = {}
    for record in finished_records(output_root):
        total = record.timings.get("total_s")
        if total is None or record.factors is None:
            continue
        cell = (record.factors.backbone, record.factors.task, record.factors.mode)
        per_job[(cell, str(Path(record.dir).parent.parent))] = total  # <job dir>/records/<run>/
    seconds: dict[Cell, list[float]] = defaultdict(list)
    for (cell, _), total in per_job.items():
        seconds[cell].append(total)
    return {cell: mean(values) for cell, values in seconds.items()}


@dataclass
class Plan:
    jobs: int = 0
    finished: int = 0  # every run finished: the job will reuse its records
    refused: int = 0  # validation refuses it: by design, nothing runs
    to_run: int = 0
    runs: int = 0  # runs of the jobs whose runs are known
    runs_finished: int = 0
    seconds: float = 0.0  # estimated for the jobs to run whose cell has a past timing
    unknown: dict[Cell, int] = field(default_factory=dict)  # jobs to run whose cell has no past timing
    reasons: dict[str, int] = field(default_factory=dict)  # why some jobs' runs cannot be named yet


def make_plan(jobs: Iterable[PlannedJob], output_root: Path) -> Plan:
    index = {record.run_id for record in finished_records(output_root)}
    past = past_job_seconds(output_root)
    plan = Plan()
    for job in jobs:
        plan.jobs += 1
        if job.refused is not None:
            plan.refused += 1
            continue
        done = sum(run_id in index for run_id in job.run_ids)
        plan.runs += len(job.run_ids)
        plan.runs_finished += done
        if job.unknown is None and done == len(job.run_ids):
            plan.finished += 1
            continue
        plan.to_run += 1
        if job.unknown is not None:
            plan.reasons[job.unknown] = plan.reasons.get(job.unknown, 0) + 1
        if job.cell in past:
            plan.seconds += past[job.cell]
        else:
            plan.unknown[job.cell] = plan.unknown.get(job.cell, 0) + 1
    return plan


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def plan_lines(plan: Plan, output_root: Path) -> list[str]:
    lines = [f"jobs: {plan.jobs} total, {plan.finished} finished (their records are reused), "
             f"{plan.refused} refused (settings that do not combine; nothing runs), {plan.to_run} to run",
             f"runs: {plan.runs} named, {plan.runs_finished} finished (index: {Path(output_root) / 'index'})"]
    estimated = plan.to_run - sum(plan.unknown.values())
    lines.append(f"estimated time of the {estimated} jobs to run with past timings: {duration(plan.seconds)} "
                 "(mean job time per backbone x task x mode in finished records, one process)")
    for (backbone, task, mode), n in sorted(plan.unknown.items()):
        lines.append(f"  no finished job yet to time {n} job(s) of backbone={backbone} task={task} mode={mode}")
    for reason, n in sorted(plan.reasons.items()):
        lines.append(f"  {n} job(s) to run whose runs are named only when they run: {reason}")
    return lines
