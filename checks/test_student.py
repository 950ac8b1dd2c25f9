"""make-student-copy: the copy differs from the project only in the solution regions, each
region becomes one `raise NotImplementedError`, and the checks catch every blank.

The last checks run pytest INSIDE student copies (a subprocess whose PYTHONPATH is the copy,
so it imports the copy's minibert), with the real weights and data:
- for each course step, a copy with only that step blanked: its checks fail, on its blanks,
  and each of its regions is caught (some check raises from the line that replaced it; a
  region hidden behind another blank of its step is blanked alone in a copy of its own);
- a copy with only step07 blanked: every step07 check fails (test_pcgrad.py's, and the PCGrad
  cases of test_train.py, which carry step07's marker), each of its regions raises, and the
  step03 and step06 checks still pass (a blank breaks its own step, not the steps before it).
The solution itself passes the same checks in the normal run of this suite. (Running every
check inside the full copy would prove the same and take minutes: many checks run long
before they reach a blank.)
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minibert import student
from minibert.paths import ROOT, data_dir

# the regions issue 8 asks students to write, (file, function)
REQUIRED = {
    ("minibert/model.py", "BertEmbeddings.forward"),
    ("minibert/model.py", "BertSelfAttention.attend"),
    ("minibert/model.py", "BertLayer.forward"),
    ("minibert/tokenizer.py", "wordpiece"),
    ("minibert/optim.py", "adamw_update"),
    ("minibert/optim.py", "foreach_update"),  # the fused step spells out the same formulas
    ("minibert/masking.py", "select_and_replace"),
    ("minibert/pcgrad.py", "pcgrad_project"),
    ("minibert/heads.py", "MultitaskBERT.sentiment_logits"),
    ("minibert/classifier.py", "SentimentClassifier.sentence_vector"),
    ("minibert/classifier.py", "SentimentClassifier.classify"),
}
COURSE_STEPS = [f"step0{i}" for i in range(1, 8)]  # the steps that have check files

def is_student_copy(root=ROOT) -> bool:
    """A copy with blanks left (some steps' or all), or one whose markers are all gone (every
    blank written by the student), or whose code does not even tokenize (a student's work in
    progress: the step checks say where)."""
    sources = [p.read_text() for p in (root / "minibert").glob("*.py")]
    if any("raise NotImplementedError('step" in s for s in sources):
        return True
    try:
        return not any([student.marker_lines(s, "") for s in sources])  # every file read
    except student.MarkerError:
        return True


if is_student_copy():
    pytest.skip("this is a student copy: its work is graded by the step checks", allow_module_level=True)


@pytest.fixture(scope="module")
def full_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "copy"
    regions = student.make_student_copy(ROOT, out)
    return out, regions


def test_student_copies_are_recognised(full_copy, tmp_path):
    """This module skips in a student copy, whichever state it is in, and runs here."""
    assert not is_student_copy(ROOT)
    assert is_student_copy(full_copy[0])
    student.make_student_copy(ROOT, tmp_path / "some", steps={"step02"})  # other steps' markers stay
    assert is_student_copy(tmp_path / "some")
    done, broken = tmp_path / "done", tmp_path / "broken"
    for c in (done, broken):
        shutil.copytree(ROOT / "minibert", c / "minibert", ignore=shutil.ignore_patterns("__pycache__"))
    for f in (done / "minibert").glob("*.py"):  # every blank written: the solution's code, no markers
        f.write_text("".join(line for line in f.read_text().splitlines(keepends=True)
                             if not line.strip().startswith((student.BEGIN, student.END))))
    assert is_student_copy(done)
    with open(broken / "minibert" / "tokenizer.py", "a") as f:  # work in progress that does not parse
        f.write("def f(:\n")
    assert is_student_copy(broken)


def test_required_regions_are_blanked(full_copy):
    _, regions = full_copy
    found = {(r.file, r.function) for r in regions}
    assert REQUIRED <= found, f"no solution region in {sorted(REQUIRED - found)}"


def test_step_table_agrees_with_conftest(full_copy):
    """A region of minibert/X.py is graded by checks/test_X.py: both tables give one step."""
    from conftest import STEPS as CHECK_STEPS

    for r in full_copy[1]:
        check = f"test_{Path(r.file).stem}.py"
        assert check in CHECK_STEPS, f"{r.file} has solution regions but {check} has no step in conftest"
        assert CHECK_STEPS[check] == r.step, (r.file, r.step, CHECK_STEPS[check])


def test_copy_changes_only_the_regions(full_copy):
    """Walk every file of the project next to its copy: lines are equal, except where the
    project has `# BEGIN SOLUTION` ... `# END SOLUTION` and the copy one raise line at the
    marker's indentation. Nothing else differs, no file is missing or added."""
    out, regions = full_copy
    files = student.project_files(ROOT)
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == sorted(files)
    assert not any(f.startswith(("data/", "runs/")) or f.endswith(".safetensors") for f in copied)
    n_raises = 0
    for rel in files:
        src, dst = (ROOT / rel).read_bytes(), (out / rel).read_bytes()
        if src == dst:
            continue
        assert rel.startswith("minibert/") and rel.endswith(".py"), f"{rel} changed"
        a, b = src.decode().splitlines(keepends=True), dst.decode().splitlines(keepends=True)
        i = j = 0
        while i < len(a) or j < len(b):
            if i < len(a) and j < len(b) and a[i] == b[j]:
                i, j = i + 1, j + 1
                continue
            assert i < len(a) and a[i].lstrip().startswith("# BEGIN SOLUTION"), f"{rel}:{i + 1} changed"
            indent = a[i][:len(a[i]) - len(a[i].lstrip())]
            assert b[j].startswith(indent + "raise NotImplementedError(") and b[j].endswith(")\n"), \
                f"{rel}:{i + 1}: expected one raise line in the copy, got {b[j]!r}"
            end = next(k for k in range(i + 1, len(a)) if a[k].startswith(indent + "# END SOLUTION"))
            assert not any(a[k].lstrip().startswith("# BEGIN SOLUTION") for k in range(i + 1, end))
            i, j, n_raises = end + 1, j + 1, n_raises + 1
        compile(dst, rel, "exec")
    assert n_raises == len(regions) >= len(REQUIRED)


