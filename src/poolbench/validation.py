"""The checks of a config that its types cannot express: ranges and cross-field rules (`validate`,
which the job owner runs before any work), the checks of a pretraining recipe (`check_recipe`), and
those that need the backbone: its tokenizer (`check_special_tokens`) and its depth (`pooling_layers`).
Each raises ConfigError naming the key, the value and what to use instead.
"""

from __future__ import annotations

from typing import Any

import yaml

from poolbench.config import (ARMS, CONF_DIR, MDL_BLOCKS, PRETRAIN_SIZES, SENTENCE_ARMS, BackboneConfig, Config,
                              ConfigError, Dtype, Mode, Pooling, ProbeConfig, Protocol, Source)
from poolbench.pooling import NOSPECIAL_POOLINGS


def _value(config: Config, key: str) -> Any:
    """The value at a dotted key, or None where the chosen mode has no such key."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part, None)
    return getattr(node, "value", node)


def _positive(config: Config, key: str, allow_zero: bool = False) -> None:
    value = _value(config, key)
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is out of range: it must be {bound}.")


def validate(config: Config) -> None:
    """Checks that types cannot express. Runs before any data or model is touched."""
    for key in ("mode.lr", "mode.batch_size", "backbone.max_length", "trainer.max_epochs", "mode.max_epochs",
                "mode.encode_batch_tokens", "task.max_train_examples", "mode.attention_texts", "mode.erasure_texts",
                "mode.erasure_positions", "mode.knn_k", "mode.anisotropy_pairs", "mode.attention_batch_size",
                "mode.erasure_batch_size"):
        _positive(config, key)
    for key in ("mode.weight_decay", "mode.warmup_ratio", "mode.dropout", "mode.patience", "seed",
                "backbone.init_seed", "mode.ablation_texts", "mode.ablation_layers"):
        _positive(config, key, allow_zero=True)
    for key in ("mode.warmup_ratio", "mode.dropout"):
        value = _value(config, key)
        if value is not None and value >= 1:
            raise ConfigError(f"{key}={value} is out of range: it must be < 1.")
    for wd in _value(config, "mode.weight_decays") or []:
        if wd < 0:
            raise ConfigError(f"mode.weight_decays holds {wd}: every weight decay must be >= 0.")
    if config.mode.name == Mode.probe:
        _check_protocol(config.mode)
        if config.pooling.name == Pooling.attention and config.mode.protocol != Protocol.full:
            raise ConfigError(f"pooling=attention with mode.protocol={config.mode.protocol.value}: the attention "
                              "readout's query is trained with the probe's heads (mode.protocol=full); the other "
                              "protocols read fixed cached vectors. Use mode.protocol=full, or another pooling.")
        if config.mode.reference_dtype == Dtype.auto:
            raise ConfigError("mode.reference_dtype=auto: name the precision to compare with, float32 or bfloat16 "
                              "(auto resolves per machine, so it would compare different things on different ones).")
    if config.backbone.padding_side not in (None, "left", "right"):
        raise ConfigError(f"backbone.padding_side={config.backbone.padding_side!r}: use left, right or null.")
    if config.pooling.name == Pooling.pooler:
        _check_pooler(config)
    if config.pooling.name == Pooling.first_last_avg and config.layer == 0:
        raise _first_last_at_embeddings(config.layer)
    if config.pooling.name in (Pooling.prompt_last, Pooling.label_words) and config.mode.name != Mode.diagnose:
        from poolbench.prompting.checks import check_prompt_readout  # here: only these readouts need it
        check_prompt_readout(config)
    _check_pretrain(config.backbone)
    layer = config.layer
    if isinstance(layer, bool) or not (isinstance(layer, int) or layer == "all"):
        raise ConfigError(f"layer={layer!r}: use an integer (0 = embeddings, -1 = last) or 'all'.")
    if layer == "all" and config.mode.name == Mode.finetune:
        raise ConfigError("layer=all needs mode=probe or mode=diagnose: fine-tuning trains one pooling of one layer "
                          "per run.")


def _check_protocol(settings: ProbeConfig) -> None:
    """The protocols' settings (all of them: a sweep may switch protocol on the command line)."""
    for name in ("per_label", "repeats", "max_iter"):
        value = getattr(settings.few_shot, name)
        if value < 1:
            raise ConfigError(f"mode.few_shot.{name}={value} is out of range: it must be >= 1.")
    curve = settings.learning_curve
    if not curve.per_label and not curve.fractions:
        raise ConfigError("mode.learning_curve has no training size: give per_label (e.g. [8, 16]) or fractions.")
    if any(n < 1 for n in curve.per_label):
        raise ConfigError(f"mode.learning_curve.per_label={list(curve.per_label)}: every size must be >= 1 example per label.")
    if any(not 0 < f <= 1 for f in curve.fractions):
        raise ConfigError(f"mode.learning_curve.fractions={list(curve.fractions)}: every fraction must be in (0, 1], "
                          "e.g. 0.1 for 10% of the training rows.")
    blocks = list(settings.mdl.blocks)
    if (len(blocks) < 2 or blocks[0] <= 0 or blocks[-1] != 100 or any(a >= b for a, b in zip(blocks, blocks[1:]))):
        raise ConfigError(f"mode.mdl.blocks={blocks}: block ends are percentages of the training rows, at least two, "
                          f"strictly rising from above 0 to exactly 100 (Voita & Titov's: {MDL_BLOCKS}).")
    if settings.control.seed < 0:
        raise ConfigError(f"mode.control.seed={settings.control.seed} is out of range: it must be >= 0.")


