"""Tasks: the classification data the poolings are compared on."""

from poolbench.tasks.preparation import (LOADERS, PREPARATION_VERSION, SPLITS, RawTask, Task, catalog_rows, clean,
                                         load_task, make_disjoint, next_sentence_pairs, prepare, split_sentences,
                                         stratified_indices, stratified_split, subsample_train, task_config,
                                         task_configs, text_key)

__all__ = ["LOADERS", "PREPARATION_VERSION", "SPLITS", "RawTask", "Task", "catalog_rows", "clean", "load_task",
           "make_disjoint", "next_sentence_pairs", "prepare", "split_sentences", "stratified_indices",
           "stratified_split", "subsample_train", "task_config", "task_configs", "text_key"]
