"""The report's vocabulary, shared by every part of it: what a setting, a cell and a verdict
group are, in which order poolings are listed, how backbones are labelled and p-values printed.

A run is named by its FACTORS (records.py, one column each in runs.csv). A setting is a run
without its seed: its seeds are averaged into one summary row. A cell is a setting without its
pooling: the poolings of one cell are compared with each other, cls being the REFERENCE.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from poolbench.attention_pooling.readout import ATTENTION
from poolbench.pooling import POOLINGS
from poolbench.records import FACTORS

SETTING = [f for f in FACTORS if f != "seed"]
CELL = [f for f in SETTING if f != "pooling"]
CELL_BUT_LAYER = [f for f in CELL if f != "layer"]  # finds a cell's final layer
# The verdict pools the cells (task x backbone) of one backbone family, init and mode.
VERDICT_GROUP = ["family", "init", "mode", "pooling"]
REFERENCE = "cls"
POOLING_ORDER = [*POOLINGS, "pooler", ATTENTION]
METRICS = {"test/acc": "acc", "test/f1": "f1"}  # the recorded test metrics the report summarises, and their short names


def pooling_order(poolings: Iterable[str]) -> list[str]:
    present = set(poolings)
    return [p for p in POOLING_ORDER if p in present] + sorted(present - set(POOLING_ORDER))


def sort_poolings(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows sorted by `by`, then by pooling in POOLING_ORDER rather than alphabetically."""
    rank = {pooling: i for i, pooling in enumerate(pooling_order(frame["pooling"]))}
    return frame.assign(pooling_rank=frame["pooling"].map(rank)).sort_values([*by, "pooling_rank"]).drop(
        columns="pooling_rank")


def backbone_label(row: pd.Series) -> str:
    """A backbone as tables and figures name it: the pretraining seed (p<seed>) of a backbone
    pretrained here, random-init controls and subsampled training marked."""
    label = str(row["backbone"])
    if pd.notna(row.get("backbone_seed")):  # one backbone per pretraining seed: a column each
        label += f" p{int(row['backbone_seed'])}"
    if row["init"] != "pretrained":
        label += f" ({row['init']} init)"
    if row["max_train_examples"] != "all":
        label += f", {row['max_train_examples']} train"
    return label


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=[backbone_label(row) for _, row in frame.iterrows()])


def at_final_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows at each cell's highest recorded layer: the final state the question is about.
    Earlier layers stay in the CSVs and the layer figure."""
    final_layer = frame.groupby(CELL_BUT_LAYER, dropna=False)["layer"].transform("max")
    return frame[frame["layer"] == final_layer]


def format_p(p: float) -> str:
    return "–" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def values_of(series: pd.Series) -> str:
    """The distinct values of a column, as a short text for a table cell."""
    return ", ".join(map(str, sorted(series.dropna().unique(), key=lambda v: (str(type(v)), v)))) or "–"
