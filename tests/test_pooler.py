"""pooling=pooler: BERT's tanh(W h_0 + b), from the cached final-layer h_0, refused where untrained.

Known answers: HF's own `BertModel(...).pooler_output` of the same checkpoint (computed one text at
a time, so no padding is involved); the refusal names the backbones whose pooler was trained. The
unit is one test example (vectors) or one run (records).
"""

import pytest
import torch

from poolbench.backbones import load_backbone
from poolbench.config import ConfigError
from poolbench.data import tokenize
from poolbench.features import POOLER_FILE, features_for
from poolbench.jobs import run_job, typed_config
from poolbench.tasks import load_task

TINY = ["backbone=tiny-bert", "backbone.trained_pooler=true", "task=mcid", "pooling=pooler", "logger=none"]


def test_the_pooler_reading_equals_hf_pooler_output(make_cfg, tmp_path):
    config = typed_config(make_cfg(*TINY, "mode=probe", f"paths.cache_dir={tmp_path / 'cache'}"))
    args = (config.backbone, config.task, config.paths.cache_dir, config.mode.encode_batch_tokens)
    written, _ = features_for(*args)
    (written.directory / POOLER_FILE).unlink()  # an entry without the pooler weights, as older entries are
    found, _ = features_for(*args, pooling="pooler")
    rows = [0, 5, found.size("test") - 1]
    cached = found.vectors("test", "pooler", [found.num_layers], rows=rows)[0]
    backbone = load_backbone(config.backbone, config.paths.cache_dir)
    split = tokenize(load_task(config.task, config.paths.cache_dir), backbone.tokenizer,
                     config.backbone.max_length)["test"]
    for i, row in enumerate(rows):
        batch = {k: torch.tensor([split[row][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.inference_mode():
            expected = backbone.model(**batch).pooler_output[0]
        torch.testing.assert_close(cached[i], expected, atol=1e-5, rtol=1e-5)


def test_a_probe_job_on_the_pooler_writes_one_record_at_the_final_layer(make_cfg, tmp_path):
    records = run_job(make_cfg(*TINY, "mode=probe", "layer=all", "mode.max_epochs=3"), tmp_path / "run")
    assert [(r.factors.pooling, r.factors.layer, r.factors.num_layers) for r in records] == [("pooler", 2, 2)]
    assert (tmp_path / "run" / "records" / "pooler-L2-s0" / "record.json").exists()


def test_fine_tuning_reads_the_pooler_too(make_cfg, tmp_path):
    [record] = run_job(make_cfg(*TINY, "trainer=smoke", "task.max_train_examples=64"), tmp_path / "run")
    assert record.status == "finished" and record.factors.pooling == "pooler"


def test_an_untrained_pooler_is_refused_naming_the_backbones_that_have_one(make_cfg):
    with pytest.raises(ConfigError, match=r"minilm-l6 has no trained pooler.*backbone=bert-base-uncased, .*"
                                          r"backbone=categorium-en"):
        make_cfg("backbone=minilm-l6", "pooling=pooler", "mode=probe")


def test_the_pooler_reads_the_final_layer_only(make_cfg):
    with pytest.raises(ConfigError, match=r"layer=1 with pooling=pooler"):
        make_cfg(*TINY, "mode=probe", "layer=1")
