"""Records -> the study report (`poolbench-report`, and after every sweep the Hydra callback).

  naming.py      the shared vocabulary: settings, cells, pooling order, backbone labels, p-values
  collect.py     records read from dirs or W&B, each run counted once; per-example predictions
  statistics.py  t-intervals, paired bootstrap, McNemar, Holm, Wilcoxon: pure functions of frames
  equivalence.py TOST within a margin, minimum detectable difference, a sign-flip test over examples
                 for any number of cells, the examples that flip between two readouts
  verdict.py     the question, the verdict sentences and the caveats
  tables.py      the accuracy grid, markdown and LaTeX
  figures.py     accuracy, accuracy per layer, win / tie / loss
  arms.py        the pretraining arms, compared paired by pretraining seed: contrasts, gaps, intrinsic accuracy
  precision.py   the same settings in float32 and another precision, paired by seed: accuracy differences,
                 verdicts per family and layer in both, vector closeness, the precision study's decision
  write.py       REPORT.md and the CSVs, the console summary, the CLI and the Hydra callback

The console script (`poolbench.report:main`) and the Hydra callback (`poolbench.report.MultirunReport`)
are named through this package.
"""

from poolbench.report.arms import arm_accuracy, arm_contrasts, arms_section, cls_mean_gap, intrinsic_table
from poolbench.report.collect import Collection, ReportError, read_local, read_wandb, wandb_record
from poolbench.report.statistics import (
    across_cells,
    bootstrap_ci,
    compare_to_cls,
    example_differences,
    flip_table,
    holm,
    mcnemar_exact,
    mean_with_ci,
    paired_comparison,
    summarize,
)
from poolbench.report.write import MultirunReport, build_report, main, write_report

__all__ = ["Collection", "MultirunReport", "ReportError", "across_cells", "arm_accuracy", "arm_contrasts",
           "arms_section", "bootstrap_ci", "build_report", "cls_mean_gap", "compare_to_cls", "example_differences",
           "flip_table", "holm", "intrinsic_table", "main", "mcnemar_exact", "mean_with_ci", "paired_comparison",
           "read_local", "read_wandb", "summarize", "wandb_record", "write_report"]
