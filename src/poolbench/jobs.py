"""The job owner: one Hydra job -> its runs -> their records. Every mode goes through here.

A job is one (backbone, task, pooling, seed, mode) and one layer, or all layers (probe, diagnose; a
diagnose job measures every readout at once, so its pooling factor is ALL_READOUTS). Each of its
layers is one run, identified by exactly what its mode reads:

  0. plan: the job's layers and, per layer, the mode's ALLOW-list of config entries (`Mode.identity`)
     hashed into a run_id (records.run_identity), derived by `derive_plan` from what is on disk (the
     sweep's plan and the reusing sweeper derive it the same way). Speed knobs, logging, output paths
     and, for a probe, the trainer it never reads are not identity, so re-launching a study on a GPU
     node, with more workers or another encoding batch size reuses what finished.
  1. reuse: a job whose every run finished is copied before anything is read or built.
  2. pretraining: a `backbone.pretrain` recipe is built into the cache if absent (pretrain.build,
     under the cache's lock) and named by its location; its facts join every record's metrics. A
     plan that was unknown (a recipe not built, a backbone never loaded here) is derived again now,
     with the backbone's config or tokenizer at hand; a finished run (records.find_finished) is copied.
  3. run: the mode computes the remaining layers from a `config.Job` of plain settings and
     returns `records.RunResult`s; this module writes them as `records.Record`s, one per layer, in
     `<job dir>/records/<pooling>-L<layer>-s<seed>/`. A failure leaves failed records and re-raises.

Only this module and cli.py see the composed Hydra config. A new mode is one entry in MODES: a
`run(job, logger)` function and its allow-list.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import wandb
from hydra.utils import get_class
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from poolbench import finetune, protocols
from poolbench.attention_pooling import probe as attention_probe
from poolbench.attention_pooling.readout import ATTENTION
from poolbench.diagnose import mode as diagnose
from poolbench.assets import atomic_write_bytes
from poolbench.backbones import backbone_depth, backbone_facts, known_facts
from poolbench.closeness import METRIC_PREFIX as CLOSENESS_METRICS
from poolbench.config import Config, ConfigError, Job, Mode, Protocol, Source, plain_fields
from poolbench.machine import precision_warning, resolve_dtype
from poolbench.pooling import NOSPECIAL_POOLINGS
from poolbench.pretrain.build import ensure_pretrained, recipe_of
from poolbench.pretrain.recipe import pretrained_dir
from poolbench.prompting import LABEL_WORDS, PROMPT_POOLINGS, PROMPT_VERSION
from poolbench.prompting import mode as prompting
from poolbench.tasks import check_source, source_identity
from poolbench.records import (PER_LAYER, TIMINGS, Factors, Record, RunResult, find_finished, register_finished,
                               reuse_record, run_identity, write_record)
from poolbench.validation import check_special_tokens, pooling_layers, validate

log = logging.getLogger("poolbench")

METRICS_LOGGED = ("val/acc", "val/f1", "test/acc", "test/f1")
PROTOCOL_METRICS = ("few_shot", "curve", "mdl", "control", "selectivity")  # prefixes of the protocols' own metrics


# ---------------------------------------------------------------------------------------------
# What each mode reads: the allow-lists that make a run's identity

# Every backbone and task setting changes what is encoded or which examples are used (name and
# family too: they are the records' factors).
BACKBONE_IDENTITY = ("name", "family", "source", "location", "revision", "init", "init_seed", "max_length", "dtype",
                     "padding_side")
TASK_IDENTITY = ("name", "source", "location", "max_train_examples", "split_seed", "subset", "revision",
                 "text_column", "text_pair_column", "label_column", "hub_splits")
# Not encode_batch_tokens: batch composition moves cached vectors by float rounding only.
PROBE_IDENTITY = ("lr", "weight_decays", "max_epochs", "patience", "batch_size")
# Not the batch sizes: speed knobs (batch composition moves the numbers by float rounding only).
DIAGNOSE_IDENTITY = ("attention_texts", "erasure_texts", "erasure_positions", "knn_k", "anisotropy_pairs",
                     "ablation_texts", "ablation_layers")
# A protocol other than full adds itself and its own settings (mode.<protocol>), so the ids of
# full-protocol runs are those they had before protocols existed. few_shot trains no AdamW head:
# only its own settings are its identity.
PROTOCOL_IDENTITY = {Protocol.few_shot: ("per_label", "repeats", "max_iter"),
                     Protocol.learning_curve: ("per_label", "fractions"),
                     Protocol.mdl: ("blocks",),
                     Protocol.control: ("seed",)}
# Not num_workers: a speed knob.
FINETUNE_IDENTITY = ("lr", "weight_decay", "warmup_ratio", "dropout", "batch_size")
# What changes the optimisation; not progress bars, model summaries, logging cadence, sanity checks.
TRAINER_IDENTITY = ("accelerator", "devices", "precision", "max_epochs", "max_steps", "limit_train_batches",
                    "limit_val_batches", "limit_test_batches", "fast_dev_run", "deterministic", "gradient_clip_val",
                    "accumulate_grad_batches")


def _common_identity(config: Config, layer: int | str) -> dict[str, Any]:
    # A file task adds its files' content (tasks.source_identity); other tasks' ids are unchanged.
    return {"mode": config.mode.name.value, "backbone": plain_fields(config.backbone, BACKBONE_IDENTITY),
            "task": {**plain_fields(config.task, TASK_IDENTITY), **source_identity(config.task)},
            "pooling": config.pooling.name.value, "layer": layer, "seed": config.seed}


def diagnose_identity(config: Config, layer: int | str) -> dict[str, Any]:
    # Not the pooling: a diagnose job measures every readout (its records' pooling factor is ALL_READOUTS).
    # The measures' version: a record made before a measure was added is not reused as if it had it.
    common = {k: v for k, v in _common_identity(config, layer).items() if k != "pooling"}
    return {**common, "diagnose": plain_fields(config.mode, DIAGNOSE_IDENTITY), "measures": diagnose.MEASURES_VERSION}


def prompt_identity(config: Config) -> dict[str, Any]:
    """A prompt readout's template and PROMPT_VERSION (and its label words), under `prompt`; nothing for
    every other pooling, whose run ids stay as they were."""
    pooling = config.pooling.name.value
    if pooling not in PROMPT_POOLINGS:
        return {}
    prompt = {"template": config.pooling.template, "version": PROMPT_VERSION}
    if pooling == LABEL_WORDS:
        prompt["label_words"] = dict(config.task.label_words or {})
    return {"prompt": prompt}


def probe_identity(config: Config, layer: int | str) -> dict[str, Any]:
    protocol = config.mode.protocol
    common = {**_common_identity(config, layer), **prompt_identity(config)}
    if config.pooling.name.value == LABEL_WORDS:
        # Zero-shot: it trains no head and draws nothing at random, so neither head settings nor the seed
        # are read; every seed of a sweep finds the first one's run finished.
        return {key: value for key, value in common.items() if key != "seed"}
    if protocol == Protocol.full:
        identity = {**common, "probe": plain_fields(config.mode, PROBE_IDENTITY)}
        # A run compared with another precision's vectors records that comparison: its id says so (and a run
        # of the reference precision, which compares nothing, keeps the id it has without the setting).
        reference = config.mode.reference_dtype
        if reference is not None and reference != config.backbone.dtype:
            identity["probe"]["reference_dtype"] = reference.value
        return identity
    settings = plain_fields(getattr(config.mode, protocol.value), PROTOCOL_IDENTITY[protocol])
    heads = {} if protocol == Protocol.few_shot else plain_fields(config.mode, PROBE_IDENTITY)
    return {**common, "probe": {**heads, "protocol": protocol.value, protocol.value: settings}}


def run_probe(job: Job, logger: Any) -> list[RunResult]:
    """Probe mode: the prompt readouts read a prompted encoding or the LM head (poolbench.prompting); the
    attention readout trains its query with the heads on cached token states, full protocol only
    (poolbench.attention_pooling; validation.validate); every other pooling reads the plain feature
    cache, under its protocol (poolbench.protocols)."""
    if job.pooling in PROMPT_POOLINGS:
        return prompting.run(job, logger)
    if job.pooling == ATTENTION:
        return attention_probe.run(job, logger)
    return protocols.run(job, logger)


def finetune_identity(config: Config, layer: int | str) -> dict[str, Any]:
    return {**_common_identity(config, layer), "finetune": plain_fields(config.mode, FINETUNE_IDENTITY),
            "trainer": plain_fields(config.trainer, TRAINER_IDENTITY)}


ALL_READOUTS = "all"  # the pooling factor of a mode that measures every readout at once


@dataclass(frozen=True)
class ModeEntry:
    run: Callable[[Job, Any], list[RunResult]]  # (job, Lightning logger or None) -> one result per layer
    identity: Callable[[Config, int | str], dict[str, Any]]
    reads_pooling: bool = True  # False: one job covers every readout, and `pooling=` is not a factor
    logged: Callable[[str], bool] = METRICS_LOGGED.__contains__  # which recorded metrics go to the logger


MODES: dict[Mode, ModeEntry] = {
    Mode.finetune: ModeEntry(finetune.run, finetune_identity),
    # Full probes log their scores (and their closeness to another precision's vectors, poolbench.closeness);
    # the other protocols their own numbers too (poolbench.protocols).
    Mode.probe: ModeEntry(run_probe, probe_identity,
                          logged=lambda key: key in METRICS_LOGGED or key.split("/")[0] in (*PROTOCOL_METRICS,
                                                                                            CLOSENESS_METRICS)),
    # W&B gets the means, not their interval bounds.
    Mode.diagnose: ModeEntry(diagnose.run, diagnose_identity, reads_pooling=False,
                             logged=lambda key: not key.endswith(("_low", "_high"))),
}


# ---------------------------------------------------------------------------------------------
# From the composed config to plain settings

def typed_config(cfg: DictConfig) -> Config:
    """The composed config as the schema's dataclasses (enums as Enum members). The logger stays
    a config node: it is built here, with Hydra's output dir."""
    groups = {name: OmegaConf.to_object(cfg[name]) for name in ("backbone", "task", "pooling", "mode", "trainer",
                                                                 "paths")}
    config = Config(**groups, logger=None, study=cfg.study, seed=cfg.seed, layer=cfg.layer,
                    skip_finished=cfg.skip_finished)
    # `auto` becomes the precision this machine runs, before anything reads it: the run id, the record's
    # config and the feature cache key name bfloat16 or float32, never auto.
    config.backbone.dtype = resolve_dtype(config.backbone.dtype, compute_device(config))
    return config


