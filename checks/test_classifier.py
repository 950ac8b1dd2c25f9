"""The sentiment classifier (minibert/classifier.py) on a tiny random BERT and tiny CSVs
(checks/tiny_world.py: the class is given by one word, so a few epochs learn it)."""

import csv
import json
import shutil

import pytest
import torch

from minibert import classifier
from minibert.data import read_examples
from minibert.model import BertModel
from tiny_world import add_cfimdb, make_data, make_weights


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    data = add_cfimdb(make_data(root / "data", n=(160, 60, 10)))
    return make_weights(root / "bert"), data


def run(world, tmp_path, *extra):
    weights, data = world
    out = tmp_path / "run"
    argv = ["--weights", str(weights), "--data-dir", str(data), "--out", str(out), "--device", "cpu",
            "--batch-size", "16", "--no-progress", *extra]
    assert classifier.main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rows, json.loads((out / "summary.json").read_text())


def read_predictions(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "Predicted_Sentiment"]
    return {r[0]: int(r[1]) for r in rows[1:]}


def test_finetune_learns_and_writes_cs224n_predictions(world, tmp_path):
    out, rows, summary = run(world, tmp_path, "--option", "finetune", "--lr", "2e-3", "--epochs", "6")
    losses = [r["train_loss"] for r in rows]
    accs = [r["dev"]["sst_acc"] for r in rows]
    assert losses[-1] < 0.7 * losses[0], losses
    assert max(accs) > 0.6, accs  # 5 classes: chance is 0.2
    assert summary["dev"]["sst_acc"] == max(accs) and summary["best_epoch"] == accs.index(max(accs))
    # the majority-class floor: the most frequent train label's share of dev
    train_labels = [e.label for e in read_examples(world[1] / "ids-sst-train.csv", "sst")]
    common = min(set(train_labels), key=lambda y: (-train_labels.count(y), y))  # ties: the smaller
    dev_labels = [e.label for e in read_examples(world[1] / "ids-sst-dev.csv", "sst")]
    assert summary["majority"]["sst_acc"] == pytest.approx(dev_labels.count(common) / len(dev_labels))
    # dev predictions: every dev id once, in file order; their accuracy is the reported one
    dev = read_examples(world[1] / "ids-sst-dev.csv", "sst")
    pred = read_predictions(out / "predictions/sst-dev-output.csv")
    assert list(pred) == [e.id for e in dev]
    assert sum(pred[e.id] == e.label for e in dev) / len(dev) == pytest.approx(summary["dev"]["sst_acc"])
    test = read_examples(world[1] / "ids-sst-test-student.csv", "sst")
    pred = read_predictions(out / "predictions/sst-test-output.csv")
    assert list(pred) == [e.id for e in test] and set(pred.values()) <= set(range(5))


def test_pretrain_option_trains_only_the_linear_layer(world):
    weights, _ = world
    bert = BertModel.from_pretrained(weights)
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    model = classifier.SentimentClassifier(bert, num_labels=5, dropout=0.0, freeze=True)
    model.train()
    assert not model.bert.training and model.classifier.weight.requires_grad
    head_before = model.classifier.weight.detach().clone()
    opt = classifier.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 20, (4, 7))
    loss = torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in model.bert.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.bert.state_dict().items())
    assert not torch.equal(head_before, model.classifier.weight)


def test_cached_features_give_the_same_logits(world, tmp_path):
    """--option pretrain trains on sentence vectors computed once: the same logits as the
    whole model (in eval mode, where dropout is off)."""
    from minibert.data import load_datasets
    from minibert.tokenizer import WordPieceTokenizer

    weights, data = world
    ds = load_datasets(data, WordPieceTokenizer.from_vocab(weights / "vocab.txt"), tasks=("sst",))["dev"]["sst"]
    model = classifier.SentimentClassifier(BertModel.from_pretrained(weights), 5, freeze=True).eval()
    cpu = torch.device("cpu")
    features = classifier.predict_dataset(classifier.PooledFeatures(model), ds, cpu)
    idx = [5, 0, 17, 3]
    with torch.no_grad():
        direct = classifier.logits_of(model, ds, idx, cpu)
        cached = classifier.logits_of(model, ds, idx, cpu, features)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-6)


