"""minibert: a from-scratch, course-quality multitask BERT.

Data flows one way, one file per step:

    CSV (data.py) -> tokenizer (tokenizer.py) -> batches (data.py)
      -> encoder (model.py, fast ops in ops.py) -> heads (heads.py) -> losses (heads.py)
      -> optimizer (optim.py, pcgrad.py) -> checkpoints / metrics (train.py, evaluate.py)

The package never imports transformers or tokenizers: those are test oracles only.
"""

__version__ = "0.1.0"
