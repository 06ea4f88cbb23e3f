"""Throughput of the pretraining step (poolbench.pretrain.model) against a bare HF step, and the floor.

    .venv/bin/python benchmarks/pretrain_benchmark.py [--sizes tiny mini] [--seq-len 128] [--batch 32]

Two arms, on the SAME batches (random ids, full length, 15% of positions masked, NSP labels),
the same initial weights, dropout on, fp32 on the CPU:
  ours  PretrainingModule.losses (exactly what training_step computes, minus self.log), backward,
        AdamW step and scheduler step from its configure_optimizers. Timed OUTSIDE Lightning's loop:
        the loop's own overhead (hooks, logging, per-step seeding) is not in this number.
  HF    BertForPreTraining(**inputs, labels=..., next_sentence_label=...) as users write it: full
        [B, T, V] logits with labels = -100 at unmasked positions, backward, torch AdamW step.
Neither clips gradients. Arms are interleaved (alternating which goes first), each repeat times
`--steps` steps after one warm-up step, and the best of `--repeats` is kept. tokens = B x T.

The floor: a step needs at least 6 x (non-embedding parameters) FLOPs per token (forward 2,
backward 4; the vocabulary projection is tied to the embeddings and left out, as is attention's
T^2 term), run at the measured fp32 peak of one 2048^3 matmul. `of floor` = achieved / floor
tokens/s. A second floor adds the vocabulary projection the MLM loss cannot avoid, at the masked
positions only (6 x B x M x H x V per step): at small H it costs more than the encoder. Another process on the CPU distorts every number: the header prints the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch
from transformers import BertForPreTraining

from poolbench.pretrain.model import PretrainingModule
from poolbench.pretrain.recipe import Recipe


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def matmul_peak(n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` fp32 n^3 matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_batches(n: int, batch: int, seq_len: int, vocab: int, generator: torch.Generator) -> list[dict]:
    masked = round(0.15 * seq_len)
    batches = []
    for _ in range(n):
        input_ids = torch.randint(5, vocab, (batch, seq_len), generator=generator)
        positions = torch.stack([torch.randperm(seq_len - 1, generator=generator)[:masked] + 1 for _ in range(batch)])
        labels = input_ids.gather(1, positions)
        input_ids.scatter_(1, positions, 4)
        token_type_ids = (torch.arange(seq_len) >= seq_len // 2).long().expand(batch, -1).contiguous()
        full_labels = torch.full_like(input_ids, -100).scatter_(1, positions, labels)
        batches.append({"input_ids": input_ids, "token_type_ids": token_type_ids,
                        "attention_mask": torch.ones_like(input_ids), "mlm_positions": positions,
                        "mlm_labels": labels, "sentence_label": torch.randint(0, 2, (batch,), generator=generator),
                        "full_labels": full_labels})
    return batches


def non_embedding_params(model: BertForPreTraining) -> int:
    embeddings = {id(p) for p in model.bert.embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def bench(size: str, args) -> None:
    recipe = Recipe(arm="mlm_nsp", size=size, vocab_size=args.vocab, seq_len=args.seq_len, steps=1000,
                    batch_size=args.batch, lr=1e-4, warmup=0.01, seed=0, corpus="benchmark")
    torch.manual_seed(0)
    ours_model = BertForPreTraining(recipe.bert_config())
    hf_model = BertForPreTraining(recipe.bert_config())
    hf_model.load_state_dict(ours_model.state_dict())
    module = PretrainingModule(ours_model, sentence_loss=True, lr=recipe.lr, weight_decay=recipe.weight_decay,
                               warmup_ratio=recipe.warmup, total_steps=recipe.steps, step_seed=0)
    configured = module.configure_optimizers()
    ours_opt, ours_sched = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    hf_model.train()
    hf_opt = torch.optim.AdamW(hf_model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    batches = make_batches(args.steps, args.batch, args.seq_len, args.vocab, torch.Generator().manual_seed(1))

    def ours_step(batch):
        module.losses(batch)["loss"].backward()
        ours_opt.step()
        ours_sched.step()
        ours_opt.zero_grad(set_to_none=True)

    def hf_step(batch):
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        hf_model(**inputs, labels=batch["full_labels"], next_sentence_label=batch["sentence_label"]).loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    arms = {"ours": ours_step, "HF": hf_step}
    for step in arms.values():
        step(batches[0])  # warm-up
    best = {name: float("inf") for name in arms}
    for repeat in range(args.repeats):
        for name in (list(arms) if repeat % 2 == 0 else list(arms)[::-1]):
            best[name] = min(best[name], _timed(lambda: [arms[name](b) for b in batches]))
    tokens = args.steps * args.batch * args.seq_len
    params = non_embedding_params(ours_model)
    floor = args.peak / (6 * params)
    masked = round(0.15 * args.seq_len)
    head_flops = 6 * args.batch * masked * ours_model.config.hidden_size * args.vocab  # per step
    floor_head = args.peak * args.batch * args.seq_len / (6 * params * args.batch * args.seq_len + head_flops)
    rate = {name: tokens / seconds for name, seconds in best.items()}
    print(f"\n{size}: non-embedding params {params / 1e6:.2f} M, vocab {args.vocab}, batch {args.batch} x {args.seq_len}")
    print(f"  {'arm':<5} {'tokens/s':>10} {'s/step':>8} {'of floor':>9} {'of floor+head':>14}")
    for name in arms:
        print(f"  {name:<5} {rate[name]:>10,.0f} {best[name] / args.steps:>8.3f} {rate[name] / floor:>9.1%} "
              f"{rate[name] / floor_head:>14.1%}")
    print(f"  floor {floor:,.0f} tokens/s (encoder), {floor_head:,.0f} (encoder + masked-token vocab projection)")
    print(f"  ratio ours/HF = {rate['ours'] / rate['HF']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mini"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=30522, help="BERT's uncased WordPiece size")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.2f}")
    args.peak = matmul_peak()
    print(f"fp32 matmul peak (2048^3, best of 3): {args.peak / 1e9:.1f} GFLOP/s")
    for size in args.sizes:
        bench(size, args)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
