"""Per-token states of a frozen backbone, cached for the attention readout's probe.

The feature cache (features.py) stores pooled vectors; a readout whose weights are learned needs the
token states themselves. Two ways were open: run the backbone per batch (every epoch of every job:
up to 100 epochs x 5 seeds of forward passes over the training rows, for the head's sake alone), or
cache the states once per (feature entry, layer), which this module does. The backbone is frozen,
so the states are the same for every seed, weight decay and epoch.

What is stored, and why:
- Ragged: only the real tokens, example after example, with offsets. Padding to max_length would
  cost max_length / mean length times more (mcid: 128 / 9.6 = 13x); the probe pads each minibatch
  to its own longest row instead.
- float16: half the disk and RAM of float32; its rounding (relative 2^-11 = 4.9e-4) is far below
  what a probe can tell. A layer of a split whose states leave float16's range (massive activations
  above 65,504) is kept in float32 instead, so no value is ever clipped.
- Only the layers jobs ask for (`layer=all` asks for every one), added to an entry in one encoding
  pass per request, so a final-layer study never pays for the other layers.
- Whole splits, not a seed's training subsample: one entry serves every seed and subsample size (the
  default probe study's 5 seeds x 2,000-row subsamples of banking77 cover most of its train split).
Size: tokens x hidden x 2 bytes per layer, e.g. minilm-l6 / mcid (16,251 real tokens in its three
splits, 384 wide) 12.5 MB per layer, 87 MB for its 7; SmolLM2 (576 wide, 31 hidden states) 1.1 KB
per token and layer, 35.7 KB per token for all layers.

On disk, `<cache>/token_states/<feature key>/` (the key of the feature entry of the same encoding:
backbone, weights, tokenizer, task, max_length, dtype, software; nothing in the feature entry changes):
  manifest.json          the feature key, hidden size, split sizes (examples, tokens), the layers held,
                         and one line per encoding pass (layers, seconds, bytes); rewritten last
  <split>-offsets.npy    int64 [n + 1]: example i (in the feature entry's order) is rows offsets[i]:offsets[i+1]
  <split>-L<layer>.npy   float16 (or float32) [tokens, hidden], memory-mapped when read
Layers are added under the entry's file lock; each array is written under a hidden name and renamed
in, the manifest last, so a killed pass leaves nothing a reader trusts.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor

from poolbench.assets import atomic_write_bytes
from poolbench.backbones import Backbone, forward_hidden_states, load_backbone
from poolbench.config import BackboneConfig, TaskConfig
from poolbench.data import tokenize
from poolbench.encoding import encoding_batches
from poolbench.features import FeatureSet, feature_identity, feature_key
from poolbench.tasks import SPLITS, Task, load_task

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def token_states_root(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "token_states"


def _layer_file(split: str, layer: int) -> str:
    return f"{split}-L{layer}.npy"


@dataclass
class TokenRows:
    """The token states of one split at some layers, in RAM: `tokens` [L, tokens, H] (float16 or float32)
    and `offsets` [n + 1] (example i is tokens[:, offsets[i]:offsets[i+1]])."""

    tokens: Tensor
    offsets: Tensor

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """float32 states [L, B, T, H] of examples `rows`, right-padded to the batch's longest, and the
        mask [B, T]. Padding repeats a real state (finite): the readout never reads it."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        positions = torch.arange(int(lengths.max()))
        mask = positions < lengths.unsqueeze(1)
        index = torch.where(mask, starts.unsqueeze(1) + positions, starts.unsqueeze(1))
        return self.tokens[:, index].float(), mask

    def standardized(self, stats: tuple[Tensor, Tensor]) -> "TokenRows":
        """float32 copies z-scored per dimension with `stats` (mean, std [L, 1, H]: `probe.fit_standardizer`)."""
        mean, std = stats
        return TokenRows((self.tokens.float() - mean) / std, self.offsets)

    def means(self, rows: Tensor) -> Tensor:
        """float32 [L, len(rows), H]: the mean of each example's states (the `mean` readout of the
        stored states), one layer at a time."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        owner = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        # Token k of the examples concatenated here is stored at k + (its example's start - its start here).
        shift = torch.repeat_interleave(starts - (lengths.cumsum(0) - lengths), lengths)
        index = torch.arange(int(lengths.sum())) + shift
        out = torch.zeros(self.tokens.shape[0], len(rows), self.tokens.shape[2])
        for layer, states in enumerate(self.tokens):
            out[layer].index_add_(0, owner, states[index].float())
        return out / lengths.view(1, -1, 1).float()


@dataclass
class TokenStates:
    """A token-state entry: per split, offsets and one array per stored layer, read through memory maps."""

    directory: Path
    manifest: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, directory: Path) -> "TokenStates":
        return cls(Path(directory), json.loads((Path(directory) / MANIFEST).read_text()))

    @property
    def layers(self) -> list[int]:
        return self.manifest["layers"]

    def offsets(self, split: str) -> np.ndarray:
        return np.load(self.directory / f"{split}-offsets.npy")

    def rows(self, split: str, layers: Sequence[int]) -> TokenRows:
        """The split's states at `layers` in RAM (float32 if any of them is stored in float32)."""
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"{self.directory.name} holds no token states of layers {missing} (it holds "
                             f"{self.layers}): token_states_for(..., layers) adds them")
        arrays = [np.load(self.directory / _layer_file(split, layer), mmap_mode="r") for layer in layers]
        dtype = np.result_type(*(a.dtype for a in arrays))
        tokens = np.empty((len(arrays), *arrays[0].shape), dtype=dtype)
        for i, array in enumerate(arrays):
            tokens[i] = array
        return TokenRows(torch.from_numpy(tokens), torch.from_numpy(self.offsets(split)))

    def nbytes(self, layers: Sequence[int] | None = None) -> int:
        """Bytes on disk of the arrays of `layers` (default: all stored), offsets included."""
        layers = self.layers if layers is None else layers
        files = [f"{split}-offsets.npy" for split in SPLITS]
        files += [_layer_file(split, layer) for split in SPLITS for layer in layers]
        return sum((self.directory / name).stat().st_size for name in files)


