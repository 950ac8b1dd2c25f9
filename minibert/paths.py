"""Where things live: the project root, the data folder and the default weights."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / "weights" / "all-MiniLM-L6-v2"


def data_dir(override=None) -> Path:
    """The data folder: an explicit --data-dir, else $MINIBERT_DATA, else ./data (the
    project's `data -> ../shared/data` link), else the project's own data/ folder."""
    for candidate in (override, os.environ.get("MINIBERT_DATA")):
        if candidate:
            return Path(candidate)
    local = Path("data")
    return local if local.exists() else ROOT / "data"


def weights_dir(override=None) -> Path:
    """A Hugging Face-format BERT folder: an explicit path, else $MINIBERT_WEIGHTS, else
    the default all-MiniLM-L6-v2 fetched by `python -m minibert fetch-weights`."""
    for candidate in (override, os.environ.get("MINIBERT_WEIGHTS")):
        if candidate:
            return Path(candidate)
    return DEFAULT_WEIGHTS
