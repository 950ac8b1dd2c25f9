"""Where and how a stage runs: device, mixed precision, seeds, the metrics log, resuming, and
Ctrl-C.

Every training stage (pretrain.py, train.py, classifier.py) uses these, so the conventions
are the same everywhere: bf16 autocast on CUDA only (CPUs are slow at bf16 and fp32 is the
bitwise-reproducible reference), one seed that fixes every generator, metrics appended as
one JSON object per line, one rule for resuming a run (resume_point: where it starts;
resumed_options: with which options), and the same --help layout. (StopRequest, Ctrl-C
that finishes the step first, serves the long runs of train.py and pretrain.py.)
"""

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from minibert.checkpoint import atomic_path, latest_checkpoint
from minibert.errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, unless its help text already says it (a default
    that depends on other options or the machine), there is none, or the option is a switch
    (--no-amp's default True would read as 'no amp by default')."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def check_options(args, at_least=None, fractions=()) -> None:
    """Stop the command (SystemExit with the option and its range) at the first out-of-range
    numeric option of `args` (argparse dests): each option of `at_least` (dest -> least value)
    must be at least that where set, each of `fractions` within 0..1. Checked when the command
    starts, not minutes later where the value is first used."""
    for name, least in (at_least or {}).items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise SystemExit(f"--{name.replace('_', '-')} {value}: expected {least} or more")
    for name in fractions:
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise SystemExit(f"--{name.replace('_', '-')} {value}: expected a fraction from 0 to 1")


def resumed_options(parser, argv, args, runtime_args, hint="", fallback=None):
    """On --resume: the options the run was started with (its config.json in args.out),
    except `runtime_args` (--device and the like), taken from this command line. An option
    named on the command line that says something else than the run's is refused
    (SystemExit), not dropped without a word; so is one the run predates, named with another
    value than its default (the run was trained without it). `args`: parser.parse_args(argv),
    after the command's own checks (train.py, classifier.py, pretrain.py); `hint`: what else
    the refusal suggests; `fallback`: a function giving the run's options where it has no
    config.json (pretrain runs written before it had one kept them in their checkpoints), or
    None: then nothing to check."""
    saved = Path(args.out) / "config.json"
    if saved.is_file():
        config, source = json.loads(saved.read_text()), "its config.json"
    elif fallback is not None and (kept := fallback()) is not None:  # read only for such a run
        config, source = dict(kept), "its checkpoint"
    else:
        return args
    # the options named on the command line: parse again into a namespace where every option
    # is already set, to a marker, so argparse fills in no default
    unset = object()
    named = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(vars(args), unset)))
    named = {k for k, v in vars(named).items() if v is not unset} - set(runtime_args)
    run = {k: config[k] if k in config else parser.get_default(k) for k in named}  # the run's value
    changed = [k for k in sorted(named) if run[k] != getattr(args, k)]
    if changed:
        raise SystemExit(f"--resume continues {args.out} as it was started, and "
                         + ", ".join(as_typed(parser, k, run[k]) + ("" if k in config else " (its default: "
                                     "the run predates the option)") for k in changed)
                         + f" in {source} differ from this command's: leave them out, or start "
                         "a new run with another --out" + (f" ({hint})" if hint else ""))
    config.update({k: getattr(args, k) for k in runtime_args})
    return argparse.Namespace(**{**vars(args), **config})  # options newer than the run: defaults


def as_typed(parser, dest, value) -> str:
    """Option `dest` at `value` as a user types it: "--epochs 5", and for a switch its name,
    given or not ("--no-amp (not given)" for amp True)."""
    action = next(a for a in parser._actions if a.dest == dest)
    if action.nargs == 0:  # store_true / store_false
        return f"{action.option_strings[0]} ({'given' if value == action.const else 'not given'})"
    return f"{action.option_strings[0]} {value}"


def resume_point(out, resume: bool, log=print):
    """Where a run with output folder `out` starts: the newest checkpoint of out/checkpoints
    with --resume (None, said so, when there is none: a new run), else None. A new run never
    starts in a folder that holds another (a checkpoint, or a finished run's summary.json): its
    files would mix, or the new run would delete the old one's. One rule for train, sentiment
    and pretrain."""
    out = Path(out)
    found = latest_checkpoint(out / "checkpoints")
    finished = (out / "summary.json").is_file()
    if not resume:
        if found is not None or finished:
            raise SystemExit(f"{out} already holds a run: pass --resume to continue it, or another --out")
        return None
    if found is None:
        if finished:  # its checkpoints were deleted: nothing to go on from
            raise SystemExit(f"{out} holds a finished run without checkpoints: nothing to resume; "
                             "pass another --out")
        log(f"--resume: no checkpoint in {out / 'checkpoints'}, starting a new run")
    return found


def pick_device(name: str = None) -> torch.device:
    """'cuda' when available unless told otherwise. Under torchrun, the local rank's GPU."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:  # a misspelt device
        raise InputError(f"--device {name}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU here (torch {torch.__version__}"
                         + (", a CPU build" if torch.version.cuda is None else "") + "); --device cpu runs on the CPU")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def to_device(batch: dict, device) -> dict:
    """A batch's tensors on `device` (non_blocking: from pinned memory, the copy overlaps)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def device_name(device: torch.device) -> str:
    """What a run records as its device: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()} ({threads} thread{'s' if threads != 1 else ''})"


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no loss scaling needed: bf16 has fp32's exponent range);
    a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class MetricsLog:
    """A JSONL log: one {"time", **record} per line, appended and flushed at once so a killed
    run keeps every line it wrote; `start` sets it up for a fresh or a resumed run."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def read(self) -> list:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def start(self, keep=None) -> None:
        """A fresh run (keep None) starts an empty log; a resumed run keeps the lines `keep`
        accepts (those of the work its checkpoint holds, e.g. `lambda r: r["epoch"] < e` for a
        run resumed at the start of epoch e) and drops those it is about to write again."""
        kept = [] if keep is None else [r for r in self.read() if keep(r)]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))


class StopRequest:
    """Ctrl-C during a long loop, made safe. Inside `with StopRequest() as stop:`, the first
    SIGINT only sets `stop.requested`; the loop stops at the end of its current step, where a
    checkpoint is consistent (that step's update done), saves one, and raises
    KeyboardInterrupt, since its work did not finish (train.run, pretrain.main). A second
    Ctrl-C interrupts at once, as usual. Off, leaving SIGINT as it was: outside the main thread
    (where Python takes no signals), where SIGINT is ignored (a shell's background job), and
    when `enabled` is False (several processes, which would have to agree on the step to stop
    at)."""

    def __init__(self, enabled: bool = True):
        self.enabled = (enabled and threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        with contextlib.suppress(OSError):  # stderr may be a pipe whose reader Ctrl-C ended
            print("\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C again: stop at once)",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False