def _store(arrays: dict[int, np.ndarray], paths: dict[int, Path], layer: int, dest: np.ndarray,
           values: np.ndarray) -> None:
    """Write `values` at rows `dest` of layer `layer`'s array; a float16 array that would overflow becomes
    float32 first (its values so far copied exactly), so no state is ever clipped."""
    array = arrays[layer]
    finite = values[np.isfinite(values)]
    if array.dtype == np.float16 and finite.size and np.abs(finite).max() > FLOAT16_MAX:
        wide_path = paths[layer].with_suffix(".wide")
        wide = np.lib.format.open_memmap(wide_path, mode="w+", dtype=np.float32, shape=array.shape)
        wide[:] = array
        del array
        arrays[layer] = wide
        paths[layer].unlink()
        wide_path.rename(paths[layer])
        log.info("token states of layer %d leave float16's range: stored in float32", layer)
    arrays[layer][dest] = values


def _encode_split(backbone: Backbone, dataset: Any, offsets: np.ndarray, layers: Sequence[int], max_tokens: int,
                  paths: dict[int, Path]) -> None:
    """Every real token's state at `layers` into memory-mapped arrays at `paths`, example i at rows
    offsets[i]:offsets[i+1], whatever the padding side (a row's real tokens in position order)."""
    shape = (int(offsets[-1]), backbone.hidden_size)
    arrays = {layer: np.lib.format.open_memmap(paths[layer], mode="w+", dtype=np.float16, shape=shape)
              for layer in layers}
    with torch.inference_mode():
        for positions, batch in encoding_batches(dataset, backbone.tokenizer, max_tokens):
            mask = batch["attention_mask"].bool()
            if not np.array_equal(mask.sum(1).numpy(), offsets[positions + 1] - offsets[positions]):
                raise RuntimeError("a batch's real tokens differ from the tokenized lengths: the offsets would lie")
            dest = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in positions])
            states = forward_hidden_states(backbone.model, batch)
            for layer in layers:
                _store(arrays, paths, layer, dest, states[layer][mask].float().numpy())
    for array in arrays.values():
        array.flush()


