"""Intrinsic scores of a pretrained backbone on the HELD-OUT corpus documents (never trained on):
MLM accuracy at the masked positions, and the accuracy of the sentence head it was trained with
(NSP for mlm_nsp, SOP for mlm_sop; None for the arms without one: their head is untrained noise).

Each score is read in the arm's own input format (`mlm`: single segments; the others: pairs), on
the first `max_examples` held-out examples of the recipe's seed, epoch 0. Written into the
backbone's intrinsic.json under "held_out", beside the training metrics recipe.py put there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from transformers import BertForPreTraining

from poolbench.assets import atomic_write_bytes
from poolbench.pretrain.examples import arm_examples, collate
from poolbench.pretrain.model import PretrainingModule
from poolbench.pretrain.recipe import Recipe

SENTENCE_TASK = {"mlm_nsp": "nsp", "mlm_sop": "sop"}


def intrinsic_scores(directory: str | Path, recipe: Recipe, cache_dir: str | Path | None = None,
                     max_examples: int = 2048, batch_size: int = 64) -> dict[str, float | int | None]:
    directory = Path(directory)
    model = BertForPreTraining.from_pretrained(directory)
    reader = PretrainingModule(model, sentence_loss=recipe.arm in SENTENCE_TASK, lr=1.0, weight_decay=0.0,
                               warmup_ratio=0.0, total_steps=1, step_seed=recipe.seed).eval()  # no dropout
    # The random control is read in the single-segment format of `mlm`.
    examples = arm_examples("mlm" if recipe.arm == "random" else recipe.arm, recipe.seed, recipe.seq_len, held_out=True,
                            vocab_size=recipe.vocab_size,
                            cache_dir=cache_dir)
    n = min(max_examples, len(examples))
    totals = {"mlm_correct": 0, "mlm_count": 0, "sentence_correct": 0, "sentence_count": 0}
    with torch.inference_mode():
        for batch in DataLoader(Subset(examples, range(n)), batch_size=batch_size, collate_fn=collate):
            result = reader.losses(batch)
            for key in totals:
                totals[key] += int(result.get(key, 0))
    task = SENTENCE_TASK.get(recipe.arm)
    scores = {"examples": n, "mlm_acc": totals["mlm_correct"] / max(totals["mlm_count"], 1),
              "nsp_acc": None, "sop_acc": None}
    if task is not None:
        scores[f"{task}_acc"] = totals["sentence_correct"] / max(totals["sentence_count"], 1)
    path = directory / "intrinsic.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_bytes(path, json.dumps({**stored, "held_out": scores}, indent=2).encode())
    return scores
