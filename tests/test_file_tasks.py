"""Bring-your-own data (task=file): real small CSV / JSONL / Parquet files written in tmp_path go
through the one preparation every task uses; bad files fail before any model loads, naming the
file and the fix. The unit is one prepared task (or one probe job); split sizes are hand-counted
from the stratified rule (per label: validation = test = round(10%), the rest train)."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from omegaconf import OmegaConf

from poolbench.assets import Unavailable
from poolbench.config import TaskConfig
from poolbench.jobs import MODES, run_job, typed_config
from poolbench.records import find_records, run_identity
from poolbench.tasks import SPLITS, load_task, task_configs


def rows(labels=("alpha", "beta", "gamma"), per_label=20, pair=False) -> pd.DataFrame:
    """per_label distinct texts per label; the label is readable in the text (a learnable task)."""
    frame = pd.DataFrame({"review": [f"{label} example number {i}" for label in labels for i in range(per_label)],
                          "stars": [label for label in labels for _ in range(per_label)]})
    if pair:
        frame["answer"] = [f"reply {i}" for i in range(len(frame))]
    return frame


def file_task(location, **options) -> TaskConfig:
    return TaskConfig(**{"name": "mine", "source": "file", "location": str(location), "text_column": "review",
                         "label_column": "stars", **options})


def test_an_unsplit_csv_is_cleaned_then_split_stratified_and_seeded(tmp_path, cache_dir):
    frame = pd.concat([rows(), pd.DataFrame({"review": ["alpha example number 3", "  ", "", "Beta  example number 4"],
                                             "stars": ["alpha", "beta", "gamma", "beta"]})])
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    task = load_task(file_task(tmp_path / "reviews.csv"), cache_dir)
    assert task.label_names == ["alpha", "beta", "gamma"] and task.text_fields == ("text",)
    # 2 repeats (one up to case and whitespace), 2 empty texts; 20 per label: 2 validation, 2 test, 16 train.
    assert task.dropped == {"duplicate": 2, "empty": 2}
    assert [len(task.splits[split]) for split in SPLITS] == [48, 6, 6]
    assert Counter(task.splits["test"]["label"]) == {0: 2, 1: 2, 2: 2}
    texts = [set(task.splits[split]["text"]) for split in SPLITS]
    assert set.union(*texts) == set(rows()["review"]) and sum(map(len, texts)) == 60  # a partition
    assert load_task(file_task(tmp_path / "reviews.csv", split_seed=1), cache_dir).fingerprint != task.fingerprint


def test_a_jsonl_split_column_gives_the_splits_and_integer_labels_sort_as_numbers(tmp_path, cache_dir):
    labels = [2, 10, 1]
    frame = rows(labels=labels, per_label=6, pair=True).assign(stars=lambda f: f["stars"].astype(int))
    frame["split"] = ["train", "train", "train", "train", "dev", "test"] * 3
    frame.to_json(tmp_path / "pairs.jsonl", orient="records", lines=True)
    task = load_task(file_task(tmp_path / "pairs.jsonl", text_pair_column="answer",
                               hub_splits={"validation": "dev"}), cache_dir)
    assert task.label_names == ["1", "2", "10"] and task.text_fields == ("text", "text_pair")
    assert [len(task.splits[split]) for split in SPLITS] == [12, 3, 3]
    test = task.splits["test"].to_pandas()
    expected = frame[frame["split"] == "test"]
    assert sorted(test["text"]) == sorted(expected["review"]) and sorted(test["text_pair"]) == sorted(expected["answer"])


def test_a_directory_of_parquet_split_files_gets_validation_carved_from_train(tmp_path, cache_dir):
    frame = rows(per_label=30)
    (tmp_path / "data").mkdir()
    frame.iloc[::3].to_parquet(tmp_path / "data" / "test.parquet")
    frame.drop(frame.index[::3]).to_parquet(tmp_path / "data" / "train.parquet")
    task = load_task(file_task(tmp_path / "data"), cache_dir)
    # 20 training rows per label: 10% (2) carved as validation.
    assert [len(task.splits[split]) for split in SPLITS] == [54, 6, 30]
    assert set(task.splits["test"]["text"]) == set(frame.iloc[::3]["review"])


def test_an_edited_file_is_a_new_task_and_a_new_run_and_the_same_bytes_are_not(tmp_path, cache_dir, make_cfg):
    path = tmp_path / "reviews.csv"
    rows().to_csv(path, index=False)
    overrides = ["task=file", f"task.location={path}", "task.text_column=review", "task.label_column=stars",
                 "mode=probe", "backbone=tiny-bert", "layer=all"]

    def identity() -> tuple[str, str]:
        config = typed_config(make_cfg(*overrides))
        return load_task(config.task, cache_dir).fingerprint, run_identity(MODES[config.mode.name].identity(config, 1))

    first = identity()
    rows().to_csv(path, index=False)  # rewritten, same bytes
    assert identity() == first
    edited = rows()
    edited.loc[0, "stars"] = "beta"
    edited.to_csv(path, index=False)
    second = identity()
    assert second[0] != first[0] and second[1] != first[1]


def write(path, frame):
    frame.to_csv(path, index=False)
    return path


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent.csv", r"no such file or directory"),
    (lambda d: write(d / "data.xlsx", rows()), r"extension '\.xlsx'; poolbench reads \.csv, \.tsv, \.jsonl, \.parquet"),
    (lambda d: write(d / "data.csv", rows().rename(columns={"review": "body"})),
     r"no column task\.text_column='review'; its columns are \['body', 'stars'\]: set task\.text_column"),
    (lambda d: write(d / "data.csv", pd.concat([rows(), pd.DataFrame({"review": ["lonely"], "stars": ["delta"]})])),
     r"1 label\(s\) with fewer than 2 examples after cleaning: 'delta' \(1\)"),
    (lambda d: write(d / "data.csv", rows(labels=("alpha",))), r"a single label \('alpha'\)"),
    (lambda d: write(d / "data.csv", rows().assign(review="   ")), r"no row with a non-empty text in column 'review'"),
    (lambda d: write(d / "data.csv", rows().assign(split="fold1")), r"column 'split' of .* holds \['fold1'\]"),
    (lambda d: write_bytes(d / "data.csv", b"review,stars\nfine,alpha\ncaf\xe9,beta\n"),
     r"is not UTF-8: byte 0xe9 at line 3"),
])
def test_a_bad_file_fails_naming_the_file_and_the_fix(tmp_path, cache_dir, make, message):
    with pytest.raises(Unavailable, match=message):
        load_task(file_task(make(tmp_path)), cache_dir)


def test_the_file_option_composes_and_stays_out_of_the_packaged_tasks(make_cfg):
    assert make_cfg("task=file").task.source == "file"
    assert "file" in {cfg.source for cfg in task_configs()}
    from poolbench.pretrain.corpus import evaluation_texts  # pretraining reads packaged tasks only
    assert evaluation_texts([TaskConfig(name="mine", source="file")]) == set()


def test_a_probe_job_on_a_csv_runs_every_layer_and_a_bad_column_fails_before_any_encoding(tmp_path, make_cfg):
    path = write(tmp_path / "reviews.csv", rows())
    common = ["task=file", f"task.location={path}", "task.name=reviews", "task.label_column=stars", "mode=probe",
              "backbone=tiny-bert", "layer=all", "pooling=mean", "mode.max_epochs=20"]
    records = run_job(make_cfg(*common, "task.text_column=review"), tmp_path / "job")
    assert [r.factors.layer for r in records] == [0, 1, 2] and all(r.finished for r in records)
    assert {r.factors.task for r in records} == {"reviews"} and records[0].metrics["n_test"] == 6
    assert records[-1].metrics["test/acc"] > 0.5  # the label word is in the text: above the 1/3 floor

    with pytest.raises(Unavailable, match=r"its columns are \['review', 'stars'\]"):
        run_job(make_cfg(*common, "task.text_column=body", f"paths.cache_dir={tmp_path / 'empty_cache'}"),
                tmp_path / "bad")
    [failed] = find_records(tmp_path / "bad")
    assert failed.status == "failed" and "set task.text_column" in failed.error
    assert not (tmp_path / "empty_cache" / "features").exists()  # nothing was encoded
    assert json.loads((tmp_path / "bad" / "record.json").read_text())["factors"]["task"] == "reviews"
