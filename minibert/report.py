"""`python -m minibert results`: the results tables and learning curves of all runs.

Reads every RUNS/*/summary.json (and metrics.jsonl; --runs, default runs/) and writes, in
--out (default RUNS/results/):
    table.md                  the paper's table 2 for this project (one row per multitask,
                              single-task, baseline or ensemble run), the sentiment
                              classifier runs, and each run's majority-class floor: which
                              runs, if any, do not beat it on some task
    learning_curves.png       dev metric per epoch, one panel per task, one line per
                              run (the paper's figure 4), when matplotlib is installed
"""

import argparse
import json
from pathlib import Path

from minibert.runtime import MetricsLog

COLUMNS = [("para_acc", "PD acc"), ("sst_acc", "SST acc"), ("sts_r", "STS r"), ("overall", "Overall")]


def read_runs(folder) -> list:
    """Every run folder's summary.json (with its metrics.jsonl rows), sorted by folder;
    not those set aside (NAME.previous: an earlier run of a step run again)."""
    runs = []
    for summary in sorted(Path(folder).glob("*/summary.json")):
        if summary.parent.name.endswith(".previous"):
            continue
        s = json.loads(summary.read_text())
        if "stage" not in s or "dev" not in s:  # e.g. pretrain/: its own summary
            continue
        s["metrics"] = MetricsLog(summary.parent / "metrics.jsonl").read()
        runs.append(s)
    return runs


def is_sentiment(run) -> bool:
    return run["stage"].startswith("sentiment")


def method(run) -> str:
    details = [run["schedule"]] if run.get("schedule") else []
    details += [f"cross-encoder {name} head" for name, key in (("PD", "para_input"), ("STS", "sts_input"))
                if run.get(key) == "cross"]
    config = run.get("config", {})
    if config.get("tasks") and len(config["tasks"]) < 3:
        details.append(" + ".join(config["tasks"]) + " only")
    if config.get("sts_loss", "mse") != "mse":
        details.append(f"STS loss {config['sts_loss']}")
    for task, label in (("sst", "SST"), ("para", "PD"), ("sts", "STS")):
        if config.get(f"{task}_rdrop"):
            details.append(f"{label} R-Drop {config[f'{task}_rdrop']:g}")
    if config.get("sst_smoothing"):
        details.append(f"SST label smoothing {config['sst_smoothing']:g} ({config['sst_smoothing_kind']})")
    if config.get("random_pair_order"):
        details.append("pairs in random order")
    if config.get("para_closure"):
        details.append("PD pairs implied by the labels")
    if config.get("layer_lr_decay", 1.0) != 1.0:
        details.append(f"layer lr decay {config['layer_lr_decay']:g}")
    if config.get("ema"):
        details.append(f"EMA {config['ema']:g}")
    if run.get("members"):  # an ensemble: how many of its checkpoints vote on each task
        details.append("members: " + ", ".join(f"{name} {run['members'][task]}" for task, name
                                               in (("para", "PD"), ("sst", "SST"), ("sts", "STS"))
                                               if task in run["members"]))
    if run.get("both_orders"):
        details.append("pairs read both ways")
    return run["stage"] + (f" ({', '.join(details)})" if details else "")


def cell(metrics, key) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "-"


def per_task(metrics) -> dict:
    return {k: v for k, v in metrics.items() if k != "overall"}


def shown(dev) -> dict:
    """The figures to show: the overall mean is the paper's, over all three tasks, so a run
    (or an epoch) of fewer tasks shows its tasks only."""
    return dev if len(per_task(dev)) == len(COLUMNS) - 1 else per_task(dev)


