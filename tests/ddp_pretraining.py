"""A pretraining build under Lightning DDP on CPU (gloo), run as a program: Lightning's subprocess
launcher starts rank 1 by running this file again. Used by test_pretrain_model.py.

    python ddp_pretraining.py <out dir> <tokenizer dir> <devices>

Builds test_pretrain_model's synthetic mlm_nsp recipe (4 steps of 16 rows) into <out dir>/cache,
WITHOUT dropout (so that the weights can be compared with a one-process build: dropout masks are
drawn per process over its share), and saves what each rank trained on, per step, to
<out dir>/seen-<rank>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_pretrain_model as synthetic  # noqa: E402

from poolbench.pretrain.model import PretrainingModule  # noqa: E402
from poolbench.pretrain.recipe import Recipe, build_pretrained  # noqa: E402


def without_dropout(bert_config):
    def config(self, pad_token_id: int = 0):
        return bert_config(self, pad_token_id).__class__(**{**bert_config(self, pad_token_id).to_dict(),
                                                           "hidden_dropout_prob": 0.0,
                                                           "attention_probs_dropout_prob": 0.0})
    return config


DDP_RECIPE = dict(steps=4, batch_size=16)


def main(out: Path, tokenizer_dir: Path, devices: int) -> None:
    torch.set_num_threads(1)
    Recipe.bert_config = without_dropout(Recipe.bert_config)
    seen = []
    record = PretrainingModule.on_train_batch_start

    def recording(self, batch, batch_idx):
        seen.append({"step": self.global_step, "rank": self.global_rank, "input_ids": batch["input_ids"].clone(),
                     "attention_mask": batch["attention_mask"].clone()})
        return record(self, batch, batch_idx)

    PretrainingModule.on_train_batch_start = recording
    build_pretrained(synthetic.recipe(**DDP_RECIPE), synthetic.make_batches_of(128, 16), tokenizer_dir, out / "cache",
                     checkpoint_every=2, accelerator="cpu", devices=devices, strategy="ddp", deterministic=True)
    torch.save(seen, out / f"seen-{seen[0]['rank']}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
