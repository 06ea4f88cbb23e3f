"""Records -> the study report. The console script (`poolbench.report:main`) and the Hydra
callback (`poolbench.report.MultirunReport`) are named through this package."""

from poolbench.report.collect import Collection, ReportError, read_local, read_wandb, wandb_record
from poolbench.report.statistics import (
    across_cells,
    bootstrap_ci,
    compare_to_cls,
    holm,
    mcnemar_exact,
    mean_with_ci,
    paired_comparison,
    summarize,
)
from poolbench.report.write import MultirunReport, build_report, main, write_report

__all__ = ["Collection", "MultirunReport", "ReportError", "across_cells", "bootstrap_ci", "build_report",
           "compare_to_cls", "holm", "main", "mcnemar_exact", "mean_with_ci", "paired_comparison", "read_local",
           "read_wandb", "summarize", "wandb_record", "write_report"]
