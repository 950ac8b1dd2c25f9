"""Training stages and schedules (minibert/train.py), prediction files, resume, DDP, report.

Everything runs on a tiny random BERT and tiny CSVs (checks/tiny_world.py), on the CPU.
"""

import copy
import csv
import json
import os
import re
import shutil
import signal
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from minibert import __main__ as cli, evaluate, report, train
from minibert import data as data_module
from minibert.checkpoint import latest_checkpoint, read_safetensors
from minibert.data import DataError, TaskDataset, load_datasets
from minibert.heads import MultitaskBERT, load_model
from minibert.optim import AdamW
from minibert.errors import InputError
from minibert.runtime import StopRequest, pick_device, seed_everything
from minibert.tokenizer import WordPieceTokenizer
from tiny_world import make_world

FAST = ["--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--lr-schedule", "constant", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def trained_model(world, out, *extra):
    """Train into `out`; returns the model as training left it (best/ holds the best on dev)."""
    weights, data = world
    argv = ["--data-dir", str(data), "--out", str(out), *FAST, *extra]
    if "--weights" not in extra:
        argv += ["--weights", str(weights)]
    return train.run(train.parse_args(argv)).cpu()


def run(world, out, *extra):
    trained_model(world, out, *extra)
    return out


def test_para_closure_reaches_the_paraphrase_train_split(world, tmp_path, monkeypatch):
    """train --para-closure: the implied pairs are made once, from Quora train, and the results
    table says so."""
    seen, real = [], data_module.duplicate_closure
    monkeypatch.setattr(data_module, "duplicate_closure", lambda examples: seen.append(examples) or real(examples))
    run(world, tmp_path / "plain", "--epochs", "1")
    assert not seen
    run(world, tmp_path / "closure", "--epochs", "1", "--para-closure")
    assert len(seen) == 1 and [e.id for e in seen[0]] == train_sets(world)["para"].example_ids
    summary = json.loads((tmp_path / "closure" / "summary.json").read_text())
    assert report.method(summary) == "multitask (round-robin, PD pairs implied by the labels)"


def train_sets(world) -> dict:
    """The tiny world's training sets, task -> TaskDataset."""
    tok = WordPieceTokenizer.from_vocab(world[0] / "vocab.txt")
    return load_datasets(world[1], tok, splits=("train",))["train"]


def train_losses(model, world, tasks):
    """Mean loss of each task over the whole (tiny) training set, in eval mode."""
    sets = train_sets(world)
    model.eval()
    with torch.no_grad():
        return {t: model.loss(t, sets[t].collate(list(range(len(sets[t]))), joint=model.joint_input(t))).item()
                for t in tasks}


@pytest.fixture(scope="module")
def rr_run(world, tmp_path_factory):
    return run(world, tmp_path_factory.mktemp("runs") / "rr", "--stage", "multitask", "--schedule", "round-robin")


def initial_model(world, folder=None):
    seed_everything(0)  # the run's seed: the same head initialisation as the run's
    return load_model(folder or world[0], dropout=0.1)


# the PCGrad cases (here and below) are graded with step07, whose pcgrad.py they run (conftest.py)
@pytest.mark.parametrize("stage, schedule", [("baseline", "round-robin"), ("multitask", "random"),
                                             pytest.param("multitask", "pcgrad", marks=pytest.mark.step07),
                                             ("multitask", "interleaved")])
def test_each_schedule_lowers_the_loss(world, tmp_path, monkeypatch, stage, schedule):
    """... and pcgrad steps go through PCGrad (every step, all three tasks' losses, the encoder
    as the shared parameters); the baseline leaves the encoder as it was, bit for bit."""
    surgery = []

    def spy(losses, shared, heads, **kw):
        surgery.append((len(losses), {id(p) for p in shared}))
        return real(losses, shared, heads, **kw)

    real = train.pc_backward
    monkeypatch.setattr(train, "pc_backward", spy)
    out = run(world, tmp_path / "r", "--stage", stage, "--schedule", schedule)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = {t for r in rows for t in r["train_loss"]} - ({"sts"} if stage == "baseline" else set())
    assert trained, "no task was trained"
    before = train_losses(initial_model(world), world, trained)
    best = load_model(out / "best")
    after = train_losses(best, world, trained)
    for t in trained:
        assert after[t] < before[t], (t, before[t], after[t])
    steps = json.loads((out / "summary.json").read_text())["config"]["epochs"] * len(train.epoch_plan(
        train.parse_args(["--out", "x", "--schedule", schedule, *FAST]), train_sets(world), 0))
    if schedule == "pcgrad":
        encoder = {id(p) for p in best.bert.parameters()}
        assert len(surgery) == steps and all(k == 3 and len(ids) == len(encoder) for k, ids in surgery)
    else:
        assert not surgery
    if stage == "baseline":
        start = load_model(world[0]).bert.state_dict()
        assert all(torch.equal(t, start[k]) for k, t in best.bert.state_dict().items())


def test_round_robin_and_single_task(world, rr_run, tmp_path):
    tasks = ("sst", "para", "sts")
    before = train_losses(initial_model(world), world, tasks)
    mt = train_losses(load_model(rr_run / "best"), world, tasks)
    assert all(mt[t] < before[t] for t in tasks), (before, mt)
    # single-task: the encoder is frozen, the heads go on from the multitask checkpoint (the
    # model as training left it: best/ may keep an incoming head, see the next check)
    b = trained_model(world, tmp_path / "st", "--stage", "single-task", "--weights", str(rr_run / "best"))
    a = load_model(rr_run / "best")
    for m in (b, load_model(tmp_path / "st" / "best")):
        for (name, p), q in zip(a.bert.named_parameters(), m.bert.parameters()):
            assert torch.equal(p, q), name
    assert not torch.equal(a.sst_out.weight, b.sst_out.weight)
    st_losses = train_losses(b, world, ("sst", "para"))
    assert st_losses["sst"] < mt["sst"] and st_losses["para"] < mt["para"]


def test_single_task_stage_never_ends_below_the_heads_it_was_given(world, rr_run, tmp_path):
    """The incoming heads are scored first (epoch -1) and compete with the stage's epochs: a
    head lr of 30 wrecks every trained head, so best/ must keep the incoming ones."""
    st = run(world, tmp_path / "st", "--stage", "single-task", "--weights", str(rr_run / "best"),
             "--head-lr", "30", "--epochs", "1")
    rows = [json.loads(line) for line in (st / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [-1, 0]
    start, trained = rows[0]["dev"], rows[1]["dev"]
    summary = json.loads((st / "summary.json").read_text())
    a, b = load_model(rr_run / "best"), load_model(st / "best")
    for task, key in (("sst", "sst_acc"), ("para", "para_acc")):
        assert summary["dev"][key] == max(start[key], trained[key]), key
        assert summary["best_epoch"][key] == (-1 if start[key] >= trained[key] else 0), key
        kept = [torch.equal(p, q) for p, q in zip(a.head_parameters(task), b.head_parameters(task))]
        assert all(kept) == (start[key] >= trained[key]), key
    assert start["sst_acc"] > trained["sst_acc"]  # the wrecking did happen
    assert "overall" not in summary["best_epoch"]  # the mean of each task's best: of no one epoch
    mt_rows = [json.loads(line) for line in (rr_run / "metrics.jsonl").read_text().splitlines()]
    mt_summary = json.loads((rr_run / "summary.json").read_text())  # multitask: best/'s epoch for all
    best = max(mt_rows, key=lambda r: r["dev"]["overall"])
    assert mt_summary["best_epoch"] == dict.fromkeys(best["dev"], best["epoch"]) and mt_summary["dev"] == best["dev"]


def test_cross_paraphrase_head_trains_and_carries_through_stages(world, tmp_path, capsys):
    mt = run(world, tmp_path / "mt", "--para-input", "cross")
    model = load_model(mt / "best")
    assert model.para_input == "cross"
    seed_everything(0)  # the run's initial heads
    before = load_model(world[0], dropout=0.1, para_input="cross")
    assert train_losses(model, world, ["para"])["para"] < train_losses(before, world, ["para"])["para"]
    # the single-task stage and the predict command read the joined pairs too
    st_model = trained_model(world, tmp_path / "st", "--stage", "single-task", "--weights", str(mt / "best"))
    assert load_model(tmp_path / "st" / "best").para_input == "cross"
    assert not torch.equal(st_model.para_joint.weight, model.para_joint.weight)
    out = tmp_path / "para.csv"
    assert evaluate.predict_main(["--checkpoint", str(mt / "best"), "--task", "para",
                                  "--input", str(world[1] / "quora-dev.csv"), "--output", str(out)]) == 0
    assert out.read_text() == (mt / "predictions" / "para-dev-output.csv").read_text()
    assert report.main(["--runs", str(tmp_path), "--out", str(tmp_path / "results")]) == 0
    md = (tmp_path / "results" / "table.md").read_text()
    assert "| mt | multitask (round-robin, cross-encoder PD head) |" in md
    assert "| st | single-task (cross-encoder PD head) |" in md
    with pytest.raises(SystemExit, match="--para-input siamese: the checkpoint .* has cross"):
        run(world, tmp_path / "x", "--stage", "single-task", "--weights", str(mt / "best"), "--para-input", "siamese")
    with pytest.raises(SystemExit, match="--alpha1 0.3: the checkpoint .* has 0.5"):  # would be ignored
        run(world, tmp_path / "x", "--stage", "single-task", "--weights", str(mt / "best"), "--alpha1", "0.3")
    assert not (tmp_path / "x").exists()  # refused before writing anything
    # a run from before that check: its config.json says alpha1 0.5 whatever its checkpoint had,
    # and it trained with the checkpoint's; it resumes so, not refused
    a3 = run(world, tmp_path / "a3", "--alpha1", "0.3", "--epochs", "1")
    old = run(world, tmp_path / "old", "--stage", "single-task", "--weights", str(a3 / "best"), "--epochs", "2",
              "--stop-after-step", "1")
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "alpha1": 0.5}))
    train.run(train.parse_args(["--out", str(old), "--resume"]))  # the run's own options
    assert load_model(old / "best").alpha1 == 0.3 and (old / "summary.json").is_file()
    long_data = tmp_path / "long"
    shutil.copytree(world[1], long_data)
    with open(long_data / "quora-train.csv", "a") as f:  # a pair of 40 + 40 tokens: > 64 positions
        f.write("\t".join(["99", "long", " ".join(["good"] * 38), " ".join(["bad"] * 38), "1.0"]) + "\n")
    with pytest.raises(SystemExit, match="has 79 tokens, more than the model's 64 positions"):
        train.main(["--weights", str(world[0]), "--data-dir", str(long_data), "--out", str(tmp_path / "y"),
                    "--para-input", "cross", "--no-progress"])


