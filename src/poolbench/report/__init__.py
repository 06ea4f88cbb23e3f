"""Records -> the study report. The console script (`poolbench.report:main`) and the Hydra
callback (`poolbench.report.MultirunReport`) are named through this package."""

from poolbench.report.write import (
    Collection,
    MultirunReport,
    ReportError,
    across_cells,
    bootstrap_ci,
    build_report,
    collect,
    compare_to_cls,
    holm,
    main,
    mcnemar_exact,
    mean_with_ci,
    read_local,
    read_wandb,
    wandb_record,
    write_report,
)

__all__ = ["Collection", "MultirunReport", "ReportError", "across_cells", "bootstrap_ci", "build_report", "collect",
           "compare_to_cls", "holm", "main", "mcnemar_exact", "mean_with_ci", "read_local", "read_wandb",
           "wandb_record", "write_report"]
