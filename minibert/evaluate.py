"""Metrics, prediction files and ensembles (paper sections 4.3 and 5.2).

    SST and paraphrase: accuracy.  STS: Pearson's r (of scores clipped to 0..5, see to_labels).
    Overall: their unweighted mean.

Prediction files use the CS224N format, cleaned up: a header `id,Predicted_Sentiment`
(`Predicted_Is_Paraphrase`, `Predicted_Similiarity`, the starter code's spelling, so
existing graders read it) and one `id,value` line per example, in the input file's order:
    sst-dev-output.csv  para-dev-output.csv  sts-dev-output.csv  (and -test- for test-student)

`python -m minibert predict --checkpoint DIR --task sst --input CSV --output CSV`
`python -m minibert ensemble --checkpoints A B C --out DIR`
"""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from minibert.checkpoint import WeightsError, write_json
from minibert.data import FORMATS, TASKS, TaskDataset, load_datasets, read_examples
from minibert.heads import load_model, require_checkpoint, vocab_path
from minibert.paths import DATA_DIR_HELP, data_dir
from minibert.runtime import autocast, check_options, device_name, pick_device, to_device
from minibert.tokenizer import WordPieceTokenizer

HEADERS = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similiarity"}
METRICS = {"sst": "sst_acc", "para": "para_acc", "sts": "sts_r"}


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def pearson_r(x, y) -> float:
    """r = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2), float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def to_labels(task, outputs):
    """Model outputs (see MultitaskBERT.predict) -> predicted labels."""
    if task == "sst":
        return outputs.argmax(-1)  # class of highest probability (eq. 2)
    if task == "para":
        return (outputs > 0.5).long()
    # a similarity score is its own prediction, on the labels' scale 0..5. The paper's 5 cos
    # (eq. 3) reaches down to -5; beyond the paper, a score below 0 is read as 0 (no pair is
    # less similar than unrelated): on the 2-core CPU this added 0.0001 to 0.0015 to dev r
    # (results/study.md). A cross-encoder's scores are in 0..5 already.
    return outputs.clamp(0.0, 5.0)


def score(task, outputs, labels) -> float:
    pred = to_labels(task, outputs).cpu().numpy()
    gold = labels.cpu().numpy()
    return pearson_r(pred, gold) if task == "sts" else accuracy(pred, gold.astype(np.int64))


def inference_batch_size(device) -> int:
    """Rows per inference batch when none is asked for. A GPU wants large batches (more
    work per kernel launch); a CPU small ones: at 256 rows the (rows, T, 4C) activations fall
    out of its caches, and on the 2-core CPU 32 rows ran 2.5x faster than 256."""
    return 256 if device.type == "cuda" else 32


@torch.inference_mode()
def predict_dataset(model, ds: TaskDataset, device, batch_size=None, both_orders=False):
    """Outputs for every example of `ds`, in its order: batches sorted by length (little
    padding), put back in order at the end. batch_size None: `inference_batch_size`.
    `model` has predict(task, batch) and joint_input(task) (how it reads a pair), and for
    both_orders symmetric(task).

    both_orders (beyond the paper): paraphrase and similarity do not depend on which sentence
    comes first, but a head may (see MultitaskBERT.symmetric). Then each pair is read both
    ways, (s1, s2) and (s2, s1), and the two outputs averaged: a test-time augmentation that
    makes the prediction symmetric, for twice the inference."""
    if both_orders and ds.n_sentences == 2 and not model.symmetric(ds.task):
        one_way = predict_dataset(model, ds, device, batch_size)
        return (one_way + predict_dataset(model, ds.swapped(), device, batch_size)) / 2
    batch_size = batch_size or inference_batch_size(device)
    was_training = model.training
    model.eval()
    outputs, order = [], []
    joint = model.joint_input(ds.task)
    for idx in ds.batches(batch_size, shuffle=False, joint=joint):
        batch = ds.collate(idx, joint=joint)
        batch = to_device(batch, device)
        with autocast(device):
            outputs.append(model.predict(ds.task, batch).float())
        order += idx
    model.train(was_training)
    if not outputs:
        return torch.empty(0)
    out = torch.cat(outputs).cpu()
    result = torch.empty_like(out)
    result[torch.tensor(order)] = out
    return result


def metrics_from_outputs(outputs: dict, datasets: dict) -> dict:
    m = {METRICS[t]: score(t, outputs[t], datasets[t].labels) for t in outputs if datasets[t].labelled}
    if m:
        m["overall"] = sum(m.values()) / len(m)  # unweighted mean (section 5.2)
    return m


def majority_baseline(train: dict, dev: dict) -> dict:
    """The floor every model must clear, in the metrics' format: each classification task
    predicts its most frequent train label for every dev example; a constant similarity
    score has no correlation, so STS's r is 0. {task: TaskDataset} x2 -> {"sst_acc", ...}."""
    m = {}
    for task, ds in dev.items():
        if not ds.labelled or task not in train:
            continue
        key = METRICS.get(task, f"{task}_acc")
        if FORMATS[task][3] == "score":
            m[key] = 0.0
        else:
            majority = torch.bincount(train[task].labels.long()).argmax()  # ties: the smaller label
            m[key] = float((ds.labels.long() == majority).float().mean())
    if m:
        m["overall"] = sum(m.values()) / len(m)
    return m


