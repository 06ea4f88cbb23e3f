"""Time the probe heads stage of a fixed set of jobs, for one or more source trees side by side.

    nice -n 0 .venv/bin/python benchmarks/heads_benchmark.py [--src DIR ...] [--repeats 3] [--threads 1]

The heads stage is what a probe record's `train_s` times: `probe.probe_layers` (read the job's
vectors, standardise, train every (layer, weight decay) head, select on validation, score test).
Jobs: --backbone x --tasks x --poolings x --seeds, every layer, --max-train-examples training rows
(experiment=probe's 2000), from the feature cache (--cache-dir; an entry not there yet is encoded
before any timing).

Each --src is a directory that holds the `poolbench` package (default: this checkout's src/). To
time an earlier commit beside this one:

    git worktree add --detach /tmp/before <commit>
    nice -n 0 .venv/bin/python benchmarks/heads_benchmark.py --src /tmp/before/src --src src

Every repeat runs each source once, in a fresh process (PYTHONPATH=<src>), in rotated order so that
load drift on a shared machine hits every source alike. Printed: the machine (lscpu model name, its
bf16 flags), torch threads and load average; per source the heads seconds of every repeat (all jobs
summed), wall and CPU (the process's, all threads: on a shared machine less at the mercy of the other
processes than wall time), the best and the median, and the first source's best divided by each
source's best. The
sources must give the same selections (weight decay and epoch per layer) and metrics (to 1e-3):
the script prints the largest metric difference and fails when they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TOLERANCE = 1e-3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", action="append", type=Path, help="a directory holding the poolbench package "
                        "(repeatable; default: this checkout's src/)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default, as a job runs)")
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--tasks", default="banking77,mcid")
    parser.add_argument("--poolings", default="cls,mean,max")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("POOLBENCH_CACHE") or Path.home() / ".cache" / "poolbench"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_jobs(args: argparse.Namespace) -> dict:
    """In the worker process: every job's heads seconds, metrics and selections, from the poolbench on PYTHONPATH."""
    import torch
    from hydra import compose, initialize_config_dir

    import poolbench
    from poolbench.config import CONF_DIR, register
    from poolbench.features import features_for
    from poolbench.jobs import typed_config
    from poolbench.probe import probe_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    register()
    seconds, cpu_seconds, results = {}, {}, {}
    for task in args.tasks.split(","):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["logger=none", "mode=probe", f"backbone={args.backbone}",
                                               f"task={task}", f"paths.cache_dir={args.cache_dir}"])
        config = typed_config(cfg)
        features, _ = features_for(config.backbone, config.task, args.cache_dir, config.mode.encode_batch_tokens)
        layers = list(range(features.num_layers + 1))
        for pooling in args.poolings.split(","):
            for seed in map(int, args.seeds.split(",")):
                job = f"{args.backbone}/{task}/{pooling}/s{seed}"
                started, cpu_started = time.perf_counter(), time.process_time()
                records, _ = probe_layers(features, pooling, layers, config.mode, seed, args.max_train_examples)
                seconds[job], cpu_seconds[job] = time.perf_counter() - started, time.process_time() - cpu_started
                results[job] = [{"layer": r.layer, "metrics": r.metrics, "selection": r.selection} for r in records]
    return {"package": poolbench.__file__, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "seconds": seconds, "cpu_seconds": cpu_seconds, "results": results}


def worker_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(HERE), "--worker", f"--threads={args.threads}", f"--backbone={args.backbone}",
            f"--tasks={args.tasks}", f"--poolings={args.poolings}", f"--seeds={args.seeds}",
            f"--max-train-examples={args.max_train_examples}", f"--cache-dir={args.cache_dir}"]


def run_source(args: argparse.Namespace, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(worker_command(args), env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"worker on {src} failed:\n{done.stderr}")
    out = json.loads(done.stdout.splitlines()[-1])
    if not Path(out["package"]).resolve().is_relative_to(src.resolve()):
        sys.exit(f"worker on {src} imported poolbench from {out['package']}: is {src} the directory holding it?")
    return out


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    model, flags = fields.get("Model name", "?").strip(), fields.get("Flags", "").split()
    bf16 = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags] or ["no bf16 flags"]
    return f"{model}, {fields.get('CPU(s)', '?').strip()} CPUs; {', '.join(bf16)}"


def compare(reference: dict, other: dict) -> tuple[float, int]:
    """Largest metric difference and number of differing selections, over every (job, layer)."""
    worst, differing = 0.0, 0
    for job, records in reference["results"].items():
        for a, b in zip(records, other["results"][job], strict=True):
            differing += a["selection"] != b["selection"]
            worst = max([worst, *(abs(a["metrics"][k] - b["metrics"][k]) for k in a["metrics"])])
    return worst, differing


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_jobs(args)))
        return
    sources = args.src or [HERE.parent.parent / "src"]
    print(f"machine: {machine()}")
    print(f"load average at start: {'%.2f %.2f %.2f' % os.getloadavg()} (1, 5, 15 min)")
    runs: dict[Path, list[dict]] = {src: [] for src in sources}
    for repeat in range(args.repeats):
        for src in sources[repeat % len(sources):] + sources[:repeat % len(sources)]:
            runs[src].append(run_source(args, src))
            last = runs[src][-1]
            print(f"  repeat {repeat + 1}: {src}: {sum(last['seconds'].values()):.2f} s wall, "
                  f"{sum(last['cpu_seconds'].values()):.2f} s CPU", flush=True)
    first = runs[sources[0]][0]
    jobs = list(first["seconds"])
    print(f"jobs: {len(jobs)} ({', '.join(jobs)}), every layer, {args.max_train_examples} training rows; "
          f"torch {first['torch']}, {first['threads']} torch threads")
    failed = False
    print("| source | wall s per repeat | best | median | first's best / best | CPU s per repeat | best "
          "| first's best / best | max metric diff | selections differing |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    totals = {src: {kind: [sum(run[kind].values()) for run in runs[src]] for kind in ("seconds", "cpu_seconds")}
              for src in sources}
    for src in sources:
        wall, cpu = totals[src]["seconds"], totals[src]["cpu_seconds"]
        comparisons = [compare(first, run) for run in runs[src]]
        worst, differing = max(c[0] for c in comparisons), max(c[1] for c in comparisons)
        failed |= worst > TOLERANCE or differing > 0
        print(f"| {src} | {', '.join(f'{t:.2f}' for t in wall)} | {min(wall):.2f} | {statistics.median(wall):.2f} "
              f"| {min(totals[sources[0]]['seconds']) / min(wall):.2f}x | {', '.join(f'{t:.2f}' for t in cpu)} "
              f"| {min(cpu):.2f} | {min(totals[sources[0]]['cpu_seconds']) / min(cpu):.2f}x | {worst:.2g} "
              f"| {differing} |")
    print("per job, best over repeats (s): " + "; ".join(
        f"{job} " + " / ".join(f"{min(run['seconds'][job] for run in runs[src]):.2f}" for src in sources)
        for job in jobs))
    print(f"load average at end: {'%.2f %.2f %.2f' % os.getloadavg()}")
    if failed:
        sys.exit(f"the sources disagree beyond {TOLERANCE} or in a selection")


if __name__ == "__main__":
    main()
