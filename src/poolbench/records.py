"""One record per run: what was run, what it scored, on which examples, with which software, on which machine.

A record is a directory holding `record.json` and `predictions.parquet` (one row per test
example: id, label, prediction, probs). Every run (one layer of one job) has its own, in
`<job dir>/records/<pooling>-L<layer>-s<seed>/`: one for a fine-tuning job, one per layer for a probe.
Writes are atomic (temporary file, then rename), so a killed job never leaves a record that
reads as finished. `Record` below is the one definition of what a record holds: the job owner
(jobs.py) writes it, the report reads it, and nothing else does either.

A run is identified by `run_id`, a hash of exactly the config entries its mode reads (the
allow-lists live beside the modes, in jobs.py) and RECORD_SCHEMA. A re-launched sweep finds a
finished run by its run_id through a small index under the output root, and copies its record
instead of computing it again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from poolbench.assets import atomic_write_bytes
from poolbench.machine import machine_facts

# v2: run ids hash a per-mode allow-list (v1 hashed the whole config minus a deny-list, so a probe
# job's id moved with the trainer it never reads). Records of v1 are read, never reused.
RECORD_SCHEMA = 2
RECORD_FILE = "record.json"
# How a job's records appear in W&B (jobs.log_metrics writes them, report/ reads them back): history rows
# of a layer's metrics against the step metric `layer`, and the job's timings as summary keys.
PER_LAYER = "per_layer"
TIMINGS = "timings"
PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class RunResult:
    """What a mode computed for one layer; the job owner turns it into a Record."""

    layer: int
    metrics: dict[str, float]
    selection: dict[str, Any]
    timings: dict[str, float]
    predictions: pd.DataFrame | None  # one row per test example; None for a mode or probe protocol that keeps none
    features: str | None = None  # the feature cache entry it read, if any


def run_identity(identity: dict[str, Any]) -> str:
    """A short stable hash of what determines a run's numbers: `identity` is a mode's allow-list
    of config entries (jobs.py); the schema version is hashed with it."""
    canonical = json.dumps({"schema": RECORD_SCHEMA, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Factors:
    """The experimental factors of a run: one column each in the report, one tag each in W&B."""

    backbone: str
    family: str
    init: str
    task: str
    mode: str
    pooling: str
    layer: int | str  # absolute (0 = embeddings); as configured ("all", -1) in a job that failed before it knew
    num_layers: int | None
    seed: int
    max_train_examples: int | None
    # The seed that drew the backbone's weights where a study varies it: the pretraining seed of a
    # backbone pretrained here (backbone.pretrain.seed), the unit of replication between its arms.
    backbone_seed: int | None = None


FACTORS = [f.name for f in fields(Factors)]


@dataclass
class Record:
    """One run. `config` is the resolved config as composed (enums as strings), for provenance;
    `metrics` holds val/acc, val/f1 (at the selected setting), test/acc, test/f1, n_test, n_train,
    n_labels; `selection` what validation chose (epoch, weight decay, ...); `timings` seconds per phase."""

    run_id: str
    status: str  # "finished" | "failed" | "refused" (validation refused the config: nothing ran)
    study: str | None
    factors: Factors | None  # None only in failed records of schema 1
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the exception text, for failed and refused runs
    predictions: str | None = None  # file name of the per-example predictions, relative to `dir`
    features: str | None = None  # the feature cache entry a probe read
    versions: dict[str, str] = field(default_factory=dict)  # python, torch, transformers, ...
    # Where it ran (poolbench.machine.machine_facts): CPU model and flags, logical CPUs, torch threads, GPU.
    # Empty in records written before machines were recorded.
    machine: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None  # with "+dirty" for uncommitted changes
    created: str | None = None  # UTC ISO time
    reused_from: str | None = None  # the record dir this one was copied from
    schema: int = RECORD_SCHEMA
    dir: str = ""  # where it was read from or written to; not stored

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "dir"}

    @classmethod
    def from_json(cls, data: Any, directory: str | Path = "") -> "Record":
        """A record from its JSON object; ValueError naming what is missing or unknown."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        required = ["run_id", "status"] + (["factors", "metrics"] if data.get("status") == "finished" else [])
        absent = [key for key in required if data.get(key) is None]
        if absent:
            raise ValueError(f"no {', '.join(absent)}")
        known = {f.name for f in fields(cls)} - {"dir"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        factors = data.get("factors")
        if factors is not None and not isinstance(factors, dict):
            raise ValueError(f"factors is a JSON object, not {type(factors).__name__}")
        if factors is not None:
            factors = Factors(**{name: factors.get(name) for name in FACTORS})
        return cls(**{**data, "factors": factors, "config": data.get("config") or {}, "schema": data.get("schema", 1),
                      "dir": str(directory)})


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("poolbench", "torch", "transformers", "datasets", "lightning", "hydra-core", "wandb",
                    "torchmetrics", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the poolbench checkout that ran, with '+dirty' for uncommitted changes. Read
    once per process: a sweep's code is what it imported at start, whatever is committed meanwhile."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "src" / "poolbench").is_dir():  # an installed copy: no checkout of ours to ask
        return None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def write_record(run_dir: Path, record: Record, predictions: pd.DataFrame | None = None) -> Record:
    """Write predictions first, then record.json: a record that exists is complete. Stamps the
    software versions, the machine, the commit and the time; returns the record as `read_record` would."""
    run_dir = Path(run_dir)
    record = replace(record, versions=software_versions(), machine=machine_facts(), git_commit=git_commit(),
                     schema=RECORD_SCHEMA, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), dir=str(run_dir))
    if predictions is not None:
        atomic_write_bytes(run_dir / PREDICTIONS_FILE, predictions.to_parquet(index=False))
        record.predictions = PREDICTIONS_FILE
    atomic_write_bytes(run_dir / RECORD_FILE, json.dumps(record.to_json(), indent=2, default=str).encode())
    return record


def read_record(run_dir: Path) -> Record:
    """The record in `run_dir`; OSError when it cannot be read, ValueError when it is not a record."""
    return Record.from_json(json.loads((Path(run_dir) / RECORD_FILE).read_text()), run_dir)


def read_predictions(record: Record) -> pd.DataFrame:
    return pd.read_parquet(Path(record.dir) / record.predictions)


def find_records(*roots: Path) -> Iterator[Record]:
    """Every record below the given run or sweep directories, in a stable order."""
    for root in roots:
        for path in sorted(Path(root).rglob(RECORD_FILE)):
            yield read_record(path.parent)


# A finished run is found again by its run_id through a small index under the output root,
# whichever sweep dir it was written to: a re-launched sweep reuses it instead of recomputing.
def _index_path(output_root: Path, run_id: str) -> Path:
    return Path(output_root) / "index" / f"{run_id}.txt"


def register_finished(output_root: Path, record: Record) -> None:
    atomic_write_bytes(_index_path(output_root, record.run_id), str(Path(record.dir).resolve()).encode())


def find_finished(output_root: Path, run_id: str) -> Record | None:
    """The finished record with this run_id, if one was registered and is still on disk."""
    index = _index_path(output_root, run_id)
    if not index.exists():
        return None
    run_dir = Path(index.read_text())
    try:
        record = read_record(run_dir)
    except (OSError, ValueError):  # removed or damaged since: compute the run again
        return None
    return record if record.finished and record.run_id == run_id else None


def reuse_record(previous: Record, run_dir: Path) -> Record:
    """Copy a finished record into this run's dir, so every sweep dir holds all its records."""
    run_dir = Path(run_dir)
    if previous.predictions:
        atomic_write_bytes(run_dir / PREDICTIONS_FILE, (Path(previous.dir) / previous.predictions).read_bytes())
    record = replace(previous, reused_from=previous.dir, dir=str(run_dir))
    atomic_write_bytes(run_dir / RECORD_FILE, json.dumps(record.to_json(), indent=2, default=str).encode())
    return record


def finished_records(output_root: Path) -> Iterator[Record]:
    """Every finished record registered in the output root's index (still on disk), once per run."""
    for index in sorted((Path(output_root) / "index").glob("*.txt")):
        record = find_finished(output_root, index.stem)
        if record is not None:
            yield record