def evaluate(model, datasets: dict, device, batch_size=None, both_orders=False):
    """{task: TaskDataset} -> ({"sst_acc", "para_acc", "sts_r", "overall"}, {task: outputs})."""
    outputs = {t: predict_dataset(model, ds, device, batch_size, both_orders) for t, ds in datasets.items()}
    return metrics_from_outputs(outputs, datasets), outputs


def write_predictions(path, task, ids, outputs) -> None:
    """One CS224N prediction file: header `id,<column>`, then `id,value` lines."""
    labels = to_labels(task, outputs).tolist()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", HEADERS[task]])
        for i, v in zip(ids, labels):
            w.writerow([i, f"{v:.4f}" if task == "sts" else int(v)])


def write_split_predictions(folder, split, datasets: dict, outputs: dict) -> list:
    """{task}-{split}-output.csv for every task of a split; returns the paths."""
    paths = []
    for task, out in outputs.items():
        path = Path(folder) / f"{task}-{split}-output.csv"
        write_predictions(path, task, datasets[task].example_ids, out)
        paths.append(path)
    return paths


# ---- command line ----------------------------------------------------------------------


def inference_options(p) -> None:
    """The options `predict` and `ensemble` share: where and how the models run."""
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="rows per batch (default: 256 on a GPU, 32 on a CPU)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--both-orders", action="store_true", help="pairs: average the outputs for (s1, s2) and "
                   "(s2, s1) where the head is not symmetric (beyond the paper; twice the inference)")