def compute_device(config: Config) -> str:
    """Where the job's backbone computes: a probe or diagnose job where load_backbone leaves it (the CPU);
    fine-tuning where Lightning puts it (a GPU when the trainer may use one and one is present)."""
    gpu = config.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "cuda" if config.mode.name == Mode.finetune and gpu else "cpu"


def pooling_factor(config: Config) -> str:
    return config.pooling.name.value if MODES[config.mode.name].reads_pooling else ALL_READOUTS


def factors(config: Config, layer: int | str, num_layers: int | None) -> Factors:
    return Factors(backbone=config.backbone.name, family=config.backbone.family.value,
                   init=config.backbone.init.value, task=config.task.name, mode=config.mode.name.value,
                   pooling=pooling_factor(config), layer=layer, num_layers=num_layers, seed=config.seed,
                   max_train_examples=config.task.max_train_examples,
                   backbone_seed=None if config.backbone.pretrain is None else config.backbone.pretrain.seed)


def record_dir(output_dir: Path, pooling: str, layer: int, seed: int) -> Path:
    return Path(output_dir) / "records" / f"{pooling}-L{layer}-s{seed}"


def checkpoint_dir(output_root: Path, run_id: str) -> Path:
    """A run's checkpoints (fine-tuning: one run per job), found again by a re-launch whatever its sweep dir."""
    return Path(output_root) / "checkpoints" / run_id


