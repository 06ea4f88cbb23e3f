"""The report's Mechanism section on synthetic records whose answers are known.

The synthetic study: one encoder ("enc", 2 layers) with diagnose records for seeds 0 and 1 on the
word-content probe (seed 1's attention and erasure are seed 0's + 0.5, so reading the wrong sample
shows), and probe records of the same task (cls and mean, seeds 0 and 1, layers 1 and 2). The unit of the intervals: texts for
attention and erasure (recorded with the metrics), seeds for accuracies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poolbench import records
from poolbench.records import Factors, Record, run_identity, write_record
from poolbench.report import main

NUM_LAYERS = 2
WORD_ACC = {("cls", 0): 0.20, ("cls", 1): 0.30, ("mean", 0): 0.60, ("mean", 1): 0.70}


def factors(task: str, mode: str, pooling: str, layer: int, seed: int) -> Factors:
    return Factors(backbone="enc", family="encoder_mlm", init="pretrained", task=task, mode=mode, pooling=pooling,
                   layer=layer, num_layers=NUM_LAYERS, seed=seed, max_train_examples=None)


def diagnose_metrics(layer: int, seed: int) -> dict[str, float]:
    shift = 0.5 * seed
    metrics = {"geometry/floor": 0.1, "n_attention_texts": 40,
               "n_erasure_texts": 8, "n_train": 100, "n_test": 50, "n_labels": 10}
    for bound, offset in (("", 0.0), ("_low", -0.01), ("_high", 0.01)):
        if layer > 0:
            for position in ("first", "last"):
                for metric, value in {"entropy": 1.5, "breadth": 0.5, "self": 0.1, "special": 0.3, "content": 0.6}.items():
                    metrics[f"attention/{position}/{metric}{bound}"] = value + shift + offset
        for pooling, value in {"cls": 0.02, "mean": 0.05}.items():
            for tenth in [*map(str, range(10)), "all"]:
                metrics[f"erasure/{pooling}/{tenth}{bound}"] = value * (layer + 1) + shift + offset
        metrics["geometry/cls_mean_cosine" + bound] = 0.8 + offset
    for pooling, value in {"cls": 0.3, "mean": 0.6}.items():
        metrics |= {f"geometry/{pooling}/centroid": value + 0.1 * seed, f"geometry/{pooling}/knn": value,
                    f"geometry/{pooling}/anisotropy": 0.9 if pooling == "cls" else 0.2}
    return metrics


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mechanism")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "git_commit", lambda: "abc1234")
        for seed in (0, 1):
            for layer in range(NUM_LAYERS + 1):
                write_record(root / f"diagnose-s{seed}-L{layer}", Record(
                    run_id=run_identity({"d": seed, "l": layer}), status="finished", study="mech",
                    factors=factors("probe_words", "diagnose", "all", layer, seed), config={},
                    metrics=diagnose_metrics(layer, seed)))
            for pooling, layer in ((p, layer) for p in ("cls", "mean") for layer in (1, NUM_LAYERS)):
                acc, n = WORD_ACC[(pooling, seed)] - 0.1 * (layer < NUM_LAYERS), 100
                predictions = pd.DataFrame({"id": np.arange(n), "label": 0, "prediction": (np.arange(n) >= acc * n).astype(int),
                                            "probs": [[0.5, 0.5]] * n})
                write_record(root / f"words-{pooling}-L{layer}-s{seed}", Record(
                    run_id=run_identity({"w": pooling, "s": seed, "l": layer}), status="finished", study="mech",
                    factors=factors("probe_words", "probe", pooling, layer, seed), config={},
                    metrics={"test/acc": acc, "test/f1": acc, "n_test": n}), predictions)
    out = root / "report"
    assert main([str(root), "--out", str(out)]) == 0
    return out


def test_the_section_reads_the_smallest_seeds_sample_and_every_number_is_in_a_table(report):
    text = (report / "REPORT.md").read_text()
    section = text[text.index("## Mechanism"):]
    # Content: mean over the two seeds, with a t-interval over them: cls 25.0%, mean 65.0%.
    assert "word content 25.0% [" in section and "vs mean 65.0% [" in section
    # Attention and erasure from seed 0 only (seed 1 is +0.5 everywhere).
    assert "entropy 1.50 [1.49, 1.51] nats" in section and "10.0% [9.0, 11.0] on itself" in section
    assert "moves h_0 by 0.060 [0.050, 0.070]" in section  # cls at layer 2: 0.02 x 3
    # Training-free: centroid averaged over seeds (0.3, 0.4), the probe's accuracy beside it.
    assert "nearest-centroid accuracy is 35.0% from h_0 vs 65.0% from the mean" in section
    assert "the linear probe 25.0% vs 65.0%" in section and "majority floor 10.0%" in section
    assert "cos(h_0, mean) = 0.80" in section
    attention = pd.read_csv(report / "mechanism_attention.csv")
    assert set(attention["seed"]) == {0, 1} and 0 not in set(attention["layer"])  # every seed; no attention at layer 0
    for figure in ("content_probes.png", "attention.png", "erasure.png", "training_free.png"):
        assert (report / figure).stat().st_size > 0 and f"({figure})" in section


def test_diagnose_runs_stay_out_of_the_accuracy_tables(report):
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary["mode"]) == {"probe"}
    runs = pd.read_csv(report / "runs.csv")
    assert set(runs["mode"]) == {"probe", "diagnose"}