def check_output(option, path, folder) -> None:
    """Refuse an output path that cannot be written (a folder where a file is to go, or the
    other way round, or a file on the way) before the minutes of inference, not after."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise SystemExit(f"{option} {path}: a {'file' if folder else 'folder'}, expected a "
                         f"{'folder' if folder else 'file'}")
    for up in path.parents:
        if up.exists() and not up.is_dir():
            raise SystemExit(f"{option} {path}: {up} is a file, not a folder")


def holds_other_run(folder: Path) -> bool:
    """Whether `folder` holds a run other than an ensemble's (checkpoints, or a summary.json of
    another stage, or one that cannot be read: better refused than overwritten)."""
    summary = folder / "summary.json"
    if (folder / "checkpoints").exists():
        return True
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("stage") != "ensemble"
    except (ValueError, AttributeError):  # not JSON, or not an object
        return True


def check_checkpoints(paths) -> None:
    """Refuse a path that is not a trained model with a clear message, before any work (an
    ensemble would otherwise lose the minutes spent on the members before it)."""
    try:
        for path in paths:
            require_checkpoint(path)
    except WeightsError as e:
        raise SystemExit(str(e)) from None


def predict_main(argv=None) -> int:
    """Write predictions of one checkpoint for any CSV in the CS224N format of a task."""
    p = argparse.ArgumentParser(prog="python -m minibert predict", description=predict_main.__doc__,
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="a MultitaskBERT folder (e.g. runs/NAME/best)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--input", required=True, help="a CSV of the task (labels optional)")
    p.add_argument("--output", required=True, help="the prediction CSV to write")
    inference_options(p)
    args = p.parse_args(argv)
    check_options(args, at_least={"batch_size": 1, "max_length": 2})  # 2: [CLS] and [SEP]
    check_output("--output", args.output, folder=False)
    check_checkpoints([args.checkpoint])
    device = pick_device(args.device)
    model = load_model(args.checkpoint).to(device)
    if args.task not in model.tasks:  # its head for the task never trained: its outputs mean nothing
        raise SystemExit(f"{args.checkpoint} was trained for {', '.join(model.tasks)} only, not {args.task}")
    tok = WordPieceTokenizer.from_vocab(vocab_path(args.checkpoint))
    # labelled if the file has the label column: then the metric is printed too
    ds = TaskDataset(args.task, read_examples(args.input, args.task, labelled="header"), tok, args.max_length)
    out = predict_dataset(model, ds, device, args.batch_size, args.both_orders)
    write_predictions(args.output, args.task, ds.example_ids, out)
    msg = f"wrote {len(ds)} predictions to {args.output}"
    if ds.labelled:
        msg += f" ({METRICS[args.task]} = {score(args.task, out, ds.labels):.4f})"
    print(msg)
    return 0


def ensemble_main(argv=None) -> int:
    """Average the outputs of several checkpoints (SST probabilities, paraphrase
    probabilities, STS scores), each task over the checkpoints trained for it (a `train
    --tasks sts` specialist votes on STS only); evaluate on dev and write dev and test
    prediction files."""
    p = argparse.ArgumentParser(prog="python -m minibert ensemble", description=ensemble_main.__doc__,
                                allow_abbrev=False)
    p.add_argument("--checkpoints", nargs="+", required=True, help="MultitaskBERT folders")
    p.add_argument("--out", required=True, help="folder for summary.json and predictions/")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--limit", type=int, help="at most this many examples per task and split")
    inference_options(p)
    args = p.parse_args(argv)
    check_options(args, at_least={"batch_size": 1, "max_length": 2, "limit": 1})
    check_output("--out", args.out, folder=True)
    if holds_other_run(Path(args.out)):
        raise SystemExit(f"--out {args.out} holds a training run: an ensemble would overwrite its "
                         "summary.json and predictions/; pick another folder")
    check_checkpoints(args.checkpoints)
    device = pick_device(args.device)
    t0 = time.perf_counter()
    sums, counts, data = {}, {}, {}
    for k, ckpt in enumerate(args.checkpoints, 1):
        model = load_model(ckpt).to(device)
        tok = WordPieceTokenizer.from_vocab(vocab_path(ckpt))
        # tokenize per checkpoint: ensembled models may have different vocabularies
        sets = load_datasets(data_dir(args.data_dir), tok, tasks=model.tasks, splits=("dev", "test"),
                             limit=args.limit, max_length=args.max_length)
        preds = {(split, task): predict_dataset(model, ds, device, args.batch_size, args.both_orders)
                 for split in sets for task, ds in sets[split].items()}
        for (split, task), pred in preds.items():
            sums[split, task] = sums.get((split, task), 0) + pred
            counts[split, task] = counts.get((split, task), 0) + 1
            data.setdefault(split, {})[task] = sets[split][task]  # ids and labels: the same in every vocabulary
        # the member alone on dev: progress, and what each model brings to the average
        alone = metrics_from_outputs({t: preds["dev", t] for t in sets["dev"]}, sets["dev"])
        scores = ", ".join(f"{m} {v:.4f}" for m, v in alone.items()) or "trained for no task"
        print(f"member {k}/{len(args.checkpoints)} {ckpt}: dev {scores} [{time.perf_counter() - t0:.0f} s]", flush=True)
        del model
    if "dev" not in data:
        raise SystemExit("ensemble: none of the checkpoints was trained for a task (heads.json's tasks)")
    outputs = {split: {t: sums[split, t] / counts[split, t] for t in TASKS if t in sets}
               for split, sets in data.items()}
    metrics = metrics_from_outputs(outputs["dev"], data["dev"])
    # the majority-class floor, of the tasks ensembled only (an STS-only ensemble needs no Quora)
    train = load_datasets(data_dir(args.data_dir), tok, tasks=list(data["dev"]), splits=("train",),
                          limit=args.limit, max_length=args.max_length)["train"]
    out = Path(args.out)
    for split in data:
        write_split_predictions(out / "predictions", split, data[split], outputs[split])
    # summary.json in the stages' format, so `python -m minibert results` lists the ensemble
    members = {t: counts["dev", t] for t in outputs["dev"]}  # checkpoints averaged per task
    write_json({"name": out.name, "stage": "ensemble", "schedule": None, "checkpoints": args.checkpoints,
                "members": members, "both_orders": args.both_orders, "dev": metrics,
                "majority": majority_baseline(train, data["dev"]),
                "device": device_name(device), "torch": torch.__version__,
                "wall_time_s": time.perf_counter() - t0}, out / "summary.json")
    print(f"ensemble of {len(args.checkpoints)} ({', '.join(f'{t}: {n}' for t, n in members.items())}) dev:",
          ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
