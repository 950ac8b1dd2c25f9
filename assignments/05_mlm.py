"""Step 5: masked-language-model pretraining (BERT section 3.1, task #1).

What it teaches: choosing 15% of the tokens (optionally whole words), replacing 80% of them
by [MASK], 10% by a random token and leaving 10%, and predicting the originals with an output
layer tied to the input embeddings; continued pretraining on the task sentences (MT-BERT
paper section 4.3).
Where: minibert/masking.py (select_and_replace), minibert/mlm.py (the MLM head and loss),
minibert/pretrain.py (the stage).
Graded by: checks/test_masking.py and checks/test_mlm.py (`pytest checks/ -m step05`).
Runs `python -m minibert pretrain` (files in runs/pretrain/); expect the held-out MLM loss to
fall: see results/.
"""

import sys

from _common import step_main

if __name__ == "__main__":
    sys.exit(step_main("step05", __doc__, command=["pretrain", "--out", "runs/pretrain"],
                       quick=["--limit", "300", "--max-steps", "20", "--head-warmup-steps", "6",
                              "--out", "runs/pretrain-quick"]))
