"""The assignment scripts' shared driver (assignments/_common.py): which command a step runs,
and that running a step again starts afresh without losing the earlier run."""

import runpy
import sys

import pytest

from minibert.paths import ROOT

sys.path.insert(0, str(ROOT / "assignments"))
import _common  # noqa: E402  (assignments/ is not a package: the scripts import it this way)


@pytest.fixture
def ran(monkeypatch, tmp_path):
    """Run an assignment script with its checks skipped, in a scratch root, recording the
    `python -m minibert` command it would start instead of starting it."""
    commands = []
    monkeypatch.setattr(_common, "ROOT", tmp_path)
    monkeypatch.setattr(_common, "run_minibert", lambda *args: commands.append(list(args)) or 0)

    def run(script, *argv):
        monkeypatch.setattr(sys, "argv", [script, "--skip-checks", *argv])
        with pytest.raises(SystemExit) as end:
            runpy.run_path(str(ROOT / "assignments" / script), run_name="__main__")
        assert end.value.code == 0
        return commands[-1]
    return run


def test_option_takes_the_last_value_given_either_way():
    assert _common.option(["--out", "a", "--epochs", "2", "--out=b"], "--out") == "b"
    assert _common.option(["--out", "a", "--output", "c"], "--out") == "a"
    assert _common.option(["--epochs", "2"], "--out", "runs/x") == "runs/x"


def test_each_schedule_runs_in_its_own_folder(ran):
    assert ran("06_multitask.py")[-2:] == ["--out", "runs/multitask-round-robin"]
    random = ran("06_multitask.py", "--schedule", "random")
    assert _common.option(random, "--schedule") == "random"
    assert _common.option(random, "--out") == "runs/multitask-random"
    assert _common.option(ran("06_multitask.py", "--quick", "--schedule=random"), "--out") \
        == "runs/quick-multitask-random"


def test_every_stage_step_names_its_folder(ran):
    """Without its --out, a step could not set its earlier run aside (see below)."""
    assert _common.option(ran("04_sentiment.py", "--dataset", "cfimdb", "--option", "finetune"), "--out") \
        == "runs/sentiment-cfimdb-finetune"
    assert _common.option(ran("05_mlm.py"), "--out") == "runs/pretrain"
    for script in ("06_multitask.py", "07_pcgrad.py", "08_single_task.py"):
        assert _common.option(ran(script), "--out") is not None, script


def test_a_step_run_again_sets_the_earlier_run_aside(ran, tmp_path, capsys):
    earlier = tmp_path / "runs" / "multitask-round-robin"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "summary.json").write_text("{}")
    ran("06_multitask.py", "--resume")  # continues it: left where it is
    assert (earlier / "summary.json").is_file()
    ran("06_multitask.py")
    assert not earlier.exists() and (tmp_path / "runs" / "multitask-round-robin.previous" / "summary.json").is_file()
    assert "moved to runs/multitask-round-robin.previous" in capsys.readouterr().out
    earlier.mkdir()
    (earlier / "metrics.jsonl").write_text("")
    ran("06_multitask.py", "--out", "runs/multitask-round-robin/")  # the one before it goes: one
    # earlier run is kept, not a pile (and a trailing slash names the same folder)
    assert sorted(p.name for p in (tmp_path / "runs" / "multitask-round-robin.previous").iterdir()) == ["metrics.jsonl"]