def test_random_pair_order_reads_about_half_the_training_pairs_the_other_way(world, tmp_path, monkeypatch):
    """--random-pair-order: each training pair of both pair tasks is swapped with probability
    1/2 (a fresh draw at every step); single sentences and runs without it are never swapped."""
    calls, original = [], TaskDataset.collate

    def spy(self, indices, joint=False, swap=None):
        calls.append((self.task, swap))
        return original(self, indices, joint=joint, swap=swap)

    monkeypatch.setattr(TaskDataset, "collate", spy)
    run(world, tmp_path / "plain", "--para-input", "cross", "--epochs", "1")
    assert calls and all(swap is None for _, swap in calls)
    calls.clear()
    model = trained_model(world, tmp_path / "random", "--para-input", "cross", "--epochs", "2", "--random-pair-order")
    summary = json.loads((tmp_path / "random" / "summary.json").read_text())
    assert report.method(summary) == "multitask (round-robin, cross-encoder PD head, pairs in random order)"
    swaps = {t: [s for task, swap in calls if task == t and swap is not None for s in swap] for t in ("para", "sts")}
    assert all(swap is None for task, swap in calls if task == "sst")
    for task, flags in swaps.items():
        # 2 epochs over the tiny world's 24 training pairs per task: 48 draws each
        assert len(flags) == 2 * 24 and 0.25 < sum(flags) / len(flags) < 0.75, (task, flags)
    seed_everything(0)  # the run's initial heads
    before = load_model(world[0], dropout=0.1, para_input="cross")
    assert train_losses(model, world, ["para"])["para"] < train_losses(before, world, ["para"])["para"]


@pytest.mark.parametrize("task, label", [("sst", "SST"), ("para", "PD"), ("sts", "STS")])
def test_rdrop_trains_its_task_and_names_itself(world, tmp_path, monkeypatch, task, label):
    """--sst-rdrop / --para-rdrop / --sts-rdrop: every training loss gets its weight, the run
    records it, the results table names it, and the task's loss falls."""
    weights, original = [], MultitaskBERT.loss

    def spy(self, task_, batch, **options):
        if self.training:
            weights.append(options.get("rdrop"))
        return original(self, task_, batch, **options)

    monkeypatch.setattr(MultitaskBERT, "loss", spy)
    model = trained_model(world, tmp_path / "rdrop", "--tasks", task, f"--{task}-rdrop", "1")
    assert weights and set(weights) == {1.0}
    summary = json.loads((tmp_path / "rdrop" / "summary.json").read_text())
    assert report.method(summary) == f"multitask (round-robin, {task} only, {label} R-Drop 1)"
    assert train_losses(model, world, [task])[task] < train_losses(initial_model(world), world, [task])[task]


