"""run_all.sh, the main job, end to end on the CPU with a tiny random BERT and tiny CSVs.

The full profile is what a GPU machine runs by default; here it runs on the tiny world, so
its wiring (every stage's command line, the order, the outputs one stage hands the next,
the results table) is checked without a GPU. Steps 1-3 grade the real weights with the
checks this suite runs anyway, so they are marked done beforehand.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from minibert.paths import ROOT
from tiny_world import add_cfimdb, make_world

CHECK_STAGES = ["model-check", "tokenizer-check", "optimizer-check"]
STAGES = CHECK_STAGES + ["sentiment-sst", "sentiment-cfimdb", "pretrain", "baseline", "mt-round-robin",
                         "mt-random", "mt-pcgrad", "pt-mt", "mt-st", "pt-mt-st", "mt-cross", "mt-cross-st",
                         "mt-cross-seed1", "mt-cross-seed1-st", "mt-cross-seed2", "mt-cross-seed2-st",
                         "sts-cross", "ensemble-seeds", "sst-alone-0", "sts-alone-0", "sst-alone-1",
                         "sts-alone-1", "ensemble-best", "ensemble", "results"]
TABLE_ROWS = ["baseline", "mt-round-robin", "mt-random", "mt-pcgrad", "pretrain + mt round-robin",
              "mt round-robin + single-task", "pretrain + mt + single-task", "mt round-robin, cross PD",
              "mt cross + single-task", "mt cross + single-task, seed 2", "STS cross-encoder on mt-cross",
              "ensemble-seeds", "SST alone, R-Drop 3, seed 1", "STS alone, R-Drop 1, seed 0", "ensemble-best",
              "ensemble", "sentiment-sst", "sentiment-cfimdb", "majority class"]


def run_all(*args, python=sys.executable):
    # its setup step would pip-install a missing plot library: run only where nothing is missing
    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHON": str(python)}
    return subprocess.run(["bash", str(ROOT / "run_all.sh"), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=900)


def runs_folder(path, done, profile="full"):
    """A runs folder in which the stages `done` are marked complete in `profile` (run_all.sh
    skips them in that profile)."""
    (path / ".done").mkdir(parents=True)
    for stage in done:
        (path / ".done" / stage).write_text(profile + "\n")
    return path


def run_to_fail(world, tmp_path, todo, *args, python=sys.executable):
    """run_all.sh with every stage but `todo` done, and no weights: each of `todo` that starts fails."""
    runs = runs_folder(tmp_path / "runs", [s for s in STAGES if s not in todo])
    return runs, run_all("--profile", "full", "--data-dir", world[1], "--weights", tmp_path / "no-weights",
                         "--runs", runs, *args, python=python)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    weights, data = make_world(tmp_path_factory.mktemp("run_all"))
    return weights, add_cfimdb(data)


@pytest.fixture(scope="module")
def full_run(world, tmp_path_factory):
    runs = runs_folder(tmp_path_factory.mktemp("runs"), CHECK_STAGES)
    args = ["--profile", "full", "--data-dir", world[1], "--weights", world[0], "--runs", runs]
    proc = run_all(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return runs, args, proc


def test_full_profile_runs_every_stage_in_order(full_run):
    runs, _, proc = full_run
    assert sorted(p.name for p in (runs / ".done").iterdir()) == sorted(STAGES)
    started = [line.split(":")[0][3:] for line in proc.stdout.splitlines()
               if line.startswith("== ") and ": " in line and line[3:].split(":")[0] in STAGES]
    assert started == STAGES[len(CHECK_STAGES):]
    table = (runs / "results" / "table.md").read_text()
    for row in TABLE_ROWS:
        assert f"| {row} |" in table, row
    for run in ["mt-round-robin", "mt-pcgrad", "mt-st", "ensemble"]:
        for task in ["sst", "para", "sts"]:
            assert (runs / run / "predictions" / f"{task}-test-output.csv").is_file()
    # the full profile: all the data, 3 multitask and 2 single-task epochs
    config = json.loads((runs / "mt-round-robin" / "config.json").read_text())
    assert (config["limit"], config["epochs"], config["quick"]) == (None, 3, False)
    assert json.loads((runs / "mt-st" / "config.json").read_text())["epochs"] == 2
    assert json.loads((runs / "mt-cross-st" / "summary.json").read_text())["para_input"] == "cross"
    assert json.loads((runs / "mt-cross-seed1" / "config.json").read_text())["sst_rdrop"] == 1
    seeds = json.loads((runs / "ensemble-seeds" / "summary.json").read_text())
    assert seeds["checkpoints"] == [str(runs / f"{r}/best") for r in ("mt-cross-st", "mt-cross-seed1-st",
                                                                       "mt-cross-seed2-st", "sts-cross")]
    assert seeds["members"] == {"sst": 3, "para": 3, "sts": 4}
    assert json.loads((runs / "sts-cross" / "config.json").read_text())["weights"] == str(runs / "mt-cross/best/encoder")
    assert json.loads((runs / "mt-cross-seed2-st" / "config.json").read_text())["seed"] == 2
    # the one-task members of ensemble-best vote on their own task only
    for run, task, rdrop, epochs in [("sst-alone-1", "sst", 3, 4), ("sts-alone-0", "sts", 1, 3)]:
        config = json.loads((runs / run / "config.json").read_text())
        assert (config["tasks"], config[f"{task}_rdrop"], config["epochs"]) == ([task], rdrop, epochs)
    best = json.loads((runs / "ensemble-best" / "summary.json").read_text())
    assert best["checkpoints"] == seeds["checkpoints"] + [str(runs / f"{r}/best") for r in (
        "sst-alone-0", "sst-alone-1", "sts-alone-0", "sts-alone-1")]
    assert best["members"] == {"sst": 5, "para": 3, "sts": 6}


def test_quick_profile_runs_its_stages_with_its_options(world, tmp_path):
    """The quick profile, bash run_all.sh's default on a CPU: its own stage list and options
    (subsets, --quick, 2 + 1 epochs, the short pretraining), here on the tiny world."""
    runs = runs_folder(tmp_path / "runs", CHECK_STAGES, profile="quick")
    proc = run_all("--profile", "quick", "--data-dir", world[1], "--weights", world[0], "--runs", runs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    quick = [s for s in STAGES if s not in ("mt-cross-seed1", "mt-cross-seed1-st", "mt-cross-seed2", "mt-cross-seed2-st",
                                            "sts-cross", "ensemble-seeds", "sst-alone-0", "sts-alone-0",
                                            "sst-alone-1", "sts-alone-1", "ensemble-best")]
    assert sorted(p.name for p in (runs / ".done").iterdir()) == sorted(quick)
    assert all((runs / ".done" / s).read_text().strip() == "quick" for s in quick)
    config = json.loads((runs / "mt-round-robin" / "config.json").read_text())
    assert (config["quick"], config["limit"], config["epochs"]) == (True, 300, 2)
    assert json.loads((runs / "mt-st" / "config.json").read_text())["epochs"] == 1
    pretrain = json.loads((runs / "pretrain" / "summary.json").read_text())["options"]
    assert (pretrain["limit"], pretrain["epochs"], pretrain["head_warmup_steps"]) == (2000, 1, 6)
    assert json.loads((runs / "sentiment-sst" / "summary.json").read_text())["config"]["limit"] == 500
    assert "| ensemble |" in (runs / "results" / "table.md").read_text()


def test_rerun_skips_finished_stages(full_run):
    runs, args, _ = full_run
    proc = run_all(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("done already") == len(STAGES)


@pytest.fixture
def done_runs(full_run, tmp_path):
    """A copy of the full profile's runs folder, every stage done, to run stages again in."""
    runs = tmp_path / "runs"
    shutil.copytree(full_run[0], runs)
    for marker in (runs / ".started").iterdir():  # the command lines that started them, moved too
        marker.write_text(marker.read_text().replace(str(full_run[0]), str(runs)))
    return runs, [a if a != full_run[0] else runs for a in full_run[1]]


