"""Collecting what a report analyses: records read from run or sweep dirs or from W&B, each run
counted once, the newest config of each setting and seed, and per-example predictions.

Records are read through poolbench.records (Record, read_record, read_predictions) and nothing
else; the runs table flattens them into one row per run for the statistics.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from poolbench.records import (FACTORS, PER_LAYER, RECORD_FILE, TIMINGS, Factors, Record, git_commit, read_predictions,
                               read_record)
from poolbench.report.naming import METRICS


class ReportError(Exception):
    """Nothing to report, or records that cannot be fetched; the message says what to do."""


@dataclass
class Collection:
    """The records a report analyses, and what was left out and why."""

    finished: list[Record]
    failed: list[Record] = field(default_factory=list)
    refused: list[Record] = field(default_factory=list)  # configs validation refused: nothing ran, by design
    unreadable: list[str] = field(default_factory=list)  # "<dir>: <reason>"
    missing: list[str] = field(default_factory=list)  # job dirs that never wrote a record
    duplicates: int = 0  # the same run found again (a finished run reused by a later sweep)
    superseded: int = 0  # older runs with the same factors as a newer one but another config
    # Finished runs of a probe protocol other than full (report/protocols.py), each counted once: they
    # share their factors with the full probe's runs, so they stay out of `finished` and its tests.
    protocols: list[Record] = field(default_factory=list)
    # Finished runs of a setting and seed that also ran in REFERENCE_DTYPE, in another precision
    # (report/precision.py): `finished` holds the reference run, so no table averages two precisions.
    precisions: list[Record] = field(default_factory=list)


def read_local(roots: Iterable[Path]) -> tuple[list[Record], list[str], list[str]]:
    """Records below run or sweep dirs, the record dirs that could not be read, and the Hydra job
    dirs without any record. Walks the dirs itself rather than using records.find_records, which
    stops at the first unreadable record."""
    records, unreadable, missing = [], [], []
    for root in map(Path, roots):
        if not root.is_dir():
            unreadable.append(f"{root}: not a directory")
            continue
        for path in sorted(root.rglob(RECORD_FILE)):
            try:
                records.append(read_record(path.parent))
            except (OSError, ValueError) as error:  # unreadable file, bad JSON, or not a record (the reason)
                unreadable.append(f"{path.parent}: {error}")
        # Every Hydra job dir holds .hydra/; one without a record below it died before writing one.
        for hydra_dir in sorted(root.rglob(".hydra")):
            if not any(hydra_dir.parent.rglob(RECORD_FILE)):
                missing.append(str(hydra_dir.parent))
    return records, unreadable, missing


def read_wandb(project_path: str, group: str) -> list[Record]:
    """The runs of one W&B group as records. W&B holds no per-example predictions, so these
    records support the cell-level tests only."""
    import wandb

    try:
        # Runs load lazily: converting them talks to the server too.
        return [record for run in wandb.Api().runs(project_path, filters={"group": group})
                for record in wandb_layer_records(run)]
    except (wandb.errors.Error, OSError) as error:
        raise ReportError(f"cannot read W&B project {project_path} ({error}): set WANDB_API_KEY or use local "
                          "record dirs") from error


def wandb_record(run: Any) -> Record:
    """One W&B run as a record. poolbench logs each factor and the run_id as top-level config keys
    and the resolved config under `config`. The run_id is read, never recomputed here: which config
    entries it hashes is the modes' business (jobs.py). A run logged without one keeps W&B's own id."""
    config = dict(run.config)
    summary = dict(run.summary_metrics)
    # A run that died before logging its config has no factors; its resolved config, if any, names it.
    logged = any(factor in config for factor in FACTORS)
    return Record(
        run_id=config.get("run_id") or run.id,
        status="finished" if run.state == "finished" else "failed",
        study=getattr(run, "group", None),
        factors=Factors(**{factor: config.get(factor) for factor in FACTORS}) if logged else None,
        metrics={k: v for k, v in summary.items() if not k.startswith("_") and not HISTORY_ONLY.fullmatch(k)
                 and not k.startswith(f"{TIMINGS}/") and isinstance(v, (int, float))},
        # jobs.log_metrics' timings; runs logged before them: W&B's run time
        timings={k.removeprefix(f"{TIMINGS}/"): v for k, v in summary.items() if k.startswith(f"{TIMINGS}/")}
                or {"total_s": summary.get("_runtime")},
        config=config.get("config", config),
        versions={},
        git_commit=getattr(run, "commit", None),
        created=getattr(run, "created_at", None),
        dir=f"wandb:{'/'.join(run.path)}",
        error=None if run.state == "finished" else f"W&B state: {run.state}",
    )


def protocol_of(record: Record) -> str:
    """A record's probe protocol (poolbench.protocols); records of fine-tuning, and of probes written
    before protocols existed, are `full`."""
    return (record.config.get("mode") or {}).get("protocol") or "full"


LAYER_METRIC = re.compile(r"L(\d+)/(.+)")  # how jobs.log_metrics names a layer's metric
# jobs.log_metrics' history rows (a metric against the step metric `layer`): the summary may hold their
# last row, which is no metric of the run.
HISTORY_ONLY = re.compile(rf"layer|{PER_LAYER}/.+")


def wandb_layer_records(run: Any) -> list[Record]:
    """One W&B run as one record per layer it logged, like the local records of its job. Its factors
    name the layer as configured (-1, "all"); its `L<layer>/<metric>` keys (jobs.log_metrics) name
    the absolute layers, which local records use, so the two mix in one report. The depth follows
    where the configured layer counts from the end. A run without such keys stays one record."""
    record = wandb_record(run)
    by_layer: dict[int, dict[str, float]] = {}
    for key, value in record.metrics.items():
        if match := LAYER_METRIC.fullmatch(key):
            by_layer.setdefault(int(match[1]), {})[match[2]] = value
    if not by_layer or record.factors is None:
        return [record]
    layers, configured = sorted(by_layer), record.factors.layer
    # What is not a layer's own: every other metric of a one-layer job, the pretraining facts of any.
    shared = {k: v for k, v in record.metrics.items()
              if not LAYER_METRIC.fullmatch(k) and (len(layers) == 1 or k.startswith("pretrain/"))}
    if configured == "all":
        num_layers = layers[-1]
    elif isinstance(configured, int) and configured < 0 and len(layers) == 1:
        num_layers = layers[0] - 1 - configured  # layer -k of a backbone with n layers is n + 1 - k
    else:
        num_layers = record.factors.num_layers
    logged = dict(run.config).get("run_id")  # one id per layer, in order, for a job of several layers
    ids = logged if isinstance(logged, list) and len(logged) == len(layers) else [
        record.run_id if len(layers) == 1 else f"{record.run_id}-L{layer}" for layer in layers]
    return [replace(record, run_id=run_id, factors=replace(record.factors, layer=layer, num_layers=num_layers),
                    metrics={**shared, **by_layer[layer]}, dir=f"{record.dir}#L{layer}")
            for layer, run_id in zip(layers, ids)]


def _setting_and_seed(record: Record) -> tuple[str, ...]:
    return tuple(map(str, astuple(record.factors)))


# The precision the tables report where a setting ran in several: the one every shipped study ran in.
REFERENCE_DTYPE = "float32"


def dtype_of(record: Record) -> str:
    """The precision a run computed in, as its config records it (jobs resolve `auto` first), for telling
    precisions apart; a record that names none counts as the schema's default, float32 (the runs table
    still says it was not recorded)."""
    return (record.config.get("backbone") or {}).get("dtype") or REFERENCE_DTYPE


def one_precision_each(runs: list[Record]) -> tuple[list[Record], list[Record]]:
    """Per setting and seed, the run the tables analyse (in REFERENCE_DTYPE where it ran in it, else the
    newest) and the runs of the same setting and seed in other precisions: two precisions of one setting
    are two experiments, compared in the Precision section, never seeds of one."""
    by_setting: dict[tuple, list[Record]] = {}
    for record in sorted(runs, key=lambda r: r.created or ""):
        by_setting.setdefault(_setting_and_seed(record), []).append(record)
    analysed, others = [], []
    for same in by_setting.values():
        chosen = next((r for r in same if dtype_of(r) == REFERENCE_DTYPE), same[-1])
        analysed.append(chosen)
        others += [r for r in same if r is not chosen]
    return analysed, others


def _counted_once(finished: list[Record], setting) -> tuple[list[Record], int, int]:
    """Each finished run once, the newest config of each setting; and how many were found twice
    and how many superseded. `setting(record)` names what one run of a study is."""
    # The same run_id with the same factors is one run found twice (reuse_record copies a finished
    # record into a later sweep). Keying on the factors too keeps distinct poolings apart should a
    # writer ever give them one run_id.
    unique: dict[tuple, Record] = {}
    for record in finished:
        unique.setdefault((record.run_id, setting(record)), record)
    # Two runs with identical factors but different run_ids differ in config outside the factors
    # (a changed learning rate, say); averaging them as seeds would mix two experiments. The newest wins.
    newest: dict[tuple, Record] = {}
    for record in sorted(unique.values(), key=lambda r: r.created or ""):
        newest[setting(record)] = record
    return list(newest.values()), len(finished) - len(unique), len(unique) - len(newest)


def collect(records: list[Record], unreadable: Iterable[str] = (), missing: Iterable[str] = ()) -> Collection:
    """Finished runs, each counted once, and the failed runs that were never completed later."""
    finished = [r for r in records if r.finished and protocol_of(r) == "full"]
    kept, duplicates, superseded = _counted_once(finished, lambda r: (dtype_of(r), *_setting_and_seed(r)))
    kept, precisions = one_precision_each(kept)
    protocols, protocol_duplicates, protocol_superseded = _counted_once(
        [r for r in records if r.finished and protocol_of(r) != "full"], lambda r: (protocol_of(r), *_setting_and_seed(r)))
    # A failed job that later finished (a re-launched sweep) is not a failure of the study.
    finished_ids = {r.run_id for r in records if r.finished}
    failed = {r.run_id: r for r in records if r.status == "failed" and r.run_id not in finished_ids}
    # A refused job's run id is computed before its backbone is named (a recipe not yet built), so
    # its factors (the pretraining seed among them) tell refused jobs apart.
    refused = {(r.run_id, _setting_and_seed(r)): r for r in records if r.status == "refused"}
    return Collection(kept, list(failed.values()), list(refused.values()), list(unreadable), list(missing),
                      duplicates=duplicates + protocol_duplicates, superseded=superseded + protocol_superseded,
                      protocols=protocols, precisions=precisions)


@dataclass(frozen=True)
class RunPredictions:
    correct: pd.Series  # bool, indexed by test example id
    n_labels: int  # the width of the predicted distribution: the head's label count


def read_all_predictions(records: list[Record]) -> tuple[dict[str, RunPredictions], list[str]]:
    """Per run dir, which test examples it got right; and the runs whose predictions are absent or
    unreadable (they enter the cell-level tests only)."""
    predictions, unavailable = {}, []
    for record in records:
        if not record.predictions:
            unavailable.append(f"{record.dir}: no predictions recorded")
            continue
        try:
            frame = read_predictions(record)
            correct = pd.Series((frame["prediction"] == frame["label"]).to_numpy(), index=frame["id"].to_numpy())
            n_labels = len(frame["probs"].iloc[0]) if len(frame) else 0
        except (OSError, ValueError, KeyError) as error:  # gone, not parquet, or columns missing
            unavailable.append(f"{record.dir}: {error!r}")
            continue
        predictions[record.dir] = RunPredictions(correct, n_labels)
    return predictions, unavailable


def at_epoch_budget(record: Record) -> bool | None:
    """Whether validation chose the last epoch the run was allowed (it may have stopped short of its
    best); None when the record does not say."""
    epoch = record.selection.get("epoch")
    config = record.config
    if epoch is None:
        return None
    if record.factors.mode == "finetune" and "trainer" in config:
        return epoch == config["trainer"]["max_epochs"] - 1  # Lightning counts epochs from 0
    if "mode" in config and "max_epochs" in config["mode"]:
        return epoch == config["mode"]["max_epochs"]  # probe heads count from 1
    return None


def machine_name(machine: dict[str, Any]) -> str | None:
    """A record's machine in one line (poolbench.machine.machine_facts); None where it was not recorded."""
    if not machine:
        return None
    flags = ", ".join(machine.get("cpu_flags") or []) or "none of avx2/avx512/amx"
    gpu = f"; GPU {machine['gpu']}" if machine.get("gpu") else ""
    return (f"{machine.get('cpu')} ({flags}); {machine.get('logical_cpus')} logical CPUs, "
            f"{machine.get('torch_threads')} torch threads{gpu}")


