"""Step 6: multitask fine-tuning: one BERT, three heads (MT-BERT paper sections 4.2-4.3).

What it teaches: sentiment (SST, 5 classes), paraphrase (Quora, binary) and similarity (STS,
Pearson r) trained together on one shared encoder, and the schedules that interleave them:
round-robin and random-shuffling-dropout.
Where: minibert/data.py (the three datasets), minibert/heads.py (MultitaskBERT),
minibert/train.py (epoch_plan: the schedules, and the equal-size samples step 7's PCGrad
trains on; the training loop).
Graded by: checks/test_data.py and checks/test_train.py (`pytest checks/ -m step06`); the
PCGrad cases of test_train.py need step 7 and are graded with it.
Runs `python -m minibert train --stage multitask --schedule round-robin` (in
runs/multitask-round-robin/; `--schedule random` runs in runs/multitask-random/); prints SST
accuracy, paraphrase accuracy, STS r and their mean: see results/.
Then try `--para-input cross` (with a new --out): the paraphrase head reads both questions as
one sequence, which lifted paraphrase accuracy past the siamese head's (results/study.md).
"""

import sys

from _common import option, step_main

if __name__ == "__main__":
    schedule = option(sys.argv[1:], "--schedule", "round-robin")  # each schedule has its own folder
    sys.exit(step_main("step06", __doc__,
                       command=["train", "--stage", "multitask", "--schedule", schedule,
                                "--out", f"runs/multitask-{schedule}"],
                       quick=["--quick", "--out", f"runs/quick-multitask-{schedule}"]))
