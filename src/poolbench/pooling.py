"""Poolings: turn one hidden state per token into one vector per sequence.

"Pooling" is this project's one name for the concept (the readout of a sequence: cls, mean, max,
last); the config key is `pooling=`.

Pure tensor functions, free of Lightning and Hydra, so the probe engine, the fine-tuning
module and the tests all pool with the very same code.

Conventions (the contract in docs/design.md):
  hidden_states   [batch, seq, hidden], any float dtype
  attention_mask  [batch, seq], 1 (or True) marks a real token, 0 a pad
Padding may sit on the right or on the left (decoders such as Gemma pad left), so `cls` and
`last` are located from the mask, never assumed to be position 0 or position len-1.
Every pooling returns float32: mean and max reduce in float32 because a bf16 sum over
hundreds of tokens loses about two significant digits.
"""

from __future__ import annotations

import torch
from torch import Tensor

POOLINGS: tuple[str, ...] = ("cls", "mean", "max", "last")
STRATEGIES = POOLINGS  # the name the project's published contract (docs/design.md) gives the same list


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


def _cls(hidden_states: Tensor, mask: Tensor) -> Tensor:
    return _gather(hidden_states, first_token_index(mask))


def _last(hidden_states: Tensor, mask: Tensor) -> Tensor:
    return _gather(hidden_states, last_token_index(mask))


_POOL = {"cls": _cls, "mean": _mean, "max": _max, "last": _last}
assert tuple(_POOL) == POOLINGS


def pool(hidden_states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """Pool token states into one float32 vector per row: Tensor[batch, hidden]."""
    if pooling not in _POOL:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    return _POOL[pooling](hidden_states, check_inputs(hidden_states, attention_mask))


def pool_all(hidden_states: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
    """Every pooling at once, validating the mask once: what the probe's feature cache stores."""
    mask = check_inputs(hidden_states, attention_mask)
    return {name: pool_one(hidden_states, mask) for name, pool_one in _POOL.items()}


def pooler(h0: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """BERT's pooler, tanh(W h_0 + b): the vector next-sentence (and sentence-order) prediction is
    trained on. `h0` [batch, hidden] is the `cls` pooling of the FINAL layer (the first real token,
    so left padding is handled once, here as everywhere); `weight` [hidden, hidden] and `bias` are the
    backbone's `pooler.dense`. Not one of POOLINGS: it needs those weights, not only token states."""
    return torch.tanh(torch.nn.functional.linear(h0.float(), weight.float(), bias.float()))

