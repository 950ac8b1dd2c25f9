"""Step 7: gradient surgery, PCGrad (Yu et al. 2020, Algorithm 1; MT-BERT paper section 4.3).

What it teaches: when two tasks' gradients conflict (negative dot product), project each onto
the normal plane of the other before summing, so no task undoes another's progress.
Where: minibert/pcgrad.py (pcgrad_project, then the same on the Gram matrix: pcgrad_weights,
which pc_backward uses); the schedule's samples in minibert/train.py are step 6's.
Graded by: checks/test_pcgrad.py (`pytest checks/ -m step07`): against a float64 brute force;
and the PCGrad cases of checks/test_train.py, which train with it (they carry step07's marker).
Runs `python -m minibert train --stage multitask --schedule pcgrad` (runs/multitask-pcgrad/):
see results/ for its dev scores next to round-robin's.
"""

import sys

from _common import step_main

if __name__ == "__main__":
    sys.exit(step_main("step07", __doc__,
                       command=["train", "--stage", "multitask", "--schedule", "pcgrad", "--out", "runs/multitask-pcgrad"],
                       quick=["--quick", "--out", "runs/quick-multitask-pcgrad"]))