def test_steps_option_blanks_only_those_steps(tmp_path):
    regions = student.make_student_copy(ROOT, tmp_path / "s", steps={"step03"})
    assert {r.step for r in regions} == {"step03"}
    assert (tmp_path / "s/minibert/model.py").read_bytes() == (ROOT / "minibert/model.py").read_bytes()
    text = (tmp_path / "s/minibert/optim.py").read_text()
    assert "raise NotImplementedError('step03: implement adamw_update in minibert/optim.py" in text
    assert "NotImplementedError(\"step03: implement foreach_update in minibert/optim.py" in text
    # step 01 takes the fused layer of ops.py with it: left whole, it would show the layer's code
    regions = student.make_student_copy(ROOT, tmp_path / "s1", steps={"step01"})
    assert {r.step for r in regions} == {"step01", "step10"}
    assert any(r.file == "minibert/ops.py" and r.function == "fused_layer" for r in regions)


# ---- markers that cannot be blanked: clear errors, no half-made copy ------------------------

FUNC = "def f(x):\n    '''doc'''\n"
BAD = {
    "unclosed": (FUNC + "    # BEGIN SOLUTION\n    return x\n", "minibert/bad.py:3: '# BEGIN SOLUTION' without"),
    "stray end": (FUNC + "    return x\n    # END SOLUTION\n", "minibert/bad.py:4: '# END SOLUTION' without"),
    "nested": (FUNC + "    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\n",
               "minibert/bad.py:4: '# BEGIN SOLUTION' inside the region opened at line 3"),
    "indent": (FUNC + "    if x:\n        # BEGIN SOLUTION\n        x = 1\n    # END SOLUTION\n    return x\n",
               "minibert/bad.py:6: '# END SOLUTION' is indented 4 columns"),
    "module level": ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "minibert/bad.py:1: a solution region must lie inside"),
    "not a whole block": (FUNC + "    # BEGIN SOLUTION\n    if x:\n        return 1\n    # END SOLUTION\n"
                          "    else:\n        return 2\n", "minibert/bad.py:4 (in the student copy)"),
}


