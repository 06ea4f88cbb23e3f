"""Sink vs value: how much content queries attend to position 0, by weight and by what it moves.

For each content query i (a real, non-special token other than the first real token p0) of a text,
per layer and head:
  raw     alpha_{i,p0}: the attention weight it gives the first real token
  value   ||alpha_{i,p0} v_{p0} W_O|| / sum_j ||alpha_ij v_j W_O|| (Kobayashi et al. 2020): the share of
          the head's output norms that position 0 contributes; alpha >= 0, so each term is
          alpha_ij * value_norms[j] (eager.head_value_norms)
A sink draws a large raw share while contributing a small value share (its value vector is short).
With uniform attention and equal value norms, the two are equal. Per text, both are averaged over
its content queries and then heads (each head first, so a head counts once whatever it does);
texts without a content query have no row.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from poolbench.pooling import first_token_index

METRICS = ("raw", "value")


def first_position_shares(attention: Tensor, value_norms: Tensor, first: Tensor) -> tuple[Tensor, Tensor]:
    """(raw, value) share of position `first[b]` for every query: attention [batch, heads, q, k], value_norms
    [batch, heads, k] -> two [batch, heads, q]. A query whose weighted norms are all 0 has value share 0."""
    rows = torch.arange(attention.shape[0])
    attention = attention.double()
    raw = attention[rows, :, :, first]  # [batch, heads, q]
    weighted = attention * value_norms.double()[:, :, None, :]
    total = weighted.sum(-1)
    to_first = weighted[rows, :, :, first]
    value = torch.where(total > 0, to_first / total.clamp_min(1e-300), 0.0)
    return raw, value


def sink_frame(attentions: Sequence[Tensor], value_norms: Sequence[Tensor], attention_mask: Tensor,
               special: Tensor) -> pd.DataFrame:
    """Tidy rows (layer 1..L, head, text, raw, value), each averaged over the text's content queries."""
    real = attention_mask.bool()
    n_texts = real.shape[0]
    first = first_token_index(real)
    content = real & ~special.bool()
    content[torch.arange(n_texts), first] = False
    has_content = content.any(1)
    weights = content.double() / content.sum(1, keepdim=True).clamp_min(1)  # mean over content queries
    frames = []
    for layer, (attention, norms) in enumerate(zip(attentions, value_norms), start=1):
        raw, value = first_position_shares(attention.detach(), norms, first)
        per_text = {name: (share * weights[:, None, :]).sum(-1)[has_content] for name, share in
                    (("raw", raw), ("value", value))}  # [texts with content, heads]
        heads = per_text["raw"].shape[1]
        text, head = np.meshgrid(np.flatnonzero(has_content.numpy()), np.arange(heads), indexing="ij")
        frames.append(pd.DataFrame({"layer": layer, "head": head.ravel(), "text": text.ravel(),
                                    "raw": per_text["raw"].numpy().ravel(), "value": per_text["value"].numpy().ravel()}))
    return pd.concat(frames, ignore_index=True)