def test_sst_smoothing_reaches_every_training_loss_and_names_itself(world, tmp_path, monkeypatch):
    """--sst-smoothing / --sst-smoothing-kind: every training loss gets them, the results
    table names them, and SST's loss falls."""
    seen, original = [], MultitaskBERT.loss

    def spy(self, task_, batch, **options):
        if self.training:
            seen.append((options.get("smoothing"), options.get("smoothing_kind")))
        return original(self, task_, batch, **options)

    monkeypatch.setattr(MultitaskBERT, "loss", spy)
    model = trained_model(world, tmp_path / "ls", "--tasks", "sst", "--sst-smoothing", "0.1",
                          "--sst-smoothing-kind", "uniform")
    assert seen and set(seen) == {(0.1, "uniform")}
    summary = json.loads((tmp_path / "ls" / "summary.json").read_text())
    assert report.method(summary) == "multitask (round-robin, sst only, SST label smoothing 0.1 (uniform))"
    assert train_losses(model, world, ["sst"])["sst"] < train_losses(initial_model(world), world, ["sst"])["sst"]


@pytest.mark.parametrize("command, bad", [
    ("train", ["--sst-smoothing", "1"]), ("train", ["--sst-smoothing", "-0.1"]),
    ("train", ["--sst-rdrop", "-1"]), ("train", ["--para-rdrop", "-1"]), ("train", ["--sts-rdrop", "-1"]),
    ("train", ["--sts-rdrop", "1", "--sts-loss", "cosent"]), ("train", ["--ema", "1"]), ("train", ["--ema", "-0.5"]),
    ("train", ["--epochs", "0"]), ("train", ["--log-every", "0"]), ("train", ["--batch-size", "0"]),
    ("train", ["--warmup", "1.5"]), ("train", ["--task-probs", "para=1/0"]), ("train", ["--max-length", "1"]),
    ("train", ["--checkpoint-every", "-1"]), ("train", ["--pcgrad-samples", "0"]),
    ("pretrain", ["--heldout-frac", "0"]), ("pretrain", ["--mlm-prob", "2"]), ("pretrain", ["--max-steps", "0"]),
    ("pretrain", ["--warmup-frac", "-0.1"]), ("sentiment", ["--epochs", "0"]), ("sentiment", ["--dropout", "2"]),
    *((command, [option, "-1"]) for command in ("train", "pretrain", "sentiment") for option in ("--lr", "--weight-decay")),
    ("train", ["--head-lr", "-1"]), ("pretrain", ["--head-lr", "-1"]),
    ("predict", ["--batch-size", "0"]), ("predict", ["--max-length", "1"]), ("ensemble", ["--limit", "0"])])
def test_out_of_range_options_are_refused_at_once(command, bad, capsys):
    """Before any data is read: with the command's name and the option, not a traceback
    minutes later (or, for --epochs 0, a run that ends without a best/ to evaluate), and
    with the same exit status from every command."""
    required = {"train": ["--out", "x"], "predict": ["--checkpoint", "x", "--task", "sst", "--input", "x",
                                                     "--output", "x.csv"],
                "ensemble": ["--checkpoints", "x", "--out", "x"]}
    code = cli.main([command, *required.get(command, []), *bad])
    assert code == 1
    assert f"python -m minibert {command}: error: {bad[0]}" in capsys.readouterr().err


def test_ema_run_keeps_the_average_in_best_and_names_itself(world, tmp_path):
    """--ema: best/ holds the shadows of the checkpoint (one epoch: best/ is that epoch), not
    the raw weights training goes on from, and the results table names the option."""
    out = run(world, tmp_path / "ema", "--epochs", "1", "--ema", "0.9")
    ckpt = latest_checkpoint(out / "checkpoints")
    shadows = read_safetensors(ckpt / "ema.safetensors")  # keyed by parameter name
    raw = read_safetensors(ckpt / "model.safetensors")
    best = dict(load_model(out / "best").named_parameters())
    assert shadows.keys() == best.keys()  # every parameter trains in the multitask stage
    for name, p in best.items():
        assert torch.equal(p.detach(), shadows[name]), name
    assert not all(torch.equal(p.detach(), raw[name]) for name, p in best.items())
    summary = json.loads((out / "summary.json").read_text())
    assert report.method(summary) == "multitask (round-robin, EMA 0.9)"


def test_default_lr_schedule_trains_to_finite_weights(world, tmp_path):
    """The default schedule warms up from lr = 0 at the first step; that step must be a
    no-op, not NaN (parameters whose gradient is exactly zero, like attention key biases,
    are the ones at risk)."""
    argv = ["--weights", str(world[0]), "--data-dir", str(world[1]), "--out", str(tmp_path / "d"),
            "--epochs", "1", "--batch-size", "8", "--warmup", "0.2", "--no-progress"]
    assert train.main(argv) == 0
    model = load_model(tmp_path / "d" / "best")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_layer_lr_decay_gives_each_layer_its_step(world):
    """--layer-lr-decay d: the top layer and the pooler learn at --lr, each layer below at d times
    the one above it, the embeddings at lr * d^N; d = 1 keeps the one group of before. Checked
    through the optimizer: Adam's first step moves every weight by its group's lr (|m / sqrt(v)| = 1)."""
    model = load_model(world[0])
    n = model.bert.config.num_hidden_layers

    def first_step_sizes(decay):
        bert = copy.deepcopy(model.bert)
        before = {name: p.detach().clone() for name, p in bert.named_parameters()}
        groups = train.encoder_groups(bert, 1e-2, decay)
        for p in bert.parameters():
            p.grad = torch.randn_like(p)
        AdamW(groups, lr=1e-2, weight_decay=0.0, eps=1e-12).step()
        return len(groups), {name: (p.detach() - before[name]).abs() for name, p in bert.named_parameters()}

    n_groups, moved = first_step_sizes(0.5)
    assert n_groups == n + 1  # the embeddings and N layers; the pooler joins the top one
    for name, step in moved.items():
        depth = int(name.split(".")[2]) + 1 if name.startswith("encoder.") else 0 if name.startswith("emb") else n
        torch.testing.assert_close(step, torch.full_like(step, 1e-2 * 0.5 ** (n - depth)), rtol=1e-4, atol=0)
    n_groups, moved = first_step_sizes(1.0)
    assert n_groups == 1 and all(torch.allclose(step, torch.full_like(step, 1e-2)) for step in moved.values())
    model.freeze_encoder(True)
    assert train.encoder_groups(model.bert, 1e-2, 0.5) == []
    with pytest.raises(SystemExit, match="layer-lr-decay"):
        train.parse_args(["--out", "x", "--layer-lr-decay", "0"])


