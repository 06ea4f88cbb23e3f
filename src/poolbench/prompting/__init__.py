"""Prompt readouts of a causal decoder: what practitioners read from a decoder instead of a summary token.

  prompt_last   PromptEOL (Jiang et al. 2023, "Scaling Sentence Embeddings with Large Language Models"):
                the text wrapped in a template, `This sentence : "<text>" means in one word:"`, and the
                state of the template's last token at every layer: the position that predicts the one
                word, so it has to hold the sentence's meaning. A probe head trains on it like on any
                readout (every protocol).
  label_words   the zero-shot reference: the decoder's next-token distribution at that same position,
                restricted to the first token of one word per class (`task.label_words`); the class
                whose word is likeliest is the prediction. No head is trained; it reads the final layer.

Why these are poolings (`pooling=prompt_last`, `pooling=label_words`) with a template value
(`pooling.template`), not a backbone or task option with `pooling=last`: the report compares readouts
by their pooling factor, so a prompted `last` must not share `last`'s name; and a pooling is where a
readout that cannot apply is refused (an encoder, a pair task, a task without label words), with a
refused record, like the pooler. The template changes the encoded text, so prompted vectors are a
feature-cache entry of their own, keyed by the plain entry's identity plus the template
(`entry.py`): every existing entry keeps its key.

Modules:
  template.py     the template applied to a text, truncation of the text (never of the template),
                  the label words' first tokens
  checks.py       what a prompt readout needs, checked by validation.validate before any work
  entry.py        the prompted feature-cache entry (the last real token's state of every layer)
  label_words.py  zero-shot classification by the next-token probabilities of the label words
  mode.py         the probe mode of both readouts (jobs.py routes them here)
"""

# The pooling values this package computes (config.Pooling).
PROMPT_LAST = "prompt_last"
LABEL_WORDS = "label_words"
PROMPT_POOLINGS = (PROMPT_LAST, LABEL_WORDS)
# Bump when the template's application (tokenization, truncation, the readout position) changes what a
# prompt readout computes: it is part of their feature keys and run ids.
PROMPT_VERSION = 1
# PromptEOL's template (Jiang et al. 2023), as conf/pooling/prompt_last.yaml and label_words.yaml set it.
PROMPTEOL = 'This sentence : "{text}" means in one word:"'
