"""Tables: the final-layer accuracy grid (poolings as columns), its markdown and LaTeX forms, and
the comparison and across-cells frames as REPORT.md shows them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from poolbench.report.naming import at_final_layer, format_p, pooling_order, sort_poolings, with_labels


def accuracy_grid(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sd of test accuracy at the final layer: rows mode x task x backbone, one column per pooling."""
    final = with_labels(at_final_layer(summary))
    index = ["mode", "task", "label"]
    columns = pooling_order(final["pooling"])
    mean = final.pivot(index=index, columns="pooling", values="acc_mean")[columns]
    sd = final.pivot(index=index, columns="pooling", values="acc_sd")[columns]
    return mean, sd


def accuracy_cells(mean: pd.DataFrame, sd: pd.DataFrame, plus_minus: str, bold: Callable[[str], str]) -> pd.DataFrame:
    """Accuracy in percent, "mean ± sd" (just the mean with one seed), the best of each row in bold."""
    best = mean.eq(mean.max(axis=1), axis=0)

    def cell(m: float, s: float, is_best: bool) -> str:
        if pd.isna(m):
            return ""
        text = f"{100 * m:.1f}" + ("" if pd.isna(s) else f"{plus_minus}{100 * s:.1f}")
        return bold(text) if is_best else text

    return pd.DataFrame({p: [cell(m, s, b) for m, s, b in zip(mean[p], sd[p], best[p])] for p in mean.columns},
                        index=mean.index)


def latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def latex_table(mean: pd.DataFrame, sd: pd.DataFrame) -> str:
    cells = accuracy_cells(mean, sd, r" $\pm$ ", lambda text: rf"\textbf{{{text}}}")
    header = " & ".join(["Mode", "Task", "Backbone", *map(latex_escape, cells.columns)]) + r" \\"
    body = [" & ".join([*(latex_escape(str(part)) for part in index), *row]) + r" \\"
            for index, row in zip(cells.index, cells.to_numpy())]
    return "\n".join([
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Test accuracy (\%, mean $\pm$ sd over seeds) of each readout at each backbone's final layer. "
        r"Best readout per row in bold.}",
        rf"\begin{{tabular}}{{lll{'r' * len(cells.columns)}}}",
        r"\toprule",
        header,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ])


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of a frame's cells as text (pandas' to_markdown needs tabulate)."""
    def text(value: Any) -> str:
        if isinstance(value, float):
            value = "–" if np.isnan(value) else f"{value:.3f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(text, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(text, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def comparisons_for_markdown(comparisons: pd.DataFrame) -> pd.DataFrame:
    final = sort_poolings(with_labels(at_final_layer(comparisons)), ["mode", "task", "label"])
    return pd.DataFrame({
        "mode": final["mode"], "task": final["task"], "backbone": final["label"], "layer": final["layer"],
        "pooling": final["pooling"], "seeds": final["n_seeds"],
        "acc cls": final["acc_cls"], "acc pooling": final["acc_pooling"],
        "diff": final["diff"].map(lambda d: f"{d:+.3f}"),
        "95% CI (examples)": [("–" if pd.isna(low) else f"[{low:+.3f}, {high:+.3f}]")
                              for low, high in zip(final["ci_low"], final["ci_high"])],
        "McNemar p": final["p"].map(format_p), "Holm p": final["p_holm"].map(format_p),
        "seeds p<0.05": final["seeds_significant"], "outcome": final["outcome"],
        "TOST Holm p": final["tost_p_holm"].map(format_p), "MDD": final["mdd"], "3-way": final["outcome3"],
    })


def across_for_markdown(across: pd.DataFrame) -> pd.DataFrame:
    p_values = ["p", "p_holm", "perm_p", "perm_p_holm", "tost_p", "tost_p_holm"]
    return across.assign(**{column: across[column].map(format_p) for column in p_values},
                         mean_diff=across["mean_diff"].map(lambda d: f"{d:+.3f}"),
                         median_diff=across["median_diff"].map(lambda d: f"{d:+.3f}"))