def test_random_schedule_follows_the_probabilities(world):
    args = train.parse_args(["--out", "x", "--schedule", "random", "--task-probs", "para=1/4,sts=1,sst=0"])
    sets = train_sets(world)
    firsts, seen = set(), {"sst": 0, "para": 0, "sts": 0}
    for epoch in range(200):
        plan = train.epoch_plan(args, sets, epoch)
        tasks = list(dict.fromkeys(step[0][0] for step in plan))  # the epoch's task order
        for t in tasks:
            seen[t] += 1
            assert sum(len(idx) for s in plan for task, idx in s if task == t) == len(sets[t])
        firsts.add(tasks[0])
    assert seen["sst"] == 0 and seen["sts"] == 200 and 30 <= seen["para"] <= 70
    assert firsts == {"para", "sts"}  # the order is shuffled


def test_interleaved_plan_shuffles_the_round_robin_batches_together(world):
    sets = train_sets(world)
    plans = {s: train.epoch_plan(train.parse_args(["--out", "x", "--schedule", s, "--batch-size", "4"]), sets, 3)
             for s in ("round-robin", "interleaved")}
    steps = {s: [(t, tuple(idx)) for [(t, idx)] in plan] for s, plan in plans.items()}
    assert sorted(steps["interleaved"]) == sorted(steps["round-robin"])  # the same batches, each once
    switches = {s: sum(a[0] != b[0] for a, b in zip(st, st[1:])) for s, st in steps.items()}
    assert switches["round-robin"] == 2 and switches["interleaved"] > 2  # three blocks, or mixed


def test_pcgrad_plan_draws_equal_samples(world):
    args = train.parse_args(["--out", "x", "--schedule", "pcgrad", "--pcgrad-samples", "20", "--batch-size", "8"])
    sets = train_sets(world)
    plan = train.epoch_plan(args, sets, 0)
    assert len(plan) == 3 and all([t for t, _ in step] == ["sst", "para", "sts"] for step in plan)
    for k, t in enumerate(["sst", "para", "sts"]):
        assert sum(len(step[k][1]) for step in plan) == 20


@pytest.mark.parametrize("schedule, stop, extra", [
    ("round-robin", 4, ["--layer-lr-decay", "0.5", "--sst-rdrop", "1", "--sts-rdrop", "1"]),
    pytest.param("pcgrad", 4, ["--random-pair-order", "--ema", "0.9"], marks=pytest.mark.step07),
    ("round-robin", 8, ["--stage", "baseline", "--epochs", "4"])])  # 6 steps an epoch: no STS head
def test_resume_equals_uninterrupted_bitwise(world, tmp_path, schedule, stop, extra):
    """Killed mid-epoch 1 (the second) and resumed, a run ends where an uninterrupted one ends:
    weights, random state, metrics and prediction files. With the encoder frozen (baseline),
    the resumed run rebuilds best/'s model from disk at its first improvement (here the end of
    the third epoch), which must not draw on the run's random numbers: the fourth epoch's
    dropout, and so its weights, would differ (they do without torch.random.fork_rng)."""
    args = ["--epochs", "2", "--schedule", schedule, *extra]
    full = run(world, tmp_path / "full", *args)
    part = run(world, tmp_path / "part", *args, "--stop-after-step", str(stop))  # mid-epoch 1
    assert not (part / "summary.json").exists()
    config = json.loads((part / "config.json").read_text())  # as written before --tasks existed:
    (part / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in ("tasks", "sts_loss")}))
    run(world, tmp_path / "part", *args, "--resume")  # the options it lacks take their defaults
    for f in ["model.safetensors", "rng.safetensors"] + (["ema.safetensors"] if "--ema" in extra else []):
        a = read_safetensors(latest_checkpoint(full / "checkpoints") / f)
        b = read_safetensors(latest_checkpoint(part / "checkpoints") / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k not in ("time", "run", "train_time", "sent_per_s")}
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(full) == strip(part)
    for f in ("sst-dev-output.csv", "para-test-output.csv", "sts-dev-output.csv"):
        assert (full / "predictions" / f).read_text() == (part / "predictions" / f).read_text()


def test_a_step_saved_again_survives_a_kill_midway(tmp_path, monkeypatch):
    """Saving a step that has a checkpoint already (a resumed run) never leaves LATEST naming
    nothing: killed between moving the old copy aside and putting the new one in place, the
    run still resumes from the old copy."""
    from minibert import checkpoint
    model = torch.nn.Linear(2, 2)
    checkpoint.save_training_state(tmp_path, 4, model, extra={"copy": 1})
    real = os.replace

    def killed(src, dst):  # the kill lands as the new folder is about to take the name
        if Path(src).name == ".step-0000004.tmp":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_training_state(tmp_path, 4, model, extra={"copy": 2})
    monkeypatch.setattr(checkpoint.os, "replace", real)
    found = latest_checkpoint(tmp_path)
    assert found.name == ".step-0000004.old"  # the old copy, moved aside
    assert json.loads((found / "state.json").read_text())["extra"] == {"copy": 1}
    checkpoint.save_training_state(tmp_path, 5, model, extra={"copy": 3})  # the resumed run goes on
    found = latest_checkpoint(tmp_path)
    assert found.name == "step-0000005" and json.loads((found / "state.json").read_text())["extra"] == {"copy": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "step-0000005"]  # nothing left aside


