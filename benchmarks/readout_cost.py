"""What the readouts added after the first four cost the feature encoder, in one process.

    .venv/bin/python benchmarks/readout_cost.py [--backbone minilm-l6] [--task banking77] [--repeats 3]

Arms, over the same length-sorted batches of the task's train split (`encoding.encode_split`):
  bare      the model's forward pass alone, every hidden state (the floor)
  first4    cls, mean, max, last at every layer: what entries held before these readouts
  all       every stored pooling (`encoding.stored_poolings`): what a new entry holds
  added     every stored pooling but the first four (weighted_mean, the nospecial ones, mean_nosink) alone:
            the pass that adds them to an older entry
  nosink    the first four and mean_nosink: what the sink-free mean costs (on a backbone with massive
            activations, such as smollm2-135m, its per-text medians are computed)
cls_mean and first_last_avg cost nothing here: they are derived from cached cls and mean when read.
Timing as in probe_benchmark.py: warmed up, arms interleaved, best of --repeats. Disk: float32
bytes per example of one stored pooling, every layer. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from probe_benchmark import best_times, compose_cfg, real_tokens, tokenized_split, warmup_slice

import torch

from poolbench.backbones import forward_hidden_states, load_backbone
from poolbench.encoding import encode_split, encoding_batches, stored_poolings
from poolbench.jobs import typed_config
from poolbench.pooling import BASE_POOLINGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--task", default="banking77")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default=os.environ.get("POOLBENCH_CACHE") or tempfile.mkdtemp())
    args = parser.parse_args()
    cfg = compose_cfg("mode=probe", f"backbone={args.backbone}", f"task={args.task}", f"paths.cache_dir={args.cache_dir}")
    backbone = load_backbone(typed_config(cfg).backbone, args.cache_dir)
    dataset = tokenized_split(backbone, cfg)
    model, tokenizer, max_tokens = backbone.model, backbone.tokenizer, cfg.mode.encode_batch_tokens
    batches = [batch for _, batch in encoding_batches(dataset, tokenizer, max_tokens)]
    stored = stored_poolings(tokenizer)
    poolings = {"first4": BASE_POOLINGS, "all": stored, "added": tuple(p for p in stored if p not in BASE_POOLINGS),
                "nosink": (*BASE_POOLINGS, "mean_nosink")}

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                forward_hidden_states(model, batch)

    arms = {"bare": bare, **{name: (lambda p=p: encode_split(model, tokenizer, dataset, max_tokens, poolings=p))
                             for name, p in poolings.items()}}
    warm = warmup_slice(dataset)
    for p in poolings.values():
        encode_split(model, tokenizer, warm, max_tokens, poolings=p)
    bare()
    times = best_times(arms, args.repeats)
    tokens = real_tokens(batches)
    print(f"{args.backbone} x {args.task} train: {len(dataset)} examples, {tokens} real tokens, {len(batches)} batches, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, best of {args.repeats}")
    print("| arm | poolings | seconds | real tokens/s | vs first4 |")
    print("|---|---|---:|---:|---:|")
    for name, seconds in times.items():
        names = ", ".join(poolings.get(name, ("(forward only)",)))
        print(f"| {name} | {names} | {seconds:.2f} | {tokens / seconds:,.0f} | {seconds / times['first4']:.2f}x |")
    per_example = (backbone.num_layers + 1) * backbone.hidden_size * 4
    print(f"disk: {per_example:,} bytes per example per stored pooling ({len(stored)} stored, {len(BASE_POOLINGS)} before)")


if __name__ == "__main__":
    main()
