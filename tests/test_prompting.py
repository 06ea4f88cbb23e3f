"""The prompt readouts: PromptEOL's last-token state (prompt_last) and zero-shot label words.

Known answers against independent computations, the unit being one text: the template is applied
exactly (the prompted tokens decode to the template around the text, truncated where the plain
encoding truncates it); a cached prompt_last vector equals the last real token's state of the HF
model run on that text alone (no padding), under left and right padding of the cache's batches; a
label word's probability equals a softmax over the HF language model's next-token logits of the text
alone. Refusals: encoders, pair tasks, tasks without label words, fine-tuning, other layers and
protocols, each before any work and with a refused record. Plain readouts keep their run ids and
feature keys.
"""

from __future__ import annotations

import re

import pytest
import torch
from datasets import Dataset, DatasetDict
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from poolbench.backbones import PACKAGED, load_backbone, load_causal_lm
from poolbench.config import CONF_DIR, ConfigError
from poolbench.features import feature_identity, feature_key, features_for, features_root
from poolbench.jobs import MODES, plan_job, run_job, typed_config
from poolbench.prompting import PROMPTEOL
from poolbench.prompting.entry import prompted_features, prompted_identity
from poolbench.prompting.label_words import next_token_log_probs
from poolbench.prompting.template import apply_template, label_word_tokens, tokenize_prompted, truncated_texts
from poolbench.records import read_predictions, read_record, run_identity
from poolbench.tasks import Task, load_task
from poolbench.validation import validate

PREFIX, SUFFIX = PROMPTEOL.split("{text}")
TEXTS = ["What is corona?", "hi",
         "A much longer sentence, with punctuation and numbers like 42, to make the others pad.",
         'A text with "quotes" and {braces} in it']
needs_smollm2 = pytest.mark.skipif(not PACKAGED["smollm2-135m"].installed(), reason="smollm2-135m is not installed")


def small_task(texts: list[str] = TEXTS) -> Task:
    """A single-text task whose every split holds `texts` (labels alternate 0/1)."""
    split = Dataset.from_dict({"id": list(range(len(texts))), "text": texts,
                               "label": [i % 2 for i in range(len(texts))]})
    return Task(name="small", splits=DatasetDict({s: split for s in ("train", "validation", "test")}),
                label_names=["no", "yes"], text_fields=("text",), fingerprint="small")


def tiny_gpt2(make_cfg, *overrides: str):
    return typed_config(make_cfg("backbone=tiny-gpt2", "task=mcid", "mode=probe", *overrides))


# ---------------------------------------------------------------------------------------------
# The template

@pytest.fixture(scope="module")
def smollm2_tokenizer(cache_dir):
    return AutoTokenizer.from_pretrained(PACKAGED["smollm2-135m"].locate(cache_dir))


@pytest.mark.slow
@needs_smollm2
def test_the_prompted_tokens_decode_to_the_template_around_the_text(smollm2_tokenizer):
    # SmolLM2's byte-level BPE decodes to the exact string, and its tokenizer adds no special token.
    tokenized = tokenize_prompted(small_task(), smollm2_tokenizer, PROMPTEOL, max_length=128)["test"]

    def decode(ids: list[int]) -> str:
        return smollm2_tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    for text, ids, length in zip(TEXTS, tokenized["input_ids"], tokenized["length"]):
        assert decode(ids) == f'This sentence : "{text}" means in one word:"' and length == len(ids)
    # Truncated: the text keeps exactly what the plain encoding keeps (8 tokens), the template all of its own.
    [long] = tokenize_prompted(small_task([TEXTS[2]]), smollm2_tokenizer, PROMPTEOL, max_length=8)["test"]["input_ids"]
    kept = decode(smollm2_tokenizer(TEXTS[2], truncation=True, max_length=8)["input_ids"])
    assert TEXTS[2].startswith(kept) and len(kept) < len(TEXTS[2])
    assert decode(long) == apply_template(PROMPTEOL, kept)


