"""What the sink measures add to a diagnose job's eager attention pass, in one process.

    .venv/bin/python benchmarks/sink_cost.py [--backbone smollm2-135m] [--task mcid] [--texts 512] [--repeats 1]

Arms, over the same seeded sample of test texts in batches of mode.attention_batch_size:
  attention   the pass before the sink measures: eager forward, attention weights, attention metrics
  eager       the pass now (diagnose.mode.eager_frames): the same forward with hidden states and the
              value-norm hooks, attention metrics, massive activations and sink shares
The difference is the added cost. Timing as in probe_benchmark.py: arms interleaved, best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from probe_benchmark import best_times, compose_cfg

import pandas as pd
import torch

from poolbench.backbones import load_backbone
from poolbench.diagnose.attention import readout_attention
from poolbench.diagnose.mode import eager_frames, test_sample
from poolbench.jobs import typed_config
from poolbench.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--task", default="mcid")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cache-dir", default=os.environ.get("POOLBENCH_CACHE") or tempfile.mkdtemp())
    args = parser.parse_args()
    config = typed_config(compose_cfg("mode=diagnose", f"backbone={args.backbone}", f"task={args.task}",
                                      f"paths.cache_dir={args.cache_dir}"))
    backbone = load_backbone(config.backbone, args.cache_dir)
    task = load_task(config.task, args.cache_dir)
    texts = test_sample(list(task.splits["test"]["text"]), args.texts, config.seed)
    size, max_length = config.mode.attention_batch_size, config.backbone.max_length

    def attention() -> None:
        pd.concat([readout_attention(backbone, texts[s:s + size], max_length) for s in range(0, len(texts), size)])

    times = best_times({"attention": attention, "eager": lambda: eager_frames(backbone, texts, max_length, size)},
                       args.repeats)
    print(f"{args.backbone} x {args.task}: {len(texts)} texts in batches of {size}, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, best of {args.repeats}")
    for name, seconds in times.items():
        print(f"  {name:<10} {seconds:7.1f} s")
    print(f"  added      {times['eager'] - times['attention']:7.1f} s ({times['eager'] / times['attention'] - 1:+.0%})")


if __name__ == "__main__":
    main()
