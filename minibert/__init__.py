"""minibert: a from-scratch, course-quality multitask BERT.

Data flows one way, one file per step:

    CSV (data.py) -> tokenizer (tokenizer.py) -> batches (data.py, bucketed in batching.py)
      -> encoder (model.py, fast ops in ops.py) -> heads and losses (heads.py)
      -> optimizer (optim.py, pcgrad.py) -> checkpoints (checkpoint.py)
      -> metrics and prediction files (evaluate.py) -> results table (report.py)

The stages that drive it: train.py (multitask and single-task), pretrain.py (continued MLM),
classifier.py (the sentiment classifier). transformers and tokenizers are test oracles: only
the two benchmarks (bench.py, bench_tokenizer.py) import transformers, for comparison rows.
"""

__version__ = "0.1.0"
