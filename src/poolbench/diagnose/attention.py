"""Where each readout position attends: entropy, breadth and mass by token kind, per layer and head.

The readout positions are those `poolbench.pooling` reads: "first" (h_0, the first real token:
[CLS] of an encoder, the first word or BOS of a decoder) and "last" (the last real token). For
each, per layer and head, over REAL tokens only (padding gets weight 0, and is excluded anyway):

  entropy    nats of the attention row, -sum p log p (0 log 0 = 0)
  breadth    exp(entropy) / n_real: 1 for a uniform row, 1/n_real for a row on one token
  self       weight on the position itself
  special    weight on OTHER special tokens (tokenizer.all_special_ids but unk: [CLS], [SEP], BOS, EOS)
  content    weight on OTHER non-special tokens
  real_mass  weight on all real tokens = self + special + content; 1 up to rounding
  n_real     real tokens in the text
`self`, `special` and `content` partition the row: h_0 = [CLS] puts its own weight in `self`, so
`special` is then exactly its weight on [SEP] (the quantity Clark et al. 2019 report).

Attention weights need the eager implementation: SDPA (transformers' default) computes none and,
asked for them, returns an empty tuple with a warning. `eager_attention` switches a loaded model
with `model.set_attn_implementation("eager")` (transformers 5; checked on 5.24: BertModel,
GPT2Model and LlamaModel switch in place, no reload) and switches it back afterwards. Eager and SDPA
compute the same function, so the hidden states agree up to float rounding.

Layers are numbered as hidden states are: layer l is the l-th block (1..num_layers), whose output
is hidden_states[l]; layer 0 (embeddings) has no attention.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformers import PreTrainedModel

from poolbench.backbones import Backbone, model_inputs
from poolbench.diagnose.stats import mean_over_texts
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.pooling import first_token_index, last_token_index, special_mask, special_token_ids

POSITIONS = ("first", "last")
METRICS = ("entropy", "breadth", "self", "special", "content", "real_mass", "n_real")
_INDEX = {"first": first_token_index, "last": last_token_index}


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """The model with eager attention inside the block, its own implementation restored after."""
    previous = model.config._attn_implementation
    if previous != "eager":
        if not hasattr(model, "set_attn_implementation"):
            raise RuntimeError("this transformers has no set_attn_implementation; load the model with "
                               "attn_implementation='eager' to read attention weights")
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def entropy(probabilities: Tensor, keep: Tensor) -> Tensor:
    """Entropy in nats of each row of `probabilities` [..., n] over the entries where `keep` is True."""
    p = torch.where(keep, probabilities.double(), 0.0)
    return -torch.special.xlogy(p, p).sum(-1)


def attention_metrics(attentions: Sequence[Tensor], attention_mask: Tensor, special: Tensor) -> pd.DataFrame:
    """Tidy metrics from attention weights `attentions` (one [batch, heads, seq, seq] per layer, rows =
    queries), the batch's mask and its special-token mask [batch, seq]. Columns: layer (1-based), head,
    position ("first" / "last"), text (row of the batch), then METRICS."""
    if not attentions:
        raise ValueError("no attention weights: the model ran with SDPA; run it under eager_attention()")
    n_texts, n_heads, seq, _ = attentions[0].shape
    if attention_mask.shape != (n_texts, seq) or special.shape != (n_texts, seq):
        raise ValueError(f"masks {tuple(attention_mask.shape)}, {tuple(special.shape)} do not match attention "
                         f"[batch, seq] = {(n_texts, seq)}")
    real = attention_mask.bool()
    if not real.any(1).all():
        raise ValueError("a row has no real token")
    special = special.bool() & real
    n_layers, rows = len(attentions), torch.arange(n_texts)
    n_real = real.sum(1).double()  # [batch]
    frames = []
    for position in POSITIONS:
        index = _INDEX[position](real)  # [batch]
        # The readout's query row of every layer: [layers, batch, heads, seq] (rows gathered before the
        # float64 copy, so long batches never hold all attention maps twice).
        row = torch.stack([a.detach().transpose(1, 2)[rows, index].double() for a in attentions])
        itself = torch.zeros_like(real).scatter_(1, index[:, None], True)  # [batch, seq]
        masks = {"self": itself, "special": special & ~itself, "content": real & ~special & ~itself, "real_mass": real}
        values = {name: (row * m[None, :, None, :]).sum(-1) for name, m in masks.items()}
        values["entropy"] = entropy(row, real[None, :, None, :].expand_as(row))
        values["breadth"] = values["entropy"].exp() / n_real[None, :, None]
        values["n_real"] = n_real[None, :, None].expand(n_layers, n_texts, n_heads)
        layer, text, head = np.meshgrid(np.arange(1, n_layers + 1), np.arange(n_texts), np.arange(n_heads),
                                        indexing="ij")
        frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "position": position, "text": text.ravel()})
        for name in METRICS:
            frame[name] = values[name].numpy().ravel()
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["n_real"] = frame["n_real"].astype(int)
    return frame


def readout_attention(backbone: Backbone, texts: Sequence[str], max_length: int = 128) -> pd.DataFrame:
    """attention_metrics of `texts` through `backbone`: ONE eager forward pass of the whole batch, padded
    on the tokenizer's side, positions counted over real tokens as in every poolbench forward."""
    batch = tokenize_texts(backbone, texts, max_length)
    model = backbone.model
    with eager_attention(model), torch.inference_mode():
        attentions = model(**model_inputs(model, batch), output_attentions=True).attentions
    if attentions is None or len(attentions) != backbone.num_layers:
        raise RuntimeError(f"expected {backbone.num_layers} attention maps, got "
                           f"{None if attentions is None else len(attentions)}")
    return attention_metrics(attentions, batch["attention_mask"],
                             special_mask(special_token_ids(backbone.tokenizer), batch["input_ids"],
                                          batch["attention_mask"]))


def summarize_attention(frame: pd.DataFrame, by: Sequence[str] = ("layer", "position"),
                        metrics: Sequence[str] = METRICS[:-1]) -> pd.DataFrame:
    """Means over texts with 95% t-intervals per group of `by` (default: averaged over heads within each
    text first; add "head" to `by` to keep heads apart). See stats.mean_over_texts."""
    return mean_over_texts(frame, by, metrics)
