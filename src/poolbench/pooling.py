"""Poolings: turn one hidden state per token into one vector per sequence.

"Pooling" is this project's one name for the concept (the readout of a sequence); the config key
is `pooling=`. The readouts:
  cls             h_0, the first real token
  mean, max       over every real token ([CLS]/[SEP]/BOS/EOS included)
  last            the last real token
  weighted_mean   SGPT's position-weighted mean (Muennighoff 2022): token i of n real tokens weighs i
  mean_nospecial, max_nospecial
                  mean and max over content tokens only: the tokenizer's special tokens left out
                  (`special_mask`), which separates "mean wins" from "mean includes [CLS]"
  mean_nosink     the mean over real tokens without the attention sinks: position 0 (the first real token:
                  [CLS], BOS, or a decoder's first word where no BOS is added) and every position with a
                  massive activation at that layer (`massive_positions`, Sun et al. 2024), which separates
                  "mean wins" from "mean is dominated by a sink"
  cls_mean        [h_0 ; mean], concatenated: 2 x hidden (sentence-transformers' cls + mean tokens)
  first_last_avg  mean pooling of (first transformer layer + this layer) / 2 (`first_last_avg`)
and, outside POOLINGS because it needs the backbone's weights, BERT's `pooler`.

Pure tensor functions, free of Lightning and Hydra, so the probe engine, the fine-tuning
module and the tests all pool with the very same code.

Conventions (the contract in docs/design.md):
  hidden_states   [batch, seq, hidden], any float dtype
  attention_mask  [batch, seq], 1 (or True) marks a real token, 0 a pad
Padding may sit on the right or on the left (decoders such as Gemma pad left), so `cls` and
`last` are located from the mask, never assumed to be position 0 or position len-1, and
`weighted_mean` counts positions over real tokens, never over the padded row.
Every pooling returns float32: mean and max reduce in float32 because a bf16 sum over
hundreds of tokens loses about two significant digits.

Special tokens are the tokenizer's `all_special_ids` ([CLS], [SEP], BOS, EOS, ...) at REAL
positions, except the unknown token: [UNK] stands in for a word of the text (a WordPiece tokenizer
emits it for a character it lacks), so it is content. Padding is neither special nor content (it is
masked out of attention and pooling), which matters for decoders whose pad token is their EOS.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

# The four readouts of the first study: every feature-cache entry holds them.
BASE_POOLINGS: tuple[str, ...] = ("cls", "mean", "max", "last")
NOSPECIAL_POOLINGS: tuple[str, ...] = ("mean_nospecial", "max_nospecial")  # need `special`
# Read from one layer's token states (and its special tokens): what the feature cache stores per layer.
TOKEN_POOLINGS: tuple[str, ...] = (*BASE_POOLINGS, "weighted_mean", *NOSPECIAL_POOLINGS, "mean_nosink")
POOLINGS: tuple[str, ...] = (*TOKEN_POOLINGS, "cls_mean", "first_last_avg")
STRATEGIES = POOLINGS  # the name the project's published contract (docs/design.md) gives the same list
# Sun et al. (2024), section 2: an activation is massive when its magnitude exceeds 100 AND 1,000x the median
# |activation| of the text's hidden states at that layer (every real token, every dimension).
MASSIVE_VALUE, MASSIVE_RATIO = 100.0, 1000.0


def first_token_index(mask: Tensor) -> Tensor:
    """Position of the first real token of each row. argmax returns the first maximum."""
    return mask.to(torch.int8).argmax(dim=1)


def last_token_index(mask: Tensor) -> Tensor:
    """Position of the last real token of each row, for right and left padding alike."""
    seq_len = mask.shape[1]
    return seq_len - 1 - mask.flip(1).to(torch.int8).argmax(dim=1)


def _gather(hidden_states: Tensor, index: Tensor) -> Tensor:
    rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
    return hidden_states[rows, index].float()


def _unpadded(hidden_states: Tensor, mask: Tensor, fill: float) -> Tensor:
    """The states with `fill` under padding. A batch without padding (most of a length-sorted
    encoding plan) is returned as is: the masked copy would cost a pass over every state."""
    if mask.all():
        return hidden_states.float()
    return torch.where(mask.unsqueeze(-1), hidden_states.float(), fill)


def _mean(hidden_states: Tensor, mask: Tensor) -> Tensor:
    # A fill, not a multiply by the mask: padding may hold inf or NaN (0 * NaN = NaN).
    summed = _unpadded(hidden_states, mask, 0.0).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).float()


def _max(hidden_states: Tensor, mask: Tensor) -> Tensor:
    # -inf, never a finite constant: a finite fill (-1e4, say) wins when all real states are lower.
    return _unpadded(hidden_states, mask, float("-inf")).amax(dim=1)


def _weighted_mean(hidden_states: Tensor, mask: Tensor) -> Tensor:
    # Weight i for the i-th REAL token (1..n), counted from the mask: the same weights under left and
    # right padding (older sentence-transformers releases weighed by absolute position 1..seq, which
    # equals this under right padding only).
    weights = (mask.cumsum(dim=1) * mask).float()
    summed = (_unpadded(hidden_states, mask, 0.0) * weights.unsqueeze(-1)).sum(dim=1)
    return summed / weights.sum(dim=1, keepdim=True)


def _ratio(magnitude: Tensor, mask: Tensor, max_abs: Tensor) -> Tensor:
    """max_abs [batch, seq] over the median of `magnitude` [batch, seq, hidden] over each text's real tokens."""
    real = torch.where(mask.bool().unsqueeze(-1), magnitude, torch.nan).flatten(1)  # padding out of the median
    median = real.nanmedian(dim=1).values[:, None]
    return torch.where(median > 0, max_abs / median.clamp_min(torch.finfo(torch.float32).tiny),
                       torch.where(max_abs > 0, torch.inf, 0.0))


