"""The student copy: this project with the code students write cut out.

The solution's key pieces (attention, the transformer layer, embeddings, the AdamW step,
WordPiece, masking, the task heads, PCGrad, ...) sit between two marker lines:

        def attend(q, k, v, mask, dropout_p):
            ...docstring...
            # BEGIN SOLUTION
            ...the lines a student writes...
            # END SOLUTION

`python -m minibert make-student-copy OUT` copies the project to OUT and replaces each such
region (both marker lines and everything between) by ONE line at the marker's indentation:

            raise NotImplementedError("step01: implement BertSelfAttention.attend in minibert/model.py ...")

Nothing else changes: every other line of every file is copied byte for byte, so the
docstrings, the shapes in the comments and the checks/ that grade the work stay. A region
must be the whole rest of an indented block (a function body, a loop body), so that one
`raise` in its place is valid Python; every blanked file is compiled to prove it.

A marker line may carry a hint for the student, which is added to the message:
    # BEGIN SOLUTION: softmax(Q K^T / sqrt(d) + mask) V, dropout on the weights

Steps. Each file with regions belongs to one course step (STEPS below, the numbering of
assignments/ and of the markers in checks/conftest.py), so a student grades one step with
`pytest checks/ -m step03`. `--steps step02,step03` blanks only those steps' regions (a
course can release the project one step at a time); step01 takes the fast path (ops.py,
step10) with it, since that is the same layer, fused.

Which files: the ones git would commit (tracked, plus untracked files .gitignore does not
exclude), else, outside a git checkout, the project's own folders and files. Never data/,
weights/*/ or runs/: the copy finds them through $MINIBERT_DATA and $MINIBERT_WEIGHTS, or
--link-assets links them.
"""

import argparse
import ast
import io
import os
import shutil
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

from minibert.paths import ROOT, data_dir, weights_dir

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"

# source file -> the course step whose checks grade it (see checks/conftest.py, assignments/)
STEPS = {
    "model.py": "step01",      # embeddings, attention, the transformer layer
    "tokenizer.py": "step02",  # WordPiece
    "optim.py": "step03",      # the AdamW step
    "classifier.py": "step04", # the sentiment classifier
    "heads.py": "step04",      # the task heads
    "masking.py": "step05",    # MLM masking
    "mlm.py": "step05",        # MLM head
    "train.py": "step06",      # multitask schedules
    "data.py": "step06",
    "pcgrad.py": "step07",     # gradient surgery
    "ops.py": "step10",        # the fast path (not a course step)
}

# without git: what a student copy holds
PROJECT_PARTS = ("minibert", "checks", "assignments", "run_all.sh", "README.md", "pyproject.toml",
                 "weights/README.md", ".gitignore")


class MarkerError(ValueError):
    """Badly placed solution markers; the message names file:line."""


@dataclass
class Region:
    """Lines begin..end (0-based, both marker lines included) of one solution region."""

    file: str     # path relative to the project root, e.g. "minibert/model.py"
    begin: int
    end: int
    indent: str   # the BEGIN marker's indentation: the raise goes there
    function: str  # qualified name of the enclosing function, e.g. "BertLayer.forward"
    step: str
    hint: str

    def message(self) -> str:
        check = f"checks/test_{Path(self.file).stem}.py"
        text = f"{self.step}: implement {self.function} in {self.file} (see its docstring; {check} grades it)"
        return text + (f": {self.hint}" if self.hint else "")

    def replacement(self) -> str:
        return f"{self.indent}raise NotImplementedError({self.message()!r})\n"


def marker_lines(source: str, name: str) -> dict:
    """{0-based line: ("begin" | "end", hint)} of the marker lines of a file. Markers are
    comments alone on their line (found with the tokenizer), never text inside a string,
    so a docstring may show them."""
    found = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT or tok.line[:tok.start[1]].strip():
                continue
            if tok.string.startswith(BEGIN):
                found[tok.start[0] - 1] = ("begin", tok.string[len(BEGIN):].lstrip(" :").strip())
            elif tok.string.startswith(END):
                found[tok.start[0] - 1] = ("end", "")
    except (tokenize.TokenError, SyntaxError) as e:
        raise MarkerError(f"{name}: cannot tokenize the solution itself: {e}") from None
    return found


