"""The readouts beyond cls/mean/max/last in jobs: where they apply, the layers they read, fine-tuning.

Refusals: a nospecial pooling on a backbone whose tokenizer adds no special token (it would equal
mean or max), first_last_avg at the embedding layer. Each leaves one refused record, before any
feature is encoded. Known answers: the fine-tuning module's pooled vector equals the loop-written
definition (tests/test_pooling.py `reference`) per sequence (the unit: one text).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2Model, PreTrainedTokenizerFast

from poolbench.backbones import PACKAGED, forward_hidden_states, load_backbone
from poolbench.config import ConfigError
from poolbench.features import features_for, features_root
from poolbench.jobs import run_job, typed_config
from poolbench.model import PoolingClassifier
from poolbench.pooling import special_token_ids
from poolbench.records import read_record
from test_pooling import reference

TEXTS = ["a short one", "the second text is a little longer than the first", "three words here"]


@pytest.fixture
def plain_decoder(tmp_path) -> list[str]:
    """Overrides for a local 2-layer GPT-2 whose tokenizer adds no special token: MiniLM's WordPiece
    without its [CLS] ... [SEP] template (as SmolLM2's tokenizer adds none)."""
    directory = tmp_path / "plain-gpt2"
    backend = copy.deepcopy(AutoTokenizer.from_pretrained(PACKAGED["minilm-l6"].locate()).backend_tokenizer)
    backend.post_processor = None
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                         bos_token_id=None, eos_token_id=None)).save_pretrained(directory)
    return ["backbone=tiny-gpt2", "backbone.source=local", f"backbone.location={directory}",
            "backbone.name=plain-gpt2", "backbone.init=pretrained", "task=mcid", "logger=none"]


@pytest.mark.parametrize("pooling, plain", [("mean_nospecial", "mean"), ("max_nospecial", "max")])
def test_a_nospecial_pooling_without_special_tokens_is_refused_before_any_work(make_cfg, plain_decoder, tmp_path,
                                                                               pooling, plain):
    cache = tmp_path / "cache"
    cfg = make_cfg(*plain_decoder, "mode=probe", f"pooling={pooling}", f"paths.cache_dir={cache}")
    why = rf"tokenizer of backbone plain-gpt2 adds none, so it would equal pooling={plain}: use pooling={plain}\."
    with pytest.raises(ConfigError, match=why):
        run_job(cfg, tmp_path / "run")
    refused = read_record(tmp_path / "run")
    assert refused.status == "refused" and f"use pooling={plain}." in refused.error
    assert not features_root(cache).exists()  # nothing was encoded
    # The feature cache refuses it too, and stores no such arrays for this tokenizer.
    config = typed_config(cfg)
    found, _ = features_for(config.backbone, config.task, cache, 2048, pooling="mean")
    assert found.poolings == ["cls", "mean", "max", "last", "weighted_mean", "mean_nosink"]  # position 0 is everywhere
    with pytest.raises(ConfigError, match=why):
        features_for(config.backbone, config.task, cache, 2048, pooling=pooling)


def test_a_tokenizer_that_adds_special_tokens_gets_the_nospecial_poolings(make_cfg, tmp_path):
    records = run_job(make_cfg("backbone=tiny-gpt2", "task=mcid", "mode=probe", "pooling=max_nospecial", "layer=-1",
                               "mode.max_epochs=2"), tmp_path / "run")
    assert [(r.status, r.factors.layer) for r in records] == [("finished", 2)]


def test_first_last_avg_reads_layers_from_the_first_transformer_layer_on(make_cfg, tmp_path):
    probe = ["backbone=tiny-bert", "task=mcid", "mode=probe", "pooling=first_last_avg", "mode.max_epochs=2"]
    records = run_job(make_cfg(*probe, "layer=all"), tmp_path / "all")
    assert [r.factors.layer for r in records] == [1, 2]
    with pytest.raises(ConfigError, match=r"layer=0 \(the embedding output\) with pooling=first_last_avg"):
        make_cfg(*probe, "layer=0")
    with pytest.raises(ConfigError, match=r"layer=-3 \(the embedding output\)"):  # -3 of 2 layers: the embeddings
        run_job(make_cfg(*probe, "layer=-3"), tmp_path / "neg")
    assert read_record(tmp_path / "neg").status == "refused"


@pytest.mark.parametrize("pooling", ["weighted_mean", "mean_nospecial", "max_nospecial", "mean_nosink", "cls_mean",
                                     "first_last_avg"])
def test_the_finetuning_module_pools_as_defined(make_cfg, pooling):
    config = typed_config(make_cfg("backbone=tiny-gpt2"))  # left padding, [CLS] ... [SEP]
    backbone = load_backbone(config.backbone, config.paths.cache_dir)
    special_ids = special_token_ids(backbone.tokenizer)
    model = PoolingClassifier(backbone.model, pooling=pooling, layer=2, num_labels=3, hidden_size=32, lr=1e-3,
                              weight_decay=0.0, warmup_ratio=0.0, dropout=0.1, special_ids=special_ids).eval()
    batch = dict(backbone.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert batch["attention_mask"][:, 0].min() == 0  # really left-padded
    with torch.no_grad():
        logits = model(batch)
        states = forward_hidden_states(backbone.model, batch)
    expected = []
    for i, real in enumerate(batch["attention_mask"].bool()):
        special = [int(t) in special_ids for t in batch["input_ids"][i][real]]
        expected.append(reference(states[2][i][real], pooling, special, states[1][i][real]))
    head = model.head[1]
    assert head.in_features == (64 if pooling == "cls_mean" else 32)
    torch.testing.assert_close(logits, head(torch.stack(expected)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls_mean", "first_last_avg"])
def test_a_finetuning_run_of_a_derived_readout_finishes(make_cfg, tmp_path, pooling):
    [record] = run_job(make_cfg("backbone=tiny-bert", "task=mcid", "trainer=smoke", f"pooling={pooling}",
                                "task.max_train_examples=64"), tmp_path / "run")
    assert record.status == "finished" and record.factors.pooling == pooling and record.factors.layer == 2
