"""Fine-tuning: backbone -> pooling -> one shared softmax head, trained end to end.

The head is the same for every pooling, Dropout + Linear(width, n_labels) with cross-entropy, so
that a difference between runs can only come from the pooling (width = hidden, 2 x hidden for
cls_mean: `pooling.pooled_size`). pooling=attention adds its query (`attention_pooling.readout`),
trained with the head and the backbone.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import pandas as pd
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from poolbench.attention_pooling.readout import ATTENTION, AttentionPooling
from poolbench.backbones import forward_hidden_states
from poolbench.pooling import NOSPECIAL_POOLINGS, pool, pooled_size, pooler, special_mask


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of the BERT recipe: no weight decay on biases and normalisation
    weights (every 1-D parameter). named_parameters() lists a tied parameter once."""
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class PoolingClassifier(L.LightningModule):
    def __init__(self, backbone: PreTrainedModel, *, pooling: str, layer: int, num_labels: int, hidden_size: int,
                 lr: float, weight_decay: float, warmup_ratio: float, dropout: float,
                 special_ids: Sequence[int] = ()):
        """`special_ids` (`pooling.special_token_ids` of the tokenizer): what the nospecial poolings leave out."""
        super().__init__()
        # logger=False: the experiment logger already holds the resolved config; no second copy.
        self.save_hyperparameters(ignore=["backbone"], logger=False)
        # from_pretrained returns eval mode and Lightning keeps submodule modes: switch dropout on.
        self.backbone = backbone.train()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled_size(pooling, hidden_size), num_labels))
        # The learned readout's query, trained with the head by the same optimiser (None for the fixed readouts).
        self.attention = AttentionPooling(hidden_size) if pooling == ATTENTION else None
        metrics = MetricCollection({
            "acc": MulticlassAccuracy(num_labels, average="micro"),
            "f1": MulticlassF1Score(num_labels, average="macro"),
        })
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_predictions: list[pd.DataFrame] = []

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        # hidden_states[0] is the embedding output, hidden_states[-1] the last block's (final norm included).
        hidden_states = forward_hidden_states(self.backbone, batch)
        states, mask, pooling = hidden_states[self.hparams.layer], batch["attention_mask"], self.hparams.pooling
        if pooling == "pooler":  # fine-tuned with the backbone, as BERT's classifiers do
            dense = self.backbone.pooler.dense
            return self.head(pooler(pool(states, mask, "cls"), dense.weight, dense.bias))
        if self.attention is not None:
            return self.head(self.attention(states, mask))
        special = (special_mask(self.hparams.special_ids, batch["input_ids"], mask) if pooling in NOSPECIAL_POOLINGS
                   else None)
        first_layer = hidden_states[1] if pooling == "first_last_avg" else None
        return self.head(pool(states, mask, pooling, special=special, first_layer=first_layer))

    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        labels, ids = batch.pop("labels"), batch.pop("id")
        logits = self(batch)
        return logits, labels, ids

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, labels, _ = self._step(batch)
        loss = nn.functional.cross_entropy(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, labels, _ = self._step(batch)
        self.log("val/loss", nn.functional.cross_entropy(logits, labels), batch_size=len(labels))
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, labels, ids = self._step(batch)
        self.test_metrics.update(logits, labels)
        probs = logits.float().softmax(dim=-1)
        self.test_predictions.append(pd.DataFrame({
            "id": ids.cpu().numpy(),
            "label": labels.cpu().numpy(),
            "prediction": probs.argmax(dim=-1).cpu().numpy(),
            "probs": list(probs.cpu().numpy()),
        }))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predictions(self) -> pd.DataFrame:
        return pd.concat(self.test_predictions).sort_values("id").reset_index(drop=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(decay_groups(self, self.hparams.weight_decay), lr=self.hparams.lr)
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * total_steps), total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
