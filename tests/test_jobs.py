"""Run identity per mode: exactly the config entries the mode reads (an allow-list), nothing else.

Known answers: changing any allow-listed entry gives another run id; changing the trainer of a
probe, a speed knob, logging, paths or the study name gives the same id. The unit is one run
(one layer of one job); ids are computed from composed configs, no job runs.
"""

from dataclasses import fields

import pytest

from poolbench import jobs
from poolbench.config import (BackboneConfig, ControlConfig, DiagnoseConfig, FewShotConfig, FinetuneConfig,
                              LearningCurveConfig, MDLConfig, ProbeConfig, Protocol, TaskConfig, TrainerConfig)
from poolbench.jobs import MODES, typed_config
from poolbench.records import run_identity

PROBE = ["mode=probe", "backbone=tiny-bert", "task=mcid", "pooling=mean", "layer=all"]
FINETUNE = ["mode=finetune", "backbone=tiny-bert", "task=mcid", "pooling=mean", "layer=-1"]
DIAGNOSE = ["mode=diagnose", "backbone=tiny-bert", "task=mcid", "layer=all"]


def run_id(cfg, layer=2) -> str:
    config = typed_config(cfg)
    return run_identity(MODES[config.mode.name].identity(config, layer))


# One override per allow-listed entry, each to a value other than the default.
SHARED_CHANGES = ["backbone.name=renamed", "backbone.family=encoder_mlm", "backbone.location=gpt2",
                  "backbone.init=pretrained", "backbone.init_seed=1", "backbone.max_length=33",
                  "backbone.dtype=bfloat16", "backbone.padding_side=left", "backbone.revision=abc",
                  "backbone.source=hub", "task.name=other", "task.max_train_examples=100", "task.split_seed=1",
                  "task.location=elsewhere", "task.source=hub", "task.subset=x", "task.revision=r",
                  "task.text_column=t", "task.text_pair_column=p", "task.label_column=l", "+task.hub_splits.test=dev",
                  "pooling=cls", "seed=1"]


@pytest.mark.parametrize("change", SHARED_CHANGES + ["mode.lr=0.5", "mode.weight_decays=[0.0]", "mode.max_epochs=7",
                                                     "mode.patience=2", "mode.batch_size=8"])
def test_every_entry_a_probe_reads_changes_its_run_id(make_cfg, change):
    assert run_id(make_cfg(*PROBE, change)) != run_id(make_cfg(*PROBE))


@pytest.mark.parametrize("change", ["trainer=gpu", "trainer=smoke", "trainer.max_epochs=9", "trainer.precision=bf16-mixed",
                                    "mode.encode_batch_tokens=512", "logger=csv", "logger=wandb", "study=another",
                                    "paths.output_root=/elsewhere", "paths.cache_dir=/elsewhere", "skip_finished=false"])
def test_what_a_probe_never_reads_leaves_its_run_id(make_cfg, change):
    assert run_id(make_cfg(*PROBE, change)) == run_id(make_cfg(*PROBE))


@pytest.mark.parametrize("change", SHARED_CHANGES + ["mode.lr=0.5", "mode.weight_decay=0.5", "mode.warmup_ratio=0.5",
                                                     "mode.dropout=0.5", "mode.batch_size=8", "trainer.max_epochs=9",
                                                     "trainer=gpu", "trainer.precision=bf16-mixed",
                                                     "trainer.limit_train_batches=3", "trainer.gradient_clip_val=2",
                                                     "trainer.accumulate_grad_batches=2", "trainer.deterministic=false"])
def test_every_entry_finetuning_reads_changes_its_run_id(make_cfg, change):
    assert run_id(make_cfg(*FINETUNE, change)) != run_id(make_cfg(*FINETUNE))


@pytest.mark.parametrize("change", ["mode.num_workers=2", "trainer.enable_progress_bar=true",
                                    "trainer.log_every_n_steps=1", "trainer.enable_model_summary=true",
                                    "logger=csv", "study=another", "paths.output_root=/elsewhere", "skip_finished=false"])
