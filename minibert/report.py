"""`python -m minibert results`: the results table and learning curves of all runs.

Reads every runs/*/summary.json (and metrics.jsonl) and writes
    results/table.md          the paper's table 2 for this project: one row per run
    results/learning_curves.png   dev metric per epoch, one panel per task, one line per
                              run (the paper's figure 4), when matplotlib is installed
"""

import argparse
import json
from pathlib import Path

from minibert.runtime import MetricsLog

COLUMNS = [("para_acc", "PD acc"), ("sst_acc", "SST acc"), ("sts_r", "STS r"), ("overall", "Overall")]


def read_runs(folder) -> list:
    runs = []
    for summary in sorted(Path(folder).glob("*/summary.json")):
        s = json.loads(summary.read_text())
        if "stage" not in s or "dev" not in s:  # e.g. pretrain/ and sentiment runs: other tables
            continue
        s["metrics"] = MetricsLog(summary.parent / "metrics.jsonl").read()
        runs.append(s)
    return runs


def method(run) -> str:
    return run["stage"] + (f" ({run['schedule']})" if run.get("schedule") else "")


def table(runs) -> str:
    lines = ["| Run | Method | " + " | ".join(c for _, c in COLUMNS) + " | Device | Wall time |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for r in runs:
        cells = [f"{r['dev'][k]:.3f}" if k in r["dev"] else "-" for k, _ in COLUMNS]
        lines.append(f"| {r['name']} | {method(r)} | " + " | ".join(cells)
                     + f" | {r.get('device', '?')} | {r.get('wall_time_s', 0) / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def plot(runs, path) -> bool:
    """Dev metric per epoch for each task and run; False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(14, 3.5))
    for ax, (key, title) in zip(axes, COLUMNS):
        for r in runs:
            points = [(m["epoch"] + 1, m["dev"][key]) for m in r["metrics"] if key in m.get("dev", {})]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=r["name"])
        ax.set_title(f"dev {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert results", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs", help="folder of run folders")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    runs = read_runs(args.runs)
    if not runs:
        print(f"no runs with a summary.json under {args.runs}/")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = "# Dev results (the paper's table 2 for this project)\n\n" + table(runs)
    (out / "table.md").write_text(md)
    print(md)
    if plot(runs, out / "learning_curves.png"):
        print(f"wrote {out / 'table.md'} and {out / 'learning_curves.png'}")
    else:
        print(f"wrote {out / 'table.md'} (install matplotlib for the learning-curve plot)")
    return 0
