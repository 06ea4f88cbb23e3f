"""Frozen backbone -> every pooling of every layer, encoded once per (backbone, task) and cached.

A probe sweep (`-m mode=probe pooling=cls,mean,max,last layer=all seed=0,1,2,3,4`) is 20 jobs
that all read the same frozen encoder on the same data. So the first job to need a
(backbone, task) encodes each split ONCE (inference mode, length-sorted batches cut by a token
budget, `output_hidden_states=True`) and stores, for every hidden layer (0 = embeddings ..
num_layers) and every pooling in `pooling.POOLINGS`, the pooled float32 vectors; every
later job, whatever its pooling, layer or seed, reads them and never calls the backbone.

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
encoding, so a split never has to sit in RAM four times over, and (2) a job reads only its own
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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import transformers
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from poolbench.assets import Unavailable, atomic_write_bytes, build_once
from poolbench.backbones import MODEL_INPUTS, PACKAGED, Backbone, forward_hidden_states, load_backbone
from poolbench.data import sorted_batches, tokenize
from poolbench.config import BackboneConfig, Source, TaskConfig, plain_fields
from poolbench.pooling import POOLINGS, pool_all, pooler
from poolbench.tasks import SPLITS, Task, load_task

log = logging.getLogger(__name__)

# Bump when pooling.py or the encoding below changes what the stored vectors are: it is part of the key.
# v1: pool_all of every hidden state of `backbones.forward_hidden_states` (positions counted over real tokens).
POOLING_VERSION = 1
MANIFEST = "manifest.json"
POOLER_FILE = "pooler.npz"  # the pooler weights, for pooling=pooler


# ---------------------------------------------------------------------------------------------
# The key

def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _backbone_fields(backbone: BackboneConfig) -> dict[str, Any]:
    """The backbone settings that change vectors (family is a label for tables; it cannot)."""
    return plain_fields(backbone, ("name", "source", "location", "revision", "init", "init_seed", "max_length",
                                   "dtype", "padding_side"))


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
        "poolings": list(POOLINGS),
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

    def size(self, split: str) -> int:
        return self.manifest["splits"][split]["n"]

    def _array(self, split: str, name: str) -> np.ndarray:
        return np.load(self.directory / f"{split}-{name}.npy", mmap_mode="r")

    def vectors(self, split: str, pooling: str, layers: Sequence[int] | None = None,
                rows: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """float32 [len(layers), len(rows), hidden] (default: all layers 0..num_layers, all rows),
        copied into RAM layer by layer from the memory map."""
        if pooling == "pooler":
            return self._pooler_vectors(split, layers, rows)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {[*POOLINGS, 'pooler']}")
        array = self._array(split, pooling)
        layers = range(self.num_layers + 1) if layers is None else list(layers)
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
# Encoding

@dataclass
class EncodeStats:
    examples: int = 0
    batches: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0  # batch size x longest sequence, summed over batches

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / max(self.computed_tokens, 1)

    def add(self, other: "EncodeStats") -> None:
        for name in ("examples", "batches", "real_tokens", "computed_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# Within one encoding batch, at most this fraction of the computed tokens may be padding.
MAX_PADDING = 0.05


def encoding_plan(lengths: np.ndarray, max_tokens: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Length-sorted batches of at most `max_tokens` padded tokens (`data.sorted_batches`), each
    cut further so that padding stays below `max_padding` of its computed tokens. A token budget
    alone packs a whole small split of short texts into one batch that spans lengths 3..25 and
    computes mostly padding (mcid: 42% efficiency at 16384 tokens); the cut keeps every batch
    >= 95% real tokens while batches of equal lengths still fill the budget."""
    lengths = np.asarray(lengths)
    plan = []
    for batch in sorted_batches(lengths, max_tokens=max_tokens):  # ascending lengths within a batch
        current, real = [], 0
        for position in batch:
            length = int(lengths[position])
            if current and length * (len(current) + 1) - (real + length) > max_padding * length * (len(current) + 1):
                plan.append(current)
                current, real = [], 0
            current.append(position)
            real += length
        plan.append(current)
    return plan