def activation_extremes(hidden_states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ratio, max_abs, top_dim) per token of [batch, seq, hidden]: its largest |activation|, that over the
    median |activation| of its text's REAL tokens at this layer (every dimension: Sun et al.'s median; a token's
    own median would not do, since a sink token has several raised dimensions), and the dimension holding it.
    The median is the lower middle value, as torch.median's. A text whose activations are all 0 has ratio 0
    (inf where one token's are not)."""
    magnitude = hidden_states.detach().float().abs()
    max_abs, top_dim = magnitude.max(-1)
    return _ratio(magnitude, mask, max_abs), max_abs, top_dim


def is_massive(ratio: Tensor, max_abs: Tensor) -> Tensor:
    """Sun et al.'s criterion on `activation_extremes`' ratio and max_abs."""
    return (max_abs > MASSIVE_VALUE) & (ratio > MASSIVE_RATIO)


def massive_positions(hidden_states: Tensor, mask: Tensor) -> Tensor:
    """bool [batch, seq]: the real tokens with a massive activation at this layer (`is_massive`). The medians
    (a sort of every activation of a text) are taken only for texts with an activation above MASSIVE_VALUE:
    elsewhere no token can be massive, which is most texts of most layers (the feature cache pools every
    layer of every batch with it)."""
    mask = mask.bool()
    max_abs = hidden_states.detach().abs().amax(-1).float()
    massive = mask & (max_abs > MASSIVE_VALUE)
    rows = massive.any(1).nonzero().flatten()
    if rows.numel():
        magnitude = hidden_states[rows].detach().float().abs()
        massive[rows] &= is_massive(_ratio(magnitude, mask[rows], max_abs[rows]), max_abs[rows])
    return massive


def check_inputs(hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    """Validate shapes and return the mask as bool. A row with no real token is an error."""
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be [batch, seq, hidden]; got shape {tuple(hidden_states.shape)}")
    if attention_mask.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match hidden_states "
            f"[batch, seq] = {tuple(hidden_states.shape[:2])}"
        )
    mask = attention_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"rows {empty.tolist()[:10]} have no real token (attention_mask is all zero); "
            "there is nothing to pool. Drop empty texts before encoding."
        )
    return mask


def content_mask(mask: Tensor, special: Tensor | None) -> Tensor:
    """The real tokens that are not special (`special_mask`). A row with no content token is an
    error: a pool over nothing is not a zero vector."""
    if special is None:
        raise ValueError(f"the poolings {list(NOSPECIAL_POOLINGS)} need `special` (special_mask of the batch's "
                         "input_ids): which real tokens the tokenizer added.")
    if special.shape != mask.shape:
        raise ValueError(f"special shape {tuple(special.shape)} does not match attention_mask {tuple(mask.shape)}")
    content = mask & ~special.bool()
    empty = (~content.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"rows {empty.tolist()[:10]} hold special tokens only: no content token to pool "
                         "without them. Drop texts that tokenize to nothing.")
    return content


def _mean_nosink(hidden_states: Tensor, mask: Tensor) -> Tensor:
    """The mean over real tokens other than position 0 and the massive-activation positions. A text left with
    no such token (a one-token text of a decoder without BOS, say) pools to the zero vector: it has nothing
    but sinks to read, and a probe given the zero vector reads nothing from it (an error would fail a whole
    cache entry's encoding over one short text)."""
    keep = mask & ~massive_positions(hidden_states, mask)
    keep[torch.arange(mask.shape[0], device=mask.device), first_token_index(mask)] = False
    summed = torch.where(keep.unsqueeze(-1), hidden_states.float(), 0.0).sum(dim=1)
    return summed / keep.sum(dim=1, keepdim=True).clamp_min(1).float()


def _cls(hidden_states: Tensor, mask: Tensor) -> Tensor:
    return _gather(hidden_states, first_token_index(mask))


def _last(hidden_states: Tensor, mask: Tensor) -> Tensor:
    return _gather(hidden_states, last_token_index(mask))


_POOL = {"cls": _cls, "mean": _mean, "max": _max, "last": _last, "weighted_mean": _weighted_mean,
         "mean_nosink": _mean_nosink}
_NOSPECIAL = {"mean_nospecial": _mean, "max_nospecial": _max}  # the same pools, over content tokens
assert {*_POOL, *_NOSPECIAL} == set(TOKEN_POOLINGS)