def fake_project(root, bad_source):
    (root / "minibert").mkdir(parents=True)
    (root / "minibert/ok.py").write_text(FUNC + "    # BEGIN SOLUTION: return x itself\n    return x\n"
                                         "    # END SOLUTION\n")
    (root / "minibert/bad.py").write_text(bad_source)
    (root / "checks").mkdir()
    (root / "checks/test_ok.py").write_text("'''# BEGIN SOLUTION is only text here'''\n")
    for junk in ("data/ids-sst-train.csv", "runs/x/metrics.jsonl", "weights/m/model.safetensors"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("not project code")
    (root / "weights/README.md").write_text("how to fetch\n")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_markers_name_file_and_line(tmp_path, case):
    source, message = BAD[case]
    fake_project(tmp_path / "p", source)
    with pytest.raises(student.MarkerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        student.make_student_copy(tmp_path / "p", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_copy_without_git_hint_and_refusals(tmp_path, capsys):
    fake_project(tmp_path / "p", FUNC + "    return x\n")
    assert student.main([str(tmp_path / "out"), "--source", str(tmp_path / "p")]) == 0
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["checks/test_ok.py", "minibert/bad.py", "minibert/ok.py", "weights/README.md"]
    ok = (tmp_path / "out/minibert/ok.py").read_text()
    assert ok == FUNC + ("    raise NotImplementedError('project: implement f in minibert/ok.py (see its "
                         "docstring; checks/test_ok.py grades it): return x itself')\n")
    namespace = {}
    exec(ok, namespace)
    with pytest.raises(NotImplementedError, match="return x itself"):
        namespace["f"](1)
    # a non-empty OUT is refused, --force replaces it
    assert student.main([str(tmp_path / "out"), "--source", str(tmp_path / "p")]) == 1
    assert "not empty" in capsys.readouterr().out
    assert student.main([str(tmp_path / "out"), "--source", str(tmp_path / "p"), "--force"]) == 0
    assert student.main([str(tmp_path / "p"), "--source", str(tmp_path / "p")]) == 1
    # a folder inside the project that holds its files: --force would have deleted them
    before = {p: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file()}
    for inside in ("checks", "minibert"):
        assert student.main([str(tmp_path / "p" / inside), "--source", str(tmp_path / "p"), "--force"]) == 1
        assert "holds files of the project" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file()} == before
    # one that holds none of them is a folder like any other, in a git checkout too, where an
    # earlier copy in it (files git does not track) is replaced with --force
    assert student.main([str(tmp_path / "p" / "copy"), "--source", str(tmp_path / "p")]) == 0
    if shutil.which("git"):
        shutil.rmtree(tmp_path / "p" / "copy")
        subprocess.run(["git", "init", "-q"], cwd=tmp_path / "p", check=True)
        subprocess.run(["git", "add", "-A"], cwd=tmp_path / "p", check=True)
        for force in ([], ["--force"]):
            assert student.main([str(tmp_path / "p" / "copy"), "--source", str(tmp_path / "p"), *force]) == 0
        assert student.main([str(tmp_path / "p" / "checks"), "--source", str(tmp_path / "p"), "--force"]) == 1
        assert (tmp_path / "p" / "checks" / "test_ok.py").is_file()


# ---- grading inside the copies ---------------------------------------------------------------


def check_files(step):
    """The check files of `step` (checks/conftest.py's table), those that exist. A check in
    another step's file may carry this step's marker too (test_train.py's PCGrad cases)."""
    from conftest import STEPS as CHECK_STEPS

    return sorted(f"checks/{f}" for f, s in CHECK_STEPS.items() if s == step and (ROOT / "checks" / f).is_file())


# pytest inside student copies, in one subprocess for a list of copies (the imports of torch
# and transformers, most of a short run's time, are paid once): each copy in turn comes first on
# sys.path, as PYTHONPATH and the working folder, the modules of the copy before it forgotten.
# Hypothesis reports a failing example as found instead of shrinking it first (shrinking a check
# that fails on every example takes ~25 s and proves nothing more). A plugin records, for each
# check, where each NotImplementedError it raised came from (file:line in the copy, the innermost
# frame: that tells two blanks of one function apart even when their messages are the same),
# each check's outcome and crash message (its worst phase, the first of equals: setup or
# teardown failing is an "error", the test itself a "failure"; a check file that fails to
# import, an "error" under the file's name), each check's course step (its step marker: see
# checks/conftest.py) and the failed checks' times; it stops a
# copy's run once every line in `stop_when` has raised, and with `order` runs only those checks,
# in that order.
GRADER = r"""
import json, os, sys
from pathlib import Path
import pytest
from hypothesis import Phase, settings
settings.register_profile("grading", phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("grading")
sys.dont_write_bytecode = True  # no __pycache__ left in the copies
# (one process for all copies: torch's settings and Hypothesis's database, in the first copy,
# are shared between them; the checks set what they need themselves)


def not_implemented(exc, seen):
    if exc is None or id(exc) in seen:
        return
    seen.add(id(exc))
    if isinstance(exc, NotImplementedError):
        yield exc
    for e in getattr(exc, "exceptions", ()):  # Hypothesis: several distinct failures
        yield from not_implemented(e, seen)
    yield from not_implemented(exc.__cause__, seen)
    yield from not_implemented(exc.__context__, seen)


RANK = {"passed": 0, "skipped": 1, "failure": 2, "error": 2}  # a later phase's report replaces a milder one


class Blanks:
    def __init__(self, copy, stop_when, order):
        self.copy, self.stop_when, self.order = copy, set(stop_when), order
        self.raised_at, self.results, self.time, self.steps = {}, {}, {}, {}

    def pytest_collection_modifyitems(self, items):
        if self.order is not None:
            rank = {n: k for k, n in enumerate(self.order)}
            items[:] = sorted((i for i in items if i.nodeid in rank), key=lambda i: rank[i.nodeid])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        self.time[item.nodeid] = self.time.get(item.nodeid, 0.0) + call.duration
        self.steps[item.nodeid] = next((m.name for m in item.iter_markers()
                                        if m.name.startswith("step") or m.name == "project"), None)
        if report.failed or report.skipped:
            outcome = "skipped" if report.skipped else "failure" if report.when == "call" else "error"
            if RANK[outcome] > RANK[self.results.get(item.nodeid, ("passed",))[0]]:
                crash = getattr(report.longrepr, "reprcrash", None)
                self.results[item.nodeid] = (outcome, crash.message if crash else str(report.longrepr))
        elif report.when == "call":
            self.results.setdefault(item.nodeid, ("passed", ""))
        for e in not_implemented(call.excinfo.value if call.excinfo else None, set()):
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            path = Path(tb.tb_frame.f_code.co_filename).resolve() if tb else None
            if path is not None and self.copy in path.parents:
                where = f"{path.relative_to(self.copy).as_posix()}:{tb.tb_lineno}"
                self.raised_at.setdefault(where, []).append(item.nodeid)
        if self.stop_when and self.stop_when <= set(self.raised_at):
            item.session.shouldstop = "every blank looked for has raised"

    def pytest_collectreport(self, report):
        if report.failed:  # a check file that does not even import: no check of it runs
            self.results[report.nodeid] = ("error", str(report.longrepr))


base_path = [p for p in sys.path if p]
done = []
for job in json.loads(Path(sys.argv[1]).read_text()):
    copy = Path(job["copy"]).resolve()
    for name, module in list(sys.modules.items()):
        f = getattr(module, "__file__", None)
        if f and any(c in Path(f).resolve().parents for c in done):
            del sys.modules[name]
    done.append(copy)
    os.chdir(copy)
    os.environ["PYTHONPATH"] = str(copy)
    sys.path[:] = [str(copy)] + base_path
    blanks = Blanks(copy, job["stop_when"], job["order"])
    pytest.main([*job["files"], "-q", "-p", "no:cacheprovider", "-W", "ignore"], plugins=[blanks])
    failed = [n for n, (outcome, _) in blanks.results.items() if outcome in ("failure", "error")]
    (copy / "graded.json").write_text(json.dumps({"results": blanks.results, "raised_at": blanks.raised_at,
                                                  "failed": {n: blanks.time.get(n, 0.0) for n in failed},
                                                  "steps": blanks.steps}))
"""


@dataclass
class Graded:
    results: dict    # {node id: (outcome, message)}; outcome: passed, failure, error or skipped
    raised_at: dict  # {"minibert/x.py:LINE": [node ids]}: where each check's NotImplementedError came from
    failed: dict     # {node id: seconds} of the checks that failed
    steps: dict      # {node id: its course step marker} of the checks that ran


def grade(weights, jobs):
    """Run the checks in student copies, one subprocess for all. jobs: (copy, files, stop_when,
    order) tuples; stop_when: "file:line" raises after which the copy's run stops ([]: run
    everything); order: node ids to run, in that order (None: all of `files`)."""
    spec = Path(jobs[0][0]).parent / f"jobs-{Path(jobs[0][0]).name}.json"
    spec.write_text(json.dumps([{"copy": str(c), "files": list(f), "stop_when": list(w), "order": o}
                                for c, f, w, o in jobs]))
    env = {**os.environ, "MINIBERT_WEIGHTS": str(weights.resolve()), "MINIBERT_DATA": str(data_dir().resolve())}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([sys.executable, "-c", GRADER, str(spec)], cwd=jobs[0][0], env=env,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:  # say how far it got
        pytest.fail(f"grading {len(jobs)} copies took over 300 s:\n{str(e.stdout or '')[-3000:]}"
                    f"\n{str(e.stderr or '')[-3000:]}")
    graded = []
    for copy, *_ in jobs:
        record = Path(copy) / "graded.json"
        assert record.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
        g = json.loads(record.read_text())
        graded.append(Graded({n: tuple(r) for n, r in g["results"].items()}, g["raised_at"], g["failed"], g["steps"]))
    return graded


def run_checks(copy, weights, files, stop_when=()):
    """pytest FILES inside a student copy, with WEIGHTS -> Graded."""
    return grade(weights, [(copy, files, stop_when, None)])[0]


def failures(results):
    return {t: m for t, (o, m) in results.items() if o in ("failure", "error")}


SCRATCH_CHECKS = """
import pytest
from lib import f

@pytest.fixture
def breaks_on_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_passes():
    pass

def test_fails():
    f()

def test_skips():
    pytest.skip("not here")

def test_skips_then_breaks(breaks_on_teardown):
    pytest.skip("not here")
"""


def test_grader_records_each_outcome(tmp_path):
    """The grading plugin's record on scratch copies: a check that passes, one that fails on a
    blank (its NotImplementedError traced to the copy's file:line), a skip, a skip whose
    teardown then breaks (an error: the worse phase wins), and a check file that fails to
    import (an error under the file's name)."""
    copy, broken = tmp_path / "copy", tmp_path / "broken"
    for c in (copy, broken):
        (c / "checks").mkdir(parents=True)
    (copy / "lib.py").write_text("def f():\n    raise NotImplementedError('step07: f')\n")
    (copy / "checks" / "test_a.py").write_text(SCRATCH_CHECKS)
    (broken / "checks" / "test_b.py").write_text("raise ImportError('broken on purpose')\n")
    g, b = grade(tmp_path, [(copy, ["checks/test_a.py"], [], None), (broken, ["checks/test_b.py"], [], None)])
    a = "checks/test_a.py::"
    assert g.results[a + "test_passes"] == ("passed", "")
    assert g.results[a + "test_fails"] == ("failure", "NotImplementedError: step07: f")
    assert g.results[a + "test_skips"][0] == "skipped"
    outcome, message = g.results[a + "test_skips_then_breaks"]
    assert outcome == "error" and "teardown broke" in message, (outcome, message)
    assert len(g.results) == 4
    assert g.raised_at == {"lib.py:2": [a + "test_fails"]}
    assert set(g.failed) == {a + "test_fails", a + "test_skips_then_breaks"}
    (name, (outcome, message)), = b.results.items()
    assert (name, outcome) == ("checks/test_b.py", "error") and "broken on purpose" in message, b.results
    assert set(b.failed) == {"checks/test_b.py"}


def raise_line(regions, r):
    """'file:line' of the raise that replaces region r in a copy where `regions` are blanked
    (each blanked region before r in its file, lines begin..end, became one line)."""
    removed = sum(q.end - q.begin for q in regions if q.file == r.file and q.begin < r.begin)
    return f"{r.file}:{r.begin + 1 - removed}"


# Not step10 (ops.py, the fast path: not a course step; step01's copies blank it too, so that it
# does not show step01's answer): checks/test_ops.py grades it, but its torch.compile check fails
# on a blank with dynamo's own error, which does not name the blank
@pytest.mark.parametrize("step", [s for s in COURSE_STEPS if s != "step07"])
def test_each_step_fails_on_each_of_its_blanks(tmp_path, weights_path, step):
    """A copy with only `step` blanked: its checks fail, every failure on a blank, and every
    region of the step is caught (a check raises from the line that replaces it). A blank that
    runs only after another blank of the step raised is hidden in that copy (attention runs
    after the embeddings, which raise first): each region not caught there is then blanked
    alone, in a copy of its own, where the checks that failed in the first copy must raise
    from it (first those that raised from its file, fastest first: one that reaches it is
    enough). A run stops once every region it looks for has raised."""
    copy = tmp_path / "copy"
    regions = student.make_student_copy(ROOT, copy, steps={step})
    if not regions:
        pytest.skip(f"no solution region of {step} in this project")
    files = check_files(step)
    assert files, f"{step} has solution regions ({regions[0].file}) but no check file grades it"
    ours = [r for r in regions if r.step == step]  # (step01's copy blanks step10's too: see above)
    graded = run_checks(copy, weights_path, files, [raise_line(regions, r) for r in ours])
    failed = failures(graded.results)
    assert failed, f"the checks of {step} ({files}) pass with its solution blanked"
    blanked_steps = {r.step for r in regions}
    assert all(any(f"NotImplementedError: {s}:" in m for s in blanked_steps) for m in failed.values()), failed
    hidden = [r for r in ours if raise_line(regions, r) not in graded.raised_at]
    if not hidden:
        return
    jobs = []
    for k, r in enumerate(hidden):
        alone = tmp_path / f"alone{k}"
        student.make_student_copy(ROOT, alone, steps={step}, select=lambda q, r=r: q == r)
        near = {n for where, ids in graded.raised_at.items() if where.startswith(f"{r.file}:") for n in ids}
        order = sorted(graded.failed, key=lambda n: (n not in near, graded.failed[n]))
        jobs.append((alone, files, [raise_line([r], r)], order))
    for r, g in zip(hidden, grade(weights_path, jobs)):
        assert raise_line([r], r) in g.raised_at, \
            f"with only {r.function} ({r.file}:{r.begin + 1}) blanked, no check of {step} raises from it: {g.results}"
        assert all(f"NotImplementedError: {r.message()}" in m for m in failures(g.results).values()), g.results


def test_a_blank_breaks_its_own_step_only(tmp_path, weights_path):
    """A copy with only step07 (PCGrad) blanked: every check of step07 fails, on that blank
    (test_pcgrad.py's, and test_train.py's PCGrad cases, which carry step07's marker), each of
    its regions raises in some check, and the earlier steps' checks all still pass there:
    step03 (AdamW), and step06 (the schedules), which a student grades before writing PCGrad."""
    copy = tmp_path / "copy"
    regions = student.make_student_copy(ROOT, copy, steps={"step07"})
    graded = run_checks(copy, weights_path, check_files("step07") + check_files("step06") + check_files("step03"))
    assert regions and all(raise_line(regions, r) in graded.raised_at for r in regions), graded.raised_at
    results = graded.results
    ours = {t: r for t, r in results.items() if graded.steps.get(t) == "step07"}
    assert any("test_pcgrad" in t for t in ours) and any("test_train" in t for t in ours), ours
    assert all(o in ("failure", "error") and "NotImplementedError: step07:" in m for o, m in ours.values()), ours
    others = {t: o for t, (o, _) in results.items() if t not in ours}
    assert {graded.steps.get(t) for t in others} == {"step03", "step06"}, others
    assert set(others.values()) <= {"passed", "skipped"}, {t: o for t, o in others.items() if o != "passed"}
