"""`python -m minibert COMMAND ...`: one entry point for every stage and tool.

Each command lives in the module that owns it (a `main(argv)` function), and is imported
only when asked for, so `python -m minibert fetch-weights` does not import torch.

Bad input (a data file, a weights folder, a checkpoint: minibert/errors.py) ends a command
with its message, not a traceback; so does Ctrl-C (`train` and `pretrain` first finish their
step and save a checkpoint: runtime.StopRequest).
"""

import importlib
import os
import signal
import sys

from minibert.errors import INPUT_ERRORS

# command -> (module, function, one-line help)
COMMANDS = {
    "fetch-weights": ("minibert.weights", "main", "download and verify the default all-MiniLM-L6-v2 weights"),
    "check-model": ("minibert.model", "main", "sanity check: load weights, embed a sentence, print shapes"),
    "bench-tokenizer": ("minibert.bench_tokenizer", "main", "tokenizer throughput, ours next to the reference"),
    "bench-optim": ("minibert.bench_optim", "main", "AdamW step time, ours next to torch.optim"),
    "bench-pcgrad": ("minibert.bench_pcgrad", "main", "PCGrad's gradient merge, the readable path next to the fast one"),
    "bench": ("minibert.bench", "main", "training-step throughput and MFU"),
    "pretrain": ("minibert.pretrain", "main", "continued MLM pretraining on the task sentences"),
    "sentiment": ("minibert.classifier", "main", "the classic sentiment classifier (SST / CFIMDB)"),
    "train": ("minibert.train", "main", "multitask / single-task training stages"),
    "ensemble": ("minibert.evaluate", "ensemble_main", "average the outputs of several checkpoints"),
    "predict": ("minibert.evaluate", "predict_main", "write CS224N prediction files for a CSV"),
    "results": ("minibert.report", "main", "results table and learning-curve plot of all runs"),
    "make-student-copy": ("minibert.student", "main", "copy the project with solution regions blanked"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m minibert COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    try:
        return getattr(importlib.import_module(module), function)(rest) or 0
    except INPUT_ERRORS as e:  # any other exception is a bug: its traceback shows
        if os.environ.get("MINIBERT_TRACEBACK"):
            raise
        print(f"python -m minibert {name}: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # SystemExit("message"): a refused option or run, said the same way
        if not isinstance(e.code, str):
            raise
        print(f"python -m minibert {name}: error: {e.code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if os.environ.get("MINIBERT_TRACEBACK"):
            raise
        # Ctrl-C: end by SIGINT itself, without a traceback, so that a calling shell script
        # (run_all.sh) knows and stops too, as it would not for a plain exit status
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130  # where the signal does not end the process


if __name__ == "__main__":
    sys.exit(main())