def encoding_batches(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_tokens: int
                     ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(positions in the split, padded model inputs) of length-sorted batches (`encoding_plan`).
    Padding by `DataCollatorWithPadding`, on the tokenizer's side."""
    columns = dataset.select_columns([c for c in MODEL_INPUTS if c in dataset.column_names] + ["length"]).to_dict()
    lengths = np.asarray(columns.pop("length"))
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    for positions in encoding_plan(lengths, max_tokens):
        batch = collate([{c: values[i] for c, values in columns.items()} for i in positions])
        yield np.asarray(positions), dict(batch)


def encode_batch(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """float32 [n_poolings, num_layers + 1, batch, hidden]: every pooling of every hidden state."""
    mask = batch["attention_mask"]
    per_layer = [pool_all(states, mask) for states in forward_hidden_states(model, batch)]
    return torch.stack([torch.stack([pooled[s] for pooled in per_layer]) for s in POOLINGS])


def encode_split(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, max_tokens: int,
                 out: dict[str, np.ndarray] | None = None, num_layers: int | None = None
                 ) -> tuple[dict[str, np.ndarray], EncodeStats]:
    """Pool one tokenized split. `out` maps pooling -> a [num_layers + 1, n, hidden] float32 array
    (e.g. a memory map) filled in dataset order; made in RAM when not given."""
    stats = EncodeStats(examples=len(dataset))
    with torch.inference_mode():
        for positions, batch in encoding_batches(dataset, tokenizer, max_tokens):
            pooled = encode_batch(model, batch).numpy()
            if out is None:
                out = {s: np.empty((pooled.shape[1], len(dataset), pooled.shape[3]), np.float32) for s in POOLINGS}
            if num_layers is not None and pooled.shape[1] != num_layers + 1:
                raise RuntimeError(f"the model returned {pooled.shape[1]} hidden states; expected {num_layers + 1}")
            for s, pooling in enumerate(POOLINGS):
                out[pooling][:, positions] = pooled[s]
            mask = batch["attention_mask"]
            stats.batches += 1
            stats.real_tokens += int(mask.sum())
            stats.computed_tokens += mask.numel()
    return out or {}, stats


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


def _write_entry(tmp: Path, backbone: Backbone, task: Task, max_length: int, max_tokens: int,
                 identity: dict[str, Any], key: str) -> dict[str, Any]:
    started = time.perf_counter()
    tokenized = tokenize(task, backbone.tokenizer, max_length, backbone.normalize_text)
    splits, total = {}, EncodeStats()
    for split in SPLITS:
        dataset = tokenized[split]
        shape = (backbone.num_layers + 1, len(dataset), backbone.hidden_size)
        arrays = {s: np.lib.format.open_memmap(tmp / f"{split}-{s}.npy", mode="w+", dtype=np.float32, shape=shape)
                  for s in POOLINGS}
        _, stats = encode_split(backbone.model, backbone.tokenizer, dataset, max_tokens, arrays, backbone.num_layers)
        for array in arrays.values():
            array.flush()
        del arrays
        targets = dataset.select_columns(["label", "id"]).to_dict()
        np.save(tmp / f"{split}-labels.npy", np.asarray(targets["label"], dtype=np.int64))
        np.save(tmp / f"{split}-ids.npy", np.asarray(targets["id"], dtype=np.int64))
        splits[split] = {"n": len(dataset), "batches": stats.batches, "real_tokens": stats.real_tokens,
                         "computed_tokens": stats.computed_tokens,
                         "padding_efficiency": round(stats.padding_efficiency, 4)}
        total.add(stats)
        log.info("encoded %s/%s: %d examples, %d batches, padding efficiency %.3f", task.name, split,
                 len(dataset), stats.batches, stats.padding_efficiency)
    if pooler_dense(backbone.model) is not None:
        write_pooler(tmp, backbone.model)  # here, while the model is loaded: pooling=pooler needs no second load
    encode_s = time.perf_counter() - started
    return {
        "key": key,
        "identity": identity,
        "task": task.name,
        "num_layers": backbone.num_layers,
        "hidden_size": backbone.hidden_size,
        "poolings": list(POOLINGS),
        "label_names": list(task.label_names),
        "splits": splits,
        "encode_batch_tokens": max_tokens,
        "encode_s": round(encode_s, 3),
        "tokens_per_s": round(total.real_tokens / encode_s, 1),
        "padding_efficiency": round(total.padding_efficiency, 4),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def ensure_features(backbone: Backbone, task: Task, backbone_cfg: BackboneConfig, max_tokens: int, cache_dir: str | Path
                    ) -> tuple[FeatureSet, float]:
    """The entry of (backbone, task), encoding it if no one has yet. Returns it and the seconds
    this call spent encoding (0 when it was cached, also when another job computed it meanwhile)."""
    identity = feature_identity(backbone_cfg, backbone, task)
    key = feature_key(identity)
    spent = 0.0

    def build(tmp: Path) -> None:
        nonlocal spent
        started = time.perf_counter()
        manifest = _write_entry(tmp, backbone, task, backbone_cfg.max_length, max_tokens, identity, key)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: an entry with a manifest is whole
        spent = time.perf_counter() - started
        log.info("features %s: encoded in %.1f s", key, spent)

    directory = build_once(features_root(cache_dir) / key, build)
    return FeatureSet.open(directory), spent


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


def _cached_features(backbone_cfg: BackboneConfig, task_cfg: TaskConfig, cache_dir: str | Path,
                     encode_batch_tokens: int) -> tuple[FeatureSet, float]:
    task = load_task(task_cfg, Path(cache_dir).expanduser())
    lookup = _lookup_path(cache_dir, backbone_cfg, task)
    if lookup is not None and lookup.exists():
        directory = features_root(cache_dir) / json.loads(lookup.read_text())["key"]
        if directory.exists():
            return FeatureSet.open(directory), 0.0
    backbone = load_backbone(backbone_cfg, cache_dir)
    found, encode_s = ensure_features(backbone, task, backbone_cfg, encode_batch_tokens, cache_dir)
    if lookup is not None:
        atomic_write_bytes(lookup, json.dumps({"key": found.key}).encode())
    return found, encode_s


def features_for(backbone_cfg: BackboneConfig, task_cfg: TaskConfig, cache_dir: str | Path, encode_batch_tokens: int,
                 with_pooler: bool = False) -> tuple[FeatureSet, float]:
    """The cached features of (backbone, task), encoded on first use, and with the backbone's
    pooler weights when asked (added to an entry that lacks them). Returns them and the seconds
    spent encoding in this call (0 when cached)."""
    found, encode_s = _cached_features(backbone_cfg, task_cfg, cache_dir, encode_batch_tokens)
    if with_pooler and not (found.directory / POOLER_FILE).exists():
        write_pooler(found.directory, load_backbone(backbone_cfg, cache_dir).model)
    return found, encode_s