def _check_pooler(config: Config) -> None:
    if not config.backbone.trained_pooler:
        trained = sorted(path.stem for path in (CONF_DIR / "backbone").glob("*.yaml")
                         if (yaml.safe_load(path.read_text()) or {}).get("trained_pooler") is True)
        arm = config.backbone.pretrain.arm if config.backbone.pretrain is not None else None
        why = (f"arm {arm} trains no sentence head" if arm else f"backbone {config.backbone.name} has no trained pooler")
        raise ConfigError(f"pooling=pooler reads BERT's pooler, tanh(W h_0 + b), which only a sentence-level objective "
                          f"trains; {why}. Backbones that have one: "
                          f"{', '.join(f'backbone={name}' for name in trained)}, and backbone=pretrained with "
                          f"backbone.pretrain.arm={' or '.join(SENTENCE_ARMS)} (or set backbone.trained_pooler=true "
                          "for a checkpoint whose pooler you know was trained).")
    if config.layer not in ("all", -1):
        raise ConfigError(f"layer={config.layer!r} with pooling=pooler: the pooler reads the final layer's h_0; "
                          "use layer=-1 (or layer=all, which then means the final layer).")


def _first_last_at_embeddings(layer: int | str) -> ConfigError:
    return ConfigError(f"layer={layer} (the embedding output) with pooling=first_last_avg: it averages the first "
                       "transformer layer (hidden_states[1]) with the layer read, so it reads layers >= 1 (use "
                       "layer=1..N, -1 or all); the embedding output alone is pooling=mean layer=0.")


def check_special_tokens(pooling: str, backbone_name: str, adds_special_tokens: bool) -> None:
    """The nospecial poolings leave out the special tokens the tokenizer adds; a tokenizer that adds
    none makes them equal mean and max, so they are refused (a duplicate arm is not a comparison)."""
    if pooling in NOSPECIAL_POOLINGS and not adds_special_tokens:
        plain = pooling.removesuffix("_nospecial")
        raise ConfigError(f"pooling={pooling} pools without the special tokens ([CLS], [SEP], BOS, EOS) the "
                          f"tokenizer adds, but the tokenizer of backbone {backbone_name} adds none, so it would "
                          f"equal pooling={plain}: use pooling={plain}.")


