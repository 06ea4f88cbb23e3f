"""Means over texts with a 95% t-interval: the one summary every diagnose measure shares.

The unit of independence is the text. Heads of one text, or positions of one text, are not
independent draws (they share the input), so a summary first averages within each text over
whatever it is not grouped by, then takes the mean and a Student-t interval across texts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of `values` with a two-sided Student-t interval; NaN bounds for fewer than 2."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return mean, mean - half, mean + half


def mean_over_texts(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], text: str = "text",
                    confidence: float = 0.95) -> pd.DataFrame:
    """One row per group of `by`: for each metric, `<metric>` (mean over texts), `<metric>_low` and
    `<metric>_high` (the t-interval), and `n_texts`. Rows of one text within a group (other heads,
    other positions) are averaged first, so each text counts once."""
    by = list(by)
    per_text = frame.groupby(by + [text], sort=True)[list(metrics)].mean().reset_index()
    rows = []
    for key, group in per_text.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for metric in metrics:
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = t_interval(group[metric].to_numpy(), confidence)
        row["n_texts"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows)
