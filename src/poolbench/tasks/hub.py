"""Hub tasks: any classification dataset on the Hugging Face hub, for users with internet.

`task.location` (and `subset`, `revision`) names the dataset; `text_column`, `text_pair_column`
and `label_column` name its columns, `hub_splits` maps our splits to its splits. Offline (an
offline flag, or no answer from the hub within seconds: assets.hub_offline_reason) only a warm
HF cache works, and a failure names the packaged tasks to use instead.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

from datasets import ClassLabel

from poolbench.assets import Unavailable, hub_offline_reason
from poolbench.config import TaskConfig
from poolbench.tasks.preparation import SPLITS, USER_SOURCES, RawTask, carve_validation, clean, task_configs


def _packaged_alternatives() -> str:
    return ", ".join(f"task={cfg.name}" for cfg in task_configs() if cfg.source not in USER_SOURCES)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """datasets and huggingface_hub read the offline flags once, at import: set them for this call."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def load_hub(cfg: TaskConfig) -> RawTask:
    """`datasets.load_dataset(location, subset, revision=...)`, columns renamed by `text_column`,
    `text_pair_column`, `label_column`. `hub_splits` maps our splits to the hub's (empty: the same
    names); a validation split missing from it is carved from train (preparation.VALIDATION_FRACTION,
    stratified, seeded by split_seed). Offline, only a warm HF cache works; else Unavailable."""
    from datasets import load_dataset

    reason = hub_offline_reason(("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    try:
        with _hub_offline(reason is not None):
            hub = load_dataset(cfg.location, cfg.subset, revision=cfg.revision)
    except Exception as error:  # datasets raises many kinds: connection, not found, offline mode
        why = f"the hub is offline ({reason}) and it is not in the HF cache" if reason else str(error)
        raise Unavailable(f"task {cfg.name}: cannot load hub dataset {cfg.location!r}"
                          f"{f' ({cfg.subset})' if cfg.subset else ''}: {why}.\n"
                          f"Offline, use a packaged task instead: {_packaged_alternatives()}") from error
    mapping = dict(cfg.hub_splits) or {split: split for split in SPLITS if split in hub}
    missing = ({"train", "test"} - set(mapping)) | {theirs for theirs in mapping.values() if theirs not in hub}
    if missing:
        raise Unavailable(f"task {cfg.name}: splits {sorted(missing)} not found; the hub has {sorted(hub)}: "
                          f"set task.hub_splits (ours -> hub's; validation may be left out).")
    columns = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        columns[cfg.text_pair_column] = "text_pair"
    label_feature = hub[mapping["train"]].features[cfg.label_column]
    names = list(label_feature.names) if isinstance(label_feature, ClassLabel) else None  # else: the values
    splits = {}
    for ours, theirs in mapping.items():
        frame = hub[theirs].select_columns(list(columns)).to_pandas().rename(columns=columns)
        if names is not None:
            if (frame["label"] < 0).any():
                raise Unavailable(f"task {cfg.name}: hub split {theirs!r} hides its labels (-1): map another "
                                  f"split to {ours!r} in task.hub_splits (GLUE: test -> validation).")
            frame["label"] = frame["label"].map(names.__getitem__)
        splits[ours] = frame.assign(label=frame["label"].astype(str))
    label_names = names or sorted(set(splits["train"]["label"]))
    dropped = Counter()
    if "validation" not in splits:
        splits["train"], dropped = clean(splits["train"])
        splits["train"], splits["validation"] = carve_validation(splits["train"], cfg.split_seed)
    return RawTask(splits={split: splits[split] for split in SPLITS}, label_names=label_names, dropped=dropped)
