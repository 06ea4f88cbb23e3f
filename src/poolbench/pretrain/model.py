"""The pretraining model: HF `BertForPreTraining` in a LightningModule, for the sentence-objective ablation.

The wrapped model is a plain `BertForPreTraining`, so what is saved loads as one (pooler and
sentence head included) and as a `BertModel`.

Loss = MLM + sentence loss:
  MLM       cross-entropy at the masked positions only. The final hidden states are gathered at
            `mlm_positions` BEFORE the prediction head, so the vocabulary projection runs on
            B x M rows instead of B x T (never the full [B, T, V] logits). Padded slots
            (`mlm_labels` = -100) are ignored; the mean is over real masked tokens, as in HF.
  sentence  NSP / SOP cross-entropy of `cls.seq_relationship(pooler(h_0))` over the rows whose
            `sentence_label` != -100, for the arms that have one (`sentence_loss=True`). The other
            arms never run the sentence head, so the pooler and `seq_relationship` get no
            gradient at all (their .grad stays None and AdamW leaves them untouched, decay included).

The batch format (the data contract): input_ids, token_type_ids, attention_mask [B, T];
mlm_positions [B, M] (positions of masked tokens, padded with 0); mlm_labels [B, M] (original
ids, -100 where padded); sentence_label [B] (0/1, -100 for arms without a sentence loss).

Data parallel (DDP): each process gets a share of every batch (recipe.StepBatches); each loss is
scaled by its rank's share of the masked tokens (sentence rows), so the gradient DDP averages is the
one-process gradient of the global batch (`global_mean`). Dropout masks are drawn per process over
its share, so a DDP build does not reproduce a one-process build bit for bit.

Optimisation: AdamW without decay on biases and LayerNorm weights (every 1-D parameter), linear
warmup over `warmup_ratio` of `total_steps`, then linear decay to 0. The schedule is fixed by
`total_steps` (the recipe's), not by when this process stops, so a run cut short and resumed
follows the same schedule as one that was not.

Randomness is a function of the step: before each step the global RNG is seeded from
(`step_seed`, global step), so dropout masks do not depend on what ran before, and a run resumed
from a checkpoint draws the same masks as an uninterrupted one.

Nothing assumes a device or precision: CPU fp32 and `precision="bf16-mixed"` on a GPU run the same
code (the logits are cast to fp32 before the cross-entropy).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import BertForPreTraining, get_linear_schedule_with_warmup

from poolbench.model import decay_groups

IGNORE = -100
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def _masked_mean_ce(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean cross-entropy over rows whose label != -100, number of correct argmaxes, number of
    such rows). Sum / count instead of reduction='mean', so that a batch without a single
    labelled row gives 0, not NaN; otherwise it equals HF's CrossEntropyLoss(ignore_index=-100)."""
    logits, labels = logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1)
    valid = labels != IGNORE
    count = valid.sum()
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum") / count.clamp(min=1)
    correct = ((logits.argmax(dim=-1) == labels) & valid).sum()
    return loss, correct, count


class PretrainingModule(L.LightningModule):
    def __init__(self, model: BertForPreTraining, *, sentence_loss: bool, lr: float, weight_decay: float,
                 warmup_ratio: float, total_steps: int, step_seed: int):
        super().__init__()
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model.train()  # from_pretrained returns eval mode; Lightning keeps submodule modes

    # ----------------------------------------------------------------------------- the loss

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The training losses and the counts behind the accuracies, from one batch. `loss` is what
        is minimised; everything else is detached statistics."""
        bert = self.model.bert
        out = bert(**{key: batch[key] for key in MODEL_INPUTS}, return_dict=True)
        states = out.last_hidden_state  # [B, T, H]
        positions = batch["mlm_positions"]
        masked = states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.size(-1)))  # [B, M, H]
        mlm_logits = self.model.cls.predictions(masked)  # [B, M, V]
        mlm_loss, mlm_correct, mlm_count = _masked_mean_ce(mlm_logits, batch["mlm_labels"])
        result = {"mlm_loss": mlm_loss, "mlm_correct": mlm_correct, "mlm_count": mlm_count}
        loss = mlm_loss
        if self.hparams.sentence_loss:
            sentence_logits = self.model.cls.seq_relationship(out.pooler_output)  # [B, 2]
            sentence_loss, correct, count = _masked_mean_ce(sentence_logits, batch["sentence_label"])
            result.update(sentence_loss=sentence_loss, sentence_correct=correct, sentence_count=count)
            loss = loss + sentence_loss
        result["loss"] = loss
        return result

    # ----------------------------------------------------------------------------- Lightning hooks

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.hparams.step_seed, self.global_step, stream=1))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        result = self.losses(batch)
        size = batch["input_ids"].size(0)
        logged = {"train/loss": result["loss"], "train/mlm_loss": result["mlm_loss"],
                  "train/mlm_acc": result["mlm_correct"] / result["mlm_count"].clamp(min=1)}
        loss = self.global_mean(result["mlm_loss"], result["mlm_count"])
        if "sentence_loss" in result:
            logged["train/sentence_loss"] = result["sentence_loss"]
            logged["train/sentence_acc"] = result["sentence_correct"] / result["sentence_count"].clamp(min=1)
            loss = loss + self.global_mean(result["sentence_loss"], result["sentence_count"])
        # Under DDP, each value is averaged over the ranks' shares.
        self.log_dict({k: v.detach() for k, v in logged.items()}, batch_size=size, sync_dist=True)
        return loss

    def global_mean(self, loss: Tensor, count: Tensor) -> Tensor:
        """A rank's mean loss over its `count` rows or tokens, scaled so that DDP's average of the ranks'
        gradients is the gradient of ONE mean over the whole global batch (what one process computes),
        not a mean of the ranks' means, which would weigh a token by how many its rank happened to mask."""
        world_size = self._trainer.world_size if self._trainer is not None else 1
        if world_size == 1:
            return loss
        total = self.trainer.strategy.reduce(count.detach().float(), reduce_op="sum")
        return scaled_to_global_mean(loss, count, total, world_size)

    def configure_optimizers(self):
        # The tied decoder weight (= word embeddings) is one parameter, in one group.
        optimizer = torch.optim.AdamW(decay_groups(self, self.hparams.weight_decay), lr=self.hparams.lr,
                                      betas=(0.9, 0.999), eps=1e-6)
        total = self.hparams.total_steps
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def scaled_to_global_mean(loss: Tensor, count: Tensor, total: Tensor, world_size: int) -> Tensor:
    """A rank's mean `loss` over its `count` items, of `total` over all `world_size` ranks, scaled so
    that the mean of the ranks' scaled losses is the mean over all items: sum_r loss_r count_r / total."""
    return loss * count * world_size / total.clamp(min=1)


def step_seed(seed: int, step: int, stream: int) -> int:
    """A seed for (run seed, step, stream): distinct streams (0 data, 1 model) never share a seed."""
    return (seed * 1_000_003 + step * 4 + stream) % (2**63 - 1)
