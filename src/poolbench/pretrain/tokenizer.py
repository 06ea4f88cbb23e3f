"""The pretraining tokenizer: WordPiece with BERT's normalisation, trained on the corpus once.

Lower-cased, accents stripped, BERT's pre-tokenizer and post-processor ([CLS] A [SEP] B [SEP],
token types 0 then 1), special tokens [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4. Saved with
`save_pretrained` as a BertTokenizer(Fast) under
  <cache root>/pretrain/tokenizer-<corpus fingerprint>-<vocab size>/
so `AutoTokenizer.from_pretrained(directory)` loads it; trained only from the pretraining
documents (never the held-out ones), the same vocabulary in every build (`frequent_characters`).
A cache built before that fix keeps its tokenizer, whose rarest characters may differ; the
recipe's name does not pin the tokenizer yet (only the corpus and the vocabulary size).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from poolbench.assets import build_once, cache_root
from poolbench.pretrain.corpus import Corpus

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in this order
DEFAULT_VOCAB_SIZE = 8192
MIN_FREQUENCY = 2  # a pair seen once is not merged (BERT's WordPiece default)
LIMIT_ALPHABET = 1000  # rarer characters become [UNK] (as in BERT's WordPiece training)
MODEL_MAX_LENGTH = 512


def _sentences(documents: Iterable[list[str]]) -> Iterator[str]:
    for document in documents:
        yield from document


def frequent_characters(sentences: Iterable[str], normalizer, limit: int) -> list[str]:
    """The `limit` most frequent non-space characters of the normalised sentences, ties broken by
    code point: the alphabet WordPiece keeps, chosen the same way in every process."""
    counts = Counter(char for sentence in sentences for char in normalizer.normalize_str(sentence)
                     if not char.isspace())
    return sorted(sorted(counts), key=lambda char: -counts[char])[:limit]


def train_wordpiece(documents: Sequence[list[str]], vocab_size: int, out: Path) -> None:
    """Train WordPiece on the documents' sentences and save it as a BertTokenizer in `out`."""
    from transformers import BertTokenizerFast

    model = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    model.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                  lowercase=True)
    model.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = frequent_characters(_sentences(documents), model.normalizer, LIMIT_ALPHABET)
    # Two ways the trainer depends on hash order, which changes between builds (measured on the
    # packaged corpus: 2,617 of 8,192 entries differed between two builds):
    # - its own limit_alphabet breaks ties between equally rare characters in hash order; given
    #   exactly the alphabet to keep, it keeps that;
    # - it numbers the continuation characters ("##a") as it meets them in words, in hash order,
    #   and breaks ties between equally frequent merges by those numbers. Listed after the special
    #   tokens, they are numbered first, by character. (Only the vocabulary is kept below, so they
    #   are ordinary tokens of the saved tokenizer.)
    continuation = [f"##{char}" for char in alphabet]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=MIN_FREQUENCY,
                                        special_tokens=SPECIAL_TOKENS + continuation, initial_alphabet=alphabet,
                                        limit_alphabet=len(alphabet), continuing_subword_prefix="##")
    model.train_from_iterator(_sentences(documents), trainer)
    # BertTokenizerFast rebuilds BERT's normaliser, pre-tokenizer, post-processor and decoder around the vocabulary.
    tokenizer = BertTokenizerFast(vocab=model.get_vocab(), do_lower_case=True, strip_accents=True,
                                  tokenize_chinese_chars=True, model_max_length=MODEL_MAX_LENGTH)
    tokenizer.save_pretrained(str(out))


def tokenizer_dir(corpus: Corpus, vocab_size: int = DEFAULT_VOCAB_SIZE, cache_dir: str | Path | None = None) -> Path:
    """The saved tokenizer of (corpus fingerprint, vocab size), trained on the corpus' pretraining
    documents the first time it is asked for."""
    target = cache_root(cache_dir) / "pretrain" / f"tokenizer-{corpus.fingerprint}-{vocab_size}"
    return build_once(target, lambda out: train_wordpiece(corpus.documents, vocab_size, out))


def load_tokenizer(corpus: Corpus, vocab_size: int = DEFAULT_VOCAB_SIZE, cache_dir: str | Path | None = None):
    """The corpus' tokenizer, as AutoTokenizer loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir(corpus, vocab_size, cache_dir)))
