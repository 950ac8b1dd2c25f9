"""What every assignment script does: grade its step with the checks, then run its stage.

    python assignments/NN_name.py [--quick] [--skip-checks | --checks-only] [stage options]

Options the script does not know are passed on to the stage (`python -m minibert ...`), after
the script's defaults, so they override them: `python assignments/04_sentiment.py --option finetune`.

Running a step again runs it afresh: an earlier run in the stage's --out folder is moved to
OUT.previous first (the stages themselves refuse to write over a run), unless --resume is
given, which continues it.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scripts run as `python assignments/NN.py` from anywhere


def parse(doc, argv=None):
    """-> (known options, the rest for the stage)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # an abbreviation is the stage's to read
    p.add_argument("--quick", action="store_true", help="a CPU-sized run: a few hundred examples, few steps")
    p.add_argument("--skip-checks", action="store_true", help="run the stage without grading the step first")
    p.add_argument("--checks-only", action="store_true", help="grade the step, run nothing else")
    return p.parse_known_args(argv)


def run_checks(step) -> bool:
    """`pytest checks/ -m STEP`: the checks that grade this step (checks/conftest.py)."""
    print(f"== check: pytest checks/ -m {step}", flush=True)
    rc = subprocess.run([sys.executable, "-m", "pytest", "checks/", "-m", step, "-q"], cwd=ROOT).returncode
    print(f"== check {step}: {'passed' if rc == 0 else 'FAILED'}", flush=True)
    return rc == 0


def option(args, name, default=None):
    """The value of option `name` in `args` as the stage's argparse will read it (`name VALUE`
    or `name=VALUE`, the last one given wins)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument(name, dest="value", default=default)
    return p.parse_known_args(args)[0].value


def set_aside_earlier_run(args) -> None:
    """Move the stage's --out folder, if it holds an earlier run, to OUT.previous (see above)."""
    out = option(args, "--out")
    if out is None or {"--resume", "-h", "--help"} & set(args) or not (ROOT / out).exists():
        return
    folder = (ROOT / out).resolve()  # runs/x/ as runs/x
    previous = folder.with_name(folder.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    folder.rename(previous)
    print(f"== {out} held an earlier run of this step: moved to {os.path.normpath(out)}.previous", flush=True)


def run_minibert(*args) -> int:
    cmd = [sys.executable, "-m", "minibert", *map(str, args)]
    print("== run: python -m minibert " + " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def step_main(step, doc, command=(), quick=(), demo=None, argv=None) -> int:
    """Grade `step`, then run `python -m minibert COMMAND` (or `demo(options, rest)`)."""
    args, rest = parse(doc, argv)
    if not args.skip_checks:
        ok = run_checks(step)
        if args.checks_only or not ok:
            if not ok:
                print(f"fix the failing checks of {step} first (or pass --skip-checks)")
            return 0 if ok else 1
    if demo is not None:
        return demo(args, rest)
    stage_args = [*command, *(quick if args.quick else ()), *rest]
    set_aside_earlier_run(stage_args)
    return run_minibert(*stage_args)
