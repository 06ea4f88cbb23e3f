"""Texts to a padded batch, for the diagnose measures. Which of its tokens are special is
`poolbench.pooling.special_mask` (one definition, shared with the nospecial poolings)."""

from __future__ import annotations

from typing import Sequence

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