@pytest.mark.usefixtures("ctrl_c_reaches_python")
def test_ctrl_c_stops_at_the_end_of_a_step_with_a_checkpoint(world, tmp_path, monkeypatch, capsys):
    """The first Ctrl-C (SIGINT) lets the step it interrupts finish, saves a checkpoint there
    and raises KeyboardInterrupt; --resume then ends where an uninterrupted run ends, bitwise."""
    usual = signal.getsignal(signal.SIGINT)
    full, part = run(world, tmp_path / "full", "--epochs", "2"), tmp_path / "part"
    real_step = train.train_step

    def step(*a):  # a[-1]: the steps taken before this one
        if a[-1] == 3:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the 4th step (mid-epoch 1)
        return real_step(*a)

    monkeypatch.setattr(train, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        run(world, part, "--epochs", "2")
    assert signal.getsignal(signal.SIGINT) is usual
    assert latest_checkpoint(part / "checkpoints").name == "step-0000004"
    assert not (part / "summary.json").exists()
    out = capsys.readouterr()
    assert "Ctrl-C: stopping after this step" in out.err and "stopped after step 4, checkpoint saved" in out.out
    monkeypatch.setattr(train, "train_step", real_step)
    run(world, part, "--epochs", "2", "--resume")
    a, b = (read_safetensors(latest_checkpoint(d / "checkpoints") / "model.safetensors") for d in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for f in ("sst-dev-output.csv", "para-test-output.csv", "sts-dev-output.csv"):
        assert (full / "predictions" / f).read_text() == (part / "predictions" / f).read_text()


def test_an_unusable_device_is_said_before_anything_runs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    with pytest.raises(InputError, match="--device cuda: no CUDA GPU here .*--device cpu"):
        pick_device("cuda")
    with pytest.raises(InputError, match="--device gpu: "):
        pick_device("gpu")
    assert pick_device("auto") == torch.device("cpu")


@pytest.mark.usefixtures("ctrl_c_reaches_python")
def test_a_second_ctrl_c_stops_at_once():
    usual = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.requested  # the first one only asks
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is usual
    with pytest.raises(KeyboardInterrupt), StopRequest(enabled=False) as stop:  # several processes
        signal.raise_signal(signal.SIGINT)
    assert not stop.requested
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job: Ctrl-C stays ignored
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGINT)
        assert not stop.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, usual)


def read_rows(path, delimiter=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def test_prediction_files(world, rr_run):
    data = world[1]
    for task, prefix, header in [("sst", "ids-sst", "Predicted_Sentiment"), ("para", "quora", "Predicted_Is_Paraphrase"),
                                 ("sts", "sts", "Predicted_Similiarity")]:
        for split, source in [("dev", f"{prefix}-dev.csv"), ("test", f"{prefix}-test-student.csv")]:
            rows = read_rows(rr_run / "predictions" / f"{task}-{split}-output.csv")
            assert rows[0] == ["id", header]
            src = read_rows(data / source, "\t")
            ids = [r[src[0].index("id")] for r in src[1:] if len(r) == len(src[0]) and r[-1] != ""]  # minus the malformed row
            assert [r[0] for r in rows[1:]] == ids
            values = [float(r[1]) for r in rows[1:]]
            allowed = {"sst": lambda v: v in range(5), "para": lambda v: v in (0, 1), "sts": lambda v: 0 <= v <= 5}
            assert all(map(allowed[task], values)), (task, split, values)


def test_predict_and_ensemble_commands(world, rr_run, tmp_path, capsys):
    out = tmp_path / "sts.csv"
    assert evaluate.predict_main(["--checkpoint", str(rr_run / "best"), "--task", "sts",
                                  "--input", str(world[1] / "sts-dev.csv"), "--output", str(out)]) == 0
    assert out.read_text() == (rr_run / "predictions" / "sts-dev-output.csv").read_text()
    assert "sts_r" in capsys.readouterr().out
    # an ensemble of one model twice is that model
    assert evaluate.ensemble_main(["--checkpoints", str(rr_run / "best"), str(rr_run / "best"),
                                   "--data-dir", str(world[1]), "--out", str(tmp_path / "ens")]) == 0
    got = json.loads((tmp_path / "ens" / "summary.json").read_text())["dev"]
    want = json.loads((rr_run / "summary.json").read_text())["dev"]
    assert got == pytest.approx(want, abs=1e-6)
    alone = ", ".join(f"{m} {want[m]:.4f}" for m in ("sst_acc", "para_acc", "sts_r", "overall"))  # each member alone
    members = [line for line in capsys.readouterr().out.splitlines() if line.startswith("member ")]
    assert [m.split(" [")[0] for m in members] == [f"member {k}/2 {rr_run / 'best'}: dev {alone}" for k in (1, 2)]
    # a path that is not a trained model is refused before any member runs, and nothing is written
    for bad in (tmp_path / "missing", rr_run):  # rr_run: a run folder, not its best/
        with pytest.raises(SystemExit, match="not a MultitaskBERT checkpoint"):
            evaluate.ensemble_main(["--checkpoints", str(rr_run / "best"), str(bad),
                                    "--data-dir", str(world[1]), "--out", str(tmp_path / "ens2")])
        with pytest.raises(SystemExit, match="not a MultitaskBERT checkpoint"):
            evaluate.predict_main(["--checkpoint", str(bad), "--task", "sts", "--input", str(world[1] / "sts-dev.csv"),
                                   "--output", str(tmp_path / "x.csv")])
    assert "member" not in capsys.readouterr().out and not (tmp_path / "ens2").exists()
    assert not (tmp_path / "x.csv").exists()
    # outputs that cannot be written are refused before the inference, and a training run's
    # folder is never taken for an ensemble's (its summary.json and predictions/ would go)
    (tmp_path / "file").write_text("")
    ensemble = ["--checkpoints", str(rr_run / "best"), "--data-dir", str(world[1]), "--out"]
    for out, said in ((tmp_path / "file", "a file, expected a folder"), (tmp_path / "file" / "e", "is a file"),
                      (rr_run, "holds a training run")):
        before = {p: p.stat().st_mtime_ns for p in rr_run.rglob("*")}
        with pytest.raises(SystemExit, match=said):
            evaluate.ensemble_main(ensemble + [str(out)])
        assert {p: p.stat().st_mtime_ns for p in rr_run.rglob("*")} == before
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "summary.json").write_text("{")  # unreadable: refused, not a traceback
    with pytest.raises(SystemExit, match="holds a training run"):
        evaluate.ensemble_main(ensemble + [str(tmp_path / "corrupt")])
    predict = ["--checkpoint", str(rr_run / "best"), "--task", "sts", "--input", str(world[1] / "sts-dev.csv")]
    for out, said in ((tmp_path, "a folder, expected a file"), (tmp_path / "file" / "x.csv", "is a file")):
        with pytest.raises(SystemExit, match=said):
            evaluate.predict_main(predict + ["--output", str(out)])
    assert "member" not in capsys.readouterr().out


