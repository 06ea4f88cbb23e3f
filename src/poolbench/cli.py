"""Entry points: `poolbench` (the Hydra app: one run, or a sweep with -m), `poolbench-catalog`,
`poolbench-report`.

One run: validate the config -> reuse a finished run with the same identity, or train
(finetune: Lightning end to end; probe: heads on cached features) -> write its record(s).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
import wandb
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from poolbench import backbones, tasks
from poolbench.assets import Unavailable
from poolbench.backbones import load_backbone
from poolbench.config import CONF_DIR, ConfigError, Mode, PathsConfig, absolute_layers, register, validate
from poolbench.data import TaskDataModule
from poolbench.model import PoolingClassifier
from poolbench.records import (factors, find_finished, git_commit, register_finished, reuse_record, run_identity,
                               write_record)
from poolbench.tasks import load_task

log = logging.getLogger("poolbench")
# Errors whose message says what to change (a value, a package, a network): no traceback for them.
USER_ERRORS = (ConfigError, Unavailable)
register()


def make_logger(cfg: DictConfig, resolved: dict[str, Any]):
    """The configured Lightning logger, or None. W&B gets every factor as a top-level config key
    and a tag, the full resolved config under `config`, and the study as its group."""
    if not cfg.logger:
        return None
    options = OmegaConf.to_container(cfg.logger, resolve=True)
    logger_class = get_class(options.pop("_target_"))
    if not issubclass(logger_class, WandbLogger):
        return logger_class(**options)
    run_factors = {k: v for k, v in factors(resolved, layer=cfg.layer, num_layers=None).items() if k != "num_layers"}
    logger = logger_class(
        **options,
        name="-".join(str(run_factors[k]) for k in ("backbone", "task", "mode", "pooling", "layer", "seed")),
        job_type=run_factors["mode"],
        tags=[f"{k}={v}" for k, v in run_factors.items()],
        config={**run_factors, "config": resolved},
    )
    # The dashboard's summary shows the best validation score, not the last one.
    for metric in ("val/acc", "val/f1"):
        logger.experiment.define_metric(metric, summary="max")
    return logger


def finetune(cfg: DictConfig, resolved: dict[str, Any], run_id: str, output_dir: Path, logger) -> dict[str, Any]:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    backbone = load_backbone(cfg.backbone, cfg.paths.cache_dir)
    task = load_task(cfg.task, Path(cfg.paths.cache_dir).expanduser())
    [layer] = absolute_layers(cfg.layer, backbone.num_layers)
    data = TaskDataModule(task, backbone, cfg.backbone.max_length, cfg.mode.batch_size, cfg.seed,
                          cfg.task.max_train_examples, cfg.mode.num_workers)
    model = PoolingClassifier(backbone.model, cfg.pooling.strategy.value, layer, task.num_labels,
                              backbone.hidden_size, cfg.mode.lr, cfg.mode.weight_decay, cfg.mode.warmup_ratio,
                              cfg.mode.dropout)
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best-{epoch}", monitor="val/acc",
                                 mode="max", save_top_k=1, save_weights_only=True)
    trainer = instantiate(cfg.trainer, logger=logger or False, callbacks=[checkpoint], default_root_dir=output_dir)
    trainer.fit(model, datamodule=data)
    trained = time.perf_counter()
    # Model selection on validation only; test is evaluated once, at the selected checkpoint.
    val_metrics = trainer.validate(model, datamodule=data, ckpt_path="best", verbose=False)[0]
    test_metrics = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]
    best_epoch = int(re.search(r"epoch=(\d+)", checkpoint.best_model_path).group(1))
    shutil.rmtree(output_dir / "checkpoints")  # the record keeps the predictions; weights are not needed
    predictions = model.predictions()
    record = {
        "run_id": run_id,
        "status": "finished",
        "study": cfg.study,
        "factors": factors(resolved, layer, backbone.num_layers),
        "metrics": {
            "val/acc": val_metrics["val/acc"], "val/f1": val_metrics["val/f1"],
            "test/acc": test_metrics["test/acc"], "test/f1": test_metrics["test/f1"],
            "n_test": len(predictions), "n_train": len(data.splits["train"]), "n_labels": task.num_labels,
        },
        "selection": {"epoch": best_epoch, "monitor": "val/acc"},
        "timings": {"train_s": trained - started, "total_s": time.perf_counter() - started},
        "config": resolved,
    }
    return write_record(output_dir, record, predictions)


def run(cfg: DictConfig, output_dir: Path) -> list[dict[str, Any]]:
    """One job of a sweep. Returns its records; a failed job leaves a failed record."""
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    run_id = run_identity(resolved)
    output_root = Path(cfg.paths.output_root)
    if cfg.mode.name == Mode.finetune and cfg.skip_finished and (previous := find_finished(output_root, run_id)):
        log.info("run %s already finished in %s: reusing its record", run_id, previous["dir"])
        reuse_record(previous, output_dir)
        return [previous]
    logger = make_logger(cfg, resolved)
    try:
        if cfg.mode.name == Mode.probe:
            from poolbench.probe import run_probe

            return run_probe(cfg, output_dir, logger)
        record = finetune(cfg, resolved, run_id, output_dir, logger)
        register_finished(output_root, run_id, output_dir)
        return [record]
    except Exception as error:
        write_record(output_dir, {"run_id": run_id, "status": "failed", "study": cfg.study,
                                  "factors": factors(resolved, layer=cfg.layer, num_layers=None),
                                  "config": resolved, "error": "".join(traceback.format_exception(error))})
        raise
    finally:
        if isinstance(logger, WandbLogger):
            wandb.finish()  # so the next job of a multirun starts its own W&B run


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    git_commit()  # pin the commit of the code this process imported, before a long sweep sees new commits
    hydra_cfg = HydraConfig.get()
    try:
        run(cfg, Path(hydra_cfg.runtime.output_dir))
    except USER_ERRORS as error:
        log.error("%s: %s", "invalid config" if isinstance(error, ConfigError) else "unavailable", error)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise SystemExit(2) from None
    except Exception:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # One failed job must not stop a sweep: its failed record is counted by the report.
        log.exception("job %s failed; its record says why. The sweep goes on.", hydra_cfg.job.num)


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in ("params", "layers", "hidden", "train", "validation",
                                                               "test", "labels") else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else f"{row[c]:,}" if isinstance(row.get(c), int)
                        and not isinstance(row.get(c), bool) else str(row[c]) for c in columns))
    return table


def catalog(argv: list[str] | None = None) -> None:
    """`poolbench-catalog`: every backbone and task option, whether it is installed here, its size."""
    parser = argparse.ArgumentParser(prog="poolbench-catalog", description=catalog.__doc__)
    parser.add_argument("--cache-dir", default=os.environ.get("POOLBENCH_CACHE", PathsConfig.cache_dir),
                        help="where prepared tasks and converted backbones are cached (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="do not prepare tasks to count their examples")
    args = parser.parse_args(argv)
    cache_dir = Path(args.cache_dir).expanduser()
    console = Console(width=160)
    backbone_rows = [{**row, "installed": "yes" if row["installed"] else "no", "hidden": row["hidden_size"],
                      "note": row["install"]} for row in backbones.catalog_rows(cache_dir)]
    console.print(_table("Backbones (backbone=<name>)", backbone_rows,
                         ["name", "family", "source", "installed", "params", "layers", "hidden", "note"]))
    task_rows = [{**row, "installed": "yes" if row["installed"] else "no",
                  "pair": {True: "yes", False: "no"}.get(row["pair"])}
                 for row in tasks.catalog_rows(None if args.quick else cache_dir)]
    console.print(_table("Tasks (task=<name>)", task_rows,
                         ["name", "source", "installed", "train", "validation", "test", "labels", "pair", "note"]))
