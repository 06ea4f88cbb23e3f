"""How close encoding runs to this machine's floor, in float32 and bfloat16.

    .venv/bin/python benchmarks/machine_benchmark.py [--backbones minilm-l6,smollm2-135m] [--task mcid] [--threads 2]

1. The machine (poolbench.machine.machine_facts) and what `backbone.dtype=auto` resolves to on its CPU.
2. Its matmul peak per precision: one 2048^3 matmul, best of 3 after a warm-up
   (poolbench.machine.matmul_peak), measured afresh here (jobs read a cached measurement).
3. For each backbone and precision, the time to encode the task's test split (--splits) two ways: the probe
   job's encoder (`encoding.encode_split`: every stored readout of every layer) and a bare
   `model(**batch)` loop over the same length-sorted batches. Beside every time: the floor, real
   tokens x 2 x non-embedding parameters / the precision's peak, and the time's ratio to it
   (1.0 = the machine's matmul peak; padding, attention, norms and activations sit above it).

Non-embedding parameters: every parameter but the embedding tables and BERT's pooler (run once
per sequence, not per token). Another process using the CPU inflates every time: the header prints
the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from poolbench.assets import cache_root
from poolbench.backbones import load_backbone
from poolbench.backbones.core import backbone_options
from poolbench.config import CONF_DIR, Dtype, TaskConfig
from poolbench.data import tokenize
from poolbench.encoding import encode_split, encoding_batches
from poolbench.features import pooler_dense
from poolbench.machine import TORCH_DTYPES, machine_facts, matmul_peak, resolve_dtype
from poolbench.tasks import load_task

console = Console(width=None if sys.stdout.isatty() else 140)
ENCODE_BATCH_TOKENS = 16384  # mode.encode_batch_tokens' default


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="minilm-l6,smollm2-135m", help="conf/backbone options, comma-separated")
    parser.add_argument("--task", default="mcid", help="conf/task option (default: mcid, 1,699 short texts)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--splits", default="test",
                        help="comma-separated splits to encode (default: test; train,validation,test for all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed encodings per arm, best kept (default: 1)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache of converted backbones and prepared tasks (default: $POOLBENCH_CACHE or "
                             "~/.cache/poolbench); no features are written")
    return parser.parse_args()


def non_embedding_parameters(model: torch.nn.Module) -> int:
    excluded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    if (pooler := pooler_dense(model)) is not None:
        excluded |= {id(p) for p in pooler.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def best_seconds(run, warm_up, repeats: int) -> float:
    warm_up()  # first-call allocations and kernel selection, on a few batches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def task_config(name: str) -> TaskConfig:
    entry = OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml")
    entry.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), entry))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cache = cache_root(args.cache_dir)
    facts = machine_facts()
    console.print(f"machine: {facts['cpu']}; flags {', '.join(facts['cpu_flags']) or 'none'}; "
                  f"{facts['logical_cpus']} logical CPUs; torch threads {facts['torch_threads']}; GPU {facts['gpu']}; "
                  f"torch {torch.__version__}; backbone.dtype=auto -> {resolve_dtype(Dtype.auto, 'cpu').value}")
    console.print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    peaks = {dtype: matmul_peak(torch_dtype) for dtype, torch_dtype in TORCH_DTYPES.items()}
    console.print("matmul peak (2048^3, best of 3): " + ", ".join(
        f"{dtype.value} {peak:.1f} GFLOP/s" for dtype, peak in peaks.items())
        + f"; bfloat16 / float32 = {peaks[Dtype.bfloat16] / peaks[Dtype.float32]:.2f}")

    task = load_task(task_config(args.task), cache)
    options = backbone_options()
    table = Table(title=f"encoding {args.task} ({args.splits}), {args.threads} threads: time, floor "
                        "(tokens x 2 x non-embedding params / peak) and time / floor")
    for column in ["backbone", "dtype", "non-emb params", "real tokens", "batches", "floor s",
                   "encoder s", "encoder / floor", "bare s", "bare / floor", "encoder tok/s", "encoder speed / bare"]:
        table.add_column(column, justify="left" if column in ("backbone", "dtype") else "right")
    for name in args.backbones.split(","):
        for dtype in TORCH_DTYPES:
            backbone = load_backbone(dataclasses.replace(options[name], dtype=dtype), cache)
            model, tokenizer = backbone.model, backbone.tokenizer
            dataset = tokenize(task, tokenizer, options[name].max_length, backbone.normalize_text)
            splits = {split: dataset[split] for split in args.splits.split(",")}
            batches = [batch for split in splits.values()
                       for _, batch in encoding_batches(split, tokenizer, ENCODE_BATCH_TOKENS)]
            tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)

            def bare(batches: list[dict[str, torch.Tensor]] = batches) -> None:
                with torch.inference_mode():
                    for batch in batches:
                        model(**batch)

            def encoder(splits=splits) -> None:
                for split in splits.values():
                    encode_split(model, tokenizer, split, ENCODE_BATCH_TOKENS)

            warm = {"warm": next(iter(splits.values())).select(range(32))}
            parameters = non_embedding_parameters(model)
            floor = tokens * 2 * parameters / (peaks[dtype] * 1e9)
            encoder_s = best_seconds(encoder, lambda: encoder(warm), args.repeats)
            bare_s = best_seconds(bare, lambda: bare(batches[:2]), args.repeats)
            table.add_row(name, dtype.value, f"{parameters / 1e6:.1f}M", f"{tokens:,}", str(len(batches)),
                          f"{floor:.2f}", f"{encoder_s:.2f}", f"{encoder_s / floor:.1f}", f"{bare_s:.2f}",
                          f"{bare_s / floor:.1f}", f"{tokens / encoder_s:,.0f}", f"{bare_s / encoder_s:.2f}")
            console.print(f"  {name} {dtype.value}: encoder {encoder_s:.2f} s, bare {bare_s:.2f} s, floor {floor:.2f} s")
    console.print(table)
    console.print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
