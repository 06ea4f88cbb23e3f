"""One eager forward pass that yields what every per-token diagnose measure reads.

For a batch of texts: the attention weights (eager attention, see attention.eager_attention), the
hidden states of every layer (0 = embeddings) and, where the architecture is known, the norm of
every key position's value vector as it reaches the residual stream through head h:

    value_norms[l][b, h, j] = || v_j^h W_O^h ||      (Kobayashi et al. 2020, output projection included)

v_j^h is head h's slice of the value projection's output at position j (for grouped-query attention,
the key-value head h // (heads / kv_heads) that head h reads, as transformers' repeat_kv does) and
W_O^h the columns of the output projection that head h's context occupies. The output projection's
bias is added once per query, not per key, so it is no key's contribution and is left out. The
norms are computed inside forward hooks on the value projections, so no value tensor is kept.

Known architectures (`value_projections`): BERT-type encoders (`encoder.layer[i].attention.self.value`
and `.attention.output.dense`: BertModel, RoBERTa-type), MPNet (`encoder.layer[i].attention.attn.v` and
`.attn.o`) and Llama-type decoders
(`layers[i].self_attn.v_proj` / `.o_proj`: SmolLM2, Llama, Gemma). Elsewhere (GPT-2's fused qkv
projection) `value_norms` is None and the value-weighted measures are not reported.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from poolbench.backbones import Backbone, model_inputs
from poolbench.diagnose.attention import eager_attention
from poolbench.diagnose.tokens import tokenize_texts
from poolbench.pooling import special_mask, special_token_ids


@dataclass
class EagerPass:
    """One batch through the model. attentions: one [batch, heads, seq, seq] per block (layers 1..L);
    hidden_states: one [batch, seq, hidden] per layer 0..L; value_norms: one [batch, heads, seq] per
    block, or None (architecture without known value projections); masks [batch, seq]."""

    attention_mask: Tensor
    special: Tensor
    attentions: tuple[Tensor, ...]
    hidden_states: tuple[Tensor, ...]
    value_norms: list[Tensor] | None


@dataclass
class ValueProjection:
    """One block's value projection, its attention output projection and its head layout."""

    value: nn.Linear
    output: nn.Linear
    heads: int
    kv_heads: int


def value_projections(model: PreTrainedModel) -> list[ValueProjection] | None:
    """Per block, the value and output projections (see the module note), or None for another architecture."""
    config = model.config
    heads = config.num_attention_heads
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer") and hasattr(encoder.layer[0].attention, "self"):
        return [ValueProjection(block.attention.self.value, block.attention.output.dense, heads, heads)
                for block in encoder.layer]
    if encoder is not None and hasattr(encoder, "layer") and hasattr(getattr(encoder.layer[0].attention, "attn", None), "v"):
        return [ValueProjection(block.attention.attn.v, block.attention.attn.o, heads, heads)  # MPNet
                for block in encoder.layer]
    blocks = getattr(model, "layers", None)
    if blocks is not None and hasattr(blocks[0], "self_attn") and hasattr(blocks[0].self_attn, "v_proj"):
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return [ValueProjection(block.self_attn.v_proj, block.self_attn.o_proj, heads, kv_heads) for block in blocks]
    return None


def output_grams(output_weight: Tensor, heads: int) -> Tensor:
    """W_O^h^T W_O^h per head, [heads, head_dim, head_dim] (float64), from the output projection's weight
    [hidden, heads * head_dim]: ||v W_O^h^T||^2 = v^T G_h v, so a norm costs head_dim^2, not head_dim x hidden."""
    w = output_weight.double().view(output_weight.shape[0], heads, -1)  # [hidden, heads, head_dim]
    return torch.einsum("ohd,ohe->hde", w, w)


def head_value_norms(values: Tensor, grams: Tensor, kv_heads: int) -> Tensor:
    """||v_j^h W_O^h|| for value-projection outputs `values` [batch, seq, kv_heads * head_dim] and the
    heads' `output_grams`: [batch, heads, seq], float32."""
    batch, seq, width = values.shape
    heads, head_dim = grams.shape[0], width // kv_heads
    per_kv = values.double().view(batch, seq, kv_heads, head_dim)
    per_head = per_kv.repeat_interleave(heads // kv_heads, dim=2)  # head h reads kv head h // (heads / kv_heads)
    squared = torch.einsum("bshd,hde,bshe->bhs", per_head, grams, per_head)
    return squared.clamp_min(0).sqrt().float()


@contextmanager
def capturing_value_norms(projections: Sequence[ValueProjection]) -> Iterator[list[Tensor]]:
    """Forward hooks that append each block's head_value_norms, in block order, to the yielded list."""
    captured: list[Tensor] = []

    def hook_for(projection: ValueProjection):
        grams = output_grams(projection.output.weight.detach(), projection.heads)

        def hook(_module, _inputs, output):
            captured.append(head_value_norms(output.detach(), grams, projection.kv_heads))
        return hook

    handles = [p.value.register_forward_hook(hook_for(p)) for p in projections]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def eager_pass(backbone: Backbone, texts: Sequence[str], max_length: int = 128, values: bool = True) -> EagerPass:
    """`texts` through `backbone` in ONE eager forward pass (padded on the tokenizer's side), with attention
    weights, hidden states and (if `values` and the architecture is known) the per-head value norms."""
    batch = tokenize_texts(backbone, texts, max_length)
    model = backbone.model
    projections = value_projections(model) if values else None
    with eager_attention(model), torch.inference_mode():
        if projections is None:
            output, norms = model(**model_inputs(model, batch), output_attentions=True, output_hidden_states=True), None
        else:
            with capturing_value_norms(projections) as norms:
                output = model(**model_inputs(model, batch), output_attentions=True, output_hidden_states=True)
    if output.attentions is None or len(output.attentions) != backbone.num_layers:
        raise RuntimeError(f"expected {backbone.num_layers} attention maps, got "
                           f"{None if output.attentions is None else len(output.attentions)}")
    if norms is not None and len(norms) != backbone.num_layers:
        raise RuntimeError(f"captured {len(norms)} value projections for {backbone.num_layers} blocks")
    special = special_mask(special_token_ids(backbone.tokenizer), batch["input_ids"], batch["attention_mask"])
    return EagerPass(batch["attention_mask"], special, output.attentions, output.hidden_states, norms)
