"""Measure what the probe engine (features.py + probe.py) costs, on the real packaged model and data.

    .venv/bin/python benchmarks/probe_benchmark.py [--backbone minilm-l6] [--task banking77] [--seeds 5]

The probe engine makes three claims about speed and one assumption about precision. This script
checks each of them with measured numbers, in one run, and prints one table:

1. Encoder overhead. `encoding.encode_split` adds collation, pooling of every pooling at every
   layer and copies into the output arrays around the model's forward pass. Its real tokens/s are
   divided by those of a bare `model(**batch)` loop under `torch.inference_mode` over the SAME
   batches (the same `encoding_batches` plan, collated beforehand, so the bare loop is the model
   alone). Target: ratio >= 0.9, i.e. the encoder costs at most ~10% more than the model does.
2. Padding efficiency (real tokens / computed tokens) of `encoding.encoding_plan` on the
   tokenized train splits of banking77 (short queries) and yahoo_answers (long answers), against
   unsorted fixed-size batches of 32 (and the token budget alone, without the padding cut).
   No forward pass is needed: computed tokens = rows x longest row, summed over batches.
   Target: >= 0.9. On a CPU, padding is computed like real tokens, so this is compute wasted.
3. What the feature cache buys: the wall time of a probe sweep (4 poolings x all layers x N
   seeds on one backbone and task) run the way a Hydra sweep runs it (basic launcher: one
   `probe.run_probe` per job, in this process), with the cache (the first job encodes, every
   other job reads), against the same jobs each re-encoding (every job gets an empty features
   cache). The re-encode arm may run only a few of the jobs and extrapolate: the table says so.
4. Peak resident memory of this process (ru_maxrss), after each section: the probe holds every
   layer of a split in RAM while training, and a split's pooled vectors while encoding.
5. bfloat16 against float32 (`backbone.dtype`): encoding tokens/s of each, how far the pooled
   vectors move (relative L2 difference per vector at the last layer, per pooling), and whether
   the probe's test accuracy moves (seed 0, last layer, each pooling). This decides the default dtype.

Timing: every timed arm is warmed up once first (on a slice of the split), repeated `--repeats`
times with the arms interleaved (alternating which goes first), and the best time is kept.
Tokens are real tokens (attention mask = 1), the same count for both arms of a comparison.
Task preparation and tokenization are done before any timing (cached by `datasets`), so no arm
pays them and the sweep arms differ only in encoding.

Caches: a temporary directory (deleted at exit) unless --cache-dir is given. Either way every arm
that encodes features gets its own empty `features/` directory (prepared tasks and converted
backbones are shared through symlinks), so a warm cache never makes an arm look faster.

Another process using the CPU distorts every number: run it on a quiet machine (the header
prints the load average before and after).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import numpy as np
import psutil
import torch
import transformers
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from poolbench.backbones import Backbone, load_backbone
from poolbench.config import CONF_DIR, register
from poolbench.data import sorted_batches, tokenize
from poolbench.encoding import EncodeStats, encode_split, encoding_batches, encoding_plan
from poolbench.features import features_for
from poolbench.pooling import BASE_POOLINGS
from poolbench.jobs import run_job, typed_config
from poolbench.records import Record
from poolbench.tasks import SPLITS, load_task
from poolbench.validation import validate

register()  # the config schema, as the `poolbench` entry point registers it

# Piped to a file, rich would wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
ENCODER_TARGET = 0.9  # encode_split tokens/s over the bare model's
PADDING_TARGET = 0.9  # real tokens / computed tokens of the encoding plan


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm-l6", help="conf/backbone option (default: minilm-l6)")
    parser.add_argument("--task", default="banking77",
                        help="conf/task option for throughput, the sweep and the dtype comparison (default: banking77)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the probe sweep (default: 5)")
    parser.add_argument("--reencode-jobs", type=int, default=2,
                        help="jobs the re-encode arm actually runs; the rest is extrapolated (default: 2)")
    parser.add_argument("--padding-tasks", default="banking77,yahoo_answers",
                        help="comma-separated tasks for the padding-efficiency rows (default: banking77,yahoo_answers)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per arm, best kept (default: 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the machine's physical cores, torch's own default)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="shared cache for prepared tasks and converted backbones (default: a temporary dir)")
    parser.add_argument("--verbose", action="store_true", help="show poolbench's INFO logs")
    args = parser.parse_args()
    if args.seeds < 1 or args.repeats < 1 or args.reencode_jobs < 1:
        parser.error("--seeds, --repeats and --reencode-jobs must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# Helpers: configs, caches, timing, memory

def compose_cfg(*overrides: str) -> DictConfig:
    """The app's config with overrides, composed and validated as the `poolbench` entry point does."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "skip_finished=false", *overrides])
    validate(typed_config(cfg))
    return cfg