def started(proc, stage):
    """The command line run_all.sh started `stage` with, or None."""
    return next((line for line in proc.stdout.splitlines() if line.startswith(f"== {stage}: ")), None)


def test_force_runs_a_finished_stage_again_afresh(done_runs):
    runs, args = done_runs
    (runs / "baseline" / "left-over").touch()
    proc = run_all(*args, "--force", "--only", "baseline")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--resume" not in started(proc, "baseline") and "-- baseline: ok" in proc.stdout
    assert not (runs / "baseline" / "left-over").exists()  # its old folder went first
    assert (runs / ".done" / "baseline").read_text().strip() == "full"
    # then the results table, made again with it; no other stage
    assert proc.stdout.index("-- baseline: ok") < proc.stdout.index("-- results: ok")
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("== ") and ": " in line
            and line[3:].split(":")[0] in STAGES] == ["== baseline", "== results"]


def test_only_remakes_the_results_table_when_its_stage_runs_or_when_it_is_named(done_runs):
    runs, args = done_runs
    table = runs / "results" / "table.md"
    table.unlink()
    proc = run_all(*args, "--only", "baseline")  # done already: nothing runs, the table neither
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "-- baseline: done already" in proc.stdout and started(proc, "results") is None
    assert not table.exists()
    proc = run_all(*args, "--only", "results")  # named: made again, though done already
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert started(proc, "results") and table.is_file() and "| baseline |" in table.read_text()


