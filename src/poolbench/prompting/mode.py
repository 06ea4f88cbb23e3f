"""The probe mode of the prompt readouts (jobs.py routes `pooling=prompt_last` and `label_words` here).

prompt_last trains the very heads every other readout trains, under every protocol: the probe's
(`probe.probe_layers`) or a protocol's (`protocols.PROTOCOLS`), given the prompted entry and its
stored pooling, `last`, where the others are given the plain entry and their own pooling. So
"only the readout changes" holds: same rows, standardisation, heads, selection and seeds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from poolbench import probe
from poolbench.config import Job, Protocol
from poolbench.prompting import LABEL_WORDS, PROMPT_LAST, label_words
from poolbench.prompting.entry import READOUT, prompted_features
from poolbench.protocols import PROTOCOLS
from poolbench.records import RunResult

log = logging.getLogger(__name__)


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """A prompt readout's job: one result per layer of `job.layers`. `logger` is unused: the job owner logs."""
    if job.pooling == LABEL_WORDS:
        return label_words.run(job)
    if job.pooling != PROMPT_LAST:
        raise ValueError(f"pooling={job.pooling} is not a prompt readout ({PROMPT_LAST}, {LABEL_WORDS})")
    started = time.perf_counter()
    features, encode_s = prompted_features(job.backbone, job.task, job.template, job.cache_dir,
                                           job.mode.encode_batch_tokens)
    train_started = time.perf_counter()
    if job.mode.protocol == Protocol.full:
        results, _ = probe.probe_layers(features, READOUT, job.layers, job.mode, job.seed, job.task.max_train_examples)
    else:
        results = PROTOCOLS[job.mode.protocol](features, dataclasses.replace(job, pooling=READOUT))
    train_s = time.perf_counter() - train_started
    log.info("%s %s s%d: layers %s in %.1f s", job.mode.protocol.value, job.pooling, job.seed, list(job.layers),
             train_s)
    for result in results:
        result.timings = {"encode_s": encode_s, "train_s": train_s, "total_s": time.perf_counter() - started}
    return results