def test_what_finetuning_never_reads_leaves_its_run_id(make_cfg, change):
    assert run_id(make_cfg(*FINETUNE, change)) == run_id(make_cfg(*FINETUNE))


@pytest.mark.parametrize("change", SHARED_CHANGES[:-2] + ["seed=1", "mode.attention_texts=7", "mode.erasure_texts=3",
                                                         "mode.erasure_positions=null", "mode.knn_k=3",
                                                         "mode.anisotropy_pairs=9"])
def test_every_entry_diagnose_reads_changes_its_run_id(make_cfg, change):
    assert run_id(make_cfg(*DIAGNOSE, change)) != run_id(make_cfg(*DIAGNOSE))


@pytest.mark.parametrize("change", ["pooling=cls", "mode.attention_batch_size=3", "mode.erasure_batch_size=5",
                                    "mode.encode_batch_tokens=64", "trainer=smoke", "study=another"])
def test_what_diagnose_never_reads_leaves_its_run_id(make_cfg, change):
    # pooling too: one diagnose job measures every readout.
    assert run_id(make_cfg(*DIAGNOSE, change)) == run_id(make_cfg(*DIAGNOSE))


def test_each_layer_is_a_run_of_its_own(make_cfg):
    cfg = make_cfg(*PROBE)
    assert len({run_id(cfg, layer) for layer in range(3)}) == 3


# Schema fields that are deliberately not identity, and why: a new field must be placed on one side.
NOT_IDENTITY = {
    ProbeConfig: {"name", "encode_batch_tokens"},  # the mode is in the identity already; a speed knob
    FinetuneConfig: {"name", "num_workers"},  # the same; a speed knob
    DiagnoseConfig: {"name", "attention_batch_size", "erasure_batch_size", "encode_batch_tokens"},  # speed knobs
    TrainerConfig: {"log_every_n_steps", "num_sanity_val_steps", "enable_progress_bar", "enable_model_summary"},
    # trained_pooler: a guard on pooling=pooler, it changes no number. pretrain: the job owner names a
    # built recipe by its location (<arm>-<size>-<hash of every recipe field and the corpus>).
    BackboneConfig: {"trained_pooler", "pretrain"},
    # label_words: read by pooling=label_words only, whose identity holds it (jobs.prompt_identity).
    TaskConfig: {"label_words"},
    FewShotConfig: set(), LearningCurveConfig: set(), MDLConfig: set(), ControlConfig: set(),
}
# A probe's protocol and the chosen protocol's settings are identity when the protocol is not full; its
# reference_dtype when it names another precision than the run's (test_closeness.py).
ALLOW_LISTS = {ProbeConfig: (*jobs.PROBE_IDENTITY, "protocol", *(p.value for p in jobs.PROTOCOL_IDENTITY),
                             "reference_dtype"),
               FinetuneConfig: jobs.FINETUNE_IDENTITY, DiagnoseConfig: jobs.DIAGNOSE_IDENTITY,
               TrainerConfig: jobs.TRAINER_IDENTITY, BackboneConfig: jobs.BACKBONE_IDENTITY,
               TaskConfig: jobs.TASK_IDENTITY,
               FewShotConfig: jobs.PROTOCOL_IDENTITY[Protocol.few_shot],
               LearningCurveConfig: jobs.PROTOCOL_IDENTITY[Protocol.learning_curve],
               MDLConfig: jobs.PROTOCOL_IDENTITY[Protocol.mdl], ControlConfig: jobs.PROTOCOL_IDENTITY[Protocol.control]}


@pytest.mark.parametrize("schema", list(ALLOW_LISTS), ids=lambda s: s.__name__)
def test_every_schema_field_is_either_identity_or_named_as_not(schema):
    names = {f.name for f in fields(schema)}
    allowed = set(ALLOW_LISTS[schema])
    assert allowed <= names, f"allow-list names fields {allowed - names} that {schema.__name__} does not have"
    assert names == allowed | NOT_IDENTITY[schema] and not allowed & NOT_IDENTITY[schema]