def fresh_cache(shared: Path, directory: Path) -> Path:
    """A cache dir whose `features/` starts empty, with the shared `tasks/` and `backbones/` linked
    in: an arm that encodes there pays for encoding, not for preparing the task again."""
    directory.mkdir(parents=True)
    for sub in ("tasks", "backbones"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        (directory / sub).symlink_to((shared / sub).resolve(), target_is_directory=True)
    return directory


def best_times(arms: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each arm over `repeats` rounds; within a round the arms run one after the
    other, and the order alternates between rounds so that drift does not favour one arm."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if platform.system() == "Darwin" else 1024)


def warmup_slice(dataset: datasets.Dataset) -> datasets.Dataset:
    """Every 8th row (at least 256): all the lengths of the split, at an eighth of the cost."""
    step = max(1, min(8, len(dataset) // 256))
    return dataset.select(range(0, len(dataset), step))


def real_tokens(batches: list[dict[str, torch.Tensor]]) -> int:
    return sum(int(batch["attention_mask"].sum()) for batch in batches)


def tokenized_split(backbone: Backbone, cfg: DictConfig, split: str = "train") -> datasets.Dataset:
    task = load_task(typed_config(cfg).task, Path(cfg.paths.cache_dir).expanduser())
    return tokenize(task, backbone.tokenizer, cfg.backbone.max_length, backbone.normalize_text)[split]


# ---------------------------------------------------------------------------------------------
# 1. Encoder throughput against the bare model

@dataclass
class Throughput:
    examples: int
    batches: int
    real_tokens: int
    encoder_s: float
    bare_s: float

    @property
    def encoder_tps(self) -> float:
        return self.real_tokens / self.encoder_s

    @property
    def bare_tps(self) -> float:
        return self.real_tokens / self.bare_s

    @property
    def ratio(self) -> float:
        return self.encoder_tps / self.bare_tps


def measure_throughput(cfg: DictConfig, repeats: int) -> Throughput:
    backbone = load_backbone(typed_config(cfg).backbone, cfg.paths.cache_dir)
    dataset = tokenized_split(backbone, cfg)
    model, tokenizer, max_tokens = backbone.model, backbone.tokenizer, cfg.mode.encode_batch_tokens
    # The plan encode_split will follow, collated once up front: the bare arm times the model only.
    batches = [batch for _, batch in encoding_batches(dataset, tokenizer, max_tokens)]
    tokens = real_tokens(batches)

    def bare(batches: list[dict[str, torch.Tensor]] = batches) -> None:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)

    def encoder(dataset: datasets.Dataset = dataset) -> EncodeStats:
        return encode_split(model, tokenizer, dataset, max_tokens)[1]

    warm = warmup_slice(dataset)
    bare([batch for _, batch in encoding_batches(warm, tokenizer, max_tokens)])
    encoder(warm)
    times = best_times({"bare": bare, "encoder": encoder}, repeats)
    stats = encoder()  # untimed: check both arms saw the same tokens
    assert stats.real_tokens == tokens and stats.batches == len(batches), (stats, tokens, len(batches))
    return Throughput(len(dataset), len(batches), tokens, times["encoder"], times["bare"])


# ---------------------------------------------------------------------------------------------
# 2. Padding efficiency of the encoding plan (no forward pass)

def batch_stats(lengths: np.ndarray, batches: list[list[int]]) -> EncodeStats:
    """What encoding these batches would compute: each batch is padded to its longest row."""
    return EncodeStats(examples=len(lengths), batches=len(batches), real_tokens=int(lengths.sum()),
                       computed_tokens=sum(len(b) * int(lengths[b].max()) for b in batches))


@dataclass
class Padding:
    task: str
    plan: EncodeStats
    budget_only: EncodeStats  # data.sorted_batches by token budget, without the plan's padding cut
    unsorted_32: EncodeStats  # the split's own order, 32 rows a batch


def measure_padding(backbone_name: str, task_name: str, shared: Path, max_tokens: int) -> Padding:
    cfg = compose_cfg(f"backbone={backbone_name}", f"task={task_name}", f"paths.cache_dir={shared}")
    backbone = load_backbone(typed_config(cfg).backbone, cfg.paths.cache_dir)
    lengths = np.asarray(tokenized_split(backbone, cfg)["length"])
    unsorted = [list(range(start, min(start + 32, len(lengths)))) for start in range(0, len(lengths), 32)]
    return Padding(task_name, plan=batch_stats(lengths, encoding_plan(lengths, max_tokens)),
                   budget_only=batch_stats(lengths, sorted_batches(lengths, max_tokens=max_tokens)),
                   unsorted_32=batch_stats(lengths, unsorted))


# ---------------------------------------------------------------------------------------------
# 3. A probe sweep with the feature cache, and re-encoding per job

@dataclass
class Sweep:
    jobs: int
    records: int
    cached_s: float
    first_job_encode_s: float  # encode_s the records of job 1 report: the one encoding of the arm
    later_encode_s: float  # the encode_s of all other jobs, summed: 0 when the cache works
    reencode_jobs_run: int
    reencode_job_s: list[float] = field(default_factory=list)

    @property
    def reencode_s(self) -> float:
        return float(np.mean(self.reencode_job_s)) * self.jobs

    @property
    def extrapolated(self) -> bool:
        return self.reencode_jobs_run < self.jobs

    @property
    def speedup(self) -> float:
        return self.reencode_s / self.cached_s


def measure_sweep(args: argparse.Namespace, shared: Path, scratch: Path) -> Sweep:
    jobs = [(pooling, seed) for pooling in BASE_POOLINGS for seed in range(args.seeds)]  # Hydra's order

    def run_index(index: int, cache: Path, output_root: Path) -> list[Record]:
        pooling, seed = jobs[index]
        cfg = compose_cfg("mode=probe", "layer=all", f"backbone={args.backbone}", f"task={args.task}",
                          f"pooling={pooling}", f"seed={seed}", f"paths.cache_dir={cache}",
                          f"paths.output_root={output_root}")
        return run_job(cfg, output_root / f"{index}_pooling={pooling},seed={seed}")

    # With the cache: one features/ directory for the whole sweep.
    cache, output_root = fresh_cache(shared, scratch / "sweep-cached"), scratch / "sweep-cached-out"
    encode_s, records = [], 0
    started = time.perf_counter()
    for index in range(len(jobs)):
        job_records = run_index(index, cache, output_root)
        encode_s.append(job_records[0].timings["encode_s"])
        records += len(job_records)
    cached_s = time.perf_counter() - started
    console.log(f"sweep with cache: {len(jobs)} jobs in {cached_s:.1f} s")
    shutil.rmtree(cache)

    # Re-encoding: every job gets an empty features/ directory. Jobs spread over the sweep's order.
    subset = sorted(set(np.linspace(0, len(jobs) - 1, min(args.reencode_jobs, len(jobs))).round().astype(int)))
    sweep = Sweep(len(jobs), records, cached_s, encode_s[0], float(sum(encode_s[1:])), len(subset))
    for index in subset:
        cache = fresh_cache(shared, scratch / f"sweep-reencode-{index}")
        started = time.perf_counter()
        run_index(index, cache, scratch / "sweep-reencode-out")
        sweep.reencode_job_s.append(time.perf_counter() - started)
        console.log(f"re-encode job {index} {jobs[index]}: {sweep.reencode_job_s[-1]:.1f} s")
        shutil.rmtree(cache)
    return sweep


# ---------------------------------------------------------------------------------------------
# 5. bfloat16 against float32

DTYPES = ("float32", "bfloat16")


@dataclass
class DtypeResult:
    tokens_per_s: dict[str, float]  # dtype -> encode_split real tokens/s on the train split
    rel_diff: dict[str, tuple[float, float]]  # pooling -> (max, mean) of ||bf16 - fp32|| / ||fp32||
    test_acc: dict[str, dict[str, float]]  # dtype -> pooling -> probe test accuracy
    layer: int


def measure_dtypes(args: argparse.Namespace, shared: Path, scratch: Path) -> DtypeResult:
    # Speed: encode_split on the train split under each dtype, interleaved.
    encoders = {}
    for dtype in DTYPES:
        cfg = compose_cfg("mode=probe", f"backbone={args.backbone}", f"task={args.task}",
                          f"backbone.dtype={dtype}", f"paths.cache_dir={shared}")
        backbone = load_backbone(typed_config(cfg).backbone, cfg.paths.cache_dir)
        dataset = tokenized_split(backbone, cfg)
        encoders[dtype] = (lambda b=backbone, d=dataset, t=cfg.mode.encode_batch_tokens:
                           encode_split(b.model, b.tokenizer, d, t))
        encode_split(backbone.model, backbone.tokenizer, warmup_slice(dataset), cfg.mode.encode_batch_tokens)
    tokens = int(np.asarray(dataset["length"]).sum())
    times = best_times(encoders, args.repeats)
    del encoders, backbone
    tokens_per_s = {dtype: tokens / times[dtype] for dtype in DTYPES}

    # Accuracy: the real probe job (seed 0, last layer) per pooling and dtype; both feature
    # entries land in one fresh cache (dtype is part of the key).
    cache, output_root = fresh_cache(shared, scratch / "dtype"), scratch / "dtype-out"
    test_acc: dict[str, dict[str, float]] = {dtype: {} for dtype in DTYPES}
    features = {}
    for dtype in DTYPES:
        for pooling in BASE_POOLINGS:
            cfg = compose_cfg("mode=probe", "layer=-1", "seed=0", f"backbone={args.backbone}", f"task={args.task}",
                              f"backbone.dtype={dtype}", f"pooling={pooling}", f"paths.cache_dir={cache}",
                              f"paths.output_root={output_root}")
            [record] = run_job(cfg, output_root / f"{dtype}-{pooling}")
            test_acc[dtype][pooling] = record.metrics["test/acc"]
        config = typed_config(cfg)
        features[dtype] = features_for(config.backbone, config.task, cache, config.mode.encode_batch_tokens)[0]

    # Vectors: every row of every split, at the last layer, as the probe reads them.
    layer = features["float32"].num_layers
    rel_diff = {}
    for pooling in BASE_POOLINGS:
        fp32, bf16 = (torch.cat([features[d].vectors(s, pooling, [layer])[0] for s in SPLITS]).double()
                      for d in DTYPES)
        rel = (bf16 - fp32).norm(dim=-1) / fp32.norm(dim=-1)
        rel_diff[pooling] = (float(rel.max()), float(rel.mean()))
    shutil.rmtree(cache)
    return DtypeResult(tokens_per_s, rel_diff, test_acc, layer)


# ---------------------------------------------------------------------------------------------
# Report

def verdict(ok: bool) -> str:
    return "[green]ok[/green]" if ok else "[bold red]BELOW TARGET[/bold red]"


def header(args: argparse.Namespace, shared: Path, threads: int) -> Table:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor() or platform.machine())
    table = Table(title="poolbench probe benchmark", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("machine", f"{cpu}; {psutil.cpu_count(logical=False)} physical / {os.cpu_count()} logical cores; "
                             f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    table.add_row("software", f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
                              f"{threads} torch threads; transformers {transformers.__version__}; "
                              f"Python {platform.python_version()}")
    table.add_row("load average", "%.2f %.2f %.2f (1, 5, 15 min) at start" % os.getloadavg())
    table.add_row("run", f"backbone={args.backbone} task={args.task} seeds={args.seeds} repeats={args.repeats} "
                         f"reencode-jobs={args.reencode_jobs}")
    table.add_row("cache", str(shared) + ("" if args.cache_dir else " (temporary)"))
    return table


def summary(args: argparse.Namespace, throughput: Throughput, padding: list[Padding], sweep: Sweep,
            memory: dict[str, float]) -> Table:
    table = Table(title="measured", title_justify="left")
    for column in ("#", "measure", "value", "target", "check / note"):
        table.add_column(column, no_wrap=column in ("#", "value", "target"))
    t = throughput
    table.add_row("1", f"encoder tokens/s (encode_split, {args.task} train)", f"{t.encoder_tps:,.0f}", "", "")
    table.add_row("", "bare model(**batch) tokens/s, same batches", f"{t.bare_tps:,.0f}", "", "")
    table.add_row("", "encoder / bare", f"{t.ratio:.3f}", f">= {ENCODER_TARGET}", verdict(t.ratio >= ENCODER_TARGET))
    table.add_row("", "  (real tokens, examples, batches)", f"{t.real_tokens:,}, {t.examples:,}, {t.batches:,}", "", "",
                  end_section=True)
    for i, p in enumerate(padding):
        table.add_row("2" if i == 0 else "", f"padding efficiency {p.task} train (encoding plan)",
                      f"{p.plan.padding_efficiency:.3f} ({p.plan.batches} batches, "
                      f"{p.plan.examples / p.plan.batches:.0f} rows/batch)",
                      f">= {PADDING_TARGET}", verdict(p.plan.padding_efficiency >= PADDING_TARGET))
        table.add_row("", "  contrast: unsorted, 32 per batch", f"{p.unsorted_32.padding_efficiency:.3f} "
                                                                 f"({p.unsorted_32.batches} batches)", "", "")
        table.add_row("", "  contrast: sorted, token budget only", f"{p.budget_only.padding_efficiency:.3f} "
                                                                    f"({p.budget_only.batches} batches)", "", "",
                      end_section=i == len(padding) - 1)
    s = sweep
    sweep_name = f"4 poolings x all layers x {args.seeds} seed(s) = {s.jobs} jobs, {s.records} records"
    table.add_row("3", f"probe sweep WITH feature cache ({sweep_name})", f"{s.cached_s:.1f} s",
                  "", "")
    table.add_row("", "  encoding inside it: job 1 / all other jobs", f"{s.first_job_encode_s:.1f} s / "
                                                                      f"{s.later_encode_s:.1f} s", "", "")
    label = (f"extrapolated from {s.reencode_jobs_run} jobs: {np.mean(s.reencode_job_s):.1f} s/job x {s.jobs}"
             if s.extrapolated else f"all {s.jobs} jobs run")
    table.add_row("", "probe sweep RE-ENCODING per job", f"{s.reencode_s:.1f} s", "", label)
    table.add_row("", "re-encode / cached (what the cache saves)", f"{s.speedup:.1f}x", "", "", end_section=True)
    for i, (after, mib) in enumerate(memory.items()):
        table.add_row("4" if i == 0 else "", f"peak RSS after {after}", f"{mib:,.0f} MiB", "", "")
    return table


def dtype_table(args: argparse.Namespace, result: DtypeResult) -> Table:
    fp32, bf16 = (result.tokens_per_s[d] for d in DTYPES)
    table = Table(title=f"5. bfloat16 vs float32 ({args.backbone}, {args.task}; vectors and probe at the last "
                        f"layer, L{result.layer}; probe seed 0)", title_justify="left")
    for column in ("pooling", "||bf16-fp32||/||fp32|| max", "mean", "test acc fp32", "test acc bf16", "delta"):
        table.add_column(column, justify="right")
    for pooling in BASE_POOLINGS:
        worst, mean = result.rel_diff[pooling]
        acc32, acc16 = result.test_acc["float32"][pooling], result.test_acc["bfloat16"][pooling]
        table.add_row(pooling, f"{worst:.2e}", f"{mean:.2e}", f"{acc32:.4f}", f"{acc16:.4f}", f"{acc16 - acc32:+.4f}")
    table.caption = (f"encoding, {args.task} train: float32 {fp32:,.0f} tokens/s, bfloat16 {bf16:,.0f} tokens/s "
                     f"(bf16/fp32 = {bf16 / fp32:.2f}x)")
    return table


def dtype_verdict(result: DtypeResult) -> str:
    speed = result.tokens_per_s["bfloat16"] / result.tokens_per_s["float32"]
    worst_rel = max(worst for worst, _ in result.rel_diff.values())
    worst_acc = max(abs(result.test_acc["bfloat16"][s] - result.test_acc["float32"][s]) for s in BASE_POOLINGS)
    return (f"[bold]dtype:[/bold] bfloat16 encodes at [bold]{speed:.2f}x[/bold] float32's speed on this CPU "
            f"({torch.backends.cpu.get_cpu_capability()}); pooled vectors move by up to {worst_rel:.1%} "
            f"(last layer); probe test accuracy moves by at most [bold]{100 * worst_acc:.2f} points[/bold] (seed 0). "
            + ("No speed gain from bfloat16 here." if speed < 1 else "bfloat16 is faster here: weigh that against "
               "the accuracy change."))


# ---------------------------------------------------------------------------------------------

def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    threads = args.threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="poolbench-benchmark-") as tmp:
        scratch = Path(tmp)
        shared = (args.cache_dir or scratch / "cache").expanduser()
        console.print(header(args, shared, threads))
        memory: dict[str, float] = {}
        cfg = compose_cfg("mode=probe", f"backbone={args.backbone}", f"task={args.task}", f"paths.cache_dir={shared}")

        console.log("1. encoder throughput (also prepares and tokenizes the task)")
        throughput = measure_throughput(cfg, args.repeats)
        memory["1. throughput"] = peak_rss_mib()

        console.log("2. padding efficiency")
        padding = [measure_padding(args.backbone, name, shared, cfg.mode.encode_batch_tokens)
                   for name in args.padding_tasks.split(",") if name]
        memory["2. padding"] = peak_rss_mib()

        console.log("3. probe sweep, with the feature cache then re-encoding")
        sweep = measure_sweep(args, shared, scratch)
        memory["3. sweep"] = peak_rss_mib()

        console.log("5. bfloat16 vs float32")
        dtypes = measure_dtypes(args, shared, scratch)
        memory["5. dtypes (whole run)"] = peak_rss_mib()

    console.print()
    console.print(summary(args, throughput, padding, sweep, memory))
    console.print()
    console.print(dtype_table(args, dtypes))
    console.print(dtype_verdict(dtypes))
    console.print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average at end "
                  "%.2f %.2f %.2f (1, 5, 15 min)" % os.getloadavg())


if __name__ == "__main__":
    main()