def test_a_tokenizer_that_appends_a_special_token_ends_on_the_template(make_cfg):
    # tiny-gpt2 borrows MiniLM's WordPiece, [CLS] text [SEP]: the [SEP] would be the last real token.
    config = tiny_gpt2(make_cfg)
    tokenizer = load_backbone(config.backbone, config.paths.cache_dir).tokenizer
    tokenized = tokenize_prompted(small_task(), tokenizer, PROMPTEOL, max_length=64)["test"]
    for text, ids in zip(TEXTS, tokenized["input_ids"]):
        full = tokenizer(apply_template(PROMPTEOL, text))["input_ids"]
        assert tokenizer.convert_ids_to_tokens(full[-1]) == "[SEP]"
        assert ids == full[:-1] and tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", '"']
    # Truncation keeps the [CLS] ... [SEP] budget: 64 tokens = [CLS], 62 content tokens, [SEP].
    long = " ".join(f"word{i}" for i in range(200))
    [cut] = truncated_texts([long], tokenizer, 64)
    assert tokenizer(cut)["input_ids"] == tokenizer(long, truncation=True, max_length=64)["input_ids"]


def test_label_words_map_to_their_first_token_after_the_template(make_cfg):
    config = tiny_gpt2(make_cfg)
    tokenizer = load_backbone(config.backbone, config.paths.cache_dir).tokenizer
    tokens = label_word_tokens(tokenizer, PROMPTEOL, ["no", "yes"], {"yes": "good", "no": "terrible"})
    assert tokenizer.convert_ids_to_tokens(tokens) == ["terrible", "good"]
    with pytest.raises(ValueError, match=r"no word for the labels \['yes'\]"):
        label_word_tokens(tokenizer, PROMPTEOL, ["no", "yes"], {"no": "bad"})
    with pytest.raises(ValueError, match=r"classes share their first token \{'good': \['no', 'yes'\]\}"):
        label_word_tokens(tokenizer, PROMPTEOL, ["no", "yes"], {"no": "good", "yes": "good"})


# ---------------------------------------------------------------------------------------------
# prompt_last: the cached vectors against an independent forward pass