# ---------------------------------------------------------------------------------------------
# Logging

WANDB_RUN_ID = "wandb_run_id"  # the file in a run's checkpoint dir naming its W&B run


def make_logger(cfg: DictConfig, config: Config, run_ids: list[str], resumable: Path | None = None):
    """The configured Lightning logger, or None. W&B gets every factor as a top-level config key
    and a tag, the run ids, the full resolved config under `config`, and the study as its group.
    A run that may resume (its checkpoint dir `resumable`) keeps its W&B run id there: a re-launch
    continues the same W&B run (resume="allow")."""
    if not cfg.logger:
        return None
    options = OmegaConf.to_container(cfg.logger, resolve=True)
    logger_class = get_class(options.pop("_target_"))
    if not issubclass(logger_class, WandbLogger):
        return logger_class(**options)
    run_factors = {k: v for k, v in dataclasses.asdict(factors(config, config.layer, None)).items()
                   if k != "num_layers"}
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved["backbone"]["dtype"] = config.backbone.dtype.value  # the precision that ran, as in the records
    if resumable is not None and (resumable / WANDB_RUN_ID).exists():
        options |= {"id": (resumable / WANDB_RUN_ID).read_text(), "resume": "allow"}
    logger = logger_class(
        **options,
        name="-".join(str(run_factors[k]) for k in ("backbone", "task", "mode", "pooling", "layer", "seed")),
        job_type=run_factors["mode"],
        tags=[f"{k}={v}" for k, v in run_factors.items()],
        config={**run_factors, "run_id": run_ids[0] if len(run_ids) == 1 else run_ids,
                "config": resolved},
    )
    # The dashboard's summary shows the best validation score, not the last one.
    for metric in ("val/acc", "val/f1"):
        logger.experiment.define_metric(metric, summary="max")
    if resumable is not None:
        atomic_write_bytes(resumable / WANDB_RUN_ID, logger.experiment.id.encode())
    return logger




