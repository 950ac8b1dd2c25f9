"""Step 9: an ensemble of the trained models (MT-BERT paper section 4.3,
"Model Ensemble").

What it teaches: averaging the models' outputs (SST class probabilities, paraphrase
probabilities, STS scores) usually beats each model alone, because their errors differ.
Each task is averaged over the models trained for it: a `train --tasks sts` specialist (try
`--sts-input cross`) votes on STS only.
Where: minibert/evaluate.py (ensemble_main, predict_dataset).
Graded by: the step06 checks (`pytest checks/ -m step06`).
Runs `python -m minibert ensemble --checkpoints runs/*/best` (every finished training run, or
the ones you pass with --checkpoints) and writes runs/ensemble/ (with --quick: the quick runs,
on their dev subset, into runs/quick-ensemble/): see results/.
"""

import sys
from pathlib import Path

from _common import ROOT, step_main


def demo(args, rest) -> int:
    from _common import run_minibert

    from minibert.train import QUICK

    prefix = "quick-" if args.quick else ""
    quick = ["--limit", str(QUICK["limit"])] if args.quick else []  # the quick runs' dev subset
    if "--checkpoints" in rest:
        return run_minibert("ensemble", "--out", f"runs/{prefix}ensemble", *quick, *rest)
    found = sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"runs/{prefix}*/best/heads.json"))
    if not args.quick:
        found = [f for f in found if not Path(f).parent.name.startswith("quick-")]
    found = [f for f in found if not Path(f).parent.name.endswith(".previous")]  # runs set aside
    if not found:
        print("no trained models in runs/*/best: run steps 6 to 8 first (or pass --checkpoints)")
        return 1
    return run_minibert("ensemble", "--checkpoints", *found, "--out", f"runs/{prefix}ensemble", *quick, *rest)


if __name__ == "__main__":
    sys.exit(step_main("step06", __doc__, demo=demo))
