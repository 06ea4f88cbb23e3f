"""Texts to a padded batch, and which of its tokens are special, for the diagnose measures.

Special tokens are the tokenizer's `all_special_ids` ([CLS], [SEP], BOS, EOS, ...) at REAL
positions, except the unknown token: [UNK] stands in for a word of the text (a WordPiece tokenizer
emits it for a character it lacks), so it is content. Padding is neither special nor content (it is
masked out of attention and pooling), which matters for decoders whose pad token is their EOS.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from poolbench.backbones import Backbone


def tokenize_texts(backbone: Backbone, texts: Sequence[str], max_length: int = 128) -> dict[str, Tensor]:
    """A padded batch of `texts` on the tokenizer's padding side, normalised as the backbone expects."""
    if not texts:
        raise ValueError("no texts to encode")
    if backbone.normalize_text is not None:
        texts = [backbone.normalize_text(t) for t in texts]
    batch = backbone.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return dict(batch)


def special_mask(tokenizer, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """bool, shaped like input_ids: a real token whose id is one of the tokenizer's special ids, not unk."""
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}), dtype=input_ids.dtype)
    return torch.isin(input_ids, special_ids) & attention_mask.bool()
