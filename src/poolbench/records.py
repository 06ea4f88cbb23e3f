"""One record per run: what was run, what it scored, on which examples, with which software.

A record is a directory holding `record.json` and `predictions.parquet` (one row per test
example: id, label, prediction, probs). A fine-tuning job writes one record into its Hydra
output dir; a probe job writes one per (pooling, layer, seed) under `<output_dir>/records/`.
Writes are atomic (temporary file, then rename), so a killed job never leaves a record that
reads as finished. report.py reads records and nothing else.

record.json keys:
  schema      RECORD_SCHEMA
  run_id      hash of the config entries that change the numbers (see `run_identity`)
  status      "finished" | "failed"
  study       the study (W&B group) it was launched under
  factors     backbone, family, init, task, mode, pooling, layer (absolute: 0 = embeddings),
              num_layers, seed, max_train_examples: one column each in the report
  metrics     val/acc, val/f1 (at the selected setting), test/acc, test/f1, n_test, n_train, n_labels
  selection   what validation chose (epoch, weight decay, ...)
  timings     seconds per phase
  config      the resolved config, enums as strings
  versions    python, torch, transformers, ... ; git_commit; created (UTC ISO time)
  error       the exception text, for failed runs
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from poolbench.assets import atomic_write_bytes

RECORD_SCHEMA = 1
RECORD_FILE = "record.json"
PREDICTIONS_FILE = "predictions.parquet"

# Config entries that cannot change a run's numbers: where outputs go, how they are
# logged, what the study is called, progress bars, the encoding batch size (a speed knob: it
# moves cached vectors by float rounding only, and is not part of their cache key either).
# Everything else is the run's identity.
_NOT_IDENTITY = {"paths", "logger", "study", "skip_finished"}
_NOT_IDENTITY_WITHIN = {"trainer": {"enable_progress_bar", "enable_model_summary", "log_every_n_steps"},
                        "mode": {"encode_batch_tokens"}}


def run_identity(config: dict[str, Any]) -> str:
    """A short stable hash of the resolved config entries that determine the numbers."""
    identity = {k: v for k, v in config.items() if k not in _NOT_IDENTITY}
    for group, dropped in _NOT_IDENTITY_WITHIN.items():
        if isinstance(identity.get(group), dict):
            identity[group] = {k: v for k, v in identity[group].items() if k not in dropped}
    canonical = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def factors(config: dict[str, Any], layer: int, num_layers: int) -> dict[str, Any]:
    """The experimental factors of a run, from its resolved config (enums as strings): one
    column each in the report, one tag each in W&B. `layer` is absolute: 0 = embeddings."""
    return {
        "backbone": config["backbone"]["name"],
        "family": config["backbone"]["family"],
        "init": config["backbone"]["init"],
        "task": config["task"]["name"],
        "mode": config["mode"]["name"],
        "pooling": config["pooling"]["strategy"],
        "layer": layer,
        "num_layers": num_layers,
        "seed": config["seed"],
        "max_train_examples": config["task"]["max_train_examples"],
    }


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
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def write_record(run_dir: Path, record: dict[str, Any], predictions: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write predictions first, then record.json: a record that exists is complete. Returns the
    record as `read_record` would."""
    run_dir = Path(run_dir)
    record = {
        "schema": RECORD_SCHEMA,
        **record,
        "versions": software_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if predictions is not None:
        atomic_write_bytes(run_dir / PREDICTIONS_FILE, predictions.to_parquet(index=False))
        record["predictions"] = PREDICTIONS_FILE
    atomic_write_bytes(run_dir / RECORD_FILE, json.dumps(record, indent=2, default=str).encode())
    return record | {"dir": str(run_dir)}


def read_record(run_dir: Path) -> dict[str, Any]:
    record = json.loads((Path(run_dir) / RECORD_FILE).read_text())
    record["dir"] = str(run_dir)
    return record


def read_predictions(record: dict[str, Any]) -> pd.DataFrame:
    return pd.read_parquet(Path(record["dir"]) / record["predictions"])


def find_records(*roots: Path) -> Iterator[dict[str, Any]]:
    """Every record below the given run or sweep directories, in a stable order."""
    for root in roots:
        for path in sorted(Path(root).rglob(RECORD_FILE)):
            yield read_record(path.parent)


# A finished run is found again by its run_id through a small index under the output root,
# whichever sweep dir it was written to: a re-launched sweep reuses it instead of recomputing.
def _index_path(output_root: Path, run_id: str) -> Path:
    return Path(output_root) / "index" / f"{run_id}.txt"


def register_finished(output_root: Path, run_id: str, run_dir: Path) -> None:
    atomic_write_bytes(_index_path(output_root, run_id), str(Path(run_dir).resolve()).encode())


def find_finished(output_root: Path, run_id: str) -> dict[str, Any] | None:
    """The finished record with this run_id, if one was registered and is still on disk."""
    index = _index_path(output_root, run_id)
    if not index.exists():
        return None
    run_dir = Path(index.read_text())
    if not (run_dir / RECORD_FILE).exists():
        return None
    record = read_record(run_dir)
    return record if record.get("status") == "finished" and record.get("run_id") == run_id else None


def reuse_record(previous: dict[str, Any], run_dir: Path) -> Path:
    """Copy a finished record into this run's dir, so every sweep dir holds all its records."""
    run_dir = Path(run_dir)
    if previous.get("predictions"):
        atomic_write_bytes(run_dir / PREDICTIONS_FILE, (Path(previous["dir"]) / previous["predictions"]).read_bytes())
    record = {k: v for k, v in previous.items() if k != "dir"} | {"reused_from": previous["dir"]}
    atomic_write_bytes(run_dir / RECORD_FILE, json.dumps(record, indent=2, default=str).encode())
    return run_dir / RECORD_FILE