def log_metrics(logger, records: list[Record], logged: Callable[[str], bool]) -> None:
    """Every layer's `logged` metrics as `L<layer>/<metric>` summary keys (what `poolbench-report
    --from-wandb` reads); a one-layer job also under the plain keys; the job's timings as
    `timings/<phase>`. In W&B also one history row per
    layer, `per_layer/<metric>` against the step metric `layer`, so that a dashboard draws accuracy
    against layer (a line plot with x = layer), the study's central figure; those keys stay out of the
    summary, whose last value would be the last layer's only."""
    if logger is None or not records:
        return
    metrics = {f"L{r.factors.layer}/{key}": value for r in records for key, value in r.metrics.items() if logged(key)}
    metrics |= {key: value for key, value in records[0].metrics.items() if key.startswith("pretrain/")}
    # The job's time (a job's runs share it), from a run it computed: for the dashboard's timings.
    computed = [r for r in records if r.reused_from is None]
    metrics |= {f"{TIMINGS}/{key}": value for key, value in (computed or records)[0].timings.items()}
    if len(records) == 1:
        metrics.update({key: value for key, value in records[0].metrics.items() if logged(key)})
    logger.log_metrics(metrics)
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        run.define_metric("layer")
        run.define_metric(f"{PER_LAYER}/*", step_metric="layer", summary="none")
        for record in sorted(records, key=lambda r: r.factors.layer):
            run.log({"layer": record.factors.layer,
                     **{f"{PER_LAYER}/{key}": value for key, value in record.metrics.items() if logged(key)}})
    logger.save()


# ---------------------------------------------------------------------------------------------
# The plan of a job: its layers and run ids, derived once, by one path for the plan and the job

@dataclass(frozen=True)
class PlannedJob:
    """What a job computes (`derive_plan`): refused, unknown, or its layers and their run ids."""

    cell: tuple[str, str, str]  # (backbone, task, mode): whose past timings estimate its time
    run_ids: tuple[str, ...] = ()  # one per layer it computes
    layers: tuple[int, ...] = ()  # those layers, in the same order
    num_layers: int | None = None  # the backbone's depth, where the layers are known
    refused: str | None = None  # settings that do not combine (validation, depth, tokenizer): nothing runs, by design
    unknown: str | None = None  # why its runs cannot be named before it runs (it counts as to run)


def _cell(config: Config) -> tuple[str, str, str]:
    return config.backbone.name, config.task.name, config.mode.name.value