def test_both_orders_reads_each_pair_both_ways(world, rr_run, tmp_path):
    """predict_dataset(both_orders=True): for a pair head that depends on the order, the mean
    of its outputs for (s1, s2) and (s2, s1), which no longer depends on the order; the
    paper's STS cosine, symmetric already, is read once."""
    cpu = torch.device("cpu")
    tok = WordPieceTokenizer.from_vocab(world[0] / "vocab.txt")
    dev = load_datasets(world[1], tok, tasks=["para", "sts"], splits=("dev",))["dev"]
    for pair_input in ("siamese", "cross"):
        seed_everything(0)  # new random heads
        model = load_model(world[0], para_input=pair_input, sts_input=pair_input).eval()
        for task, ds in dev.items():
            one_way, other_way = (evaluate.predict_dataset(model, d, cpu) for d in (ds, ds.swapped()))
            both = evaluate.predict_dataset(model, ds, cpu, both_orders=True)
            if model.symmetric(task):
                assert (task, pair_input) == ("sts", "siamese")
                torch.testing.assert_close(other_way, one_way)
                assert torch.equal(both, one_way)
            else:
                assert not torch.allclose(one_way, other_way, atol=1e-4)  # the head reads in order
                assert torch.equal(both, (one_way + other_way) / 2)
                assert torch.equal(evaluate.predict_dataset(model, ds.swapped(), cpu, both_orders=True), both)
    ens = tmp_path / "ens"
    assert evaluate.ensemble_main(["--checkpoints", str(rr_run / "best"), "--both-orders",
                                   "--data-dir", str(world[1]), "--out", str(ens)]) == 0
    summary = json.loads((ens / "summary.json").read_text())
    assert summary["both_orders"] and report.method(summary) == "ensemble (members: PD 1, SST 1, STS 1, pairs read both ways)"
    model, dev = load_model(rr_run / "best"), load_datasets(world[1], tok, splits=("dev",))["dev"]
    want = evaluate.evaluate(model, dev, cpu, both_orders=True)[0]
    assert summary["dev"] == pytest.approx(want, abs=1e-6)