def test_logits_equal_transformers_pooler_times_linear(world):
    """In eval mode (dropout off) the logits are pooler_output @ W.T + b, pooler_output
    computed by transformers' BertModel (the reference) on the same weights, padded rows
    included. (Freezing the encoder changes what trains, not the forward pass: one model.)"""
    transformers = pytest.importorskip("transformers")
    weights, _ = world
    torch.manual_seed(1)
    model = classifier.SentimentClassifier(BertModel.from_pretrained(weights), 5).eval()
    ref = transformers.BertModel.from_pretrained(weights, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    ids = torch.randint(5, 20, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    ids = ids * mask
    with torch.no_grad():
        got = model(ids, mask)
        pooled = ref(input_ids=ids, attention_mask=mask).pooler_output
        want = pooled @ model.classifier.weight.T + model.classifier.bias
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cfimdb_pretrain_run(world, tmp_path):
    out, rows, summary = run(world, tmp_path, "--dataset", "cfimdb", "--epochs", "3", "--lr", "1e-2")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert set(summary["dev"]) == {"cfimdb_acc"} and summary["stage"] == "sentiment-pretrain"
    pred = read_predictions(out / "predictions/cfimdb-dev-output.csv")
    assert set(pred.values()) <= {0, 1}
    assert (out / "predictions/cfimdb-test-output.csv").is_file()


def test_bad_arguments_are_refused(world, tmp_path):
    with pytest.raises(SystemExit):
        classifier.parse_args(["--dataset", "imdb"])
    with pytest.raises(SystemExit):
        classifier.parse_args(["--option", "frozen"])


@pytest.mark.parametrize("option, lr", [("finetune", "1e-2"), ("pretrain", "3e-2")])
def test_resumed_run_equals_uninterrupted(world, tmp_path, option, lr):
    """Stopped after epochs 1, 2 and 4 and resumed each time (--stop-after-epoch, then
    --resume): on CPU bitwise the run without stops, epoch by epoch and in its predictions,
    the best epoch's weights taken from its checkpoint, since that epoch came before the stop
    (with the model of epoch 4 instead, the pretrain case's predictions differ: tried).
    A folder holding a run is not overwritten without --resume, and a resumed run keeps its
    options."""
    weights, data = world
    base = ["--weights", str(weights), "--data-dir", str(data), "--device", "cpu", "--batch-size", "16",
            "--no-progress", "--option", option, "--lr", lr, "--epochs", "5", "--dropout", "0.3"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert classifier.main(base + ["--out", str(whole)]) == 0
    assert classifier.main(base + ["--out", str(parts), "--stop-after-epoch", "1"]) == 0
    assert not (parts / "summary.json").exists()
    with pytest.raises(SystemExit, match="already holds a run"):
        classifier.main(base + ["--out", str(parts)])
    with pytest.raises(SystemExit, match="--lr .* differ"):
        classifier.main(base[:-6] + ["--lr", "0.5", "--out", str(parts), "--resume"])
    # a stop at or before where the run resumes stops after the next epoch (as train's --stop-after-step)
    assert classifier.main(["--out", str(parts), "--resume", "--stop-after-epoch", "1", "--no-progress"]) == 0
    assert [json.loads(r)["epoch"] for r in (parts / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert classifier.main(["--out", str(parts), "--resume", "--stop-after-epoch", "4", "--no-progress"]) == 0
    assert len(list((parts / "checkpoints").glob("best-epoch-*.safetensors"))) == 1  # of epochs 1-4, the best
    assert classifier.main(["--out", str(parts), "--resume", "--no-progress"]) == 0

    def lines(run):
        return [{k: v for k, v in r.items() if k not in ("time", "run")} for r in
                map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert lines(parts) == lines(whole) and [r["epoch"] for r in lines(parts)] == [0, 1, 2, 3, 4]
    shutil.rmtree(whole / "checkpoints")  # a finished run without checkpoints (as before they existed)
    with pytest.raises(SystemExit, match="already holds a run"):
        classifier.main(base + ["--out", str(whole)])
    for split in ("dev", "test"):
        name = f"predictions/sst-{split}-output.csv"
        assert (parts / name).read_text() == (whole / name).read_text()
    summary = {run: json.loads((run / "summary.json").read_text()) for run in (whole, parts)}
    for key in ("dev", "best_epoch", "majority"):
        assert summary[parts][key] == summary[whole][key]
    assert summary[whole]["best_epoch"] < 3  # the best epoch came before the last stop
