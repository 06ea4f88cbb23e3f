"""Zero-shot classification by label words: the decoder's own next-token probabilities, no head trained.

Each test text is wrapped in the template (`template.py`: PromptEOL's, by default, ends with
`means in one word:"`), and the language model's next-token distribution after the template's last
token is read at the first token of each class's label word (`task.label_words`, one word per class,
documented per task in conf/task/). The class probabilities are those next-token probabilities
renormalised over the classes (a softmax of the selected logits), the prediction their argmax
(prompt-based zero-shot classification as in GPT-3's, Brown et al. 2020, and the "verbalizer" of
Schick & Schütze 2021, with one token per class). Uncalibrated on purpose: the raw reference a probe
head must beat; `label_words/mass`, the mean next-token probability all label words receive together,
says how much of the model's belief the words capture (low: the template does not elicit them).

It reads the final layer only (the LM head reads it), scores the test split only (nothing is selected,
so validation has no use), and is deterministic: the seed is not part of its runs' identity (jobs.py).
The logits are the causal LM's own (`backbones.load_causal_lm`: its head and any final logit transform),
computed at each row's last real token only (`logits_to_keep`), so a vocabulary-sized row is never
materialised for every position of a batch.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from poolbench.backbones import load_causal_lm, model_inputs
from poolbench.config import Job
from poolbench.encoding import encoding_batches
from poolbench.pooling import last_token_index
from poolbench.probe import metrics_of
from poolbench.prompting.template import label_word_tokens, tokenize_prompted
from poolbench.records import RunResult
from poolbench.tasks import load_task

log = logging.getLogger(__name__)


def next_token_log_probs(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                         token_ids: list[int], max_tokens: int) -> Tensor:
    """float32 [n, len(token_ids)]: log P(next token = t | text) after each row's last real token, over the
    whole vocabulary, at the given token ids; rows in dataset order. Length-sorted batches of at most
    `max_tokens` padded tokens, positions counted over real tokens (`model_inputs`): either padding side."""
    out = torch.empty(len(dataset), len(token_ids))
    columns = torch.tensor(token_ids)
    with torch.inference_mode():
        for positions, batch in encoding_batches(dataset, tokenizer, max_tokens):
            last = last_token_index(batch["attention_mask"]).unsqueeze(1)  # [batch, 1]: one position per row
            logits = lm(**model_inputs(lm, batch), logits_to_keep=last, use_cache=False).logits[:, 0].float()
            out[torch.from_numpy(positions)] = logits.log_softmax(-1)[:, columns]
    return out


def run(job: Job) -> list[RunResult]:
    """The zero-shot job: one result, at the final layer, with test accuracy and F1 like a probe's."""
    started = time.perf_counter()
    task = load_task(job.task, job.cache_dir)
    backbone, lm = load_causal_lm(job.backbone, job.cache_dir)
    [layer] = job.layers
    if layer != backbone.num_layers:
        raise ValueError(f"pooling=label_words reads the final layer ({backbone.num_layers}), not layer {layer}")
    tokens = label_word_tokens(backbone.tokenizer, job.template, task.label_names, dict(job.task.label_words or {}))
    test = tokenize_prompted(task, backbone.tokenizer, job.template, job.backbone.max_length,
                             backbone.normalize_text)["test"]
    encode_started = time.perf_counter()
    log_probs = next_token_log_probs(lm, backbone.tokenizer, test, tokens, job.mode.encode_batch_tokens)
    encode_s = time.perf_counter() - encode_started
    labels = torch.tensor(test["label"], dtype=torch.long)
    probs = log_probs.softmax(-1)
    test_metrics = metrics_of(log_probs, labels, len(tokens))
    mass = float(log_probs.exp().sum(-1).mean())
    predictions = pd.DataFrame({"id": np.asarray(test["id"]), "label": labels.numpy(),
                                "prediction": probs.argmax(-1).numpy(), "probs": list(probs.numpy())})
    log.info("label_words: test accuracy %.3f, label-word mass %.3f, %d texts in %.1f s", test_metrics["acc"], mass,
             len(labels), encode_s)
    return [RunResult(
        layer=layer,
        metrics={"test/acc": test_metrics["acc"], "test/f1": test_metrics["f1"], "n_test": len(labels), "n_train": 0,
                 "n_labels": len(tokens), "label_words/mass": mass},
        # What stood for each class: the token that begins its word (nothing was selected on validation).
        selection={"label_tokens": backbone.tokenizer.convert_ids_to_tokens(tokens)},
        timings={"encode_s": encode_s, "train_s": 0.0, "total_s": time.perf_counter() - started},
        predictions=predictions.sort_values("id").reset_index(drop=True),
    )]