@pytest.mark.parametrize("side", ["left", "right"])
def test_prompt_last_is_the_last_template_token_state_of_the_text_alone(make_cfg, tmp_path, side):
    config = tiny_gpt2(make_cfg, f"backbone.padding_side={side}")
    found, encode_s = prompted_features(config.backbone, config.task, PROMPTEOL, tmp_path / "cache", 2048)
    assert encode_s > 0 and found.poolings == ["last"] and found.manifest["template"] == PROMPTEOL
    backbone = load_backbone(config.backbone, tmp_path / "cache")
    test = load_task(config.task, tmp_path / "cache").splits["test"]
    texts = dict(zip(test["id"], test["text"]))
    ids = found.ids("test").tolist()
    rows = [0, 5, len(ids) // 2, len(ids) - 1]
    cached = found.vectors("test", "last", rows=rows)  # [layers, rows, hidden]
    for i, row in enumerate(rows):
        inputs = backbone.tokenizer(PREFIX + texts[ids[row]] + SUFFIX, return_tensors="pt")
        inputs = {name: values[:, :-1] for name, values in inputs.items()}  # without the appended [SEP]
        with torch.inference_mode():
            states = backbone.model(**inputs, output_hidden_states=True).hidden_states
        torch.testing.assert_close(cached[:, i], torch.stack([s[0, -1] for s in states]), atol=1e-5, rtol=1e-5)


def test_a_prompt_last_probe_trains_heads_on_its_own_entry_and_leaves_plain_keys_alone(make_cfg, tmp_path):
    cache = tmp_path / "cache"
    probe = ["backbone=tiny-gpt2", "task=mcid", "mode=probe", "layer=all", "mode.max_epochs=2",
             f"paths.cache_dir={cache}"]
    records = run_job(make_cfg(*probe, "pooling=prompt_last"), tmp_path / "prompted")
    assert [(r.status, r.factors.pooling, r.factors.layer) for r in records] == [("finished", "prompt_last", l)
                                                                              for l in range(3)]
    config = typed_config(make_cfg(*probe, "pooling=last"))
    plain, _ = features_for(config.backbone, config.task, cache, 2048)
    backbone, task = load_backbone(config.backbone, cache), load_task(config.task, cache)
    # The plain key is the identity it always was (no prompt in it); the prompted one differs from it.
    assert "prompt" not in feature_identity(config.backbone, backbone, task) and plain.key != records[0].features
    assert records[0].features == feature_key(prompted_identity(config.backbone, backbone, task, PROMPTEOL))
    assert sorted(p.name for p in features_root(cache).iterdir() if p.is_dir() and p.name != "lookup") == sorted(
        [plain.key, records[0].features])
    few_shot = run_job(make_cfg(*probe, "pooling=prompt_last", "mode.protocol=few_shot", "mode.few_shot.repeats=2"),
                       tmp_path / "few_shot")
    assert [r.features for r in few_shot] == [records[0].features] * 3


def test_a_template_changes_prompt_runs_only(make_cfg):
    probe = ["backbone=tiny-gpt2", "task=mcid", "mode=probe", "layer=all"]

    def run_id(*overrides):
        config = typed_config(make_cfg(*probe, *overrides))
        return run_identity(MODES[config.mode.name].identity(config, 2))

    other = "pooling.template='Text: {text}. In one word:'"
    assert run_id("pooling=last") == run_id("pooling=last", other)
    assert run_id("pooling=prompt_last") != run_id("pooling=prompt_last", other)
    assert run_id("pooling=prompt_last") != run_id("pooling=last")


# ---------------------------------------------------------------------------------------------
# label_words: next-token probabilities against the language model's own logits

def reference_log_probs(lm, tokenizer, text: str, token_ids: list[int], drop_last: int) -> torch.Tensor:
    """log softmax over the whole vocabulary of the LM's logits after the prompted text alone (no padding)."""
    inputs = tokenizer(apply_template(PROMPTEOL, text), return_tensors="pt")
    inputs = {name: values[:, :values.shape[1] - drop_last] for name, values in inputs.items()}
    with torch.inference_mode():
        logits = lm(**inputs).logits[0, -1]
    return logits.log_softmax(-1)[token_ids]


@pytest.mark.parametrize("side", ["left", "right"])
def test_label_word_log_probs_equal_a_softmax_over_the_models_logits(make_cfg, side):
    config = tiny_gpt2(make_cfg, f"backbone.padding_side={side}")
    backbone, lm = load_causal_lm(config.backbone, config.paths.cache_dir)
    # The head is GPT-2's tied one: the logits are the final states times the input embeddings.
    assert lm.lm_head.weight is lm.transformer.wte.weight and backbone.model is lm.transformer
    tokens = label_word_tokens(backbone.tokenizer, PROMPTEOL, ["no", "yes"], {"no": "bad", "yes": "good"})
    dataset = tokenize_prompted(small_task(), backbone.tokenizer, PROMPTEOL, 64)["test"]
    ours = next_token_log_probs(lm, backbone.tokenizer, dataset, tokens, max_tokens=2048)
    for i, text in enumerate(TEXTS):
        inputs = backbone.tokenizer(apply_template(PROMPTEOL, text), return_tensors="pt")
        inputs = {name: values[:, :-1] for name, values in inputs.items()}  # without [SEP]
        with torch.inference_mode():
            final = backbone.model(**inputs).last_hidden_state[0, -1]
            by_hand = (final @ backbone.model.wte.weight.T).log_softmax(-1)[tokens]
        torch.testing.assert_close(ours[i], by_hand, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_label_word_log_probs_equal_its_causal_lm(make_cfg, cache_dir):
    config = typed_config(make_cfg("backbone=smollm2-135m", "task=mcid", "mode=probe"))
    backbone, lm = load_causal_lm(config.backbone, cache_dir)
    tokens = label_word_tokens(backbone.tokenizer, PROMPTEOL, ["no", "yes"], {"no": "bad", "yes": "good"})
    assert backbone.tokenizer.convert_ids_to_tokens(tokens) == ["bad", "good"]  # no leading space after the quote
    reference = AutoModelForCausalLM.from_pretrained(PACKAGED["smollm2-135m"].locate(cache_dir)).eval()
    dataset = tokenize_prompted(small_task(), backbone.tokenizer, PROMPTEOL, 128)["test"]
    ours = next_token_log_probs(lm, backbone.tokenizer, dataset, tokens, max_tokens=2048)
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(ours[i], reference_log_probs(reference, backbone.tokenizer, text, tokens, 0),
                                   atol=1e-4, rtol=1e-4)


def test_a_label_words_job_scores_test_once_and_every_seed_reuses_it(make_cfg, tmp_path):
    zero_shot = ["backbone=tiny-gpt2", "task=rotten_tomatoes", "mode=probe", "pooling=label_words", "layer=all",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    [record] = run_job(make_cfg(*zero_shot), tmp_path / "s0")
    assert (record.status, record.factors.pooling, record.factors.layer) == ("finished", "label_words", 2)
    assert record.selection["label_tokens"] == ["bad", "good"] and record.metrics["n_train"] == 0
    predictions = read_predictions(record)
    assert len(predictions) == record.metrics["n_test"]
    assert record.metrics["test/acc"] == pytest.approx((predictions["prediction"] == predictions["label"]).mean())
    assert all(abs(sum(p) - 1) < 1e-5 for p in predictions["probs"]) and 0 < record.metrics["label_words/mass"] < 1
    [again] = run_job(make_cfg(*zero_shot, "seed=1"), tmp_path / "s1")  # the seed is not read: nothing to recompute
    assert again.run_id == record.run_id and again.reused_from == record.dir


# ---------------------------------------------------------------------------------------------
# Refusals: before any work, with a refused record, saying why and what to use

@pytest.mark.parametrize("overrides, why", [
    (["backbone=tiny-bert", "task=mcid", "pooling=prompt_last"],
     r"backbone tiny-bert is an encoder \(family encoder_nsp\).*Use a decoder: .*backbone=smollm2-135m"),
    (["backbone=minilm-l6", "task=rotten_tomatoes", "pooling=label_words"], r"backbone minilm-l6 is an encoder"),
    (["backbone=tiny-gpt2", "task=mcid", "pooling=label_words"],
     r"task mcid has no label-word map \(task.label_words\).*task=rotten_tomatoes"),
    (["backbone=tiny-gpt2", "task=nsp_bbc", "pooling=prompt_last"], r"task=nsp_bbc is a task of sentence pairs"),
    (["backbone=tiny-gpt2", "task=rotten_tomatoes", "pooling=label_words", "layer=1"],
     r"layer=1 with pooling=label_words"),
    (["backbone=tiny-gpt2", "task=rotten_tomatoes", "pooling=label_words", "mode.protocol=mdl"],
     r"mode.protocol=mdl with pooling=label_words"),
    (["backbone=tiny-gpt2", "task=mcid", "pooling=prompt_last", "mode.reference_dtype=bfloat16"],
     r"mode.reference_dtype=bfloat16 with pooling=prompt_last"),
    (["backbone=tiny-gpt2", "task=mcid", "pooling=prompt_last", "pooling.template='no placeholder'"],
     r"pooling.template='no placeholder'"),
])
def test_a_prompt_readout_that_cannot_apply_is_refused_before_any_work(tmp_path, overrides, why):
    cache = tmp_path / "cache"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # composed, not yet validated
        cfg = compose("config", overrides=["logger=none", f"paths.output_root={tmp_path / 'outputs'}",
                                           f"paths.cache_dir={cache}", "mode=probe", *overrides])
    with pytest.raises(ConfigError, match=why):
        validate(typed_config(cfg))
    assert re.search(why, plan_job(cfg).refused)  # a sweep's plan counts it as refused by design
    with pytest.raises(ConfigError, match=why):  # a sweep's job: refused, and the sweep goes on
        run_job(cfg, tmp_path / "run")
    assert read_record(tmp_path / "run").status == "refused"
    assert not features_root(cache).exists()


def test_finetuning_a_prompt_readout_is_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"pooling=prompt_last reads a frozen decoder .*: use mode=probe"):
        make_cfg("backbone=tiny-gpt2", "task=mcid", "pooling=prompt_last")


MAPPED = sorted(path.stem for path in (CONF_DIR / "task").glob("*.yaml") if "label_words:" in path.read_text())


@pytest.mark.parametrize("name", [name for name in MAPPED if name not in ("sst2", "ag_news", "trec_coarse")])  # offline
def test_every_packaged_label_word_map_names_each_label_with_a_token_of_its_own(make_cfg, cache_dir, name):
    config = typed_config(make_cfg("backbone=tiny-gpt2", f"task={name}", "mode=probe", "pooling=label_words"))
    task = load_task(config.task, cache_dir)
    assert set(config.task.label_words) == set(task.label_names)
    tokenizers = [load_backbone(config.backbone, cache_dir).tokenizer]
    if PACKAGED["smollm2-135m"].installed():
        tokenizers.append(AutoTokenizer.from_pretrained(PACKAGED["smollm2-135m"].locate(cache_dir)))
    for tokenizer in tokenizers:  # distinct first tokens, and each the start of its word
        tokens = label_word_tokens(tokenizer, PROMPTEOL, task.label_names, config.task.label_words)
        for label, token in zip(task.label_names, tokens):
            assert config.task.label_words[label].startswith(tokenizer.decode([token]).strip())
