"""Step 8: single-task fine-tuning after multitask training (MT-BERT paper section 4.3).

What it teaches: freezing the multitask encoder again and training each head alone on its own
task, keeping each head's best epoch (the heads share no parameter, so this is exact). The
heads it starts from are scored first and compete too, so no head ends worse on dev than it began.
Where: minibert/train.py (--stage single-task; BestTracker keeps a head per task).
Graded by: the step06 checks (the same training code; `pytest checks/ -m step06`).
Runs `python -m minibert train --stage single-task --weights runs/multitask-pcgrad/best`
(pass --weights for another multitask run): see results/.
"""

import sys

from _common import step_main

if __name__ == "__main__":
    sys.exit(step_main("step06", __doc__,
                       command=["train", "--stage", "single-task", "--weights", "runs/multitask-pcgrad/best",
                                "--out", "runs/single-task"],
                       quick=["--quick", "--epochs", "1", "--weights", "runs/quick-multitask-pcgrad/best",
                              "--out", "runs/quick-single-task"]))
