"""The pretraining model and its cached, resumable build (poolbench.pretrain.model / .recipe), on a
tiny BERT, a 64-token vocabulary and synthetic batches in the data contract.

The synthetic corpus: [CLS] A [SEP] B [SEP] [PAD]..., A and B each one random token repeated
(t, t, ...), so a masked token is its neighbours' token; B starts with KEY iff sentence_label = 1,
so the sentence label is decodable from h_0 (B's first token is never masked).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import Logger
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import BertForPreTraining, BertModel, BertTokenizerFast

from poolbench.pretrain.model import PretrainingModule
from poolbench.pretrain.recipe import (BuildInterrupted, Recipe, StepBatches, build_pretrained, pretrained_dir,
                                      share_of, work_dir)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = 64
FIRST, KEY = len(SPECIALS), 10  # first ordinary id; B starts with KEY iff label 1
SEGMENT, SEQ_LEN, MASKED = 7, 20, 4  # tokens per segment; padded length; mask slots (the last one padding)
B_START = 1 + SEGMENT + 1  # position of B's first token


def _run(start: int, length: int) -> list[int]:
    return [FIRST + start % (VOCAB - FIRST)] * length


def make_rows(n: int, generator: torch.Generator) -> list[tuple[list[int], int]]:
    """(token ids of [CLS] A [SEP] B [SEP], sentence label) rows of the synthetic corpus."""
    rows = []
    for _ in range(n):
        a = _run(int(torch.randint(0, VOCAB, (), generator=generator)), SEGMENT)
        label = int(torch.randint(0, 2, (), generator=generator))
        b = _run(int(torch.randint(0, VOCAB, (), generator=generator)), SEGMENT)
        if label == 1:
            b = [KEY] + _run(KEY - FIRST + 1, SEGMENT - 1)
        elif b[0] == KEY:
            b = _run(KEY - FIRST + 1, SEGMENT)
        rows.append(([2, *a, 3, *b, 3], label))
    return rows


def collate(rows: list[tuple[list[int], int]], sentence: bool = True) -> dict[str, torch.Tensor]:
    """A batch in the data contract; masks MASKED - 1 random positions of each row (the global torch
    RNG: a build must make this reproducible) and leaves the last mask slot as padding."""
    n = len(rows)
    input_ids = torch.zeros(n, SEQ_LEN, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    positions = torch.zeros(n, MASKED, dtype=torch.long)
    labels = torch.full((n, MASKED), -100, dtype=torch.long)
    maskable = [p for p in range(1, 2 * SEGMENT + 2) if p not in (SEGMENT + 1, B_START)]
    for i, (ids, _) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention_mask[i, :len(ids)] = 1
        token_type_ids[i, SEGMENT + 2:len(ids)] = 1
        chosen = sorted(maskable[j] for j in torch.randperm(len(maskable))[:MASKED - 1].tolist())
        positions[i, :MASKED - 1] = torch.tensor(chosen)
        labels[i, :MASKED - 1] = input_ids[i, chosen]
        input_ids[i, chosen] = 4
    sentence_label = torch.tensor([label for _, label in rows]) if sentence else torch.full((n,), -100)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "mlm_positions": positions, "mlm_labels": labels, "sentence_label": sentence_label}


def make_batches_of(n_rows: int, batch_size: int, sentence: bool = True):
    """A make_batches: a shuffling DataLoader over a fixed synthetic corpus, masking in collate."""
    rows = make_rows(n_rows, torch.Generator().manual_seed(123))
    return lambda: DataLoader(rows, batch_size=batch_size, shuffle=True, drop_last=True,
                              collate_fn=lambda r: collate(r, sentence))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: a tiny model gains nothing from two, and loses much on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + [f"t{i}" for i in range(FIRST, VOCAB)]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(directory)
    return directory


def recipe(**changes) -> Recipe:
    fields = dict(arm="mlm_nsp", size="tiny", vocab_size=VOCAB, seq_len=SEQ_LEN, steps=8, batch_size=16, lr=1e-3,
                  warmup=0.1, seed=0, corpus="synthetic-v1")
    return Recipe(**{**fields, **changes})


def module_for(sentence_loss: bool, seed: int = 0) -> PretrainingModule:
    torch.manual_seed(seed)
    model = BertForPreTraining(recipe().bert_config())
    return PretrainingModule(model, sentence_loss=sentence_loss, lr=1e-3, weight_decay=0.01, warmup_ratio=0.1,
                             total_steps=10, step_seed=seed)


# ------------------------------------------------------------------------------------- the loss


def test_losses_equal_hf_bert_for_pretraining():
    """Known answer: HF's own loss on the same weights and batch, with `labels` = -100 everywhere
    but the masked positions. The MLM part (HF total - HF's NSP cross-entropy) equals ours to 1e-5
    (the padded mask slot, position 0 with label -100, must not count); with next_sentence_label
    the totals are equal to 1e-5."""
    module = module_for(sentence_loss=True).eval()
    batch = collate(make_rows(8, torch.Generator().manual_seed(1)))
    ours = module.losses(batch)
    labels = torch.full_like(batch["input_ids"], -100)
    for i in range(len(labels)):
        valid = batch["mlm_labels"][i] != -100
        labels[i, batch["mlm_positions"][i][valid]] = batch["mlm_labels"][i][valid]
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        hf = module.model(**inputs, labels=labels, next_sentence_label=batch["sentence_label"])
    hf_nsp = torch.nn.functional.cross_entropy(hf.seq_relationship_logits, batch["sentence_label"])
    assert int(ours["mlm_count"]) == 8 * (MASKED - 1)
    torch.testing.assert_close(ours["mlm_loss"], hf.loss - hf_nsp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["loss"], hf.loss, atol=1e-5, rtol=0)


def test_arm_without_sentence_loss_gives_pooler_and_sentence_head_no_gradient():
    """Known answer: an MLM-only arm never runs the sentence head, so the pooler's and
    seq_relationship's gradients are exactly zero (None), while the encoder's are not."""
    module = module_for(sentence_loss=False)
    batch = collate(make_rows(8, torch.Generator().manual_seed(2)), sentence=False)
    module.losses(batch)["loss"].backward()
    heads = [*module.model.bert.pooler.parameters(), *module.model.cls.seq_relationship.parameters()]
    assert all(p.grad is None or not p.grad.any() for p in heads)
    assert module.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- the build


class StepsLogger(Logger):
    """Records the steps it is asked to log at: which steps a (resumed) build trained."""

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []

    name = property(lambda self: "steps")
    version = property(lambda self: 0)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.steps.append(step)


@pytest.fixture(scope="module")
def learned(tokenizer_dir, tmp_path_factory):
    """A 150-step mlm_nsp build of the synthetic corpus (checkpoints kept): (recipe, directory, cache)."""
    cache = tmp_path_factory.mktemp("cache")
    r = recipe(steps=150, batch_size=32, lr=3e-3)
    directory = build_pretrained(r, make_batches_of(1024, 32), tokenizer_dir, cache, checkpoint_every=50,
                                 deterministic=True, keep_work=True)
    return r, directory, cache


def test_tiny_pretraining_learns_mlm_and_the_sentence_task(learned):
    """Known answer: on held-out synthetic rows, ~100 steps (150) bring the MLM loss from about ln(64) = 4.2
    (the same recipe's initial weights) to below half of it, and the sentence head, which has to
    read B's first token through h_0, well above chance (> 0.75; chance is 0.5)."""
    r, directory, _ = learned
    torch.manual_seed(0)  # the masking
    batch = collate(make_rows(256, torch.Generator().manual_seed(99)))
    torch.manual_seed(r.seed)
    initial = PretrainingModule(BertForPreTraining(r.bert_config()), sentence_loss=True, lr=0, weight_decay=0,
                                warmup_ratio=0, total_steps=1, step_seed=0).eval()
    trained = PretrainingModule(BertForPreTraining.from_pretrained(directory), sentence_loss=True, lr=0,
                                weight_decay=0, warmup_ratio=0, total_steps=1, step_seed=0).eval()
    with torch.no_grad():
        before, after = initial.losses(batch), trained.losses(batch)
    print(f"mlm loss {float(before['mlm_loss']):.3f} -> {float(after['mlm_loss']):.3f}, "
          f"sentence acc {float(after['sentence_correct'] / after['sentence_count']):.3f}")
    assert float(before["mlm_loss"]) > 3.5
    assert float(after["mlm_loss"]) < 0.5 * float(before["mlm_loss"])
    assert float(after["sentence_correct"] / after["sentence_count"]) > 0.75
    intrinsic = json.loads((directory / "intrinsic.json").read_text())
    assert "train/mlm_acc" in intrinsic["train"]


def test_built_directory_loads_as_bert_model_and_bert_for_pretraining(learned, tokenizer_dir):
    """Known answer: the directory is a complete HF BERT: BertModel and BertForPreTraining load it
    with no missing weights, its pooler equals the trained one (the final checkpoint's), which is
    not the initial one, and the tokenizer and recipe.json are beside it."""
    r, directory, cache = learned
    model, info = BertModel.from_pretrained(directory, output_loading_info=True)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    full, info = BertForPreTraining.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"]
    state = torch.load(work_dir(r, cache) / "last.ckpt", weights_only=False)["state_dict"]
    trained_pooler = state["model.bert.pooler.dense.weight"]
    torch.testing.assert_close(model.pooler.dense.weight, trained_pooler, atol=0, rtol=0)
    torch.testing.assert_close(full.bert.pooler.dense.weight, trained_pooler, atol=0, rtol=0)
    torch.manual_seed(r.seed)
    assert not torch.equal(BertForPreTraining(r.bert_config()).bert.pooler.dense.weight, trained_pooler)
    assert json.loads((directory / "recipe.json").read_text())["key"] == r.key()
    assert BertTokenizerFast.from_pretrained(directory).vocab == BertTokenizerFast.from_pretrained(tokenizer_dir).vocab


def test_resumed_build_equals_uninterrupted_build(tokenizer_dir, tmp_path):
    """Known answer: the same weights, exactly (CPU, deterministic). A build stopped at step 4 of 8
    (the kill) publishes nothing and leaves last.ckpt; the next build resumes there (it trains and
    logs only steps >= 4) and ends where an uninterrupted 8-step build ends. Dropout is on and the
    loader shuffles and masks at random, so this holds only if both are functions of the step."""
    r, make_batches = recipe(steps=8), make_batches_of(128, 16)
    whole = build_pretrained(r, make_batches, tokenizer_dir, tmp_path / "a", checkpoint_every=4, deterministic=True)
    with pytest.raises(BuildInterrupted):
        build_pretrained(r, make_batches, tokenizer_dir, tmp_path / "b", checkpoint_every=4, stop_after=4,
                         deterministic=True)
    assert not pretrained_dir(r, tmp_path / "b").exists() and (work_dir(r, tmp_path / "b") / "last.ckpt").exists()
    steps = StepsLogger()
    resumed = build_pretrained(r, make_batches, tokenizer_dir, tmp_path / "b", checkpoint_every=4, logger=steps,
                               deterministic=True, log_every_n_steps=1)
    assert steps.steps and min(steps.steps) >= 4
    assert not work_dir(r, tmp_path / "b").exists()  # removed once published
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_recipe_key_changes_with_every_field():
    """Known answer: the key is a hash of every field, so changing any one changes it, and equal
    recipes share it; the directory name is <arm>-<size>-<key>."""
    base = recipe()
    changed = [recipe(arm="mlm"), recipe(size="mini"), recipe(vocab_size=65), recipe(seq_len=21), recipe(steps=9),
               recipe(batch_size=8), recipe(lr=2e-3), recipe(warmup=0.2), recipe(seed=1), recipe(corpus="other"),
               recipe(weight_decay=0.0), recipe(grad_clip=0.5), recipe(precision="bf16-mixed")]
    assert len({base.key(), *(c.key() for c in changed)}) == len(changed) + 1
    assert recipe().key() == base.key() and base.name == f"mlm_nsp-tiny-{base.key()}"
    assert recipe(size="medium").bert_config().num_hidden_layers == 8
    assert recipe(size="small").bert_config().intermediate_size == 2048


@pytest.mark.slow
def test_a_recipe_on_the_packaged_corpus_builds_a_backbone_that_loads_and_probes(cache_dir, make_cfg, tmp_path):
    """End to end on real data: a 3-step mlm_nsp build of the packaged corpus loads as
    `backbone.source=pretrained` (2 layers, H=128: BERT-tiny's shape, its pooler kept), a missing
    recipe is a clear Unavailable, and a probe job reads its trained pooler."""
    from poolbench.assets import Unavailable
    from poolbench.backbones import load_backbone
    from poolbench.config import BackboneConfig, Family, Source
    from poolbench.jobs import run_job
    from poolbench.pretrain.build import build_backbone, recipe_for
    from poolbench.pretrain.examples import arm_examples, collate
    from poolbench.pretrain.intrinsic import intrinsic_scores

    recipe = recipe_for("mlm_nsp", "tiny", steps=3, seed=0, batch_size=4, cache_dir=cache_dir)
    directory = build_backbone(recipe, cache_dir, deterministic=True, log_every_n_steps=1)
    assert directory.name == recipe.name and (directory / "recipe.json").exists()
    config = BackboneConfig(name="nsp-tiny", source=Source.pretrained, location=recipe.name, family=Family.encoder_nsp,
                            trained_pooler=True)
    backbone = load_backbone(config, cache_dir)
    assert (backbone.num_layers, backbone.hidden_size) == (2, 128) and backbone.model.pooler is not None
    with pytest.raises(Unavailable, match="no pretrained backbone"):
        load_backbone(BackboneConfig(name="x", source=Source.pretrained, location="mlm-tiny-000000000000",
                                     family=Family.encoder_mlm), cache_dir)
    # Intrinsic scores on held-out documents, against HF's own prediction logits on the same batch.
    scores = intrinsic_scores(directory, recipe, cache_dir, max_examples=16, batch_size=16)
    batch = collate([arm_examples("mlm_nsp", 0, held_out=True, cache_dir=cache_dir)[i] for i in range(16)])
    hf = BertForPreTraining.from_pretrained(directory).eval()
    with torch.inference_mode():
        out = hf(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    picked = out.prediction_logits.gather(1, batch["mlm_positions"].unsqueeze(-1).expand(-1, -1, hf.config.vocab_size))
    real = batch["mlm_labels"] != -100
    assert scores["mlm_acc"] == pytest.approx(float((picked.argmax(-1) == batch["mlm_labels"])[real].float().mean()))
    nsp = (out.seq_relationship_logits.argmax(-1) == batch["sentence_label"]).float().mean()
    assert scores["nsp_acc"] == pytest.approx(float(nsp)) and scores["sop_acc"] is None
    assert json.loads((directory / "intrinsic.json").read_text())["held_out"] == scores
    overrides = ["mode=probe", "task=mcid", "pooling=pooler", "logger=none", "mode.max_epochs=2",
                 "backbone=tiny-bert", "backbone.name=nsp-tiny", "backbone.source=pretrained",
                 f"backbone.location={recipe.name}", "backbone.trained_pooler=true"]
    [record] = run_job(make_cfg(*overrides), tmp_path / "probe")
    assert record.factors.layer == 2 and record.metrics["n_test"] == 331


@pytest.mark.slow
def test_a_job_whose_backbone_is_built_never_loads_the_corpus(cache_dir, count_calls):
    """Known answer by counting: once a recipe is built, naming it again (every probe job of it does)
    calls load_corpus 0 times; with the cached fingerprint gone, once, and the name is the same."""
    from poolbench.config import BackboneConfig, Family, PretrainConfig, Source
    from poolbench.pretrain import build, corpus
    from poolbench.pretrain.corpus import corpus_fingerprint

    backbone = BackboneConfig(name="random-tiny", source=Source.pretrained, location="", family=Family.encoder_mlm,
                              pretrain=PretrainConfig(arm="random", size="tiny", steps=1, batch_size=4))
    built, _ = build.ensure_pretrained(backbone, cache_dir)
    real = corpus.load_corpus
    calls = count_calls(corpus, "load_corpus", build)
    again, facts = build.ensure_pretrained(backbone, cache_dir)
    assert again.location == built.location and len(calls) == 0 and facts["pretrain/steps"] == 0
    (corpus._corpus_dir(cache_dir, corpus.HELD_OUT_FRACTION, 0, None) / "fingerprint").unlink()
    assert corpus_fingerprint(cache_dir) == real(cache_dir).fingerprint and len(calls) == 1
    assert build.ensure_pretrained(backbone, cache_dir)[0].location == built.location and len(calls) == 1


def test_a_pretrained_backbone_loads_without_the_unexpected_heads_report(tokenizer_dir, tmp_path, caplog):
    """A backbone built here is a BertForPreTraining: `load_backbone` gives its encoder, weights and
    pooler equal to BertModel.from_pretrained's, without HF's report of the MLM and sentence heads
    as UNEXPECTED keys (that report, on the reference load, shows what is silenced and that
    transformers' warnings still get through)."""
    from poolbench.backbones import load_backbone
    from poolbench.config import BackboneConfig, Family, Source

    r = recipe(arm="random")
    directory = build_pretrained(r, make_batches_of(16, 16), tokenizer_dir, tmp_path)
    hf_logger = logging.getLogger("transformers")  # transformers does not propagate to the root logger
    hf_logger.addHandler(caplog.handler)
    try:
        backbone = load_backbone(BackboneConfig(name="random-tiny", source=Source.pretrained, location=r.name,
                                                family=Family.encoder_mlm), tmp_path)
        ours_said = caplog.text
        reference = BertModel.from_pretrained(directory)
    finally:
        hf_logger.removeHandler(caplog.handler)
    assert "UNEXPECTED" not in ours_said and "UNEXPECTED" in caplog.text
    assert type(backbone.model) is BertModel and backbone.model.pooler is not None
    ours, theirs = backbone.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


# ------------------------------------------------------------------------------------- data parallel


def test_ranks_get_disjoint_shares_whose_union_is_the_one_process_batch():
    """Sharding with explicit (rank, world size): at every step, rank r of 2 gets rows 8r..8r+7 of
    the one-process batch (the same masks), trimmed of padding only; the global tokens are counted
    in each; a batch size that does not split over the processes is refused, naming the key."""
    r, make_batches = recipe(steps=4, batch_size=16), make_batches_of(128, 16)
    whole = StepBatches(make_batches, r, position=lambda: 1)
    ranks = [StepBatches(make_batches, r, position=lambda: 1, shard=lambda rank=rank: (rank, 2)) for rank in (0, 1)]
    for batch, *shares in itertools.islice(zip(whole, *ranks), 5):
        for rank, share in enumerate(shares):
            assert share.keys() == batch.keys() and share["input_ids"].size(0) == 8
            rows = slice(8 * rank, 8 * rank + 8)
            length = share["input_ids"].size(1)
            assert int(batch["attention_mask"][rows, length:].sum()) == 0  # only padding trimmed
            for key, value in batch.items():
                expected = value[rows, :length] if key in ("input_ids", "token_type_ids", "attention_mask") else value[rows]
                assert torch.equal(share[key], expected), key
    assert whole.step_tokens == ranks[0].step_tokens == ranks[1].step_tokens
    assert whole.trained_tokens(3) == sum(whole.step_tokens[step] for step in (1, 2)) > 0
    with pytest.raises(ValueError, match=r"backbone.pretrain.batch_size=16 does not split over 3 processes"):
        next(iter(StepBatches(make_batches, r, position=lambda: 0, shard=lambda: (0, 3))))


def test_ranks_scaled_losses_average_to_the_gradient_of_one_global_mean():
    """Known answer, without dropout (eval mode): a batch split in two shares whose masked-token
    counts differ (3 vs 1 per row), each share's MLM loss scaled by scaled_to_global_mean, averaged
    as DDP averages gradients, gives the gradient of the one-process mean over the whole batch; the
    plain mean of the two shares' means does not."""
    from poolbench.pretrain.model import scaled_to_global_mean

    batch = collate(make_rows(8, torch.Generator().manual_seed(5)))
    batch["mlm_labels"][4:, 1:] = -100  # the second share masks 1 token per row, the first 3
    module = module_for(sentence_loss=False).eval()

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        module.zero_grad()
        loss.backward(retain_graph=True)
        return module.model.bert.embeddings.word_embeddings.weight.grad.clone()

    whole = gradient(module.losses(batch)["mlm_loss"])
    shares = [module.losses(share_of(batch, rank, 2)) for rank in (0, 1)]
    total = sum(share["mlm_count"] for share in shares)
    scaled = gradient(sum(scaled_to_global_mean(s["mlm_loss"], s["mlm_count"], total, 2) for s in shares) / 2)
    plain = gradient(sum(s["mlm_loss"] for s in shares) / 2)
    assert [int(s["mlm_count"]) for s in shares] == [12, 4]
    torch.testing.assert_close(scaled, whole, atol=1e-7, rtol=1e-5)
    assert not torch.allclose(plain, whole, atol=1e-5)


@pytest.mark.slow
def test_a_ddp_build_on_two_cpu_processes_equals_the_one_process_build(tokenizer_dir, tmp_path, monkeypatch):
    """Lightning DDP, 2 CPU processes (gloo, the subprocess launcher: tests/ddp_pretraining.py), 4
    steps, dropout off: each rank trained on its half of every one-process batch (disjoint rows,
    union = the batch), the build counted the global batches' tokens, published under the same
    recipe name, and its weights equal the one-process build's to float tolerance (the losses are
    scaled to one global mean: pretrain.model.global_mean). With dropout on they differ by the masks
    (measured: after 4 steps, |ddp - one| = 0.63 |one - initial|)."""
    import ddp_pretraining

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(name, None)
    script = Path(ddp_pretraining.__file__)
    done = subprocess.run([sys.executable, str(script), str(out), str(tokenizer_dir), "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = recipe(**ddp_pretraining.DDP_RECIPE)
    monkeypatch.setattr(Recipe, "bert_config", ddp_pretraining.without_dropout(Recipe.bert_config))
    one = build_pretrained(r, make_batches_of(128, 16), tokenizer_dir, tmp_path / "one", deterministic=True)
    ddp = pretrained_dir(r, out / "cache")
    global_batches = list(itertools.islice(StepBatches(make_batches_of(128, 16), r, position=lambda: 0), r.steps))
    seen = [torch.load(out / f"seen-{rank}.pt") for rank in (0, 1)]
    for rank, steps in enumerate(seen):
        assert [s["step"] for s in steps] == list(range(r.steps)) and {s["rank"] for s in steps} == {rank}
        for step, share in zip(steps, global_batches):
            expected = share_of(share, rank, 2)
            assert torch.equal(step["input_ids"], expected["input_ids"])
    tokens = sum(int(batch["attention_mask"].sum()) for batch in global_batches)
    assert json.loads((ddp / "intrinsic.json").read_text())["train"]["process_tokens"] == tokens
    assert json.loads((one / "intrinsic.json").read_text())["train"]["process_tokens"] == tokens
    a, b = load_file(one / "model.safetensors"), load_file(ddp / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)