def test_a_stage_stopped_midway_resumes_and_one_started_otherwise_starts_afresh(done_runs):
    runs, args = done_runs
    # mt-random stopped after its last checkpoint (its .done marker never written): resumed
    (runs / ".done" / "mt-random").unlink()
    # baseline started with another command line (other options): run afresh, not resumed
    (runs / ".done" / "baseline").unlink()
    (runs / ".started" / "baseline").write_text("python -m minibert train --epochs 9\n")
    proc = run_all(*args, "--only", "mt-random")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert started(proc, "mt-random").endswith("--resume") and "resuming at step" in proc.stdout
    # the sentiment command's checkpoints (one per epoch) are resumed the same way
    (runs / ".done" / "sentiment-sst").unlink()
    proc = run_all(*args, "--only", "sentiment-sst")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert started(proc, "sentiment-sst").endswith("--resume") and "resuming after epoch" in proc.stdout
    proc = run_all(*args, "--only", "baseline")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "done already" not in proc.stdout and "--resume" not in started(proc, "baseline")
    assert "resuming at step" not in proc.stdout
    assert "-- results: ok" in proc.stdout  # the table, made again after the stage


def test_a_runs_folder_keeps_to_one_profile_and_to_what_run_all_made(done_runs):
    runs, args = done_runs
    quick = [a if a != "full" else "quick" for a in args]
    proc = run_all(*quick, "--only", "baseline")
    assert proc.returncode == 2 and "holds the full profile's runs: pass --runs DIR" in proc.stderr
    assert (runs / "baseline" / "summary.json").is_file() and (runs / ".profile").read_text().strip() == "full"
    # a pretrain folder run_all.sh did not make (python -m minibert pretrain by hand): set aside
    (runs / ".started" / "pretrain").unlink()
    (runs / ".done" / "pretrain").unlink()
    proc = run_all(*args, "--only", "pretrain")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{runs}/pretrain was not made by run_all.sh: moved to {runs}/pretrain.previous" in proc.stdout
    assert (runs / "pretrain.previous" / "summary.json").is_file() and (runs / "pretrain" / "summary.json").is_file()


WRAPPER = """#!{python}
# python, except that `-m minibert train` gets Ctrl-C during its third step, as a terminal
# sends it: with --jobs 1, to the whole process group (run_all.sh, tee, the stage); with
# --jobs N, to run_all.sh alone (the stages run in process groups of their own), which is the
# session's leader here. Each step after it is slowed, so that the stop arrives midway.
import os, runpy, signal, sys, time
if sys.argv[1:4] != ["-m", "minibert", "train"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
from minibert import train
real, sent = train.train_step, []
def step(*a):
    if a[-1] == 2:
        sent.append(1)
        if os.environ["CTRL_C_TO"] == "group":
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getsid(0), signal.SIGINT)
    if sent:
        time.sleep(0.5)
    return real(*a)
train.train_step = step
sys.argv = ["minibert", *sys.argv[3:]]
runpy.run_module("minibert", run_name="__main__")
"""


