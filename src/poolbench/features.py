"""Frozen backbone -> every pooling of every layer, encoded once per (backbone, task) and cached.

A probe sweep (`-m mode=probe pooling=cls,mean,max,last layer=all seed=0,1,2,3,4`) is 20 jobs
that all read the same frozen encoder on the same data. So the first job to need a
(backbone, task) encodes each split ONCE (`encoding.py`: inference mode, length-sorted batches cut
by a token budget, `output_hidden_states=True`) and stores, for every hidden layer (0 = embeddings ..
num_layers) and every pooling read from token states (`pooling.TOKEN_POOLINGS`; the nospecial
ones only where the tokenizer adds special tokens), the pooled float32 vectors; every later job,
whatever its pooling, layer or seed, reads them and never calls the backbone. `cls_mean`,
`first_last_avg` and `pooler` are derived from the stored cls and mean vectors when read.

Readouts added after an entry was written: the key names the ENCODING (backbone, weights,
tokenizer, task, software, pooling code version), not the list of readouts, so a new readout never
re-keys an entry. An entry lists what it holds in its manifest (`poolings`); a job that needs a
stored readout an entry lacks adds every missing one in ONE encoding pass under the entry's lock
(`add_poolings`): each new array is written beside the entry and renamed in, the manifest is
rewritten last, and the arrays it held already are not touched.

On disk, `<paths.cache_dir>/features/<key>/`:
  manifest.json              identity (what the key hashes), shapes, split sizes, label names,
                             padding statistics, encoding time; written last
  <split>-<pooling>.npy      float32 [num_layers + 1, n_examples, hidden]; row i = example i of
                             the split as the task stores it (not the length-sorted order)
  <split>-labels.npy         int64 [n_examples]
  <split>-ids.npy            int64 [n_examples], the task's example ids
  pooler.npz                 the backbone's pooler weights, where it has one (pooling=pooler: tanh(W h_0 + b)
                             of the cached final-layer cls vectors); added to older entries on first use
One .npy per (split, pooling) because (1) it is written in place through a memory map while
encoding, so a split never has to sit in RAM once per pooling, (2) a readout is added to an entry
as new files, and (3) a job reads only its own
pooling, and only the layers it needs, through a memory map. Layers lead the shape, so one
layer is one contiguous block.

Faults and concurrency: `assets.build_once` builds an entry in a temporary directory under a
file lock and publishes it with one rename, so concurrent jobs compute it once (the others wait,
then read it) and a job killed mid-write leaves only a `.tmp-*` directory that is never read.

Skipping the backbone altogether: the key needs `Backbone.weights`, a checksum computed while
loading. So that a job with cached features need not load a large model just to compute its
key, a small lookup file maps the *config* (+ task fingerprint, library versions and a stat
stamp of the weight files) to the key. It exists only for sources whose files can be stamped
cheaply (package, local); tiny and hub backbones are always loaded (tiny loads in 0.2 s; a hub
id without a pinned commit can move).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import transformers
from datasets import Dataset
from filelock import FileLock
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from poolbench.assets import Unavailable, atomic_write_bytes, build_once
from poolbench.backbones import PACKAGED, Backbone, load_backbone, loaded_dtype
from poolbench.data import tokenize
from poolbench.config import BackboneConfig, Source, TaskConfig, plain_fields
from poolbench.encoding import EncodeStats, encode_split, stored_poolings
from poolbench.pooling import POOLINGS, TOKEN_POOLINGS, adds_special_tokens, pooler
from poolbench.tasks import SPLITS, Task, load_task
from poolbench.validation import check_special_tokens

log = logging.getLogger(__name__)

# Bump when pooling.py or the encoding below changes what the stored vectors are: it is part of the key.
# v1: pool_all of every hidden state of `backbones.forward_hidden_states` (positions counted over real tokens).
POOLING_VERSION = 1
# The poolings the key names: those of the first entries, frozen. Readouts added since are listed per
# entry in its manifest and added to an entry on demand, so that no entry ever changes key for them.
KEYED_POOLINGS = ("cls", "mean", "max", "last")
MANIFEST = "manifest.json"
POOLER_FILE = "pooler.npz"  # the pooler weights, for pooling=pooler


# ---------------------------------------------------------------------------------------------
# The key

def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _backbone_fields(backbone: BackboneConfig) -> dict[str, Any]:
    """The backbone settings that change vectors (family is a label for tables; it cannot)."""
    fields = plain_fields(backbone, ("name", "source", "location", "revision", "init", "init_seed", "max_length",
                                     "dtype", "padding_side"))
    return {**fields, "dtype": loaded_dtype(backbone).value}  # the precision that encodes: never `auto`


def _software() -> dict[str, str]:
    # Kernels (and the random initialisers of init=random) change between releases.
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _architecture(model: PreTrainedModel) -> str:
    """The model config minus where it was loaded from: a config.json edit changes numbers too."""
    config = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        config.pop(key, None)
    return f"{type(model).__name__}:{_digest(config)}"


def _tokenizer_fields(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "pad_token_id": tokenizer.pad_token_id,
        "model_input_names": list(tokenizer.model_input_names),
    }


def feature_identity(backbone_cfg: BackboneConfig, backbone: Backbone, task: Task) -> dict[str, Any]:
    """Everything that changes the stored numbers. `mode.encode_batch_tokens` is deliberately
    left out: batch composition moves the vectors only by float rounding (see tests)."""
    return {
        "pooling_version": POOLING_VERSION,
        "poolings": list(KEYED_POOLINGS),
        "backbone": _backbone_fields(backbone_cfg),
        "weights": backbone.weights,
        "architecture": _architecture(backbone.model),
        "tokenizer": _tokenizer_fields(backbone.tokenizer),
        "task": {"fingerprint": task.fingerprint, "text_fields": list(task.text_fields)},
        "software": _software(),
    }


def feature_key(identity: dict[str, Any]) -> str:
    """Readable prefix + hash of the identity: `<backbone>-<task fingerprint>-<hash>`."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(identity["backbone"]["name"]))
    return f"{name}-{identity['task']['fingerprint'][:8]}-{_digest(identity)}"


