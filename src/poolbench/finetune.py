"""Fine-tuning mode: backbone -> pooling -> the shared softmax head, trained end to end with
Lightning (`model.PoolingClassifier`, `data.TaskDataModule`). One job = one pooling of one layer.

Model selection is on validation only: the checkpoint of the best validation accuracy is kept,
and test is evaluated once, at that checkpoint. A killed run resumes from its last epoch when
re-launched (poolbench.resume); its checkpoints are removed once it has been tested.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from typing import Any

import lightning as L
from filelock import FileLock
from lightning.pytorch.callbacks import ModelCheckpoint

from poolbench.backbones import load_backbone
from poolbench.config import Job
from poolbench.data import TaskDataModule
from poolbench.model import PoolingClassifier
from poolbench.pooling import special_token_ids
from poolbench.progress import EpochLines, on_terminal
from poolbench.records import RunResult
from poolbench.resume import RandomStates, last_epoch_checkpoint, resume_point
from poolbench.tasks import load_task


def run(job: Job, logger: Any = None) -> list[RunResult]:
    """Train one run; `logger` is the Lightning logger the training curves go to (None: none)."""
    started = time.perf_counter()
    [layer] = job.layers
    L.seed_everything(job.seed, workers=True)
    backbone = load_backbone(job.backbone, job.cache_dir)
    task = load_task(job.task, job.cache_dir)
    settings = job.mode
    data = TaskDataModule(task, backbone, max_length=job.backbone.max_length, batch_size=settings.batch_size,
                          seed=job.seed, max_train_examples=job.task.max_train_examples,
                          num_workers=settings.num_workers)
    model = PoolingClassifier(backbone.model, pooling=job.pooling, layer=layer, num_labels=task.num_labels,
                              hidden_size=backbone.hidden_size, lr=settings.lr, weight_decay=settings.weight_decay,
                              warmup_ratio=settings.warmup_ratio, dropout=settings.dropout,
                              special_ids=special_token_ids(backbone.tokenizer))
    checkpoints = job.checkpoint_dir or job.output_dir / "checkpoints"  # a Job made by hand: resumes in its dir
    # First: `trainer.validate(ckpt_path="best")` reads the first ModelCheckpoint.
    best = ModelCheckpoint(dirpath=checkpoints, filename="best-{epoch}", monitor="val/acc", mode="max",
                           save_top_k=1, save_weights_only=True)
    trainer_args = dataclasses.asdict(job.trainer)
    if trainer_args["enable_progress_bar"] is None:
        trainer_args["enable_progress_bar"] = on_terminal()
    lines = [] if trainer_args["enable_progress_bar"] else [EpochLines()]
    trainer = L.Trainer(**trainer_args, logger=logger or False,
                        callbacks=[best, last_epoch_checkpoint(checkpoints), RandomStates(), *lines],
                        default_root_dir=job.output_dir)
    # One process at a time trains a run (two sweeps launched at once would share its checkpoints).
    checkpoints.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{checkpoints}.lock"):
        trainer.fit(model, datamodule=data, ckpt_path=resume_point(checkpoints), weights_only=False)
        trained = time.perf_counter()
        val_metrics = trainer.validate(model, datamodule=data, ckpt_path="best", verbose=False)[0]
        test_metrics = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]
        best_epoch = int(re.search(r"epoch=(\d+)", best.best_model_path).group(1))
        shutil.rmtree(checkpoints)  # the record keeps the predictions; weights are not needed
    predictions = model.predictions()
    return [RunResult(
        layer=layer,
        metrics={"val/acc": val_metrics["val/acc"], "val/f1": val_metrics["val/f1"],
                 "test/acc": test_metrics["test/acc"], "test/f1": test_metrics["test/f1"],
                 "n_test": len(predictions), "n_train": len(data.splits["train"]), "n_labels": task.num_labels},
        selection={"epoch": best_epoch, "monitor": "val/acc"},
        timings={"train_s": trained - started, "total_s": time.perf_counter() - started},
        predictions=predictions,
    )]
