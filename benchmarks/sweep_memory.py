"""Resident memory per job of an in-process sweep (Hydra's basic launcher: one job after another in
one process), and what stays alive between jobs.

    .venv/bin/python benchmarks/sweep_memory.py [--jobs 30] [--mode finetune|probe] [--logger wandb]

Runs `poolbench -m` on mcid with the tiny random BERT (or `--backbone`) (`--jobs` jobs: poolings x seeds) in a fresh
process, with a Hydra callback (`RssPerJob`, below) that after every job collects garbage and
writes one JSON line: the process's RSS (psutil), its peak (ru_maxrss), and how many objects of
the suspects are still alive (torch modules, Lightning trainers, datasets, W&B runs, tensors and
their bytes). Prints one row per job, then the growth from the first job to the last and per job.
Temporary output and cache directories unless --cache-dir is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
from hydra.experimental.callback import Callback

POOLINGS = ["cls", "mean", "max", "last", "weighted_mean"]


def alive() -> dict[str, int]:
    """Counts of the objects a sweep could hold on to across jobs, found by the garbage collector."""
    import torch

    counts = {"modules": 0, "trainers": 0, "datasets": 0, "wandb_runs": 0, "tensors": 0, "tensor_mb": 0}
    tensor_bytes = 0
    for obj in gc.get_objects():
        try:
            kind = type(obj)
            if isinstance(obj, torch.Tensor):
                counts["tensors"] += 1
                tensor_bytes += obj.nelement() * obj.element_size() if not obj.is_meta else 0
            elif isinstance(obj, torch.nn.Module) and kind.__module__.startswith("transformers"):
                counts["modules"] += 1
            elif kind.__name__ == "Trainer" and kind.__module__.startswith("lightning"):
                counts["trainers"] += 1
            elif kind.__name__ == "Dataset" and kind.__module__.startswith("datasets"):
                counts["datasets"] += 1
            elif kind.__name__ == "Run" and kind.__module__.startswith("wandb"):
                counts["wandb_runs"] += 1
        except Exception:  # objects half torn down, lazy proxies
            continue
    counts["tensor_mb"] = round(tensor_bytes / 2**20, 1)
    return counts


class RssPerJob(Callback):
    """Hydra callback: one JSON line per finished job into $SWEEP_MEMORY_LOG."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        gc.collect()
        line = {"job": int(config.hydra.job.num), "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
                "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1), **alive()}
        with open(os.environ["SWEEP_MEMORY_LOG"], "a") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--mode", choices=["finetune", "probe"], default="finetune")
    parser.add_argument("--logger", default="wandb", help="logger= of the sweep (wandb runs offline)")
    parser.add_argument("--backbone", default="tiny-bert", help="backbone= of the sweep (a packaged one is converted "
                                                                 "into the cache on first use)")
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args()
    seeds = -(-args.jobs // len(POOLINGS))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "memory.jsonl"
        cache = args.cache_dir or Path(tmp) / "cache"
        sweep = ["-m", f"mode={args.mode}", f"backbone={args.backbone}", "task=mcid", f"logger={args.logger}",
                 f"pooling={','.join(POOLINGS)}", f"seed={','.join(map(str, range(seeds)))}", "study=memory",
                 "skip_finished=false", "+hydra.callbacks.rss._target_=sweep_memory.RssPerJob",
                 *(["trainer=smoke", "task.max_train_examples=256"] if args.mode == "finetune"
                   else ["layer=all", "mode.max_epochs=5"])]
        env = {**os.environ, "SWEEP_MEMORY_LOG": str(log), "POOLBENCH_OUTPUT": str(Path(tmp) / "outputs"),
               "POOLBENCH_CACHE": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        script = Path(sys.executable).with_name("poolbench")
        done = subprocess.run([str(script), *sweep], env=env, cwd=tmp, capture_output=True, text=True)
        if not log.exists():
            raise SystemExit(f"the sweep wrote no measurement:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in log.read_text().splitlines()]
    columns = list(rows[0])
    print(" ".join(f"{c:>10}" for c in columns))
    for row in rows:
        print(" ".join(f"{row[c]:>10}" for c in columns))
    first, last = rows[0], rows[-1]
    growth, peak = last["rss_mb"] - first["rss_mb"], max(r["peak_mb"] for r in rows)
    print(f"{args.backbone}, {args.mode}, logger={args.logger}, {len(rows)} jobs: RSS {first['rss_mb']} MB after "
          f"job 0, {last['rss_mb']} MB after job {last['job']} (+{growth:.1f} MB, "
          f"{growth / max(len(rows) - 1, 1):.2f} MB per job); peak {peak} MB = {peak / first['peak_mb']:.2f}x the "
          "first job's")


if __name__ == "__main__":
    main()
