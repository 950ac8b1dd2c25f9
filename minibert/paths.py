"""Where things live: the project root, the data folder and the default weights."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"


DATA_DIR_HELP = ("the CS224N CSVs (default: $MINIBERT_DATA, else ./data, else the project's data/, "
                 "else ../shared/data)")


def data_dir(override=None) -> Path:
    """The data folder: an explicit --data-dir, else $MINIBERT_DATA, else ./data, else the
    project's data/ (usually a link `data -> ../shared/data`), else ../shared/data itself."""
    for candidate in (override, os.environ.get("MINIBERT_DATA")):
        if candidate:
            return Path(candidate)
    for candidate in (Path("data"), ROOT / "data", ROOT.parent / "shared" / "data"):
        if candidate.exists():
            return candidate
    return ROOT / "data"


def weights_dir(override=None) -> Path:
    """A Hugging Face-format BERT folder: an explicit path, else $MINIBERT_WEIGHTS, else
    the default all-MiniLM-L6-v2 fetched by `python -m minibert fetch-weights`."""
    for candidate in (override, os.environ.get("MINIBERT_WEIGHTS")):
        if candidate:
            return Path(candidate)
    return DEFAULT_WEIGHTS
