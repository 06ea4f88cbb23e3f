"""What pooling=attention costs a probe job, against pooling=mean's, on one (backbone, task).

    .venv/bin/python benchmarks/attention_cost.py [--backbone minilm-l6] [--task mcid] [--seed 0]

Runs, in one process and in this order, the probe jobs of layer=all (every hidden state): mean (its
features cached, or encoded first), attention (its token states encoded unless cached: the first job's
cost), attention again (token states cached: every later job's cost). Prints each job's seconds
(features encode, token states, heads, total), the token-state entry's bytes on disk per layer and in
all against the feature entry's, and the estimate tokens x hidden x 2 bytes per layer of every feature
entry in the cache. Records go to a temporary directory; token states are added to the cache
(`--cache-dir`, default $POOLBENCH_CACHE or ~/.cache/poolbench) as new files beside nothing they change.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from probe_benchmark import compose_cfg

from poolbench.attention_pooling.token_states import TokenStates, token_states_root
from poolbench.features import features_root
from poolbench.jobs import run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--task", default="mcid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=os.environ.get("POOLBENCH_CACHE") or "~/.cache/poolbench")
    args = parser.parse_args()
    args.cache_dir = str(Path(args.cache_dir).expanduser())  # Hydra's override grammar has no `~`
    output = Path(tempfile.mkdtemp(prefix="attention-cost-"))
    common = ["mode=probe", f"backbone={args.backbone}", f"task={args.task}", "layer=all", f"seed={args.seed}",
              f"paths.cache_dir={args.cache_dir}", f"paths.output_root={output}"]
    print(f"{args.backbone} x {args.task}, layer=all, seed {args.seed}: torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| job | layers | encode_s (features) | token_states_s | train_s (heads) | total_s |")
    print("|---|---:|---:|---:|---:|---:|")
    records = {}
    for name, pooling in (("mean", "mean"), ("attention, first", "attention"), ("attention, cached", "attention")):
        records[name] = run_job(compose_cfg(*common, f"pooling={pooling}"), output / name.replace(", ", "-"))
        timings = records[name][0].timings
        features_s = timings["encode_s"] - timings.get("token_states_s", 0.0)
        print(f"| {name} | {len(records[name])} | {features_s:.1f} | {timings.get('token_states_s', 0.0):.1f} | "
              f"{timings['train_s']:.1f} | {timings['total_s']:.1f} |")
    print("\n| layer | test/acc mean | test/acc attention | attention breadth | attention weight on h_0 |")
    print("|---:|---:|---:|---:|---:|")
    for mean, attention in zip(records["mean"], records["attention, cached"]):
        print(f"| {mean.factors.layer} | {mean.metrics['test/acc']:.4f} | {attention.metrics['test/acc']:.4f} | "
              f"{attention.metrics['attention/breadth']:.3f} | {attention.metrics['attention/first']:.3f} |")
    key = records["mean"][0].features
    states = TokenStates.open(token_states_root(args.cache_dir) / key)
    feature_bytes = sum(p.stat().st_size for p in (features_root(args.cache_dir) / key).iterdir())
    tokens = sum(split["tokens"] for split in states.manifest["splits"].values())
    print(f"\ntoken states {key}: {tokens:,} real tokens, {states.nbytes() / 1e6:.1f} MB for layers {states.layers} "
          f"({states.nbytes([states.layers[-1]]) / 1e6:.1f} MB per layer); the feature entry: "
          f"{feature_bytes / 1e6:.1f} MB")
    print("\nestimate, float16 token states of every layer, from the feature entries in the cache:")
    print("| feature entry | real tokens | hidden | hidden states | MB per layer | GB all layers |")
    print("|---|---:|---:|---:|---:|---:|")
    for manifest_path in sorted(features_root(args.cache_dir).glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        tokens = sum(split["real_tokens"] for split in manifest["splits"].values())
        per_layer = tokens * manifest["hidden_size"] * 2
        print(f"| {manifest['key']} | {tokens:,} | {manifest['hidden_size']} | {manifest['num_layers'] + 1} | "
              f"{per_layer / 1e6:.1f} | {per_layer * (manifest['num_layers'] + 1) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