def table(runs) -> str:
    """The multitask table: one row per run, then the majority-class floor of their dev sets."""
    lines = ["| Run | Method | " + " | ".join(c for _, c in COLUMNS) + " | Device | Wall time |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for r in runs:
        dev = shown(r["dev"])
        lines.append(f"| {r['name']} | {method(r)} | " + " | ".join(cell(dev, k) for k, _ in COLUMNS)
                     + f" | {r.get('device', '?')} | {r.get('wall_time_s', 0) / 60:.1f} min |")
    # one floor row per dev set: a floor equal to, or a part of (a run of fewer tasks), a kept one adds none
    floors = []
    for f in sorted((r["majority"] for r in runs if r.get("majority")), key=len, reverse=True):
        if not any(per_task(f).items() <= per_task(g).items() for g in floors):
            floors.append(f)
    for floor in floors:
        lines.append("| majority class | train's most frequent label (STS: a constant) | "
                     + " | ".join(cell(floor, k) for k, _ in COLUMNS) + " | | |")
    return "\n".join(lines) + "\n"


def sentiment_table(runs) -> str:
    lines = ["| Run | Dataset | Option | Dev acc | Majority class | Device | Wall time |",
             "|---" * 7 + "|"]
    for r in runs:
        key = f"{r['dataset']}_acc"
        lines.append(f"| {r['name']} | {r['dataset']} | {r['stage'].removeprefix('sentiment-')} | "
                     f"{cell(r['dev'], key)} | {cell(r.get('majority', {}), key)} | "
                     f"{r.get('device', '?')} | {r.get('wall_time_s', 0) / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def below_majority(runs) -> list:
    """'run: metric value <= floor' for every task where a run does not beat its own
    majority-class floor (the overall mean is not a task, so it is not checked)."""
    return [f"{r['name']}: {k} {v:.3f} <= {r['majority'][k]:.3f}"
            for r in runs for k, v in r["dev"].items()
            if k != "overall" and k in r.get("majority", {}) and v <= r["majority"][k]]


def markdown(runs) -> str:
    multitask = [r for r in runs if not is_sentiment(r)]
    sentiment = [r for r in runs if is_sentiment(r)]
    md = "# Dev results\n\n"
    if multitask:
        md += "## Multitask (the paper's table 2 for this project)\n\n" + table(multitask) + "\n"
    if sentiment:
        md += "## Sentiment classifier\n\n" + sentiment_table(sentiment) + "\n"
    below = below_majority(runs)
    floored = sum(1 for r in runs if r.get("majority"))  # older summaries have no floor
    if below:
        md += "Not above the majority class: " + "; ".join(below) + ".\n"
    elif floored == len(runs):
        md += "Every run beats its majority-class floor (train's most frequent label) on every task.\n"
    elif floored:
        md += f"The {floored} of {len(runs)} runs that record a majority-class floor beat it on every task.\n"
    return md


def plot(runs, path) -> bool:
    """Dev metric per epoch for each task and run; False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    legend_h = 0.3 + 0.17 * ((len(runs) + 3) // 4)  # inches: 4 runs a row, below the panels
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(14, 3.5 + legend_h))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours, then the line style changes
    lines = {}
    for ax, (key, title) in zip(axes, COLUMNS):
        for n, r in enumerate(runs):
            points = [(m["epoch"] + 1, m["dev"][key]) for m in r["metrics"] if key in shown(m.get("dev", {}))]
            if points:
                lines[r["name"]], = ax.plot(*zip(*points), marker="o", ms=3, color=colors[n % 20],
                                            linestyle=("-", "--", ":")[n // 20 % 3])
        ax.set_title(f"dev {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.legend(lines.values(), lines.keys(), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_h / (3.5 + legend_h), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert results", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--runs", default="runs", help="folder of run folders")
    p.add_argument("--out", help="where table.md and learning_curves.png go (default: RUNS/results; "
                   "the project's results/ holds the measured tables, not a scratch run's)")
    args = p.parse_args(argv)
    runs = read_runs(args.runs)
    if not runs:
        print(f"no runs with a summary.json under {args.runs}/")
        return 1
    out = Path(args.out) if args.out else Path(args.runs) / "results"
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(runs)
    (out / "table.md").write_text(md)
    print(md)
    if plot([r for r in runs if not is_sentiment(r)], out / "learning_curves.png"):
        print(f"wrote {out / 'table.md'} and {out / 'learning_curves.png'}")
    else:
        print(f"wrote {out / 'table.md'} (install matplotlib for the learning-curve plot)")
    return 0