def _check_pretrain(backbone: BackboneConfig) -> None:
    recipe = backbone.pretrain
    if recipe is None:
        if backbone.source == Source.pretrained and not backbone.location:
            raise ConfigError("backbone.source=pretrained needs backbone.location (a built recipe's name) or "
                              "backbone.pretrain (a recipe to build): use backbone=pretrained backbone.pretrain.arm=mlm_nsp.")
        return
    if backbone.source != Source.pretrained:
        raise ConfigError(f"backbone.pretrain is set, but backbone.source={backbone.source.value}: a recipe builds a "
                          "source=pretrained backbone (use backbone=pretrained).")
    if backbone.location:
        raise ConfigError(f"backbone.location={backbone.location!r} and backbone.pretrain are both set: the recipe names "
                          "the backbone; leave location empty.")
    check_recipe(recipe)
    if recipe.checkpoint_every <= 0:
        raise ConfigError(f"backbone.pretrain.checkpoint_every={recipe.checkpoint_every} is out of range: it must be "
                          "> 0 (steps between checkpoints).")
    # Data parallel splits every (global) batch into equal shares, one per device (pretrain.recipe.StepBatches).
    if isinstance(recipe.devices, int) and recipe.devices > 1 and recipe.batch_size % recipe.devices:
        raise ConfigError(f"backbone.pretrain.batch_size={recipe.batch_size} does not split over "
                          f"backbone.pretrain.devices={recipe.devices}: use a multiple of {recipe.devices} (it is the "
                          "global batch, shared out among the devices).")


def check_recipe(recipe: Any) -> None:
    """The checks of a pretraining recipe's fields, in one place for both of its forms: the
    `backbone.pretrain` config (validate, before any work) and a `pretrain.recipe.Recipe` made in
    code. Each message names the config key and what to use instead."""
    if recipe.arm not in ARMS:
        raise ConfigError(f"backbone.pretrain.arm={recipe.arm!r}: use one of {', '.join(ARMS)}.")
    if recipe.size not in PRETRAIN_SIZES:
        raise ConfigError(f"backbone.pretrain.size={recipe.size!r}: use one of {', '.join(PRETRAIN_SIZES)}.")
    for name in ("steps", "batch_size", "lr", "vocab_size", "seq_len"):
        if getattr(recipe, name) <= 0:
            raise ConfigError(f"backbone.pretrain.{name}={getattr(recipe, name)} is out of range: it must be > 0.")
    if not 0 <= recipe.warmup < 1:
        raise ConfigError(f"backbone.pretrain.warmup={recipe.warmup} is out of range: a fraction of the steps, "
                          "in [0, 1).")
    if recipe.seed < 0:
        raise ConfigError(f"backbone.pretrain.seed={recipe.seed} is out of range: it must be >= 0.")


def pooling_layers(pooling: str, layer: int | str, num_layers: int) -> list[int]:
    """The absolute layers a job of `pooling` computes (`absolute_layers`), within what it can read: the
    pooler and label_words read the final layer only, first_last_avg layers 1..num_layers (layer=all starts at 1)."""
    if pooling in (Pooling.pooler.value, Pooling.label_words.value):
        return [num_layers]
    layers = absolute_layers(layer, num_layers)
    if pooling == Pooling.first_last_avg.value:
        if layers == [0]:
            raise _first_last_at_embeddings(layer)
        layers = [resolved for resolved in layers if resolved >= 1]
    return layers


def absolute_layers(layer: int | str, num_layers: int) -> list[int]:
    """The hidden states `layer` names: 0 = embeddings .. num_layers = last block; negative counts
    back from the last (-1 = last); "all" = every one of them (probe mode)."""
    if layer == "all":
        return list(range(num_layers + 1))
    resolved = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= resolved <= num_layers:
        raise ConfigError(f"layer={layer} is out of range for a backbone with {num_layers} layers: "
                          f"use 0..{num_layers} or -1..-{num_layers + 1}.")
    return [resolved]
