"""Tensors to and from disk, safely.

- Weights are read from safetensors only: a flat header of names, dtypes and offsets
  followed by raw bytes. Nothing is ever unpickled, so a weights file cannot run code.
- Every write goes to a temporary file in the same folder and is renamed into place, so a
  run killed mid-write leaves the previous file intact (os.replace is atomic on POSIX).
"""

import json
import os
import random
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as _st_load, save as _st_save

from minibert.errors import WeightsError  # the modules that read weights import it from here


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


# ---- training state: resumable checkpoints ---------------------------------------------
#
# A run folder holds checkpoints as step-XXXXXXX/ sub-folders and a LATEST file naming the
# newest complete one. A checkpoint folder is written under a temporary name and renamed
# when complete, and LATEST is replaced atomically after that, so a run killed at any moment
# resumes from the last complete checkpoint. Everything is safetensors or JSON: no pickle.
#
#   model.safetensors      every parameter and buffer (encoder and heads), our key names
#   optimizer.safetensors  the optimizer's per-parameter tensors, flattened to "idx/name"
#   rng.safetensors        torch CPU (and CUDA) generator states
#   ema.safetensors        the moving average of the weights, where training keeps one (ema.py),
#                          keyed by parameter name as model.safetensors is
#   state.json             step, param groups, scheduler, Python/NumPy RNG, caller's extras


def _flatten_optimizer(sd: dict):
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}/{name}"] = v
            else:
                scalars[f"{idx}/{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(run_dir, step: int, model, optimizer=None, scheduler=None,
                        extra: dict = None, keep: int = 1, ema=None) -> Path:
    """Write checkpoint `run_dir/step-{step}` atomically, point LATEST at it, keep the newest
    `keep` checkpoints. `extra` is any JSON-able dict (epoch, best score, data order...);
    `ema`: an ema.EMA whose shadows are saved too."""
    run_dir = Path(run_dir)
    final = run_dir / f"step-{step:07d}"
    tmp = run_dir / f".step-{step:07d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_safetensors(model.state_dict(), tmp / "model.safetensors")
    state = {"step": step, "extra": extra or {},
             "python_rng": _jsonable_random_state(), "numpy_rng": _numpy_state()}
    if optimizer is not None:
        tensors, state["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        write_safetensors(tensors, tmp / "optimizer.safetensors")
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if ema is not None:
        write_safetensors(ema.state_dict(), tmp / "ema.safetensors")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    write_safetensors(rng, tmp / "rng.safetensors")
    write_json(state, tmp / "state.json")
    aside = run_dir / f".{final.name}.old"
    if final.exists():  # the same step saved again (a resumed run): LATEST may name it, so
        shutil.rmtree(aside, ignore_errors=True)  # it is moved aside, not deleted, until the
        os.replace(final, aside)                  # new one is in place (latest_checkpoint)
    os.replace(tmp, final)
    with atomic_path(run_dir / "LATEST") as p:
        p.write_text(final.name + "\n")
    # LATEST names `final` now: gone are the checkpoints beyond the newest `keep`, the copy
    # moved aside, and any half-written or set-aside folder a kill left behind
    old = sorted(run_dir.glob("step-*"))[:-keep] if keep else []
    for d in [*old, *run_dir.glob(".step-*.old"), *run_dir.glob(".step-*.tmp")]:
        if d != final:
            shutil.rmtree(d, ignore_errors=True)
    return final


def latest_checkpoint(run_dir):
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(run_dir) / "LATEST"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    # the folder LATEST names, or, if a run was killed while saving that step again, its
    # earlier copy, moved aside (save_training_state)
    for folder in (Path(run_dir) / name, Path(run_dir) / f".{name}.old"):
        if (folder / "state.json").is_file():
            return folder
    return None


def load_training_state(folder, model, optimizer=None, scheduler=None, restore_rng=True, ema=None) -> dict:
    """Restore what save_training_state wrote; returns state.json (step, extra, ...)."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    missing, unexpected = model.load_state_dict(read_safetensors(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise WeightsError(f"{folder / 'model.safetensors'}: "
                           + (f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"))
    if optimizer is not None and "optimizer" in state:
        tensors = read_safetensors(folder / "optimizer.safetensors")
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(read_safetensors(folder / "ema.safetensors"))
    if restore_rng:
        rng = read_safetensors(folder / "rng.safetensors")
        torch.set_rng_state(rng["cpu"])
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(_tuple_state(state["python_rng"]))
        np.random.set_state(tuple(state["numpy_rng"][:1]) + (np.array(state["numpy_rng"][1], dtype=np.uint32),)
                            + tuple(state["numpy_rng"][2:]))
    return state


def _jsonable_random_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _tuple_state(s):
    return (s[0], tuple(s[1]), s[2])


def _numpy_state():
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