def add_layers(directory: Path, features: FeatureSet, backbone: Backbone, task: Task, max_length: int,
               max_tokens: int, layers: Sequence[int]) -> float:
    """Add the token states of `layers` the entry at `directory` lacks, in ONE encoding pass over every
    split, under the entry's lock. The caller makes sure `backbone` and `task` are those of `features`'s
    key. Returns the seconds spent encoding (0 when another job added them meanwhile)."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        manifest_path = directory / MANIFEST
        manifest = (json.loads(manifest_path.read_text()) if manifest_path.exists() else
                    {"key": features.key, "hidden_size": backbone.hidden_size, "layers": [], "splits": {}, "added": []})
        missing = sorted(set(layers) - set(manifest["layers"]))
        if not missing:
            return 0.0
        started = time.perf_counter()
        tokenized = tokenize(task, backbone.tokenizer, max_length, backbone.normalize_text)
        partial = {(split, layer): directory / f".{_layer_file(split, layer)}.partial" for split in SPLITS
                   for layer in missing}
        try:
            for split in SPLITS:
                dataset = tokenized[split]
                if not np.array_equal(np.asarray(dataset["id"]), features.ids(split).numpy()):
                    raise RuntimeError(f"{features.key}/{split}: the examples tokenized now are not the feature "
                                       "entry's; the entry does not belong to this backbone and task")
                offsets = np.concatenate([[0], np.cumsum(np.asarray(dataset["length"]))]).astype(np.int64)
                offsets_path = directory / f"{split}-offsets.npy"
                if offsets_path.exists() and not np.array_equal(np.load(offsets_path), offsets):
                    raise RuntimeError(f"{directory}/{split}: the stored offsets are not this tokenization's")
                _encode_split(backbone, dataset, offsets, missing, max_tokens,
                              {layer: partial[split, layer] for layer in missing})
                buffer = io.BytesIO()
                np.save(buffer, offsets)
                atomic_write_bytes(offsets_path, buffer.getvalue())
                manifest["splits"][split] = {"n": len(dataset), "tokens": int(offsets[-1])}
            for (split, layer), path in partial.items():
                path.rename(directory / _layer_file(split, layer))
        finally:
            for path in partial.values():
                path.unlink(missing_ok=True)
        spent = time.perf_counter() - started
        manifest["layers"] = sorted(manifest["layers"] + missing)
        written = sum((directory / _layer_file(s, layer)).stat().st_size for s in SPLITS for layer in missing)
        manifest["added"].append({"layers": missing, "encode_s": round(spent, 3), "bytes": written,
                                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    log.info("token states %s: added layers %s in %.1f s (%.1f MB)", directory.name, missing, spent, written / 1e6)
    return spent


def token_states_for(features: FeatureSet, backbone_cfg: BackboneConfig, task_cfg: TaskConfig,
                     cache_dir: str | Path, max_tokens: int, layers: Sequence[int]) -> tuple[TokenStates, float]:
    """The token states of `features`'s encoding at `layers`, encoded on first use (the backbone is loaded
    only then). Returns them and the seconds this call spent encoding (0 when cached)."""
    directory = token_states_root(cache_dir) / features.key
    if (directory / MANIFEST).exists():
        found = TokenStates.open(directory)
        if set(layers) <= set(found.layers):
            return found, 0.0
    task = load_task(task_cfg, Path(cache_dir).expanduser())
    backbone = load_backbone(backbone_cfg, cache_dir)
    if feature_key(feature_identity(backbone_cfg, backbone, task)) != features.key:
        raise RuntimeError(f"the feature entry {features.key} found for backbone {backbone_cfg.name} is not the one "
                           "its weights key now: remove the stale lookup files under features/lookup")
    spent = add_layers(directory, features, backbone, task, backbone_cfg.max_length, max_tokens, layers)
    return TokenStates.open(directory), spent
