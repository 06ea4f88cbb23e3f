"""The prompted feature-cache entry: the last real token's state of every layer, after a template.

The template changes the text the backbone encodes, so these vectors are an entry of their own. Its key
is the plain entry's identity (`features.feature_identity`: backbone, weights, tokenizer, task, software,
pooling code version) plus `prompt` (the template and PROMPT_VERSION), with `poolings` naming what it
holds: a key that no plain entry can have, while every plain entry keeps the key it had (its identity
gains nothing). It holds one stored pooling, `last` (the template's last token, `template.py`):
PromptEOL's readout; the other poolings of a prompted text are no readout anyone compares.

On disk it is an ordinary entry (`features.FeatureSet` reads it: `<split>-last.npy`, labels, ids, a
manifest that also names the template), built once under the cache's lock (`assets.build_once`).
The backbone is loaded for every job, because its weights' checksum is part of the key (the plain
entries' lookup files that skip the load map a config to a PLAIN key, and are not used here).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from poolbench.assets import build_once
from poolbench.backbones import Backbone, load_backbone
from poolbench.config import BackboneConfig, TaskConfig
from poolbench.encoding import EncodeStats, encode_split
from poolbench.features import MANIFEST, FeatureSet, feature_identity, feature_key, features_root, write_targets
from poolbench.prompting import PROMPT_VERSION
from poolbench.prompting.template import tokenize_prompted
from poolbench.tasks import SPLITS, Task, load_task

log = logging.getLogger(__name__)

READOUT = "last"  # the stored pooling of a prompted entry: the template's last token


def prompted_identity(backbone_cfg: BackboneConfig, backbone: Backbone, task: Task, template: str) -> dict[str, Any]:
    return {**feature_identity(backbone_cfg, backbone, task), "poolings": [READOUT],
            "prompt": {"template": template, "version": PROMPT_VERSION}}


def ensure_prompted(backbone: Backbone, task: Task, backbone_cfg: BackboneConfig, template: str, max_tokens: int,
                    cache_dir: str | Path) -> tuple[FeatureSet, float]:
    """The prompted entry of (backbone, task, template), encoding it if no one has yet; and the seconds this
    call spent encoding (0 when it was cached)."""
    identity = prompted_identity(backbone_cfg, backbone, task, template)
    key = feature_key(identity)
    spent = 0.0

    def build(tmp: Path) -> None:
        nonlocal spent
        started = time.perf_counter()
        tokenized = tokenize_prompted(task, backbone.tokenizer, template, backbone_cfg.max_length,
                                      backbone.normalize_text)
        splits, total = {}, EncodeStats()
        for split in SPLITS:
            dataset = tokenized[split]
            shape = (backbone.num_layers + 1, len(dataset), backbone.hidden_size)
            vectors = np.lib.format.open_memmap(tmp / f"{split}-{READOUT}.npy", mode="w+", dtype=np.float32,
                                                shape=shape)
            _, stats = encode_split(backbone.model, backbone.tokenizer, dataset, max_tokens, {READOUT: vectors},
                                    backbone.num_layers)
            vectors.flush()
            del vectors
            splits[split] = write_targets(tmp, split, dataset, stats)
            total.add(stats)
        spent = time.perf_counter() - started
        manifest = {"key": key, "identity": identity, "task": task.name, "num_layers": backbone.num_layers,
                    "hidden_size": backbone.hidden_size, "poolings": [READOUT], "template": template,
                    "label_names": list(task.label_names), "splits": splits, "encode_batch_tokens": max_tokens,
                    "encode_s": round(spent, 3), "tokens_per_s": round(total.real_tokens / max(spent, 1e-9), 1),
                    "padding_efficiency": round(total.padding_efficiency, 4),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: an entry with a manifest is whole
        log.info("prompted features %s: encoded in %.1f s", key, spent)

    directory = build_once(features_root(cache_dir) / key, build)
    return FeatureSet.open(directory), spent


def prompted_features(backbone_cfg: BackboneConfig, task_cfg: TaskConfig, template: str, cache_dir: str | Path,
                      max_tokens: int) -> tuple[FeatureSet, float]:
    """The prompted entry of a config's (backbone, task), encoded on first use, and the seconds spent encoding."""
    task = load_task(task_cfg, Path(cache_dir).expanduser())
    backbone = load_backbone(backbone_cfg, cache_dir)
    return ensure_prompted(backbone, task, backbone_cfg, template, max_tokens, cache_dir)
