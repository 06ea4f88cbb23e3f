"""Probe heads: the batched program is torch's AdamW on nn.Linear, heads do not interact, test never selects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poolbench.jobs import run_job as run
from poolbench.probe import seed_of, init_heads, probe_layers, train_heads
from poolbench.records import read_predictions, read_record

PROBE = ["mode=probe", "task=mcid", "logger=none", "backbone=tiny-bert", "mode.max_epochs=5"]


def blobs(n: int, layers: int = 3, hidden: int = 8, labels: int = 4, seed: int = 0):
    """Separable-ish Gaussian blobs per layer: x [layers, n, hidden], y [n]."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, labels, (n,), generator=generator)
    centres = torch.randn(layers, labels, hidden, generator=generator)
    return centres[:, y] + torch.randn(layers, n, hidden, generator=generator), y


def torch_adamw_head(x: torch.Tensor, y: torch.Tensor, wd: float, lr: float, seed: int, batch_size: int,
                     epochs: int) -> nn.Linear:
    """The reference: head (layer 0, wd) of `init_heads` as an nn.Linear, trained by torch.optim.AdamW
    (weight decay on the weight only) on the minibatches `train_heads` draws for this seed."""
    weight, bias = init_heads([0], [wd], seed, x.shape[-1], 4)
    linear = nn.Linear(x.shape[-1], 4)
    with torch.no_grad():
        linear.weight.copy_(weight[0, :, 0].T)
        linear.bias.copy_(bias[0, 0])
    optimizer = torch.optim.AdamW([{"params": [linear.weight], "weight_decay": wd},
                                   {"params": [linear.bias], "weight_decay": 0.0}], lr=lr)
    order = torch.Generator().manual_seed(seed_of("order", seed))
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=order).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(linear(x[0, batch]), y[batch]).backward()
            optimizer.step()
    return linear


def test_one_batched_head_is_torch_adamw_on_a_linear_layer():
    x, y = blobs(96, layers=1)
    val_x, val_y = blobs(32, layers=1, seed=1)
    lr, wd, seed, batch_size = 0.05, 0.1, 3, 16
    heads = train_heads(x, y, val_x, val_y, [0], [wd], 4, seed, lr, batch_size, max_epochs=1, patience=5)
    linear = torch_adamw_head(x, y, wd, lr, seed, batch_size, epochs=1)
    torch.testing.assert_close(heads.weight[0, :, 0], linear.weight.detach().T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heads.bias[0, 0], linear.bias.detach(), atol=1e-5, rtol=1e-4)