def test_bad_input(world, rr_run, tmp_path):
    with pytest.raises(SystemExit, match="already holds a run"):
        run(world, rr_run)
    finished = tmp_path / "finished"  # a finished run without its checkpoints is a run too
    finished.mkdir()
    shutil.copy(rr_run / "summary.json", finished)
    with pytest.raises(SystemExit, match="already holds a run"):
        run(world, finished)
    with pytest.raises(SystemExit, match="finished run without checkpoints: nothing to resume"):
        run(world, finished, "--resume")  # it would start afresh and delete the finished run's files
    # --resume continues a run as it was started: an option given again must agree with it
    epochs = json.loads((rr_run / "config.json").read_text())["epochs"]
    resume = ["--out", str(rr_run), "--resume"]
    with pytest.raises(SystemExit, match=f"--epochs {epochs} in its config.json differ"):
        train.parse_args(resume + ["--epochs", str(epochs + 3)])
    assert train.parse_args(resume + ["--epochs", str(epochs), "--schedule", "round-robin", "--device", "cpu"]).resume
    with pytest.raises(SystemExit, match=r"--no-amp \(not given\) in its config.json differ"):  # the switch's name
        train.parse_args(resume + ["--no-amp"])
    with pytest.raises(SystemExit) as abbreviated:  # it would dodge the checks that look for --quick, --resume
        train.parse_args(["--out", "x", "--qui"])
    assert abbreviated.value.code == 2
    # a run older than an option: named at its default, accepted; at another value, refused
    old = tmp_path / "old"
    old.mkdir()
    config = json.loads((rr_run / "config.json").read_text())
    del config["sst_smoothing"]
    (old / "config.json").write_text(json.dumps(config))
    assert train.parse_args(["--out", str(old), "--resume", "--sst-smoothing", "0"]).sst_smoothing == 0.0
    with pytest.raises(SystemExit, match=r"--sst-smoothing 0.0 \(its default: the run predates the option\)"):
        train.parse_args(["--out", str(old), "--resume", "--sst-smoothing", "0.1"])
    with pytest.raises(DataError, match="ids-sst-train.csv"):
        train.main(["--out", str(tmp_path / "x"), "--weights", str(world[0]), "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="task-probs"):
        train.parse_args(["--out", "x", "--task-probs", "para=2"])
    with pytest.raises(SystemExit, match="the plan has no training step"):  # not the scheduler's traceback
        run(world, tmp_path / "none", "--schedule", "random", "--task-probs", "para=0,sts=0,sst=0")
    assert not (tmp_path / "none").exists()


def test_commands_end_bad_input_with_its_message_not_a_traceback(world, rr_run, tmp_path, capsys, monkeypatch):
    """`python -m minibert`: a bad data file or folder, or a bad weights folder, ends the
    command with status 1 and its message (naming it) instead of a traceback, and writes
    nothing; a bug (any other exception) keeps its traceback, as does every error with
    MINIBERT_TRACEBACK=1."""
    monkeypatch.delenv("MINIBERT_TRACEBACK", raising=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("id\tfoo\n1\tbar\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("\tid\tsentence1\tsentence2\tsimilarity\n0\tx\tA man.\tA dog.\t\n")  # one row, no label
    broken = tmp_path / "weights"  # a vocabulary, and a config.json cut short
    broken.mkdir()
    shutil.copy(world[0] / "vocab.txt", broken)
    (broken / "config.json").write_text('{"hidden_size": 32,')
    predict = ["predict", "--checkpoint", str(rr_run / "best"), "--task", "sts", "--output", str(tmp_path / "out.csv")]
    train_on = ["train", "--out", str(tmp_path / "run"), *FAST]
    cases = [(predict + ["--input", str(tmp_path / "missing.csv")], "missing.csv: no such file"),
             (predict + ["--input", str(tmp_path)], "a folder, not a file"),
             (predict + ["--input", str(bad)], r"bad.csv: wrong header \['id', 'foo'\]"),
             (train_on + ["--weights", str(world[0]), "--data-dir", str(tmp_path)], "data folder .* is missing files"),
             (predict + ["--input", str(empty)], r"empty.csv: no usable rows \(all 1 malformed"),
             (train_on + ["--weights", str(tmp_path), "--data-dir", str(world[1])], "no vocabulary file"),
             (train_on + ["--weights", str(broken), "--data-dir", str(world[1])], "config.json: not valid JSON")]
    for argv, message in cases:
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert re.search(f"^python -m minibert {argv[0]}: error: .*{message}", err, re.M), err
    assert sorted(tmp_path.iterdir()) == sorted([bad, empty, broken])  # no prediction file, no run folder
    monkeypatch.setenv("MINIBERT_TRACEBACK", "1")
    with pytest.raises(DataError, match="missing.csv"):
        cli.main(cases[0][0])
    monkeypatch.delenv("MINIBERT_TRACEBACK")
    monkeypatch.setattr(evaluate, "predict_main", lambda argv: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(predict)


def test_one_task_alone(world, tmp_path):
    """--tasks sts: only STS is loaded, trained, evaluated and predicted (here with CoSENT)."""
    out = run(world, tmp_path / "sts", "--tasks", "sts", "--sts-loss", "cosent")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["dev"]) == {"sts_r", "overall"} and summary["dev"]["overall"] == summary["dev"]["sts_r"]
    assert sorted(f.name for f in (out / "predictions").iterdir()) == ["sts-dev-output.csv", "sts-test-output.csv"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {t for r in rows for t in r["train_loss"]} == {"sts"}
    tok = WordPieceTokenizer.from_vocab(world[0] / "vocab.txt")
    sts = load_datasets(world[1], tok, tasks=["sts"], splits=("train",))["train"]["sts"]
    batch = sts.collate(list(range(len(sts))))
    with torch.no_grad():
        before, after = (m.eval().loss("sts", batch, sts_loss="cosent").item()
                         for m in (initial_model(world), load_model(out / "best")))
    assert after < before
    with pytest.raises(SystemExit, match="nothing to train"):
        run(world, tmp_path / "frozen-sts", "--stage", "baseline", "--tasks", "sts")
    for bad in ("sts,sts", "nli", ""):
        with pytest.raises(SystemExit, match="--tasks"):
            train.parse_args(["--out", "x", "--tasks", bad])


def test_a_cross_sts_specialist_joins_an_ensemble_for_sts_only(world, rr_run, tmp_path):
    """--tasks sts --sts-input cross: a checkpoint trained for STS alone (heads.json says so),
    whose frozen single-task stage has an STS head to train, and which an ensemble averages in
    for STS only: its untrained SST and paraphrase heads get no vote."""
    spec = run(world, tmp_path / "spec", "--tasks", "sts", "--sts-input", "cross")
    model = load_model(spec / "best")
    assert (model.tasks, model.sts_input) == (["sts"], "cross")
    assert load_model(rr_run / "best").tasks == ["sst", "para", "sts"]
    # from a checkpoint of all three: a fine-tuned encoder keeps only the task trained on it,
    # a frozen one the checkpoint's tasks too
    tuned = run(world, tmp_path / "tuned", "--tasks", "sts", "--weights", str(rr_run / "best"))
    assert load_model(tuned / "best").tasks == ["sts"]
    frozen = run(world, tmp_path / "frozen", "--stage", "single-task", "--tasks", "sst",
                 "--weights", str(rr_run / "best"))
    assert load_model(frozen / "best").tasks == ["sst", "para", "sts"]
    seed_everything(0)  # the run's initial heads
    before = load_model(world[0], dropout=0.1, sts_input="cross")
    assert train_losses(model, world, ["sts"])["sts"] < train_losses(before, world, ["sts"])["sts"]
    st_model = trained_model(world, tmp_path / "st", "--stage", "single-task", "--tasks", "sts",
                             "--weights", str(spec / "best"))
    assert not torch.equal(st_model.sts_joint.weight, model.sts_joint.weight)
    with pytest.raises(SystemExit, match="trained for sts only, not sst"):
        evaluate.predict_main(["--checkpoint", str(spec / "best"), "--task", "sst",
                               "--input", str(world[1] / "ids-sst-dev.csv"), "--output", str(tmp_path / "x.csv")])
    sts_data = tmp_path / "sts-data"  # STS models alone need the STS files alone
    sts_data.mkdir()
    for f in world[1].glob("sts-*.csv"):
        shutil.copy(f, sts_data)
    assert evaluate.ensemble_main(["--checkpoints", str(spec / "best"), str(spec / "best"),
                                   "--data-dir", str(sts_data), "--out", str(tmp_path / "ens-sts")]) == 0
    ens = tmp_path / "ens"
    assert evaluate.ensemble_main(["--checkpoints", str(rr_run / "best"), str(spec / "best"),
                                   "--data-dir", str(world[1]), "--out", str(ens)]) == 0
    assert json.loads((ens / "summary.json").read_text())["members"] == {"sst": 1, "para": 1, "sts": 2}
    for f in ("sst-dev-output.csv", "para-test-output.csv"):  # the full model's alone
        assert (ens / "predictions" / f).read_text() == (rr_run / "predictions" / f).read_text()
    # STS: the mean of both models' scores, then clipped to 0..5 as one prediction (the
    # members' files are clipped each, so their mean can differ); the files keep 4 decimals
    tok = WordPieceTokenizer.from_vocab(world[0] / "vocab.txt")
    sets = load_datasets(world[1], tok, tasks=["sts"], splits=("dev", "test"))
    for split in ("dev", "test"):
        ds = sets[split]["sts"]
        mean = sum(evaluate.predict_dataset(load_model(d / "best"), ds, torch.device("cpu")) for d in (rr_run, spec)) / 2
        got = read_rows(ens / "predictions" / f"sts-{split}-output.csv")[1:]
        assert [r[0] for r in got] == ds.example_ids
        assert [float(r[1]) for r in got] == pytest.approx(mean.clamp(0, 5).tolist(), abs=1e-4)
    assert report.main(["--runs", str(tmp_path)]) == 0  # the default --out: RUNS/results
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| spec | multitask (round-robin, cross-encoder STS head, sts only) |" in table
    untrained = tmp_path / "untrained"  # new heads on the BERT folder: trained for no task
    load_model(world[0]).save(untrained, vocab=world[0] / "vocab.txt")
    with pytest.raises(SystemExit, match="none of the checkpoints was trained for a task"):
        evaluate.ensemble_main(["--checkpoints", str(untrained), "--data-dir", str(world[1]),
                                "--out", str(tmp_path / "e2")])


def test_quick_defaults_yield_to_explicit_options():
    quick = train.parse_args(["--out", "x", "--quick"])
    assert all(getattr(quick, k) == v for k, v in train.QUICK.items())
    mine = train.parse_args(["--limit", "50", "--out", "x", "--quick", "--head-lr", "1e-4"])
    assert (mine.limit, mine.head_lr, mine.epochs) == (50, 1e-4, train.QUICK["epochs"])
    assert train.parse_args(["--out", "x"]).limit is None


def csv_majority(path, label_column):
    """Share of the most frequent train label's rows in a dev file, read with plain csv."""
    def labels(split):
        with open(path.parent / path.name.replace("SPLIT", split), newline="") as f:
            return [r[label_column] for r in csv.DictReader(f, delimiter="\t") if (r[label_column] or "").strip()]
    counts = Counter(float(x) for x in labels("train"))
    common = min(counts, key=lambda y: (-counts[y], y))  # ties: the smaller label
    dev = [float(x) for x in labels("dev")]
    return sum(x == common for x in dev) / len(dev)


def test_majority_floor_in_summary(world, rr_run):
    floor = json.loads((rr_run / "summary.json").read_text())["majority"]
    assert floor["sst_acc"] == pytest.approx(csv_majority(world[1] / "ids-sst-SPLIT.csv", "sentiment"))
    assert floor["para_acc"] == pytest.approx(csv_majority(world[1] / "quora-SPLIT.csv", "is_duplicate"))
    assert floor["sts_r"] == 0.0
    assert floor["overall"] == pytest.approx((floor["sst_acc"] + floor["para_acc"]) / 3)


def test_results_table_and_plot(rr_run, tmp_path):
    assert report.main(["--runs", str(rr_run.parent), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "| rr | multitask (round-robin) |" in md and "PD acc" in md
    assert "| majority class |" in md
    try:
        import matplotlib  # noqa: F401  (the plot is optional: without it, the table alone)
    except ImportError:
        assert not (tmp_path / "learning_curves.png").exists()
        return
    assert 10_000 < (tmp_path / "learning_curves.png").stat().st_size < 200_000  # a drawn figure, small enough


def test_results_name_runs_below_the_majority_class():
    run = {"name": "r", "stage": "multitask", "schedule": "random",
           "dev": {"sst_acc": 0.30, "para_acc": 0.70, "sts_r": 0.5, "overall": 0.5},
           "majority": {"sst_acc": 0.32, "para_acc": 0.62, "sts_r": 0.0, "overall": 0.31}}
    sentiment = {"name": "s", "stage": "sentiment-finetune", "dataset": "cfimdb",
                 "dev": {"cfimdb_acc": 0.9}, "majority": {"cfimdb_acc": 0.51, "overall": 0.51}}
    md = report.markdown([run, sentiment])
    assert "Not above the majority class: r: sst_acc 0.300 <= 0.320." in md
    assert "| s | cfimdb | finetune | 0.900 | 0.510 |" in md
    run["dev"]["sst_acc"] = 0.33
    assert "Every run beats its majority-class floor" in report.markdown([run, sentiment])
    del sentiment["majority"]  # a summary written before floors were recorded
    assert "The 1 of 2 runs that record a majority-class floor beat it" in report.markdown([run, sentiment])


def test_results_table_of_a_one_task_run():
    """A run of STS alone: its method says so, it shows no overall mean (the paper's is over
    three tasks), and its floor, a part of the full runs' floor, adds no second floor row."""
    full = {"name": "rr", "stage": "multitask", "schedule": "round-robin",
            "dev": {"sst_acc": 0.45, "para_acc": 0.80, "sts_r": 0.87, "overall": 0.707},
            "majority": {"sst_acc": 0.25, "para_acc": 0.63, "sts_r": 0.0, "overall": 0.293}}
    alone = {"name": "sts", "stage": "multitask", "schedule": "round-robin",
             "config": {"tasks": ["sts"], "sts_loss": "cosent", "layer_lr_decay": 0.8},
             "dev": {"sts_r": 0.86, "overall": 0.86}, "majority": {"sts_r": 0.0, "overall": 0.0}}
    md = report.table([full, alone])
    assert "| sts | multitask (round-robin, sts only, STS loss cosent, layer lr decay 0.8) | - | - | 0.860 | - |" in md
    assert md.count("| majority class |") == 1 and "| 0.630 | 0.250 | 0.000 | 0.293 |" in md
    assert report.table([alone]).count("| majority class |") == 1  # alone, its own floor
    ensemble = {**full, "name": "ens", "stage": "ensemble", "schedule": None,
                "members": {"sst": 2, "para": 2, "sts": 3}}
    assert "| ens | ensemble (members: PD 2, SST 2, STS 3) | 0.800 |" in report.table([ensemble])


def test_learning_curves_draw_no_overall_for_a_one_task_run(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    epochs = [{"epoch": e, "dev": {"sst_acc": 0.4, "para_acc": 0.8, "sts_r": 0.8, "overall": 0.67}} for e in range(2)]
    full = {"name": "rr", "metrics": epochs}
    alone = {"name": "sts", "metrics": [{"epoch": e, "dev": {"sts_r": 0.86, "overall": 0.86}} for e in range(2)]}
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert report.plot([full, alone], tmp_path / "curves.png")
    pd, sst, sts, overall = figures[0].axes
    assert (len(pd.lines), len(sst.lines), len(sts.lines), len(overall.lines)) == (1, 1, 2, 1)
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["rr", "sts"]


# ---- two processes, gloo, CPU -----------------------------------------------------------


def _ddp_worker(rank, world_size, port, world, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    args = train.parse_args(["--weights", str(world[0]), "--data-dir", str(world[1]), "--out", str(out),
                             "--device", "cpu", *FAST, "--epochs", "2", "--schedule", os.environ["SCHEDULE"]])
    model = train.run(args)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out.parent / f"rank{rank}.pt")


def spawn_two(worker, *args):
    """Run worker(rank, 2, port, *args) in two processes that can join one gloo group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, *args), nprocs=2)


@pytest.mark.parametrize("schedule", ["round-robin", pytest.param("pcgrad", marks=pytest.mark.step07)])
def test_two_processes_take_the_same_steps(world, tmp_path, schedule):
    os.environ["SCHEDULE"] = schedule
    try:
        spawn_two(_ddp_worker, world, tmp_path / "ddp")
    finally:
        del os.environ["SCHEDULE"]
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    initial = initial_model(world).state_dict()
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"],
                           initial["bert.encoder.layer.0.attention.self.query.weight"])
    assert (tmp_path / "ddp" / "summary.json").is_file()


def _all_reduce_worker(rank, world_size, port, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        both, one, none = (torch.nn.Parameter(torch.zeros(2, 3)) for _ in range(3))
        both.grad = torch.full((2, 3), float(rank + 1))  # 1 on rank 0, 2 on rank 1
        one.grad = torch.full((2, 3), 4.0) if rank == 0 else None  # only rank 0 trained its task
        train.all_reduce_gradients([both, one, none])
        torch.save([None if p.grad is None else p.grad.clone() for p in (both, one, none)], out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_keeps_a_parameter_no_process_trained_without_gradient(tmp_path):
    """Under torchrun a head that no process trained this step has no gradient afterwards, as
    on one process (AdamW then skips it); one that some process trained gets the mean, zeros
    counted for the others."""
    spawn_two(_all_reduce_worker, tmp_path)
    for rank in (0, 1):
        both, one, none = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(both, torch.full((2, 3), 1.5)) and torch.equal(one, torch.full((2, 3), 2.0))
        assert none is None