def _pool_checked(hidden_states: Tensor, mask: Tensor, pooling: str, content: Tensor | None,
                  first_layer: Tensor | None) -> Tensor:
    """`pool` once the mask (and, for the nospecial poolings, `content`) is validated."""
    if pooling in _POOL:
        return _POOL[pooling](hidden_states, mask)
    if pooling in _NOSPECIAL:
        return _NOSPECIAL[pooling](hidden_states, content)
    if pooling == "cls_mean":
        return torch.cat([_cls(hidden_states, mask), _mean(hidden_states, mask)], dim=-1)
    if pooling == "first_last_avg":
        return first_last_avg(hidden_states, mask, first_layer)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")


def pool(hidden_states: Tensor, attention_mask: Tensor, pooling: str, *, special: Tensor | None = None,
         first_layer: Tensor | None = None) -> Tensor:
    """Pool token states into one float32 vector per row: Tensor[batch, pooled_size(pooling, hidden)].

    `special` (bool [batch, seq], `special_mask`) is needed by the nospecial poolings, `first_layer`
    (the first transformer layer's states, hidden_states[1], shaped like `hidden_states`) by
    first_last_avg."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    mask = check_inputs(hidden_states, attention_mask)
    content = content_mask(mask, special) if pooling in NOSPECIAL_POOLINGS else None
    return _pool_checked(hidden_states, mask, pooling, content, first_layer)


def pool_all(hidden_states: Tensor, attention_mask: Tensor, poolings: Sequence[str], *,
             special: Tensor | None = None) -> dict[str, Tensor]:
    """Several poolings of one layer at once, validating the mask once: what the feature cache stores
    (`poolings` from TOKEN_POOLINGS; `special` as in `pool`)."""
    mask = check_inputs(hidden_states, attention_mask)
    content = content_mask(mask, special) if set(poolings) & set(NOSPECIAL_POOLINGS) else None
    return {name: _pool_checked(hidden_states, mask, name, content, None) for name in poolings}


def pooled_size(pooling: str, hidden_size: int) -> int:
    """The width of a pooled vector: 2 x hidden for cls_mean, hidden for every other pooling."""
    return 2 * hidden_size if pooling == "cls_mean" else hidden_size


def first_last_avg(hidden_states: Tensor, attention_mask: Tensor, first_layer: Tensor | None) -> Tensor:
    """Mean pooling of (h^(1) + h^(l)) / 2: `first_layer` is the output of the FIRST TRANSFORMER LAYER
    (hidden_states[1]), not the embedding output (hidden_states[0]), and `hidden_states` the layer l read.

    This is SimCSE's corrected `avg_first_last` (princeton-nlp/SimCSE issue #133: their code first read
    hidden_states[0], the embedding output, and was fixed to hidden_states[1]). It is also what
    BERT-flow's released "last2avg" computed by mistake (bohanli/BERT-flow issue #16: the loop over the
    "last two" encoder layers started at index 0, the first transformer layer), so their reported
    last-2 average is this readout. By linearity it equals (mean(h^(1)) + mean(h^(l))) / 2, which is how
    the probe derives it from cached mean vectors without a forward pass."""
    if first_layer is None:
        raise ValueError("first_last_avg needs first_layer: the first transformer layer's states, hidden_states[1]")
    if first_layer.shape != hidden_states.shape:
        raise ValueError(f"first_layer shape {tuple(first_layer.shape)} differs from hidden_states "
                         f"{tuple(hidden_states.shape)}")
    mask = attention_mask.bool()
    return _mean((_unpadded(first_layer, mask, 0.0) + _unpadded(hidden_states, mask, 0.0)) / 2, mask)


def special_token_ids(tokenizer: Any) -> list[int]:
    """The ids that count as special: the tokenizer's all_special_ids, except the unknown token's."""
    return sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id})


def special_mask(special_ids: Sequence[int], input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """bool, shaped like input_ids: a REAL token whose id is one of `special_ids` (`special_token_ids`)."""
    ids = torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device)
    return torch.isin(input_ids, ids) & attention_mask.bool()


def adds_special_tokens(tokenizer: Any) -> bool:
    """Whether the tokenizer adds special tokens to a text or a pair of texts ([CLS]/[SEP], BOS, EOS).
    Where it adds none, the nospecial poolings equal mean and max (validation.check_special_tokens)."""
    return tokenizer.num_special_tokens_to_add(pair=False) + tokenizer.num_special_tokens_to_add(pair=True) > 0


def pooler(h0: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """BERT's pooler, tanh(W h_0 + b): the vector next-sentence (and sentence-order) prediction is
    trained on. `h0` [batch, hidden] is the `cls` pooling of the FINAL layer (the first real token,
    so left padding is handled once, here as everywhere); `weight` [hidden, hidden] and `bias` are the
    backbone's `pooler.dense`. Not one of POOLINGS: it needs those weights, not only token states."""
    return torch.tanh(torch.nn.functional.linear(h0.float(), weight.float(), bias.float()))