def enclosing_functions(source: str, name: str) -> list:
    """[(first line, last line, qualified name)] of every function, 1-based lines."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as e:
        raise MarkerError(f"{name}:{e.lineno}: cannot parse the solution itself: {e.msg}") from None
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((child.lineno, child.end_lineno, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def find_regions(source: str, name: str) -> list:
    """The solution regions of one file, checked: every BEGIN has its END at the same
    indentation, no nesting, and each region lies inside a function."""
    lines = source.splitlines(keepends=True)
    regions, open_at, hint = [], None, ""
    for i, (kind, text) in sorted(marker_lines(source, name).items()):
        line = lines[i]
        if kind == "begin":
            if open_at is not None:
                raise MarkerError(f"{name}:{i + 1}: '{BEGIN}' inside the region opened at line "
                                  f"{open_at + 1} (regions do not nest; close it with '{END}' first)")
            open_at, hint = i, text
        else:
            if open_at is None:
                raise MarkerError(f"{name}:{i + 1}: '{END}' without a '{BEGIN}' before it")
            indent = _indent(lines[open_at])
            if _indent(line) != indent:
                raise MarkerError(f"{name}:{i + 1}: '{END}' is indented {len(_indent(line))} columns, "
                                  f"its '{BEGIN}' at line {open_at + 1} {len(indent)}: they must match")
            regions.append(Region(name, open_at, i, indent, "", "", hint))
            open_at = None
    if open_at is not None:
        raise MarkerError(f"{name}:{open_at + 1}: '{BEGIN}' without its '{END}'")
    if regions:
        functions = enclosing_functions(source, name)
        step = STEPS.get(Path(name).name, "project")
        for r in regions:
            # (a function's last line is its last statement's; the END comment may follow it)
            inside = [f for f in functions if f[0] < r.begin + 1 <= f[1]]
            if not inside:
                raise MarkerError(f"{name}:{r.begin + 1}: a solution region must lie inside a function body")
            r.function = max(inside, key=lambda f: f[0])[2]  # the innermost
            r.step = step
    return regions


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def blank(source: str, name: str, steps=None, select=None):
    """(blanked source, regions blanked). steps: blank only regions of these steps (None: all);
    select: of those, only the regions r with select(r) true (None: all of them)."""
    regions = [r for r in find_regions(source, name)
               if (steps is None or r.step in steps) and (select is None or select(r))]
    if not regions:
        return source, []
    lines = source.splitlines(keepends=True)
    out, pos = [], 0
    for r in regions:
        out += lines[pos:r.begin]
        out.append(r.replacement())
        pos = r.end + 1
    out += lines[pos:]
    text = "".join(out)
    try:
        compile(text, name, "exec")
    except SyntaxError as e:
        raise MarkerError(f"{name}:{e.lineno} (in the student copy): {e.msg}: a solution region "
                          "must be the whole rest of an indented block, so that one `raise` can "
                          "replace it") from None
    return text, regions


# ---- which files make up the project ---------------------------------------------------------


def project_files(root, tracked_only=False) -> list:
    """Relative paths of the files to copy (see the module docstring); `tracked_only`: in a
    git checkout, those git tracks (not new files, nor an earlier copy kept in the project)."""
    root = Path(root)
    if (root / ".git").exists() and shutil.which("git"):
        listed = ["--cached"] if tracked_only else ["--cached", "--others", "--exclude-standard"]
        out = subprocess.run(["git", "ls-files", "-z", *listed], cwd=root, capture_output=True, check=True).stdout
        names = sorted({n for n in out.decode().split("\0") if n})
        return [n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    files = []
    for part in PROJECT_PARTS:
        path = root / part
        if path.is_file():
            files.append(part)
        elif path.is_dir():
            files += sorted(str(p.relative_to(root)) for p in path.rglob("*")
                            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def is_solution_file(rel: str) -> bool:
    return rel.startswith("minibert/") and rel.endswith(".py")


def make_student_copy(src, out, steps=None, force=False, select=None) -> list:
    """Copy project `src` to `out` with the solution regions blanked; returns the regions.
    steps and select: which regions, as `blank` takes them (the grader's checks blank one
    region alone with select)."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or out in src.parents:
        raise ValueError(f"{out}: the student copy cannot be the project or a folder above it")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty: pick a new folder, or pass --force "
                                  "to replace it")
        # a folder inside the project may hold the project's own files: never delete those
        held = [f for f in project_files(src, tracked_only=True) if out in (src / f).resolve().parents]
        if held:
            raise ValueError(f"{out} holds files of the project ({held[0]}"
                             + (f" and {len(held) - 1} more" if len(held) > 1 else "")
                             + "): pick a folder outside the project, or one that holds none of its files")
        shutil.rmtree(out)
    if steps is not None and "step01" in steps:
        # the fast path (ops.py) is step 01's layer fused: left whole, it would show that step
        steps = set(steps) | {"step10"}
    files = project_files(src)  # (OUT is empty or new by now: none of these lies in it)
    # parse everything before writing anything: a marker error leaves no half-made copy
    blanked, regions = {}, []
    for rel in files:
        if is_solution_file(rel):
            text, found = blank((src / rel).read_text(encoding="utf-8"), rel, steps, select)
            if found:
                blanked[rel] = text
                regions += found
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel in blanked:
            dest.write_bytes(blanked[rel].encode("utf-8"))
            shutil.copymode(src / rel, dest)
        else:
            shutil.copy2(src / rel, dest)
    return regions