def derive_plan(config: Config, cache_dir: Path, *, load: bool = False) -> PlannedJob:
    """The plan of a validated job, as both `plan_job` and `run_job` derive it: refused where its
    backbone cannot give its readout or layer, unknown where its runs cannot be named yet, else its
    layers and their run ids, named with the location of its pretraining recipe where it has one
    (`config` itself is not changed).

    load=False: from the config and what is on disk only, never building, converting or loading:
    a pretraining recipe not built yet, a backbone never loaded here, or (for a nospecial pooling)
    a tokenizer never loaded here leaves the job unknown.
    load=True: for run_job after its pretraining stage, of a job that was unknown: the depth is read
    from the backbone's config where it is not recorded (a packaged backbone is converted if need be),
    and a nospecial pooling loads the backbone once where its tokenizer is not recorded."""
    cell = _cell(config)
    backbone = config.backbone
    if backbone.pretrain is not None and not backbone.location:  # a recipe is named where it is built
        recipe = recipe_of(backbone.pretrain, cache_dir)
        if not (pretrained_dir(recipe, cache_dir) / "config.json").exists():
            return PlannedJob(cell, unknown=f"pretraining recipe {recipe.name} is not built yet")
        backbone = dataclasses.replace(backbone, location=recipe.name)
    facts = known_facts(backbone, cache_dir)
    if facts is None and not load and backbone.source != Source.tiny:
        return PlannedJob(cell, unknown=f"backbone {backbone.name} was never loaded here")
    config = dataclasses.replace(config, backbone=backbone)
    pooling = pooling_factor(config)
    try:
        num_layers = backbone_depth(backbone, cache_dir)  # recorded, a tiny architecture's, or (load) its config's
        if pooling in NOSPECIAL_POOLINGS:  # a check that needs the tokenizer, before any work
            if load:
                facts = backbone_facts(backbone, cache_dir)
            if facts is None or facts.adds_special_tokens is None:
                return PlannedJob(cell, unknown=f"backbone {backbone.name}'s tokenizer was never loaded here")
            check_special_tokens(pooling, backbone.name, facts.adds_special_tokens)
        layers = pooling_layers(pooling, config.layer, num_layers)
    except ConfigError as error:
        return PlannedJob(cell, refused=str(error))
    identity = MODES[config.mode.name].identity
    return PlannedJob(cell, run_ids=tuple(run_identity(identity(config, layer)) for layer in layers),
                      layers=tuple(layers), num_layers=num_layers)


def plan_job(cfg: DictConfig) -> PlannedJob:
    """The plan of a job as `run_job` derives it before running anything (`derive_plan`, load=False):
    never building, converting or loading."""
    config = typed_config(cfg)
    try:
        validate(config)
    except ConfigError as error:
        return PlannedJob(_cell(config), refused=str(error))
    return derive_plan(config, Path(config.paths.cache_dir).expanduser())


def finished_runs(plan: PlannedJob, output_root: Path) -> list[Record] | None:
    """The finished records of a planned job's runs, by layer; None unless every run is named and finished."""
    if not plan.run_ids or plan.unknown or plan.refused:
        return None
    previous = [find_finished(output_root, run_id) for run_id in plan.run_ids]
    return None if any(record is None for record in previous) else previous


def finished_job(cfg: DictConfig) -> list[Record] | None:
    """The finished records of a job whose every run finished before, by layer, found without loading
    anything (`plan_job`); None when a run is still to compute, cannot be named yet, or is refused."""
    if not cfg.skip_finished:
        return None
    try:
        planned = plan_job(cfg)
    except Exception:  # a shortcut only: whatever fails here, the full path of run_job records it
        return None
    return finished_runs(planned, Path(cfg.paths.output_root))


def reuse_job(finished: list[Record], output_dir: Path) -> list[Record]:
    """A finished job (`finished_job`) done: its records copied into `output_dir`."""
    reused = []
    for record in finished:
        pooling, layer, seed = record.factors.pooling, record.factors.layer, record.factors.seed
        log.info("%s L%d s%d: run %s already finished: reusing finished record %s", pooling, layer, seed,
                 record.run_id, record.dir)
        reused.append(reuse_record(record, record_dir(output_dir, pooling, layer, seed)))
    return reused


# ---------------------------------------------------------------------------------------------
# The lifecycle

