"""Massive activations per layer and position class (Sun et al. 2024), from one pass's hidden states.

For a token's hidden state h [hidden] at layer l (0 = embeddings) of a text (`pooling.activation_extremes`):
  ratio     max_d |h_d| / the median |activation| of the text's layer-l hidden states (every real
            token, every dimension: Sun et al.'s median, their Table 1): how far the token's largest
            activation stands above a typical activation of that layer. (The token's own median would
            not do: a sink token has several raised dimensions and its own median rises with them.)
  max_abs   max_d |h_d|
  top_dim   argmax_d |h_d|
  massive   Sun et al.'s criterion: max_abs > 100 AND ratio > 1000 (`pooling.is_massive`: the same
            positions the mean_nosink readout leaves out)
Position classes, located from the mask as the readouts are: "first" (h_0, the first real token),
"last" (the last real token: [SEP] of an encoder), and "content" (every other real, non-special
token; the text's most extreme one counts: a massive activation sits on a few tokens, so a mean
over tokens would hide it). One row per (layer, position, text).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from poolbench.diagnose.stats import mean_over_texts
from poolbench.pooling import activation_extremes, first_token_index, is_massive, last_token_index

POSITIONS = ("first", "last", "content")
METRICS = ("ratio", "max_abs", "massive")


def massive_frame(hidden_states: Sequence[Tensor], attention_mask: Tensor, special: Tensor) -> pd.DataFrame:
    """Tidy rows (layer 0..L, position, text, ratio, max_abs, top_dim, massive) of one batch; texts without
    a content token have no "content" row."""
    real = attention_mask.bool()
    n_texts, rows = real.shape[0], torch.arange(real.shape[0])
    first, last = first_token_index(real), last_token_index(real)
    content = real & ~special.bool()
    content[rows, first] = False
    content[rows, last] = False
    frames = []
    for layer, hidden in enumerate(hidden_states):
        ratio, max_abs, top_dim = activation_extremes(hidden, real)
        massive = is_massive(ratio, max_abs)
        picks = {"first": first, "last": last,
                 "content": torch.where(content, ratio, -1.0).argmax(1)}  # the text's most extreme content token
        for position, index in picks.items():
            keep = content.any(1) if position == "content" else torch.ones(n_texts, dtype=torch.bool)
            r, m = ratio[rows, index][keep], max_abs[rows, index][keep]
            frames.append(pd.DataFrame({
                "layer": layer, "position": position, "text": rows[keep].numpy(), "ratio": r.numpy(),
                "max_abs": m.numpy(), "top_dim": top_dim[rows, index][keep].numpy(),
                "massive": massive[rows, index][keep].double().numpy()}))
    return pd.concat(frames, ignore_index=True)


def summarize_massive(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, position): ratio, max_abs and massive (the share of texts meeting the criterion) as means
    over texts with t-intervals, plus top_dim (the dimension most often largest) and top_dim_share."""
    summary = mean_over_texts(frame, ["layer", "position"], METRICS)
    modes = (frame.groupby(["layer", "position"])["top_dim"]
             .agg(top_dim=lambda d: d.mode().min(), top_dim_share=lambda d: float(np.mean(d == d.mode().min())))
             .reset_index())
    return summary.merge(modes, on=["layer", "position"])