def test_a_head_that_outlives_the_other_heads_of_its_layer_is_still_torch_adamw():
    # The strongly decayed head stops first and leaves the program; the other trains on alone.
    x, y = blobs(260, layers=1)
    x, y, val_x, val_y = x[:, :200].clone(), y[:200], x[:, 200:].clone(), y[200:]  # same blobs: val can improve
    lr, seed, batch_size, decays = 0.01, 0, 32, [0.0, 30.0]
    heads = train_heads(x, y, val_x, val_y, [0], decays, 4, seed, lr, batch_size, max_epochs=40, patience=3)
    assert int(heads.epoch[0, 1]) + 3 < int(heads.epoch[0, 0])  # head 0's best epoch came after head 1 stopped
    for d, wd in enumerate(decays):
        linear = torch_adamw_head(x, y, wd, lr, seed, batch_size, epochs=int(heads.epoch[0, d]))
        torch.testing.assert_close(heads.weight[0, :, d], linear.weight.detach().T, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(heads.bias[0, d], linear.bias.detach(), atol=1e-5, rtol=1e-4)


def test_heads_trained_together_equal_heads_trained_alone():
    x, y = blobs(200)
    val_x, val_y = blobs(60, seed=1)
    decays = [0.0, 1e-2]
    together = train_heads(x, y, val_x, val_y, [0, 1, 2], decays, 4, 0, 0.01, 32, max_epochs=30, patience=3)
    for i, layer in enumerate([0, 1, 2]):
        for d, wd in enumerate(decays):
            alone = train_heads(x[i:i + 1], y, val_x[i:i + 1], val_y, [layer], [wd], 4, 0, 0.01, 32, 30, 3)
            assert together.epoch[i, d] == alone.epoch[0, 0]  # early stopping is per head
            torch.testing.assert_close(together.weight[i, :, d], alone.weight[0, :, 0], atol=1e-5, rtol=1e-4)
            assert together.val_acc[i, d] == alone.val_acc[0, 0]


def test_a_layer_whose_heads_all_stopped_leaves_without_moving_the_others():
    x, y = blobs(260)
    x, y, val_x, val_y = x[:, :200].clone(), y[:200], x[:, 200:].clone(), y[200:]  # same blobs: val can improve
    x[0], val_x[0] = 1.0, 1.0  # one vector for every example: layer 0's heads stop within a few epochs
    decays = [0.0, 0.1]
    together = train_heads(x, y, val_x, val_y, [0, 1, 2], decays, 4, 0, 0.01, 32, max_epochs=40, patience=3)
    assert int(together.epoch[0].max()) + 3 < together.epochs_run  # layer 0 left while the others trained on
    for i in (1, 2):
        for d, wd in enumerate(decays):
            alone = train_heads(x[i:i + 1], y, val_x[i:i + 1], val_y, [i], [wd], 4, 0, 0.01, 32, 40, 3)
            assert together.epoch[i, d] == alone.epoch[0, 0]
            torch.testing.assert_close(together.weight[i, :, d], alone.weight[0, :, 0], atol=1e-5, rtol=1e-4)
            assert together.val_acc[i, d] == alone.val_acc[0, 0]


def test_test_labels_never_move_the_selection(make_cfg, features_of, tmp_path, monkeypatch):
    cfg = make_cfg(*PROBE, "pooling=mean")
    found, _ = features_of(cfg)
    first, _ = probe_layers(found, "mean", [0, 1, 2], cfg.mode, 0, None)
    real_labels = found.labels

    def shuffled_test_labels(split):
        labels = real_labels(split)
        return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))] if split == "test" else labels

    monkeypatch.setattr(found, "labels", shuffled_test_labels)
    second, _ = probe_layers(found, "mean", [0, 1, 2], cfg.mode, 0, None)
    for a, b in zip(first, second):
        assert a.selection == b.selection and a.metrics["val/acc"] == b.metrics["val/acc"]
        assert (a.predictions["prediction"] == b.predictions["prediction"]).all()  # same heads, other answer key


def test_same_seed_same_metrics_other_seed_other_heads(make_cfg, tmp_path):
    runs = [run(make_cfg(*PROBE, "layer=all", f"seed={seed}", "skip_finished=false"), tmp_path / str(n))
            for n, seed in enumerate([0, 0, 1])]
    metrics = [[r.metrics for r in records] for records in runs]
    assert metrics[0] == metrics[1]
    probs = [np.stack(read_predictions(records[-1])["probs"]) for records in runs]
    assert np.array_equal(probs[0], probs[1]) and not np.allclose(probs[0], probs[2])


def test_a_probe_job_writes_one_record_per_layer_with_predictions(make_cfg, tmp_path):
    cfg = make_cfg(*PROBE, "layer=all", "pooling=max", "task.max_train_examples=320")
    records = run(cfg, tmp_path / "run")
    assert [r.factors.layer for r in records] == [0, 1, 2]
    assert len({r.run_id for r in records}) == 3
    for record in records:
        assert record.factors.mode == "probe" and record.factors.pooling == "max"
        assert record.metrics["n_train"] == 320 and record.selection["weight_decay"] in cfg.mode.weight_decays
        predictions = read_predictions(record)
        assert len(predictions) == record.metrics["n_test"] == 331
        assert len(predictions["probs"].iloc[0]) == record.metrics["n_labels"] == 16
        accuracy = (predictions["prediction"] == predictions["label"]).mean()
        assert accuracy == pytest.approx(record.metrics["test/acc"], abs=1e-6)
    # The encoding batch size is a speed knob, not part of a run: the same job with another reuses them.
    again = run(make_cfg(*PROBE, "layer=all", "pooling=max", "task.max_train_examples=320",
                         "mode.encode_batch_tokens=512"), tmp_path / "again")
    assert [r.run_id for r in again] == [r.run_id for r in records]
    assert all(read_record(tmp_path / "again" / "records" / f"max-L{layer}-s0").reused_from == record.dir
               for layer, record in zip([0, 1, 2], records))


def test_a_head_on_a_constant_input_stops_early():
    # h_0 at the embedding layer is one vector for every text: only the bias can learn.
    x, y = torch.ones(1, 300, 8), torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(0))
    heads = train_heads(x, y, x[:, :100], y[:100], [0], [0.0], 4, 0, 0.01, 32, max_epochs=100, patience=5)
    assert heads.epochs_run < 100
