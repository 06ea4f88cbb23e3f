"""Mean- and zero-ablation of position 0 (Sun et al. 2024): does anything downstream need h_0's content?

After block l (1 <= l < L; the output of block l is hidden_states[l], the residual stream), the state
at the first real token of every text is replaced by
  mean   its mean over the training texts: the cached `cls` vectors of layer l (feature cache, the
         probe's training rows), so the ablation keeps what is common to all inputs and removes
         what is specific to this one
  zero   the zero vector (the contrast: removes the common part too)
and the forward pass is finished. For each readout of the LAST layer, a fixed linear probe trained on
the unablated cached training vectors (sklearn: StandardScaler, then LogisticRegression with C = 1,
max_iter = 200, on the probe's training rows) classifies the sample's clean and ablated vectors:
  accuracy_change   ablated minus clean accuracy on the sample (a difference of proportions)
  distance          1 - cos(clean readout, ablated readout), per text (mean and t-interval)
A readout whose h_0 is the same vector for every input (a decoder's fixed first token) is unchanged
by mean-ablation (to float rounding); a sink whose varying part nothing reads changes little under
mean-ablation and much under zero-ablation.

Block l is found as `encoder.layer[l-1]` (BERT-type), `layers[l-1]` (Llama-type) or `h[l-1]` (GPT-2).
The replacement is the hook's return value, so every later block reads it; transformers 5 records
`output_hidden_states` before forward hooks change a block's output, so hidden_states[l] itself
still shows the clean state (only later layers are read here). The last layer is not ablated: replacing h_0 after the last block only swaps the cls readout itself
(and, in a decoder with a final norm, the cached state there is the normed one, not the stream).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from transformers import PreTrainedModel

from poolbench.backbones import Backbone, forward_hidden_states
from poolbench.diagnose.geometry import cosine
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.pooling import first_token_index, pool_all, special_mask, special_token_ids

KINDS = ("mean", "zero")


def blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer blocks in order (see the module note)."""
    for path in (("encoder", "layer"), ("layers",), ("h",)):
        found = model
        for name in path:
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList):
            return found
    raise ValueError(f"no transformer blocks found in {type(model).__name__}: ablation knows BERT-, Llama- and "
                     "GPT-2-type models")


@contextmanager
def replaced_state(model: PreTrainedModel, layer: int, positions: Tensor, replacement: Tensor) -> Iterator[None]:
    """Inside the block, block `layer`'s output at (row b, positions[b]) is `replacement` [hidden]."""
    rows = torch.arange(len(positions))

    def hook(_module, _inputs, output):
        states = output[0] if isinstance(output, tuple) else output
        states = states.clone()
        states[rows, positions] = replacement.to(states.dtype)
        return (states, *output[1:]) if isinstance(output, tuple) else states

    handle = blocks(model)[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def last_layer_readouts(backbone: Backbone, batch: dict[str, Tensor], poolings: Sequence[str]) -> dict[str, np.ndarray]:
    """The readouts of the last layer of `batch` (float64 numpy), under whatever hooks are active."""
    with torch.inference_mode():
        last = forward_hidden_states(backbone.model, batch)[-1]
    special = special_mask(special_token_ids(backbone.tokenizer), batch["input_ids"], batch["attention_mask"])
    pooled = pool_all(last, batch["attention_mask"], poolings, special=special)
    return {name: vectors.double().numpy() for name, vectors in pooled.items()}


def fit_probe(train_x: np.ndarray, train_y: np.ndarray) -> Pipeline:
    """The fixed linear probe of the module note."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=200)).fit(train_x, train_y)


def ablation_frame(backbone: Backbone, texts: Sequence[str], labels: np.ndarray, layers: Sequence[int],
                   means: dict[int, Tensor], probes: dict[str, Pipeline], max_length: int = 128,
                   batch_size: int = 32) -> pd.DataFrame:
    """Rows (layer, kind, pooling, text, clean_correct, ablated_correct, distance) for every text of the sample,
    ablated layer (means[layer]: the replacement of mean-ablation) and readout (probes[pooling])."""
    poolings = list(probes)
    frames = []
    for start in range(0, len(texts), batch_size):
        batch = tokenize_texts(backbone, texts[start:start + batch_size], max_length)
        first = first_token_index(batch["attention_mask"].bool())
        truth = labels[start:start + batch_size]
        clean = last_layer_readouts(backbone, batch, poolings)
        clean_correct = {p: probes[p].predict(clean[p]) == truth for p in poolings}
        for layer in layers:
            for kind in KINDS:
                replacement = means[layer] if kind == "mean" else torch.zeros_like(means[layer])
                with replaced_state(backbone.model, layer, first, replacement):
                    ablated = last_layer_readouts(backbone, batch, poolings)
                for p in poolings:
                    frames.append(pd.DataFrame({
                        "layer": layer, "kind": kind, "pooling": p, "text": np.arange(len(truth)) + start,
                        "clean_correct": clean_correct[p].astype(float),
                        "ablated_correct": (probes[p].predict(ablated[p]) == truth).astype(float),
                        "distance": np.clip(1 - cosine(clean[p], ablated[p]), 0, None)}))
    return pd.concat(frames, ignore_index=True)


def ablation_layers(num_layers: int, count: int) -> list[int]:
    """`count` layers evenly spaced over 1..num_layers-1 (all of them when there are fewer)."""
    candidates = np.arange(1, num_layers)
    if count >= len(candidates):
        return candidates.tolist()
    return sorted(set(np.round(np.linspace(1, num_layers - 1, count)).astype(int).tolist()))
