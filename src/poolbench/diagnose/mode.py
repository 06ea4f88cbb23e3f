"""The diagnose mode: one job measures what every readout looks at and depends on, at every layer.

For one (backbone, task, seed) it draws a seeded sample of the task's TEST texts (the seed is the
sample's) and computes, per layer:
  attention  from h_0 and the last real token (attention.py): one eager forward pass per batch of
             `attention_texts` texts (eager.py); layer 0 (embeddings) has none
  massive    activations per position class, from the same pass's hidden states (massive.py)
  sink       raw vs value-weighted attention of content queries to position 0, from the same pass's
             attention weights and value norms (sink_attention.py)
  erasure    of every readout, by relative position (erasure.py), on the first `erasure_texts`
             texts of the same sample
  geometry   from the probe's feature cache (geometry.py, no new forward pass): nearest-centroid
             and k-NN accuracy fitted on the SAME training rows a probe job of this seed trains on
             (task.max_train_examples, seeded), anisotropy, and cos(cls, mean)
  dependence from the same cache (dependence.py): variance share, centered cosine, CKA(cls, content mean)
  ablation   mean- and zero-ablation of position 0 after `ablation_layers` layers, on the first
             `ablation_texts` texts of the sample, read by fixed probes fitted on the cached last-layer
             training vectors (ablation.py)
and returns one `RunResult` per layer whose metrics are flat keys (see `layer_metrics`), each mean
over texts with its 95% t-interval as `<key>_low` / `<key>_high`. The text is the unit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from poolbench.backbones import load_backbone
from poolbench.config import DiagnoseConfig, Job
from poolbench.diagnose.ablation import ablation_frame, ablation_layers, fit_probe
from poolbench.diagnose.attention import attention_metrics, summarize_attention
from poolbench.diagnose.dependence import DEPENDENCE_METRICS, dependence_table
from poolbench.diagnose.eager import eager_pass
from poolbench.diagnose.erasure import erasure_sensitivity, summarize_erasure
from poolbench.diagnose.geometry import cls_mean_frame, geometry_table
from poolbench.diagnose.massive import METRICS as MASSIVE_METRICS
from poolbench.diagnose.massive import massive_frame, summarize_massive
from poolbench.diagnose.sink_attention import METRICS as SINK_METRICS
from poolbench.diagnose.sink_attention import sink_frame
from poolbench.diagnose.stats import mean_over_texts
from poolbench.features import features_for
from poolbench.pooling import BASE_POOLINGS, NOSPECIAL_POOLINGS, adds_special_tokens
from poolbench.probe import train_indices
from poolbench.records import RunResult
from poolbench.tasks import load_task

log = logging.getLogger(__name__)

# Part of the run identity (jobs.diagnose_identity): bump it when a measure is added or changed.
MEASURES_VERSION = 2
ATTENTION_METRICS = ("entropy", "breadth", "self", "special", "content")
BOUNDS = ("", "_low", "_high")


def sample_order(n_texts: int, size: int, seed: int) -> np.ndarray:
    """The rows of a `size` sample of `n_texts` in a seeded random order (all of them when fewer)."""
    return np.random.default_rng(seed).permutation(n_texts)[:size]


def test_sample(task_texts: list[str], size: int, seed: int) -> list[str]:
    """`size` test texts in a seeded random order (all of them when the split is smaller)."""
    return [task_texts[i] for i in sample_order(len(task_texts), size, seed)]


def eager_frames(backbone, texts: list[str], max_length: int, batch_size: int) -> dict[str, pd.DataFrame]:
    """One eager pass per batch of `batch_size` texts (eager.eager_pass), texts numbered across batches:
    {"attention": attention.attention_metrics, "massive": massive.massive_frame, "sink":
    sink_attention.sink_frame (empty where the architecture's value projections are unknown)}."""
    frames: dict[str, list[pd.DataFrame]] = {"attention": [], "massive": [], "sink": []}
    for start in range(0, len(texts), batch_size):
        run = eager_pass(backbone, texts[start:start + batch_size], max_length)
        batch = {"attention": attention_metrics(run.attentions, run.attention_mask, run.special),
                 "massive": massive_frame(run.hidden_states, run.attention_mask, run.special)}
        if run.value_norms is not None:
            batch["sink"] = sink_frame(run.attentions, run.value_norms, run.attention_mask, run.special)
        for name, frame in batch.items():
            frames[name].append(frame.assign(text=frame["text"] + start))
    return {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["layer"])
            for name, parts in frames.items()}


def ablation_summary(backbone, features, texts: list[str], labels: np.ndarray, readouts: list[str],
                     train_rows: np.ndarray, layers: list[int], job: Job) -> pd.DataFrame:
    """ablation.ablation_frame summarised per (layer, kind, pooling): distance and `change` (ablated minus
    clean correctness, per text) with t-intervals over texts, clean_correct (the clean accuracy)."""
    if not texts or not layers:
        return pd.DataFrame(columns=["layer"])
    train_y = features.labels("train").numpy()[train_rows]
    last = features.num_layers
    probes = {p: fit_probe(features.vectors("train", p, [last], rows=train_rows)[0].double().numpy(), train_y)
              for p in readouts}
    means = {layer: features.vectors("train", "cls", [layer], rows=train_rows)[0].double().mean(0).float()
             for layer in layers}
    frame = ablation_frame(backbone, texts, labels, layers, means, probes,
                           job.backbone.max_length, job.mode.attention_batch_size)
    frame["change"] = frame["ablated_correct"] - frame["clean_correct"]
    return mean_over_texts(frame, ["layer", "kind", "pooling"], ["distance", "change", "clean_correct"])


def _with_bounds(prefix: str, row: pd.Series, metric: str) -> dict[str, float]:
    return {f"{prefix}{bound}": float(row[f"{metric}{bound}"]) for bound in BOUNDS}


def layer_metrics(layer: int, attention: pd.DataFrame, erasure: pd.DataFrame, geometry: pd.DataFrame,
                  cls_mean: pd.DataFrame, dependence: pd.DataFrame, massive: pd.DataFrame,
                  sink: pd.DataFrame, ablation: pd.DataFrame) -> dict[str, float]:
    """The flat metrics of one layer from the summaries:
    attention/<first|last>/<entropy|breadth|self|special|content>   (layers >= 1)
    erasure/<pooling>/<0..9|all>        mean 1 - cos(r(x), r(x')) in that tenth of the content positions
    geometry/<pooling>/<centroid|knn|anisotropy>, geometry/floor (majority class), geometry/cls_mean_cosine
    dependence/<pooling>/<variance_share|centered_cosine>, dependence/cka (cls vs the content mean)
    massive/<first|last|content>/<ratio|max_abs|massive|top_dim|top_dim_share>   (massive: share of texts
                                        meeting Sun et al.'s criterion; top_dim(_share): not means over texts)
    sink/<raw|value>                    content queries' raw and value-weighted attention to position 0
                                        (layers >= 1; architectures with known value projections)
    ablation/<mean|zero>/<pooling>/<accuracy_change|distance>, ablation/<pooling>/clean_accuracy
                                        (the ablated layers only): the last layer's readouts after
                                        replacing position 0 at this layer
    each mean over texts with `_low` / `_high` (t-interval) where it is a mean over texts."""
    metrics: dict[str, float] = {}
    for _, row in attention[attention["layer"] == layer].iterrows():
        for metric in ATTENTION_METRICS:
            metrics |= _with_bounds(f"attention/{row['position']}/{metric}", row, metric)
    for _, row in erasure[erasure["layer"] == layer].iterrows():
        metrics |= _with_bounds(f"erasure/{row['pooling']}/{row['bin']}", row, "sensitivity")
    for _, row in geometry[geometry["layer"] == layer].iterrows():
        metrics |= {f"geometry/{row['pooling']}/{name}": float(row[name]) for name in ("centroid", "knn", "anisotropy")}
        metrics["geometry/floor"] = float(row["floor"])
    for _, row in cls_mean[cls_mean["layer"] == layer].iterrows():
        metrics |= _with_bounds("geometry/cls_mean_cosine", row, "cosine")
    for _, row in dependence[dependence["layer"] == layer].iterrows():
        metrics |= {f"dependence/{row['pooling']}/{name}": float(row[name]) for name in DEPENDENCE_METRICS}
        metrics["dependence/cka"] = float(row["cka"])
    for _, row in massive[massive["layer"] == layer].iterrows():
        for metric in MASSIVE_METRICS:
            metrics |= _with_bounds(f"massive/{row['position']}/{metric}", row, metric)
        metrics |= {f"massive/{row['position']}/{name}": float(row[name]) for name in ("top_dim", "top_dim_share")}
    for _, row in sink[sink["layer"] == layer].iterrows():
        for metric in SINK_METRICS:
            metrics |= _with_bounds(f"sink/{metric}", row, metric)
    for _, row in ablation[ablation["layer"] == layer].iterrows():
        prefix = f"ablation/{row['kind']}/{row['pooling']}"
        metrics |= _with_bounds(f"{prefix}/distance", row, "distance")
        metrics |= _with_bounds(f"{prefix}/accuracy_change", row, "change")
        metrics[f"ablation/{row['pooling']}/clean_accuracy"] = float(row["clean_correct"])
    return metrics


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """Diagnose mode: every measure at every layer in `job.layers`. `logger` is unused: the job owner logs."""
    settings: DiagnoseConfig = job.mode
    started = time.perf_counter()
    task = load_task(job.task, job.cache_dir)
    if task.text_fields != ("text",):
        raise ValueError(f"task {task.name} is a sentence-pair task: diagnose reads single texts (the readout "
                         "positions of a pair are ambiguous); use a single-text task such as task=mcid")
    features, encode_s = features_for(job.backbone, job.task, job.cache_dir, settings.encode_batch_tokens)
    backbone = load_backbone(job.backbone, job.cache_dir)
    if adds_special_tokens(backbone.tokenizer) and "mean_nospecial" not in features.poolings:
        # An entry cached before the nospecial readouts: the content mean of CKA is added to it once.
        features, added_s = features_for(job.backbone, job.task, job.cache_dir, settings.encode_batch_tokens,
                                         pooling="mean_nospecial")
        encode_s += added_s
    geometry_started = time.perf_counter()
    train_rows = train_indices(features.labels("train").numpy(), job.task.max_train_examples, job.seed)
    geometry = geometry_table(features, layers=job.layers, k=settings.knn_k, n_pairs=settings.anisotropy_pairs,
                              seed=job.seed, train_rows=train_rows)
    cls_mean = mean_over_texts(cls_mean_frame(features, "test", job.layers), ["layer"], ["cosine"])
    readouts = [*BASE_POOLINGS, *(p for p in NOSPECIAL_POOLINGS if p in features.poolings)]
    dependence = dependence_table(features, readouts, job.layers, n_pairs=settings.anisotropy_pairs,
                                  seed=job.seed)
    geometry_s = time.perf_counter() - geometry_started

    texts = test_sample(list(task.splits["test"]["text"]), settings.attention_texts, job.seed)
    attention_started = time.perf_counter()
    eager = eager_frames(backbone, texts, job.backbone.max_length, settings.attention_batch_size)
    attention = summarize_attention(eager["attention"])
    massive = summarize_massive(eager["massive"])
    sink = (mean_over_texts(eager["sink"], ["layer"], SINK_METRICS) if len(eager["sink"])
            else pd.DataFrame(columns=["layer"]))
    erasure_started = time.perf_counter()
    erasure = summarize_erasure(erasure_sensitivity(
        backbone, texts[:settings.erasure_texts], max_positions=settings.erasure_positions, seed=job.seed,
        max_length=job.backbone.max_length, batch_size=settings.erasure_batch_size))
    erasure_s = time.perf_counter() - erasure_started
    ablation_started = time.perf_counter()
    sample = sample_order(len(task.splits["test"]), settings.attention_texts, job.seed)[:settings.ablation_texts]
    ablation = ablation_summary(backbone, features, texts[:settings.ablation_texts],
                                np.asarray(task.splits["test"]["label"])[sample], readouts, train_rows,
                                ablation_layers(features.num_layers, settings.ablation_layers), job)
    timings = {"encode_s": encode_s, "geometry_s": geometry_s, "attention_s": erasure_started - attention_started,
               "erasure_s": erasure_s, "ablation_s": time.perf_counter() - ablation_started,
               "total_s": time.perf_counter() - started}
    log.info("diagnose %s on %s: attention %.1f s (%d texts), erasure %.1f s (%d texts), ablation %.1f s (%d texts), "
             "geometry %.1f s", job.backbone.name, job.task.name, timings["attention_s"], len(texts), erasure_s,
             min(len(texts), settings.erasure_texts), timings["ablation_s"], len(sample), geometry_s)
    counts = {"n_attention_texts": len(texts), "n_erasure_texts": min(len(texts), settings.erasure_texts),
              "n_ablation_texts": len(sample), "n_train": len(train_rows), "n_test": features.size("test"),
              "n_labels": len(features.label_names)}
    summaries = (attention, erasure, geometry, cls_mean, dependence, massive, sink, ablation)
    return [RunResult(layer=layer, metrics={**layer_metrics(layer, *summaries), **counts},
                      selection={}, timings=timings, predictions=None, features=features.key)
            for layer in job.layers]
