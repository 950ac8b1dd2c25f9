"""Tensors to and from disk, safely.

- Weights are read from safetensors only: a flat header of names, dtypes and offsets
  followed by raw bytes. Nothing is ever unpickled, so a weights file cannot run code.
- Every write goes to a temporary file in the same folder and is renamed into place, so a
  run killed mid-write leaves the previous file intact (os.replace is atomic on POSIX).
"""

import json
import os
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import load as _st_load, save as _st_save


class WeightsError(ValueError):
    """A weights file or folder that cannot be loaded; the message names the file and key."""


def read_safetensors(path) -> dict:
    """Load every tensor of a .safetensors file into CPU memory, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    data = path.read_bytes()
    # The format: 8-byte little-endian header length, a JSON header, then the tensor bytes.
    # We check the framing ourselves so the message can say exactly what is wrong.
    if len(data) < 8:
        raise WeightsError(f"{path}: not a safetensors file ({len(data)} bytes, too short for a header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise WeightsError(f"{path}: not a safetensors file, or truncated (header says {n} bytes, "
                           f"file has {len(data) - 8} after the length)")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: not a safetensors file (the header is not JSON)") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > len(data):
        raise WeightsError(f"{path}: truncated: the header needs {8 + n + end} bytes, "
                           f"the file has {len(data)}")
    try:
        return _st_load(data)
    except Exception as e:  # safetensors raises its own error type; keep its words, add the file
        raise WeightsError(f"{path}: cannot read safetensors ({e})") from None


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_safetensors(tensors: dict, path, metadata: dict = None) -> None:
    """Write a dict of tensors atomically (contiguous CPU copies; shared storage is cloned)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    blob = _st_save(flat, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
