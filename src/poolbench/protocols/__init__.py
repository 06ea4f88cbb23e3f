"""Probe protocols: how a probe job uses the training split, selected by `mode.protocol`.

  full            probe.py: the heads of every layer on all the job's training rows (the default)
  sampling.py     seeded stratified subsamples of the training rows (few-shot, learning curves)
  few_shot.py     MTEB's classification protocol: k per label, repeated subsamples, fixed logistic regression
  curve.py        learning curves: the full probe's heads at growing training sizes
  mdl.py          minimum description length, online code (Voita & Titov 2020)
  control.py      a control task (Hewitt & Liang 2019) on the first content word: selectivity

Every protocol reads the same cached features and the same training rows as the full probe of its
seed (`task.max_train_examples`, stratified), selects on validation where it selects at all, and
reads test only to score. A job returns one `records.RunResult` per layer, its numbers in flat
metrics named `<protocol>/...` beside the usual val/ and test/ ones (see each module).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from poolbench import probe
from poolbench.config import Job, Protocol
from poolbench.features import FeatureSet, features_for
from poolbench.protocols.control import control
from poolbench.protocols.curve import learning_curve
from poolbench.protocols.few_shot import few_shot
from poolbench.protocols.mdl import mdl
from poolbench.records import RunResult

log = logging.getLogger(__name__)

PROTOCOLS: dict[Protocol, Callable[[FeatureSet, Job], list[RunResult]]] = {
    Protocol.few_shot: few_shot,
    Protocol.learning_curve: learning_curve,
    Protocol.mdl: mdl,
    Protocol.control: control,
}


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """Probe mode under its protocol: `full` is probe.run; the others read the cached features of
    (backbone, task), encoded on first use, and compute every layer of `job.layers`."""
    if job.mode.protocol == Protocol.full:
        return probe.run(job, logger)
    started = time.perf_counter()
    features, encode_s = features_for(job.backbone, job.task, job.cache_dir, job.mode.encode_batch_tokens,
                                      pooling=job.pooling)
    train_started = time.perf_counter()
    results = PROTOCOLS[job.mode.protocol](features, job)
    train_s = time.perf_counter() - train_started
    log.info("%s %s s%d: layers %s in %.1f s", job.mode.protocol.value, job.pooling, job.seed, list(job.layers), train_s)
    for result in results:
        result.timings = {"encode_s": encode_s, "train_s": train_s, "total_s": time.perf_counter() - started}
    return results