def runs_table(records: list[Record], predictions: dict[str, RunPredictions]) -> pd.DataFrame:
    """One row per run: factors, precision, metrics as recorded, timings, versions, machine, provenance."""
    rows = []
    for record in records:
        # The recipe of a backbone pretrained here (report/arms.py compares its arms within a size).
        recipe = (record.config.get("backbone") or {}).get("pretrain") or {}
        rows.append({
            "run_id": record.run_id,
            "study": record.study,
            **asdict(record.factors),
            "arm": recipe.get("arm"),
            "size": recipe.get("size"),
            # The precision that ran (jobs resolve `auto` before writing the config): float32 and bfloat16
            # runs of one setting are two experiments, never seeds of one.
            "dtype": (record.config.get("backbone") or {}).get("dtype"),
            **record.metrics,
            "n_labels": predictions[record.dir].n_labels if record.dir in predictions else None,
            "selected_epoch": record.selection.get("epoch"),
            "at_epoch_budget": at_epoch_budget(record),
            **{f"time/{k}": v for k, v in record.timings.items()},
            **{f"version/{k}": v for k, v in record.versions.items()},
            "machine": machine_name(record.machine),
            "git_commit": record.git_commit,
            "created": record.created,
            "dir": record.dir,
        })
    runs = pd.DataFrame(rows)
    for metric in [*METRICS, "n_test", "n_train"]:  # read by every report, recorded or not
        if metric not in runs:
            runs[metric] = np.nan
    # A null max_train_examples means the whole train split; as a string it stays a groupable key.
    runs["max_train_examples"] = runs["max_train_examples"].map(lambda n: "all" if pd.isna(n) else str(int(n)))
    return runs.sort_values(FACTORS).reset_index(drop=True)


def sweep_commands(roots: Iterable[Path]) -> list[str]:
    """The command line that launched each Hydra sweep below `roots`, read from its multirun.yaml."""
    commands = []
    for root in roots:
        for path in sorted(Path(root).rglob("multirun.yaml")):
            overrides = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
            commands.append(f"`{shlex.join(['poolbench', '-m', *overrides])}` → `{path.parent}`")
    return commands


def inputs_fingerprint(records: list[Record], settings: Any) -> str | None:
    """What a report is built from, as one hash: every record (but where it was copied from), the report's
    settings (thresholds, margin) and the commit of the code that builds it. None where that code is not
    a clean checkout (uncommitted changes may change the report: it is always rebuilt)."""
    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        return None
    runs = sorted(json.dumps({key: value for key, value in record.to_json().items() if key != "reused_from"},
                             sort_keys=True, default=str) for record in records)
    return hashlib.sha256(json.dumps([commit, repr(settings), runs]).encode()).hexdigest()