def features_root(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "features"


def stored_sources(pooling: str) -> tuple[str, ...]:
    """The stored poolings that `pooling` is read from: cls_mean from cls and mean, first_last_avg from
    mean, the pooler from cls (and the pooler weights), every other pooling from itself."""
    return {"cls_mean": ("cls", "mean"), "first_last_avg": ("mean",), "pooler": ("cls",)}.get(pooling, (pooling,))


# ---------------------------------------------------------------------------------------------
# Reading

@dataclass
class FeatureSet:
    """A published cache entry. Vectors are read through memory maps, one pooling at a time."""

    directory: Path
    manifest: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, directory: Path) -> "FeatureSet":
        return cls(Path(directory), json.loads((Path(directory) / MANIFEST).read_text()))

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def num_layers(self) -> int:
        return self.manifest["num_layers"]

    @property
    def hidden_size(self) -> int:
        return self.manifest["hidden_size"]

    @property
    def label_names(self) -> list[str]:
        return self.manifest["label_names"]

    @property
    def poolings(self) -> list[str]:
        """The token-state poolings stored in this entry (see `stored_sources` for the derived ones)."""
        return self.manifest["poolings"]

    def size(self, split: str) -> int:
        return self.manifest["splits"][split]["n"]

    def _array(self, split: str, name: str) -> np.ndarray:
        return np.load(self.directory / f"{split}-{name}.npy", mmap_mode="r")

    def vectors(self, split: str, pooling: str, layers: Sequence[int] | None = None,
                rows: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """float32 [len(layers), len(rows), width] (default: all layers 0..num_layers, all rows; width is
        2 x hidden for cls_mean), copied into RAM layer by layer from the memory maps."""
        if pooling == "pooler":
            return self._pooler_vectors(split, layers, rows)
        layers = range(self.num_layers + 1) if layers is None else list(layers)
        if pooling == "cls_mean":
            return torch.cat([self.vectors(split, "cls", layers, rows), self.vectors(split, "mean", layers, rows)], -1)
        if pooling == "first_last_avg":  # (mean(h^1) + mean(h^l)) / 2: pooling.first_last_avg, by linearity
            if 0 in layers:
                raise ValueError("first_last_avg reads layers >= 1 (it averages the first transformer layer "
                                 f"with the layer read), not layers {list(layers)}")
            return (self.vectors(split, "mean", [1], rows) + self.vectors(split, "mean", layers, rows)) / 2
        if pooling not in self.poolings:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {[*POOLINGS, 'pooler']}"
                             if pooling not in TOKEN_POOLINGS else
                             f"{self.directory.name} holds no {pooling} vectors (it holds {self.poolings}): "
                             f"features_for(..., pooling={pooling!r}) adds them")
        array = self._array(split, pooling)
        bad = [layer for layer in layers if not 0 <= layer <= self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range 0..{self.num_layers}")
        n = array.shape[1] if rows is None else len(rows)
        out = np.empty((len(layers), n, array.shape[2]), dtype=np.float32)
        for i, layer in enumerate(layers):
            out[i] = array[layer] if rows is None else array[layer][np.asarray(rows)]
        return torch.from_numpy(out)

    def _pooler_vectors(self, split: str, layers: Sequence[int] | None, rows) -> torch.Tensor:
        """tanh(W h_0 + b) of the cached final-layer `cls` vectors: no forward pass."""
        if layers is None or list(layers) != [self.num_layers]:
            raise ValueError(f"the pooler reads the final layer ({self.num_layers}) only, not layers {layers}")
        if not (self.directory / POOLER_FILE).exists():
            raise FileNotFoundError(f"{self.directory} holds no {POOLER_FILE}: get it with features_for(..., "
                                    "with_pooler=True)")
        with np.load(self.directory / POOLER_FILE) as weights:
            weight, bias = torch.from_numpy(weights["weight"]), torch.from_numpy(weights["bias"])
        return pooler(self.vectors(split, "cls", layers, rows)[0], weight, bias).unsqueeze(0)

    def labels(self, split: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self._array(split, "labels"), dtype=np.int64))

    def ids(self, split: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self._array(split, "ids"), dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Writing

def pooler_dense(model: PreTrainedModel) -> torch.nn.Linear | None:
    """A BERT-style pooler's linear layer; None for models without one (decoders, MPNet, ...)."""
    return getattr(getattr(model, "pooler", None), "dense", None)


def write_pooler(directory: Path, model: PreTrainedModel) -> None:
    """The backbone's pooler weights (`pooler.dense`), beside its cached vectors; Unavailable when
    the model has none (decoders, encoders loaded without a pooling layer)."""
    dense = pooler_dense(model)
    if dense is None:
        raise Unavailable(f"{type(model).__name__} has no pooler (pooler.dense): pooling=pooler needs a BERT-style "
                          "encoder whose pooler was trained.")
    buffer = io.BytesIO()
    np.savez(buffer, weight=dense.weight.detach().float().numpy(), bias=dense.bias.detach().float().numpy())
    atomic_write_bytes(Path(directory) / POOLER_FILE, buffer.getvalue())


def _encode_splits(backbone: Backbone, task: Task, max_length: int, max_tokens: int, poolings: Sequence[str],
                   path: Callable[[str, str], Path]) -> Iterator[tuple[str, Dataset, EncodeStats]]:
    """Encode every split's `poolings` into memory-mapped .npy files at path(split, pooling), flushed
    and closed before the split is yielded with its tokenized dataset and statistics."""
    tokenized = tokenize(task, backbone.tokenizer, max_length, backbone.normalize_text)
    for split in SPLITS:
        dataset = tokenized[split]
        shape = (backbone.num_layers + 1, len(dataset), backbone.hidden_size)
        arrays = {p: np.lib.format.open_memmap(path(split, p), mode="w+", dtype=np.float32, shape=shape)
                  for p in poolings}
        _, stats = encode_split(backbone.model, backbone.tokenizer, dataset, max_tokens, arrays, backbone.num_layers,
                                description=f"encoding {task.name}/{split}")
        for array in arrays.values():
            array.flush()
        del arrays
        log.info("encoded %s/%s: %d examples, %d batches, padding efficiency %.3f", task.name, split,
                 len(dataset), stats.batches, stats.padding_efficiency)
        yield split, dataset, stats


def write_targets(directory: Path, split: str, dataset: Dataset, stats: EncodeStats) -> dict[str, Any]:
    """Write a split's labels and example ids beside its vectors; return its manifest entry (size and
    padding statistics of its encoding)."""
    targets = dataset.select_columns(["label", "id"]).to_dict()
    np.save(directory / f"{split}-labels.npy", np.asarray(targets["label"], dtype=np.int64))
    np.save(directory / f"{split}-ids.npy", np.asarray(targets["id"], dtype=np.int64))
    return {"n": len(dataset), "batches": stats.batches, "real_tokens": stats.real_tokens,
            "computed_tokens": stats.computed_tokens, "padding_efficiency": round(stats.padding_efficiency, 4)}


def _write_entry(tmp: Path, backbone: Backbone, task: Task, max_length: int, max_tokens: int,
                 identity: dict[str, Any], key: str, poolings: Sequence[str]) -> dict[str, Any]:
    started = time.perf_counter()
    splits, total = {}, EncodeStats()
    for split, dataset, stats in _encode_splits(backbone, task, max_length, max_tokens, poolings,
                                                lambda split, pooling: tmp / f"{split}-{pooling}.npy"):
        splits[split] = write_targets(tmp, split, dataset, stats)
        total.add(stats)
    if pooler_dense(backbone.model) is not None:
        write_pooler(tmp, backbone.model)  # here, while the model is loaded: pooling=pooler needs no second load
    encode_s = time.perf_counter() - started
    return {
        "key": key,
        "identity": identity,
        "task": task.name,
        "num_layers": backbone.num_layers,
        "hidden_size": backbone.hidden_size,
        "poolings": list(poolings),
        "label_names": list(task.label_names),
        "splits": splits,
        "encode_batch_tokens": max_tokens,
        "encode_s": round(encode_s, 3),
        "tokens_per_s": round(total.real_tokens / encode_s, 1),
        "padding_efficiency": round(total.padding_efficiency, 4),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def ensure_features(backbone: Backbone, task: Task, backbone_cfg: BackboneConfig, max_tokens: int, cache_dir: str | Path,
                    poolings: Sequence[str] | None = None) -> tuple[FeatureSet, float]:
    """The entry of (backbone, task), encoding it if no one has yet, with `poolings` (default: every one
    it can store, `stored_poolings`). Returns it and the seconds this call spent encoding (0 when it was
    cached, also when another job computed it meanwhile)."""
    identity = feature_identity(backbone_cfg, backbone, task)
    key = feature_key(identity)
    poolings = stored_poolings(backbone.tokenizer) if poolings is None else tuple(poolings)
    spent = 0.0

    def build(tmp: Path) -> None:
        nonlocal spent
        started = time.perf_counter()
        manifest = _write_entry(tmp, backbone, task, backbone_cfg.max_length, max_tokens, identity, key, poolings)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: an entry with a manifest is whole
        spent = time.perf_counter() - started
        log.info("features %s: encoded in %.1f s", key, spent)

    directory = build_once(features_root(cache_dir) / key, build)
    return FeatureSet.open(directory), spent


def add_poolings(features: FeatureSet, backbone: Backbone, task: Task, max_length: int, max_tokens: int,
                 poolings: Sequence[str]) -> float:
    """Add the stored `poolings` an entry lacks, in ONE encoding pass over every split, under the entry's
    lock: each new array is written beside the entry under a hidden name and renamed in, the manifest is
    rewritten (atomically) last, and the arrays the entry held are never opened for writing. The caller
    makes sure `backbone` and `task` are those of the entry's key. Returns the seconds spent encoding (0
    when another job added them meanwhile)."""
    directory = features.directory
    with FileLock(str(directory) + ".lock"):  # the lock build_once holds while building the entry
        manifest = json.loads((directory / MANIFEST).read_text())
        missing = [p for p in poolings if p not in manifest["poolings"]]
        if not missing:
            return 0.0
        started = time.perf_counter()
        partial = {(split, p): directory / f".{split}-{p}.npy.partial" for split in SPLITS for p in missing}
        try:
            for split, dataset, _ in _encode_splits(backbone, task, max_length, max_tokens, missing,
                                                    lambda split, pooling: partial[split, pooling]):
                if not np.array_equal(np.asarray(dataset["id"]), np.load(directory / f"{split}-ids.npy")):
                    raise RuntimeError(f"{directory.name}/{split}: the examples encoded now are not the entry's; "
                                       "the entry does not belong to this backbone and task")
            for (split, pooling), path in partial.items():
                os.replace(path, directory / f"{split}-{pooling}.npy")
        finally:
            for path in partial.values():
                path.unlink(missing_ok=True)
        spent = time.perf_counter() - started
        manifest["poolings"] += missing
        manifest.setdefault("added", []).append({
            "poolings": missing, "encode_s": round(spent, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
    log.info("features %s: added %s in %.1f s", directory.name, missing, spent)
    return spent


# ---------------------------------------------------------------------------------------------
# From a composed config: skip loading the backbone when the entry is known

def _weights_stamp(backbone_cfg: BackboneConfig, cache_dir: str | Path) -> str | None:
    """A cheap stamp of the files a package/local backbone loads from (path, size, mtime); None
    for sources that must be loaded to be identified."""
    if backbone_cfg.source == Source.package and backbone_cfg.location in PACKAGED:
        directory = PACKAGED[backbone_cfg.location].locate(cache_dir)
    elif backbone_cfg.source == Source.local:
        directory = Path(backbone_cfg.location).expanduser()
    else:
        return None
    if not directory.is_dir():
        return None
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return _digest([(str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _lookup_path(cache_dir: str | Path, backbone_cfg: BackboneConfig, task: Task) -> Path | None:
    try:
        stamp = _weights_stamp(backbone_cfg, cache_dir)
    except Unavailable:  # not installed: load_backbone will say how to install it
        return None
    if stamp is None:
        return None
    lookup = {"pooling_version": POOLING_VERSION, "backbone": _backbone_fields(backbone_cfg), "stamp": stamp,
              "task": task.fingerprint, "software": _software()}
    return features_root(cache_dir) / "lookup" / f"{_digest(lookup)}.json"


def _cached_features(backbone_cfg: BackboneConfig, task: Task, cache_dir: str | Path, encode_batch_tokens: int
                     ) -> tuple[FeatureSet, float, Backbone | None]:
    """The entry, the seconds spent encoding it, and the backbone if it had to be loaded."""
    lookup = _lookup_path(cache_dir, backbone_cfg, task)
    if lookup is not None and lookup.exists():
        directory = features_root(cache_dir) / json.loads(lookup.read_text())["key"]
        if directory.exists():
            return FeatureSet.open(directory), 0.0, None
    backbone = load_backbone(backbone_cfg, cache_dir)
    found, encode_s = ensure_features(backbone, task, backbone_cfg, encode_batch_tokens, cache_dir)
    if lookup is not None:
        atomic_write_bytes(lookup, json.dumps({"key": found.key}).encode())
    return found, encode_s, backbone


def features_for(backbone_cfg: BackboneConfig, task_cfg: TaskConfig, cache_dir: str | Path, encode_batch_tokens: int,
                 pooling: str | None = None) -> tuple[FeatureSet, float]:
    """The cached features of (backbone, task), encoded on first use, holding what `pooling` reads:
    stored poolings an older entry lacks are added to it (`add_poolings`: every missing one, in one
    pass), the pooler weights for pooling=pooler. Returns them and the seconds spent encoding in this
    call (0 when cached). A nospecial pooling of a tokenizer that adds no special token is a ConfigError."""
    task = load_task(task_cfg, Path(cache_dir).expanduser())
    found, encode_s, backbone = _cached_features(backbone_cfg, task, cache_dir, encode_batch_tokens)
    if pooling is None:
        return found, encode_s
    if any(p not in found.poolings for p in stored_sources(pooling)):
        backbone = backbone or load_backbone(backbone_cfg, cache_dir)
        check_special_tokens(pooling, backbone_cfg.name, adds_special_tokens(backbone.tokenizer))
        if feature_key(feature_identity(backbone_cfg, backbone, task)) != found.key:
            raise RuntimeError(f"the feature entry {found.key} found for backbone {backbone_cfg.name} is not the one "
                               "its weights key now: remove the stale lookup files under features/lookup")
        encode_s += add_poolings(found, backbone, task, backbone_cfg.max_length, encode_batch_tokens,
                                 stored_poolings(backbone.tokenizer))
        found = FeatureSet.open(found.directory)
    if pooling == "pooler" and not (found.directory / POOLER_FILE).exists():
        write_pooler(found.directory, (backbone or load_backbone(backbone_cfg, cache_dir)).model)
    return found, encode_s