def run_job(cfg: DictConfig, output_dir: Path) -> list[Record]:
    """One Hydra job: its records by layer, reused or computed. A failed job leaves failed records
    (one per run it was computing, or one in `output_dir` if it failed before knowing its runs); a
    config that validation refuses leaves one refused record in `output_dir` and raises ConfigError."""
    output_dir = Path(output_dir)
    config = typed_config(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved["backbone"]["dtype"] = config.backbone.dtype.value  # as resolved for this machine
    mode = MODES[config.mode.name]

    def refused(error: ConfigError) -> None:
        # A sweep may cross settings that do not combine (pooling=pooler on a backbone without a
        # trained pooler): the record says why, so the report counts it instead of a missing job.
        write_record(output_dir, Record(run_id=run_identity(mode.identity(config, config.layer)), status="refused",
                                        study=config.study, factors=factors(config, config.layer, None),
                                        config=resolved, error=str(error)))

    def failed(error: BaseException, layer: int | str, num_layers: int | None, directory: Path) -> None:
        write_record(directory, Record(run_id=run_identity(mode.identity(config, layer)), status="failed",
                                       study=config.study, factors=factors(config, layer, num_layers),
                                       config=resolved, error="".join(traceback.format_exception(error))))

    try:
        validate(config)
    except ConfigError as error:
        refused(error)
        raise
    cache_dir = Path(config.paths.cache_dir).expanduser()
    output_root = Path(config.paths.output_root)
    try:
        plan = derive_plan(config, cache_dir)  # from what is on disk: nothing is built, converted or loaded
    except Exception as error:
        failed(error, config.layer, None, output_dir)
        raise
    if config.skip_finished and (finished := finished_runs(plan, output_root)) is not None:
        return reuse_job(finished, output_dir)  # before any data file, recipe or model is read
    if warning := precision_warning(config.backbone.dtype, compute_device(config), cache_dir):
        log.warning(warning)  # allowed (the numbers are right), but the user should know before it starts
    pooling, seed = pooling_factor(config), config.seed
    try:
        check_source(config.task)  # the user's own data file: read and checked before any model or recipe
        # The pretraining stage: a recipe is built once into the cache, then named by its location.
        config.backbone, pretrain_facts = ensure_pretrained(config.backbone, cache_dir)
        resolved["backbone"]["location"] = config.backbone.location
        if plan.unknown is not None:  # what the plan could not know without the stage and a look at the backbone
            plan = derive_plan(config, cache_dir, load=True)
        if plan.refused is not None:
            raise ConfigError(plan.refused)
    except ConfigError as error:
        refused(error)
        raise
    except Exception as error:
        failed(error, config.layer, None, output_dir)
        raise
    layers, num_layers = plan.layers, plan.num_layers
    run_ids = dict(zip(plan.layers, plan.run_ids))
    records: dict[int, Record] = {}
    for layer, run_id in run_ids.items():
        if config.skip_finished and (previous := find_finished(output_root, run_id)) is not None:
            log.info("%s L%d s%d: run %s already finished: reusing finished record %s", pooling, layer, seed, run_id,
                     previous.dir)
            records[layer] = reuse_record(previous, record_dir(output_dir, pooling, layer, seed))
    todo = tuple(layer for layer in layers if layer not in records)
    # A fine-tuning run (one per job) may resume from its checkpoints, and then its W&B run too.
    resumable = checkpoint_dir(output_root, run_ids[todo[0]]) if todo and config.mode.name == Mode.finetune else None
    logger = make_logger(cfg, config, list(run_ids.values()), resumable) if todo else None
    try:
        if todo:
            job = Job(backbone=config.backbone, task=config.task, pooling=pooling, mode=config.mode,
                      trainer=config.trainer, seed=seed, layers=todo, cache_dir=cache_dir, output_dir=output_dir,
                      template=config.pooling.template, checkpoint_dir=resumable)
            for result in mode.run(job, logger):
                record = Record(run_id=run_ids[result.layer], status="finished", study=config.study,
                                factors=factors(config, result.layer, num_layers),
                                config={**resolved, "layer": result.layer},
                                metrics={**result.metrics, **pretrain_facts},
                                selection=result.selection, timings=result.timings, features=result.features)
                records[result.layer] = write_record(record_dir(output_dir, pooling, result.layer, seed), record,
                                                     result.predictions)
                register_finished(output_root, records[result.layer])
        ordered = [records[layer] for layer in layers]
        log_metrics(logger, ordered, mode.logged)
        return ordered
    except Exception as error:
        for layer in todo:
            if layer not in records:
                failed(error, layer, num_layers, record_dir(output_dir, pooling, layer, seed))
        raise
    finally:
        if isinstance(logger, WandbLogger):
            wandb.finish()  # so the next job of a multirun starts its own W&B run
