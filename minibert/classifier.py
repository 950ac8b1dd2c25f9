"""The classic first BERT exercise: a sentiment classifier on BERT's sentence vector.

    sentence --BERT--> pooler_output (B, C) --dropout--> Linear --> class logits (B, K)

pooler_output is tanh(W h_[CLS] + b), the vector BERT's pretraining (next-sentence
prediction) taught to summarise a sequence (Devlin et al. 2019, section 3; the CS224N minbert
assignment uses it the same way). Two ways to train it, as in that assignment (--option):

    pretrain   BERT frozen: only the linear layer learns (lr 1e-3). BERT is kept in eval
               mode and runs without autograd, so its outputs are fixed features: they are
               computed once, before the first epoch, and every epoch trains on them.
    finetune   BERT and the linear layer learn together (lr 1e-5 .. 5e-5): the encoder
               adapts to the task, which is what makes BERT strong.

Datasets (--dataset): SST (5 classes, very negative .. very positive) and CFIMDB (movie
reviews, negative / positive). Training keeps the epoch of best dev accuracy.

A run folder (--out, default runs/sentiment-DATASET-OPTION):
    config.json      the arguments
    metrics.jsonl    one line per epoch (train loss, dev accuracy)
    checkpoints/     the state after the last complete epoch (model, optimizer, RNG), and
                     best-epoch-K.safetensors, the weights of the best epoch so far
    predictions/     DATASET-dev-output.csv, DATASET-test-output.csv (`id,Predicted_Sentiment`)
    summary.json     the best dev accuracy, read by `python -m minibert results`

--resume continues a stopped run from its last complete epoch (minibert/checkpoint.py), with
the options it was started with (config.json): the epochs after it give, on CPU, bitwise what
an uninterrupted run gives. An epoch stopped midway is done again from its start.
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from minibert.checkpoint import (load_training_state, read_safetensors, save_training_state,
                                 write_json, write_safetensors)
from minibert.data import NUM_CLASSES, load_datasets
from minibert.evaluate import majority_baseline, predict_dataset, score, write_predictions
from minibert.model import BertModel
from minibert.optim import AdamW
from minibert.paths import DATA_DIR_HELP, data_dir, weights_dir
from minibert.runtime import (HelpFormatter, MetricsLog, autocast, check_options, device_name, pick_device,
                              resume_point, resumed_options, seed_everything)
from minibert.tokenizer import WordPieceTokenizer

OPTIONS = {"pretrain": 1e-3, "finetune": 2e-5}  # option -> default learning rate
RUNTIME_ARGS = ("resume", "out", "device", "progress", "stop_after_epoch")  # may change on resume


class SentimentClassifier(nn.Module):
    """BERT + dropout + one linear layer on the pooled [CLS] vector."""

    def __init__(self, bert: BertModel, num_labels: int, dropout: float = 0.3, freeze: bool = False):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.hidden_size, num_labels)
        self.frozen = freeze
        bert.requires_grad_(not freeze)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.bert.eval()  # a frozen encoder gives fixed features: no dropout in it
        return self

    def sentence_vector(self, input_ids, attention_mask):
        """(B, T) token ids and mask -> (B, C) pooled [CLS] vectors (no autograd if frozen)."""
        # BEGIN SOLUTION
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.bert(input_ids, attention_mask)["pooler_output"].float()  # (B, C)
        # END SOLUTION

    def classify(self, pooled):
        """(B, C) sentence vectors -> (B, num_labels) logits."""
        # BEGIN SOLUTION
        return self.classifier(self.dropout(pooled))  # (B, num_labels)
        # END SOLUTION

    def forward(self, input_ids, attention_mask):
        return self.classify(self.sentence_vector(input_ids, attention_mask))  # (B, num_labels)

    def predict(self, task, batch):
        """Class probabilities (B, num_labels): what evaluate.predict_dataset collects."""
        return self(batch["input_ids"], batch["attention_mask"]).float().softmax(-1)

    def joint_input(self, task) -> bool:
        """Single sentences only, never a joined pair (predict_dataset asks every model)."""
        return False


class PooledFeatures(nn.Module):
    """The frozen encoder as evaluate.predict_dataset sees a model: it 'predicts' the pooled
    vectors (N, C), in dataset order."""

    def __init__(self, model: SentimentClassifier):
        super().__init__()
        self.model = model
        self.training = model.training  # predict_dataset restores this mode when it is done

    def predict(self, task, batch):
        return self.model.sentence_vector(batch["input_ids"], batch["attention_mask"])

    def joint_input(self, task) -> bool:
        return self.model.joint_input(task)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m minibert sentiment", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter, allow_abbrev=False)
    p.add_argument("--dataset", choices=sorted(NUM_CLASSES), default="sst")
    p.add_argument("--option", choices=sorted(OPTIONS), default="pretrain",
                   help="pretrain: BERT frozen, train the linear layer; finetune: train everything")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 pretrain, 2e-5 finetune)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, help="rows per inference batch (default: 256 on a "
                   "GPU, 32 on a CPU)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout on the pooled vector")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-length", type=int, help="tokens per sentence (default: 128 SST, 512 CFIMDB)")
    p.add_argument("--weights", help="a BERT folder (Hugging Face format; default all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--limit", type=int, help="at most this many examples per split (quick runs)")
    p.add_argument("--out", help="run folder (default: runs/sentiment-DATASET-OPTION)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--stop-after-epoch", type=int, help="checkpoint and stop after this many epochs "
                   "(to test resuming; a run resumed at or past it stops after its next epoch)")
    args = p.parse_args(argv)
    check_options(args, at_least={"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "limit": 1,
                                  "max_length": 2,  # 2: [CLS] and [SEP]
                                  "stop_after_epoch": 1, "lr": 0, "weight_decay": 0},
                  fractions=("dropout",))
    args.lr = args.lr if args.lr is not None else OPTIONS[args.option]
    args.max_length = args.max_length or (512 if args.dataset == "cfimdb" else 128)
    args.out = args.out or f"runs/sentiment-{args.dataset}-{args.option}"
    return resumed_options(p, argv, args, RUNTIME_ARGS) if args.resume else args


def logits_of(model, ds, idx, device, features=None):
    """Logits of the examples `idx` of `ds`: from the cached sentence vectors when the encoder
    is frozen, else through the whole model."""
    if features is not None:
        return model.classify(features[idx].to(device))  # (B, K)
    batch = ds.collate(idx)
    with autocast(device):
        return model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()  # (B, K)


def train_epoch(model, ds, optimizer, device, args, epoch, generator, features=None) -> float:
    """One pass over the training set; returns the mean training loss."""
    model.train()
    batches = ds.batches(args.batch_size, shuffle=True, generator=generator)
    total = torch.zeros((), device=device)
    for idx in tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not args.progress,
                    dynamic_ncols=True):
        loss = F.cross_entropy(logits_of(model, ds, idx, device, features), ds.labels[idx].to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach()
    return (total / max(len(batches), 1)).item()


def probabilities(model, ds, device, args, features=None):
    """(N, K) class probabilities of every example of `ds`, in its order."""
    if features is None:
        return predict_dataset(model, ds, device, args.eval_batch_size)
    model.eval()
    with torch.no_grad():
        probs = model.classify(features.to(device)).softmax(-1).cpu()
    model.train()
    return probs


def best_file(ckpt_dir, epoch) -> Path:
    """Where the weights of the best epoch so far (0-based `epoch`) are kept."""
    return Path(ckpt_dir) / f"best-epoch-{epoch + 1}.safetensors"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    found = resume_point(out, args.resume)
    device = pick_device(args.device)
    seed_everything(args.seed)
    folder = weights_dir(args.weights)
    tok = WordPieceTokenizer.from_vocab(folder / "vocab.txt")
    data = load_datasets(data_dir(args.data_dir), tok, tasks=(args.dataset,), limit=args.limit,
                         max_length=args.max_length, seed=args.seed)
    train, dev = data["train"][args.dataset], data["dev"][args.dataset]
    bert = BertModel.from_pretrained(folder)
    model = SentimentClassifier(bert, NUM_CLASSES[args.dataset], args.dropout,
                                freeze=args.option == "pretrain").to(device)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                      weight_decay=args.weight_decay)
    best_acc, best_epoch, start, elapsed_before = -1.0, None, 0, 0.0
    g = torch.Generator().manual_seed(args.seed)  # the order of the training batches, epoch after epoch
    if found is not None:
        extra = load_training_state(found, model, optimizer)["extra"]
        start, best_acc, best_epoch, elapsed_before = (extra["epoch"], extra["best_acc"], extra["best_epoch"],
                                                       extra["train_seconds"])
        g.set_state(torch.tensor(extra["shuffle_rng"], dtype=torch.uint8))
    out.mkdir(parents=True, exist_ok=True)
    write_json(vars(args), out / "config.json")
    log = MetricsLog(out / "metrics.jsonl")
    log.start(None if found is None else lambda r: r["epoch"] < start)  # a resumed run keeps its complete epochs' lines
    name = out.name
    print(f"{name}: {args.option} on {args.dataset} ({len(train)} train, {len(dev)} dev) on {device_name(device)}"
          + (f"; resuming after epoch {start}" if found is not None else ""))
    t0 = time.time()
    features = {}
    if model.frozen:  # a frozen encoder in eval mode is a fixed function: run it once per example
        for split, sets in data.items():
            if args.dataset in sets:
                features[split] = predict_dataset(PooledFeatures(model), sets[args.dataset], device,
                                                  args.eval_batch_size)  # (N, C)

    for epoch in range(start, args.epochs):
        loss = train_epoch(model, train, optimizer, device, args, epoch, g, features.get("train"))
        acc = score("sst", probabilities(model, dev, device, args, features.get("dev")), dev.labels)
        improved = acc > best_acc
        if improved:  # keep the best epoch's weights, on disk (not on the GPU: that would double memory)
            best_acc, best_epoch = acc, epoch
            write_safetensors(model.state_dict(), best_file(ckpt_dir, epoch))
        # the epoch's line, then its checkpoint: a run killed between the two redoes the epoch,
        # and its line, once (see the log above)
        log.write(run=name, stage="sentiment", option=args.option, dataset=args.dataset, epoch=epoch,
                  train_loss=loss, dev={f"{args.dataset}_acc": acc}, improved=improved)
        # the checkpoint names the best epoch's file: only then may the earlier one go
        save_training_state(ckpt_dir, epoch + 1, model, optimizer, extra={
            "epoch": epoch + 1, "best_acc": best_acc, "best_epoch": best_epoch, "shuffle_rng": g.get_state().tolist(),
            "train_seconds": elapsed_before + time.time() - t0})
        for old in ckpt_dir.glob("best-epoch-*.safetensors"):
            if old != best_file(ckpt_dir, best_epoch):
                old.unlink()
        print(f"epoch {epoch + 1}: train loss {loss:.4f}, dev acc {acc:.4f}" + (" (best)" if improved else ""))
        if args.stop_after_epoch is not None and args.stop_after_epoch <= epoch + 1 < args.epochs:
            print(f"{name}: stopped after epoch {epoch + 1} (--stop-after-epoch); to go on: "
                  f"python -m minibert sentiment --out {out} --resume")
            return 0

    model.load_state_dict(read_safetensors(best_file(ckpt_dir, best_epoch)))
    for split in ("dev", "test"):
        if args.dataset in data[split]:
            ds = data[split][args.dataset]
            # header `id,Predicted_Sentiment`: SST's prediction format, the same for CFIMDB
            write_predictions(out / "predictions" / f"{args.dataset}-{split}-output.csv", "sst",
                              ds.example_ids, probabilities(model, ds, device, args, features.get(split)))
    elapsed = elapsed_before + time.time() - t0
    write_json({"name": name, "stage": f"sentiment-{args.option}", "schedule": None, "dataset": args.dataset,
                "config": vars(args), "dev": {f"{args.dataset}_acc": best_acc}, "best_epoch": best_epoch,
                "majority": majority_baseline(data["train"], data["dev"]),
                "wall_time_s": round(elapsed, 1), "device": device_name(device), "torch": torch.__version__},
               out / "summary.json")
    print(f"{name}: best dev accuracy {best_acc:.4f} (epoch {best_epoch + 1}); {elapsed:.0f} s; files in {out}")
    return 0

