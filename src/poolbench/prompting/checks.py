"""What a prompt readout needs, checked from the config before any work (validation.validate calls this).

A sweep may cross a prompt readout with encoders, pair tasks or tasks without label words: each such
job is refused with a ConfigError that says why and what to use, and leaves a refused record
(jobs.run_job), so the sweep goes on and the report counts it.

Why encoders are refused rather than allowed: PromptEOL reads the state that PREDICTS the word after
`means in one word:"`, which exists only in a causal decoder trained on next-token prediction. An
encoder's last real token ([SEP], </s>) was trained to predict nothing; its prompt readout is
PromptBERT's [MASK] state (Jiang et al. 2022), a different readout with a different template, and its
bidirectional states would make "the last token" no different in kind from any other.
"""

from __future__ import annotations

import yaml

from poolbench.config import CONF_DIR, Config, ConfigError, Family, Mode, Protocol
from poolbench.prompting import LABEL_WORDS, PROMPTEOL
from poolbench.tasks.catalog import PAIR_SOURCES


def _options(group: str, has) -> list[str]:
    """The options of a config group whose yaml satisfies `has`, for messages naming what to use instead."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml")
                  if has(yaml.safe_load(path.read_text()) or {}))


def check_prompt_readout(config: Config) -> None:
    pooling = config.pooling.name.value
    if config.mode.name != Mode.probe:
        raise ConfigError(f"pooling={pooling} reads a frozen decoder (a prompt readout): use mode=probe.")
    if config.backbone.family != Family.decoder:
        decoders = _options("backbone", lambda entry: entry.get("family") == Family.decoder.value)
        raise ConfigError(
            f"pooling={pooling} reads the state that predicts the next word after a prompt (PromptEOL), which only a "
            f"causal decoder has; backbone {config.backbone.name} is an encoder (family "
            f"{config.backbone.family.value}): bidirectional, its last token predicts no next word. Use a decoder: "
            f"{', '.join(f'backbone={name}' for name in decoders)}.")
    template = config.pooling.template
    if template is None or template.count("{text}") != 1:
        raise ConfigError(f"pooling.template={template!r}: pooling={pooling} needs a template with {{text}} exactly "
                          f"once, where the text goes; PromptEOL's is pooling.template='{PROMPTEOL}'.")
    reference = config.mode.reference_dtype
    if reference is not None and reference != config.backbone.dtype:
        raise ConfigError(f"mode.reference_dtype={reference.value} with pooling={pooling}: the closeness to another "
                          "precision is measured on the plain feature entries, not on prompted ones; leave "
                          "mode.reference_dtype=null for the prompt readouts.")
    if config.task.text_pair_column or config.task.source in PAIR_SOURCES:
        raise ConfigError(f"task={config.task.name} is a task of sentence pairs; pooling={pooling}'s template wraps "
                          "one text. Use a single-text task (task=mcid, task=trec, ...).")
    if pooling == LABEL_WORDS:
        _check_label_words(config)


def _check_label_words(config: Config) -> None:
    if config.mode.protocol != Protocol.full:
        raise ConfigError(f"mode.protocol={config.mode.protocol.value} with pooling=label_words: the label words "
                          "train nothing, so there is no training protocol to apply; use mode.protocol=full.")
    if config.layer not in ("all", -1):
        raise ConfigError(f"layer={config.layer!r} with pooling=label_words: the next-token probabilities are "
                          "read at the final layer; use layer=-1 (or layer=all, which then means the final layer).")
    if not config.task.label_words:
        mapped = _options("task", lambda entry: bool(entry.get("label_words")))
        raise ConfigError(
            f"pooling=label_words scores one word per class, but task {config.task.name} has no label-word map "
            "(task.label_words). Give one, task.label_words='{<label name>: <word>, ...}', or use a task that has "
            f"one: {', '.join(f'task={name}' for name in mapped)}.")
