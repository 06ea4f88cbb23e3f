"""A prompt template applied to a task's texts, tokenized so that the readout position is the template's end.

Three choices, and why:
- The TEXT is truncated, never the template. `backbone.max_length` bounds the text exactly as it bounds
  it for every other readout (the tokens the plain encoding keeps, special tokens counted), and the
  template's tokens come on top: truncating the templated string would cut `means in one word:"`
  from every long text, and the readout would no longer be PromptEOL's. The text is cut at a character
  offset of the tokenizer's (a fast tokenizer is needed), so the prompted text holds the same words the
  plain readouts see.
- Special tokens the tokenizer appends at the END ([SEP] of a BERT-style tokenizer, as the test
  decoder tiny-gpt2 borrows; an EOS some decoder tokenizers append) are left out: the word is
  predicted after the template's last token, not after an end-of-text marker, so the last real
  token must be the template's. Special tokens at the start (a BOS) stay: the model was trained with them.
  SmolLM2 adds none.
- The template is used verbatim (`normalize_text`, for backbones trained on normalised text, applies
  to the text only), and "{text}" marks the one place the text goes (`str.replace`, not `str.format`,
  so braces elsewhere in a template or a text are literal).
"""

from __future__ import annotations

from typing import Callable, Sequence

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase

from poolbench.pooling import special_token_ids
from poolbench.tasks import Task

PLACEHOLDER = "{text}"


def split_template(template: str | None) -> tuple[str, str]:
    """(the text before the placeholder, the text after it). ValueError unless it occurs exactly once."""
    if template is None or template.count(PLACEHOLDER) != 1:
        raise ValueError(f"pooling.template={template!r}: a prompt template holds {PLACEHOLDER} exactly once, "
                         "where the text goes")
    prefix, _, suffix = template.partition(PLACEHOLDER)
    return prefix, suffix


def apply_template(template: str, text: str) -> str:
    prefix, suffix = split_template(template)
    return prefix + text + suffix


def trailing_special_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many special tokens the tokenizer appends after a text (1 for [SEP], 0 for SmolLM2's)."""
    special = set(special_token_ids(tokenizer))
    ids = tokenizer("a")["input_ids"]
    count = 0
    while count < len(ids) and ids[len(ids) - 1 - count] in special:
        count += 1
    return count


def truncated_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[str]:
    """Each text cut to the content tokens its plain encoding keeps under `max_length` (special tokens
    counted, on the tokenizer's truncation side), at the tokenizer's character offsets."""
    if not tokenizer.is_fast:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: the prompt readouts cut texts at "
                         "the character offsets only fast tokenizers report")
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    encoded = tokenizer(list(texts), return_offsets_mapping=True, return_special_tokens_mask=True)
    out = []
    for text, offsets, special in zip(texts, encoded["offset_mapping"], encoded["special_tokens_mask"]):
        content = [span for span, is_special in zip(offsets, special) if not is_special]
        if len(content) <= budget:
            out.append(text)
        elif tokenizer.truncation_side == "left":
            out.append(text[content[len(content) - budget][0]:])
        else:
            out.append(text[:content[budget - 1][1]])
    return out


def tokenize_prompted(task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int,
                      normalize_text: Callable[[str], str] | None = None) -> DatasetDict:
    """The task's splits as `data.tokenize` makes them (model inputs, `length`, label, id), each text
    truncated (`truncated_texts`), wrapped in `template`, and without the special tokens the tokenizer
    appends, so that the last real token of every row is the template's last token."""
    if len(task.text_fields) != 1:
        raise ValueError(f"task {task.name} holds pairs of texts {list(task.text_fields)}; a prompt template wraps "
                         "one text")
    [field] = task.text_fields
    prefix, suffix = split_template(template)
    trailing = trailing_special_tokens(tokenizer)

    def encode(batch: dict) -> dict:
        texts = batch[field] if normalize_text is None else [normalize_text(text) for text in batch[field]]
        prompted = [prefix + text + suffix for text in truncated_texts(texts, tokenizer, max_length)]
        encoded = dict(tokenizer(prompted))
        if trailing:
            encoded = {name: [row[:-trailing] for row in rows] for name, rows in encoded.items()}
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return task.splits.map(encode, batched=True, remove_columns=[field], desc="tokenize prompted")


def label_word_tokens(tokenizer: PreTrainedTokenizerBase, template: str, label_names: Sequence[str],
                      label_words: dict[str, str]) -> list[int]:
    """The token id that begins each class's label word right after the template (one per label, in the
    task's label order): `suffix + word` tokenized, less the suffix's own tokens. ValueError naming the
    fix when a label has no word, a word merges into the template's last token, or two classes' words
    begin with the same token (their probabilities could not be told apart)."""
    missing = [name for name in label_names if name not in label_words]
    if missing:
        raise ValueError(f"task.label_words has no word for the labels {missing} (it maps {sorted(label_words)}); "
                         "give every label of the task one word")
    _, suffix = split_template(template)
    end = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    first = []
    for name in label_names:
        word = label_words[name]
        ids = tokenizer(suffix + word, add_special_tokens=False)["input_ids"]
        if ids[:len(end)] != end or len(ids) == len(end):
            raise ValueError(f"the label word {word!r} (label {name!r}) merges with the template's end {suffix!r} "
                             "when tokenized, so no next token begins it: choose another word or template")
        first.append(ids[len(end)])
    shared = {tokenizer.convert_ids_to_tokens(t): [n for n, f in zip(label_names, first) if f == t]
              for t in first if first.count(t) > 1}
    if shared:
        raise ValueError(f"task.label_words: classes share their first token {shared}; give them words that "
                         "begin differently")
    return first
