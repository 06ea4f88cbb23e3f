"""Erasure sensitivity: how far each readout moves when one content token is blanked out, by where it sits.

For a text x and a content position i (a real token that is not special), x' is x with token i
replaced by a neutral token; the sensitivity of readout r at layer l is 1 - cos(r_l(x), r_l(x')),
with r one of poolbench's poolings (cls, mean, max, last) read by `poolbench.pooling.pool`, so the
readouts are exactly those the probes train on (mean includes the special tokens, as there).

The neutral token (`neutral_token`): the tokenizer's mask token when it has one (every BERT-style
encoder: the input it was trained to see in place of a hidden word); otherwise, for decoders, the
single token that encodes a space " " (SmolLM2: id 216): a real, near-meaningless piece of text, not
EOS or an end-of-turn marker that would tell a causal model the text has ended; otherwise unk, then pad.

Positions are binned by relative place among the text's content tokens, bin = floor(10 i / n)
(i = 0 .. n-1 counts content tokens only), so a text's first tenth is bin 0 whatever its length.

Cost: a text with k occluded copies runs as a batch of 1 + k rows of one length (no padding: the
occlusion keeps the length), in chunks of `batch_size` rows. `max_texts` keeps the first texts (shuffle
before calling for a sample), `max_positions` a seeded random subset of each text's content positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from poolbench.backbones import Backbone, forward_hidden_states
from poolbench.diagnose.stats import mean_over_texts
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.pooling import BASE_POOLINGS, pool, special_mask, special_token_ids

BINS = 10


def neutral_token(tokenizer: PreTrainedTokenizerBase) -> tuple[int, str]:
    """(token id, which kind: "mask", "space", "unk" or "pad") that replaces an erased token."""
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id, "mask"
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    if len(space) == 1:
        return space[0], "space"
    if tokenizer.unk_token_id is not None:
        return tokenizer.unk_token_id, "unk"
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id, "pad"
    raise ValueError("the tokenizer has no mask, single-token space, unk or pad token to erase with")


def relative_bin(content_index: np.ndarray, n_content: int | np.ndarray) -> np.ndarray:
    """floor(BINS * i / n): 0 .. BINS-1."""
    return np.floor_divide(BINS * np.asarray(content_index), np.asarray(n_content))


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cos along the last axis, in float64 (identical vectors give 0 to ~1e-16, not ~1e-7); rounding
    below 0 is clipped to 0, so an insensitive readout reads 0, not -0.000."""
    a, b = a.double(), b.double()
    return (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)).clamp_min(0)


def readouts(backbone: Backbone, batch: dict[str, Tensor], poolings: Sequence[str] = BASE_POOLINGS,
             batch_size: int = 64) -> dict[str, Tensor]:
    """pooling -> float32 [num_layers + 1, rows, hidden] of `batch`, run in chunks of `batch_size` rows."""
    n = batch["input_ids"].shape[0]
    chunks: dict[str, list[Tensor]] = {p: [] for p in poolings}
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size] for k, v in batch.items()}
            states = forward_hidden_states(backbone.model, part)
            for p in poolings:
                chunks[p].append(torch.stack([pool(s, part["attention_mask"], p) for s in states]))
    return {p: torch.cat(c, dim=1) for p, c in chunks.items()}


def occluded(batch: dict[str, Tensor], positions: Sequence[int], token_id: int) -> dict[str, Tensor]:
    """A one-text batch repeated 1 + len(positions) times: row 0 the text, row j+1 with positions[j] erased."""
    copies = {k: v[:1].repeat(1 + len(positions), 1) for k, v in batch.items()}
    copies["input_ids"][torch.arange(1, 1 + len(positions)), torch.as_tensor(list(positions), dtype=torch.long)] = token_id
    return copies


def erasure_sensitivity(backbone: Backbone, texts: Sequence[str], max_texts: int | None = None,
                        max_positions: int | None = None, seed: int = 0, poolings: Sequence[str] = BASE_POOLINGS,
                        max_length: int = 128, batch_size: int = 64) -> pd.DataFrame:
    """One row per (text, erased position, pooling, layer): text (index into `texts`), position (token
    index), content_index (i among the text's content tokens), n_content, rel_bin, pooling, layer
    (0 = embeddings .. num_layers), sensitivity = 1 - cos(r(x), r(x')). Texts without content tokens
    give no rows."""
    token_id, _ = neutral_token(backbone.tokenizer)
    rng = np.random.default_rng(seed)
    frames = []
    for t, text in enumerate(list(texts)[:max_texts]):
        batch = tokenize_texts(backbone, [text], max_length)
        special = special_mask(special_token_ids(backbone.tokenizer), batch["input_ids"], batch["attention_mask"])
        content = np.flatnonzero(~special[0] & batch["attention_mask"][0].bool())
        if content.size == 0:
            continue
        chosen = np.arange(content.size)
        if max_positions is not None and content.size > max_positions:
            chosen = np.sort(rng.choice(content.size, size=max_positions, replace=False))
        pooled = readouts(backbone, occluded(batch, content[chosen].tolist(), token_id), poolings, batch_size)
        layers = np.arange(backbone.num_layers + 1)
        for p in poolings:
            distance = cosine_distance(pooled[p][:, :1], pooled[p][:, 1:]).numpy()  # [layers, k]
            layer, j = np.meshgrid(layers, np.arange(chosen.size), indexing="ij")
            frames.append(pd.DataFrame({
                "text": t, "position": content[chosen][j.ravel()], "content_index": chosen[j.ravel()],
                "n_content": content.size, "rel_bin": relative_bin(chosen[j.ravel()], content.size),
                "pooling": p, "layer": layer.ravel(), "sensitivity": distance.ravel()}))
    if not frames:
        raise ValueError("no text has a content token to erase")
    return pd.concat(frames, ignore_index=True)


def summarize_erasure(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean sensitivity over texts with a 95% t-interval, per (pooling, layer, bin): bin "0".."9" (a
    text's positions in that tenth averaged first) and "all" (all its erased positions averaged first)."""
    by = ["pooling", "layer", "bin"]
    binned = mean_over_texts(frame.assign(bin=frame["rel_bin"].astype(str)), by, ["sensitivity"])
    overall = mean_over_texts(frame.assign(bin="all"), by, ["sensitivity"])
    return pd.concat([binned, overall], ignore_index=True).sort_values(by, kind="stable", ignore_index=True)
