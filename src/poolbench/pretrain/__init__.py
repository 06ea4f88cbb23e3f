"""Pretraining for the next-sentence ablation: small BERTs pretrained from scratch on the packaged
documents, arms differing only in how segments are built and in the sentence loss.

  corpus.py     the pretraining corpus: training documents of the packaged multi-sentence sources,
                none of whose text is in any evaluation split; a held-out slice for intrinsic evaluation
  tokenizer.py  a WordPiece tokenizer trained on the corpus, saved for AutoTokenizer
  examples.py   the arms' examples (mlm, mlm_pairs, mlm_nsp, mlm_sop) from one seeded plan, and collate
  model.py      BertForPreTraining with MLM at masked positions only and the sentence loss through the pooler
  recipe.py     a Recipe (arm, size, data, optimisation, seed) and the cached, resumable build it names

build.py      one recipe -> a backbone in the cache, loaded as backbone.source=pretrained location=<recipe.name>;
              `ensure_pretrained` is the job owner's pretraining stage: `backbone=pretrained` jobs build
              their recipe on first use (experiment=nsp_ablation runs the whole study)
parallel.py   the program a build on more than one device runs as (Lightning DDP relaunches it per rank)
"""