@pytest.mark.parametrize("jobs, to", [(1, "group"), (2, "run_all")])
def test_ctrl_c_stops_a_stage_with_a_checkpoint_that_the_next_run_resumes(world, tmp_path, jobs, to):
    """Ctrl-C reaches the running stage (with --jobs 1 directly, tee -i outliving it to carry
    its last lines; with --jobs N through run_all.sh's trap), which saves a checkpoint after
    its step; the next run_all.sh resumes it. The wrapper's path holds a space, which every
    stage's command line must keep quoted."""
    wrapper = tmp_path / "a python" / "python-ctrl-c"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    common = ["--profile", "full", "--data-dir", world[1], "--weights", world[0], "--runs", tmp_path / "runs",
              "--only", "mt-round-robin", "--jobs", jobs]
    proc = subprocess.run(["bash", str(ROOT / "run_all.sh"), *map(str, common)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(wrapper), "CTRL_C_TO": to}, timeout=600,
                          start_new_session=True,  # its own session: the signal reaches nothing else
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    assert proc.returncode != 0
    log = (tmp_path / "runs" / "logs" / "mt-round-robin.log").read_text()
    stopped = re.search(r"stopped after step (\d+), checkpoint saved", log)
    assert stopped, log[-2000:] + proc.stderr[-2000:]
    step = int(stopped.group(1))
    assert (tmp_path / "runs" / "mt-round-robin" / "checkpoints" / f"step-{step:07d}").is_dir()
    # the same command line again (the wrapper's Ctrl-C is at step 3 only: passed by now)
    proc = run_all(*common, python=wrapper)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming at step {step}" in (tmp_path / "runs" / "logs" / "mt-round-robin.log").read_text()


@pytest.mark.parametrize("bad, said", [(["--profile"], "--profile needs a value"),
                                       (["--profile", "fast"], "--profile is quick or full"),
                                       (["--jobs", "0"], "--jobs takes a number")])
def test_option_values_are_checked_before_the_setup(tmp_path, bad, said):
    """No python at all: the setup, which runs it first, must not be reached."""
    proc = run_all("--runs", tmp_path / "runs", *bad, python=tmp_path / "no-python")
    assert proc.returncode == 2 and said in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_only_names_a_stage_of_the_profile_whose_needs_are_done(world, tmp_path):
    common = ["--profile", "quick", "--data-dir", world[1], "--weights", world[0], "--runs", tmp_path / "runs"]
    proc = run_all(*common, "--only", "mt-roundrobin")
    assert proc.returncode == 2 and "--only mt-roundrobin: no such stage in the quick profile" in proc.stderr
    assert not (tmp_path / "runs" / ".profile").exists()  # nothing ran: the folder is no profile's yet
    assert "mt-round-robin" in proc.stderr.split("its stages:")[1]
    proc = run_all(*common, "--only", "mt-cross-seed1")  # a stage of the full profile only
    assert proc.returncode == 2 and "no such stage in the quick profile" in proc.stderr
    proc = run_all(*common, "--only", "mt-st")
    assert proc.returncode == 2
    assert "--only mt-st needs mt-round-robin, not done in" in proc.stderr and "== mt-st" not in proc.stdout


def test_failing_stage_stops_and_names_its_log(world, tmp_path):
    proc = run_all("--profile", "full", "--data-dir", world[1], "--weights", tmp_path / "no-weights",
                   "--runs", tmp_path / "runs", "--only", "baseline")
    assert proc.returncode == 1
    log = tmp_path / "runs" / "logs" / "baseline.log"
    assert f"stage 'baseline' FAILED; its log: {log}" in proc.stderr
    assert log.is_file() and not (tmp_path / "runs" / ".done" / "baseline").exists()


def test_keep_going_runs_the_stages_after_a_failure_then_names_them(world, tmp_path):
    runs, proc = run_to_fail(world, tmp_path, ("baseline", "mt-round-robin"), "--keep-going")
    assert proc.returncode == 1
    assert "stage 'baseline' FAILED" in proc.stderr and "stage 'mt-round-robin' FAILED" in proc.stderr
    # the results table, done already, is made again as other stages ran: of nothing, here
    assert f"these stages FAILED: baseline mt-round-robin results (logs in {runs}/logs)" in proc.stderr
    assert "all stages done" not in proc.stdout


def test_missing_data_is_named(world, tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_all("--data-dir", tmp_path / "data", "--weights", world[0], "--runs", tmp_path / "runs")
    assert proc.returncode == 1
    assert "missing: ids-sst-train.csv" in proc.stderr and "quora-train.csv" in proc.stderr


# what each stage needs done before it starts (run_all.sh's --after): --jobs N keeps to it
NEEDS = {"pt-mt": ["pretrain"], "mt-st": ["mt-round-robin"], "pt-mt-st": ["pt-mt"],
         "mt-cross-st": ["mt-cross"], "mt-cross-seed1-st": ["mt-cross-seed1"],
         "mt-cross-seed2-st": ["mt-cross-seed2"], "sts-cross": ["mt-cross"],
         "ensemble-seeds": ["mt-cross-st", "mt-cross-seed1-st", "mt-cross-seed2-st", "sts-cross"],
         "ensemble": ["mt-cross-st", "mt-st", "pt-mt-st", "mt-random"]}


def test_jobs_run_stages_side_by_side_each_after_what_it_needs(full_run, done_runs):
    # a copy of the serial run with part of its graph to do again (the whole profile a second
    # time would cost a minute more): three stages ready at once, others that wait on them
    serial, (runs, args) = full_run[0], done_runs
    again = ["mt-round-robin", "mt-random", "mt-cross-seed1", "mt-st", "mt-cross-seed1-st", "ensemble-seeds",
             "ensemble", "results"]
    for stage in again:
        shutil.rmtree(runs / stage)
        for marker in (runs / ".done" / stage, runs / ".started" / stage):
            marker.unlink()
    proc = run_all(*args, "--jobs", 3)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 stage(s) at a time" in proc.stdout
    assert sorted(p.name for p in (runs / ".done").iterdir()) == sorted(STAGES)
    # the order of events: "== NAME (its output: LOG): ..." when it starts, "-- NAME: ok" when done
    events = [("start", line[3:].split(" ")[0]) if line.startswith("== ") else ("ok", line[3:].split(":")[0])
              for line in proc.stdout.splitlines()
              if line.startswith("== ") and "(its output: " in line or line.startswith("-- ") and ": ok in " in line]
    assert sorted(name for kind, name in events if kind == "start") == sorted(again)
    assert sorted(name for kind, name in events if kind == "ok") == sorted(again)
    for stage in again:
        needs = again[:-1] if stage == "results" else [n for n in NEEDS.get(stage, []) if n in again]
        for need in needs:
            assert events.index(("ok", need)) < events.index(("start", stage)), (need, stage)
    in_flight = [sum(+1 if kind == "start" else -1 for kind, _ in events[:n + 1]) for n in range(len(events))]
    assert max(in_flight) == 3  # never more than --jobs, and that many at some point
    # the same command lines as one at a time: every run's config.json, paths aside
    trained = [stage for stage in again if (serial / stage / "config.json").is_file()]
    assert len(trained) == 5  # the train stages among them
    for stage in trained:
        ours = (runs / stage / "config.json").read_text().replace(str(runs), str(serial))
        assert json.loads(ours) == json.loads((serial / stage / "config.json").read_text()), stage
    seeds = json.loads((runs / "ensemble-seeds" / "summary.json").read_text())
    assert seeds["members"] == {"sst": 3, "para": 3, "sts": 4}


def test_jobs_with_keep_going_skip_the_stages_that_need_a_failed_one(world, tmp_path):
    runs, proc = run_to_fail(world, tmp_path, ("mt-round-robin", "mt-st", "mt-random", "results"),
                             "--jobs", 2, "--keep-going")
    assert proc.returncode == 1
    assert "stage 'mt-round-robin' FAILED" in proc.stderr and "stage 'mt-random' FAILED" in proc.stderr
    assert "stage 'mt-st' skipped: it needs 'mt-round-robin', which did not finish" in proc.stderr
    assert "== mt-st" not in proc.stdout
    # the results table is made of what ran, once everything else has ended (here nothing did,
    # so it fails too, saying so)
    events = [line.split(" ")[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert events[-1] == "results" and "no runs with a summary.json" in (runs / "logs" / "results.log").read_text()
    assert ("these stages FAILED: mt-round-robin mt-random results (logs in "
            f"{runs}/logs); skipped, as they need one of them: mt-st") in proc.stderr


def test_the_failure_summary_keeps_the_stages_order_whichever_fails_first(world, tmp_path):
    """Side-by-side stages end in any order (a loaded machine once failed the test above that
    way); the closing summary lists them in the stages' order. Here mt-round-robin, started
    first, fails 3 s after mt-random."""
    slow = tmp_path / "python-slow-on-mt-round-robin"
    slow.write_text(f'#!/bin/sh\ncase "$*" in *mt-round-robin*) sleep 3 ;; esac\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    runs, proc = run_to_fail(world, tmp_path, ("mt-round-robin", "mt-random"), "--jobs", 2, "--keep-going", python=slow)
    assert proc.returncode == 1
    fails = [line for line in proc.stderr.splitlines() if line.endswith(".log") and "FAILED" in line]
    assert "mt-random" in fails[0] and "mt-round-robin" in fails[1]  # they did end the other way round
    assert f"these stages FAILED: mt-round-robin mt-random results (logs in {runs}/logs)" in proc.stderr


def test_jobs_stop_at_a_failure_once_the_stages_in_flight_end(world, tmp_path):
    runs, proc = run_to_fail(world, tmp_path, ("mt-round-robin", "mt-random", "mt-st", "results"), "--jobs", 2)
    assert proc.returncode == 1
    # both were started side by side; each names its log; nothing after them starts
    for stage in ("mt-round-robin", "mt-random"):
        assert f"stage '{stage}' FAILED; its log: {runs}/logs/{stage}.log" in proc.stderr
    assert "== mt-st" not in proc.stdout and "== results" not in proc.stdout
    assert "all stages done" not in proc.stdout


def test_help_prints_the_whole_header():
    lines = (ROOT / "run_all.sh").read_text().splitlines()
    header = lines[1:lines.index("set -euo pipefail")]
    proc = subprocess.run(["bash", str(ROOT / "run_all.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines() == header
    assert all(line.startswith("#") for line in header) and "--jobs N" in proc.stdout