def link_assets(out) -> list:
    """Symlink the data folder and the default weights into the copy (they are never copied)."""
    made = []
    for target, link in ((data_dir(), Path(out) / "data"),
                         (weights_dir(), Path(out) / "weights" / weights_dir().name)):
        if target.exists() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.resolve(), target_is_directory=True)
            made.append(link)
    return made


def main(argv=None) -> int:
    """`python -m minibert make-student-copy OUT`: the project with the solution regions blanked."""
    p = argparse.ArgumentParser(prog="python -m minibert make-student-copy", description=main.__doc__,
                                allow_abbrev=False)
    p.add_argument("out", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--steps", help="comma-separated steps to blank, e.g. step02,step03 (default: all)")
    p.add_argument("--source", default=str(ROOT), help="the project to copy (default: this one)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--link-assets", action="store_true",
                   help="symlink data/ and the default weights into the copy")
    args = p.parse_args(argv)
    steps = None
    if args.steps:
        steps = {s.strip() for s in args.steps.split(",") if s.strip()}
        known = set(STEPS.values())
        if not steps <= known:
            p.error(f"--steps {args.steps!r}: unknown {sorted(steps - known)}; expected some of {sorted(known)}")
    try:
        regions = make_student_copy(args.source, args.out, steps, args.force)
    except (MarkerError, FileExistsError, ValueError) as e:
        print(f"error: {e}")
        return 1
    by_step = {}
    for r in regions:
        by_step.setdefault(r.step, []).append(f"{r.file}:{r.function}")
    print(f"wrote {args.out}: {len(regions)} solution regions blanked")
    for step in sorted(by_step):
        print(f"  {step}: {', '.join(by_step[step])}")
    if args.link_assets:
        for link in link_assets(args.out):
            print(f"linked {link} -> {os.readlink(link)}")
    print(f"grade one step with:  cd {args.out} && pytest checks/ -m step01")
    if not args.link_assets:
        print(f"(data and weights: export MINIBERT_DATA={data_dir().resolve()} "
              f"MINIBERT_WEIGHTS={weights_dir().resolve()}, or rerun with --link-assets)")
    return 0
