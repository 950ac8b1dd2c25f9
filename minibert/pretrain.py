"""Continued pretraining: masked language modelling on the task sentences (paper section 4.3).

BERT was pretrained on books and Wikipedia; SST's movie reviews and Quora's questions read
differently. The paper's best model first continues BERT's own objective, masked language
modelling, on the sentences of the target tasks (without their labels), then fine-tunes on
the tasks; it reports +0.01 overall from it (Table 2), and see Gururangan et al. 2020,
"Don't stop pretraining", and Krishna et al. 2022 [16] for the general effect.

    python -m minibert pretrain --out runs/pretrain                # train sentences only
    python -m minibert train --weights runs/pretrain/model ...      # fine-tune from the result

Corpus: the sentences of the train files of SST, CFIMDB, Quora and STS (both sentences of
a pair), de-duplicated. --include-dev-test adds the dev and test sentences, without labels:
that is transductive (the model has then seen, unlabelled, the sentences it is evaluated
on), so it is off by default and the output says which sets were used.

A random --heldout-frac of the sentences is never trained on; they are masked once, with a
fixed seed, and the masked-token accuracy and perplexity (exp of the mean masked-token
cross-entropy) are measured on them before and after training, so the two numbers see the
very same masks.

Every random choice is a function of --seed and the position in the run (the batch order
of epoch e from seed + e, the masks of step s from seed and s, dropout from the RNG state
saved in each checkpoint), so --resume continues a killed run exactly where it stopped.
Checkpoints are written every --save-every steps, and at the step where Ctrl-C stops a run
(runtime.StopRequest), which then prints the command that continues it.

A resumed run takes its options from its config.json, except those of RUNTIME_ARGS (--device
and the like); one given again that disagrees is refused (runtime.resumed_options).

Writes, under --out:
    config.json        the options
    metrics.jsonl      one line per --log-every steps, and the before/after evaluations
    summary.json       before/after accuracy and perplexity, time, device, corpus counts, options
    model/             HF-format folder (encoder + MLM head + vocab.txt) for the next stage
    checkpoints/       resumable training state (the newest one is kept)
"""

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.batching import bucketed_batches, pad_batch
from minibert.checkpoint import latest_checkpoint, load_training_state, save_training_state, write_json
from minibert.data import check_data_dir, file_name, read_examples
from minibert.masking import mask_tokens
from minibert.mlm import BertForMLM
from minibert.optim import AdamW
from minibert.paths import DATA_DIR_HELP, data_dir, weights_dir
from minibert.runtime import (HelpFormatter, MetricsLog, StopRequest, autocast, check_options, device_name,
                              pick_device, resume_point, resumed_options, seed_everything, to_device)
from minibert.schedule import make_scheduler
from minibert.tokenizer import WordPieceTokenizer

CORPUS_TASKS = ("sst", "cfimdb", "para", "sts")
# options a resumed run may change; it takes every other from its config.json (resumed_options)
RUNTIME_ARGS = ("resume", "out", "device", "log_every", "save_every", "max_minutes")


def log(*args) -> None:
    tqdm.write(" ".join(map(str, args)), file=sys.stderr)  # does not break a running progress bar


# ---- the corpus ---------------------------------------------------------------------------


def corpus_sentences(folder, splits=("train",)):
    """Every sentence of the four tasks' files of `splits`, de-duplicated in first-seen order.
    Returns (sentences, {file name: sentences read}). Missing test files are skipped (the
    project's data has no quora-test-student.csv); a missing train or dev file is an error."""
    folder = check_data_dir(folder, CORPUS_TASKS, [s for s in splits if s != "test"])
    seen, counts = {}, {}
    for split in splits:
        for task in CORPUS_TASKS:
            path = folder / file_name(task, split)
            if not path.is_file():  # a test file (check_data_dir has seen the others)
                continue
            examples = read_examples(path, task)
            counts[path.name] = sum(len(ex.texts) for ex in examples)
            for ex in examples:
                for text in ex.texts:
                    seen.setdefault(text, None)  # a dict keeps the first-seen order
    return list(seen), counts


def split_heldout(items: list, frac: float, seed: int):
    """A random `frac` of the items (at least one) held out: (train, heldout)."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"--heldout-frac must be in (0, 1), got {frac}")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n = max(1, round(frac * len(items)))
    return [items[i] for i in order[n:]], [items[i] for i in order[:n]]


# ---- batches -------------------------------------------------------------------------------


class Masker:
    """Token-id lists -> a padded, masked batch: input_ids, attention_mask, token_type_ids, labels."""

    def __init__(self, tok: WordPieceTokenizer, mlm_prob: float, whole_word: bool):
        self.tok, self.mlm_prob, self.whole_word = tok, mlm_prob, whole_word

    def __call__(self, ids: list, generator: torch.Generator) -> dict:
        batch = pad_batch(ids, pad_id=self.tok.pad_id)  # (B, T) each, on the CPU
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], special_ids=self.tok.special_ids, mask_id=self.tok.mask_id,
            vocab_size=len(self.tok), generator=generator, mlm_prob=self.mlm_prob,
            whole_word=self.whole_word, is_continuation=self.tok.is_continuation)
        return batch


def epoch_batches(lengths, batch_size: int, seed: int, epoch: int) -> list:
    """The batches (lists of sentence indices) of one epoch: length-bucketed, shuffled by seed + epoch."""
    return bucketed_batches(lengths, batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed + epoch))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The masking generator of training step `step`: a function of (seed, step) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@torch.no_grad()
def evaluate(model: BertForMLM, batches: list, device) -> dict:
    """Masked-token accuracy, mean cross-entropy and perplexity over pre-masked batches."""
    was_training = model.training
    model.eval()
    loss_sum, n_correct, n_masked = 0.0, 0, 0
    for batch in batches:
        with autocast(device):
            out = model(**to_device(batch, device))
        loss_sum += out["loss"].item() * out["n_masked"]  # the mean over this batch, times its size
        n_correct += int(out["n_correct"])
        n_masked += out["n_masked"]
    model.train(was_training)
    loss = loss_sum / max(n_masked, 1)
    return {"accuracy": n_correct / max(n_masked, 1), "loss": loss, "perplexity": math.exp(loss),
            "masked_tokens": n_masked}


def param_groups(model: BertForMLM, weight_decay: float, lr: float, head_lr: float) -> list:
    """BERT's convention: decay the weight matrices, not the biases and LayerNorm gains (1-d).
    The head's own parameters (not the tied decoder, which is the encoder's word embeddings)
    get `head_lr`: a new head starts from random weights and needs larger steps."""
    head = list(model.head.parameters())  # a list, not a set: the order must repeat for --resume
    head_ids = {id(p) for p in head}
    encoder = [p for p in model.parameters() if id(p) not in head_ids]
    groups = []
    for params, group_lr in ((encoder, lr), (head, head_lr)):
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "lr": group_lr},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr": group_lr}]
    return [g for g in groups if g["params"]]


def set_encoder_trainable(model: BertForMLM, trainable: bool) -> None:
    """Freeze or unfreeze the encoder (the word embeddings, and so the tied decoder, too)."""
    for p in model.bert.parameters():
        p.requires_grad_(trainable)


# ---- the stage ------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m minibert pretrain", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, allow_abbrev=False)
    p.add_argument("--weights", default=None, help="HF-format BERT folder to start from (default all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--out", default="runs/pretrain", help="run folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per step (the paper: 128)")
    p.add_argument("--lr", type=float, default=5e-5,
                   help="peak learning rate (the paper: 1e-5 for bert-base; a small model and a new head "
                        "learn faster with more)")
    p.add_argument("--warmup-frac", type=float, default=0.06, help="linear warm-up share of the steps, then linear decay")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0: off)")
    p.add_argument("--head-lr", type=float, default=None,
                   help="peak learning rate of the MLM head's own parameters (default: 1e-3 for a new "
                        "head, --lr for a loaded one)")
    p.add_argument("--head-warmup-steps", type=int, default=200,
                   help="if the MLM head is new, train only the head for this many steps first, so its "
                        "random early gradients do not reach the pretrained encoder")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence, with [CLS] and [SEP]")
    p.add_argument("--mlm-prob", type=float, default=0.15, help="share of tokens selected for prediction")
    p.add_argument("--whole-word", action="store_true", help="whole-word masking")
    p.add_argument("--include-dev-test", action="store_true",
                   help="also train on the dev and test sentences, without labels (transductive)")
    p.add_argument("--heldout-frac", type=float, default=0.02, help="sentences held out for before/after evaluation")
    p.add_argument("--limit", type=int, default=None, help="train on at most this many sentences (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cuda, cpu, or auto")
    p.add_argument("--log-every", type=int, default=50, help="steps between metrics lines")
    p.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="time budget: checkpoint and stop training after this long (then evaluate and save)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    args = p.parse_args(argv)
    check_options(args, at_least={"epochs": 1, "max_steps": 1, "batch_size": 1, "log_every": 1,
                                  "save_every": 1, "limit": 1, "max_length": 2,  # 2: [CLS] and [SEP]
                                  "lr": 0, "head_lr": 0, "weight_decay": 0},
                  fractions=("warmup_frac",))
    if not 0 < args.heldout_frac < 1:
        raise SystemExit(f"--heldout-frac {args.heldout_frac}: expected a fraction above 0 and below 1")
    if not 0 < args.mlm_prob <= 1:
        raise SystemExit(f"--mlm-prob {args.mlm_prob}: expected a fraction above 0, at most 1")
    if args.resume:
        args = resumed_options(p, argv, args, RUNTIME_ARGS, fallback=lambda: options_in_checkpoint(args.out))
    return args


def options_in_checkpoint(out):
    """The options of a run written before pretrain wrote a config.json: its newest checkpoint
    kept them (None: no checkpoint)."""
    found = latest_checkpoint(Path(out) / "checkpoints")
    return json.loads((found / "state.json").read_text())["extra"].get("options") if found else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t_start = time.time()
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    resume_from = resume_point(out, args.resume, log)
    write_json(vars(args), out / "config.json")
    seed_everything(args.seed)
    device = pick_device(args.device)
    folder = weights_dir(args.weights)
    args.weights = str(folder)
    tok = WordPieceTokenizer.from_vocab(folder / "vocab.txt")  # first: a bad --weights is said at once

    # corpus: train sentences (+ dev/test if asked), de-duplicated; some held out
    splits = ("train", "dev", "test") if args.include_dev_test else ("train",)
    sentences, per_file = corpus_sentences(data_dir(args.data_dir), splits)
    log(f"corpus: {len(sentences)} distinct sentences from the {' + '.join(splits)} files "
        f"({', '.join(f'{k} {v}' for k, v in per_file.items())})"
        + ("" if args.include_dev_test else "; dev and test sentences NOT used (--include-dev-test to add them)"))
    train_sents, heldout_sents = split_heldout(sentences, args.heldout_frac, args.seed)
    if args.limit is not None:
        train_sents = train_sents[:args.limit]
    train_ids = tok.encode_batch(train_sents, max_length=args.max_length, progress=True)
    heldout_ids = tok.encode_batch(heldout_sents, max_length=args.max_length)
    masker = Masker(tok, args.mlm_prob, args.whole_word)
    lengths = [len(ids) for ids in train_ids]
    log(f"training on {len(train_ids)} sentences ({sum(lengths)} tokens), {len(heldout_ids)} held out")

    # held-out batches: masked once, with one fixed generator, so before and after compare alike
    heldout_gen = torch.Generator().manual_seed(args.seed + 10_007)
    heldout_batches = [masker([heldout_ids[i] for i in b], heldout_gen)
                       for b in bucketed_batches([len(x) for x in heldout_ids], args.batch_size, shuffle=False)]

    # model, optimizer, schedule
    model = BertForMLM.from_pretrained(folder, log=log)
    head_is_new = not model.head_loaded
    model.to(device).train()
    head_lr = args.head_lr if args.head_lr is not None else (1e-3 if head_is_new else args.lr)
    optimizer = AdamW(param_groups(model, args.weight_decay, args.lr, head_lr), lr=args.lr,
                      weight_decay=args.weight_decay, foreach=True)
    steps_per_epoch = len(epoch_batches(lengths, args.batch_size, args.seed, 0))
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    scheduler = make_scheduler(optimizer, "linear", round(args.warmup_frac * total_steps), total_steps)
    head_warmup = args.head_warmup_steps if head_is_new else 0
    if head_warmup >= total_steps:
        log(f"warning: the MLM head is new and --head-warmup-steps {head_warmup} covers all {total_steps} "
            "steps: only the head trains, the encoder never does (lower --head-warmup-steps)")

    metrics = MetricsLog(out / "metrics.jsonl")
    step, epoch, batch_in_epoch, elapsed_before = 0, 0, 0, 0.0
    if resume_from is not None:
        state = load_training_state(resume_from, model, optimizer, scheduler)
        extra = state["extra"]
        step, epoch, batch_in_epoch = state["step"], extra["epoch"], extra["batch_in_epoch"]
        before, elapsed_before = extra["before"], extra["train_seconds"]
        log(f"resumed {resume_from}: step {step}/{total_steps}, epoch {epoch}, batch {batch_in_epoch}")
        # the steps after the checkpoint are done again, and the run ends with a new "after"
        metrics.start(lambda r: r["step"] <= step and r.get("when") != "after")
    else:
        metrics.start()  # a new run: a fresh log
        before = evaluate(model, heldout_batches, device)
        metrics.write(event="eval", when="before", step=0, **before)
    log(f"before: held-out masked-token accuracy {before['accuracy']:.4f}, perplexity {before['perplexity']:.2f} "
        f"({before['masked_tokens']} masked tokens)")

    # the training loop
    def checkpoint():
        save_training_state(ckpt_dir, step, model, optimizer, scheduler, extra={
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "before": before,
            "train_seconds": elapsed_before + time.time() - t_train, "options": vars(args)})

    t_train = time.time()
    deadline = t_train + 60 * args.max_minutes if args.max_minutes else None
    set_encoder_trainable(model, step >= head_warmup)
    if step < head_warmup:
        log(f"the MLM head is new: training the head alone for the first {head_warmup} steps")
    bar = tqdm(total=total_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    correct_sum = torch.zeros((), device=device, dtype=torch.long)
    masked_sum, tokens, t_log, stopped_early, saved_at = 0, 0, time.time(), False, step
    # Ctrl-C stops at the end of a step, with a checkpoint (runtime.StopRequest)
    with StopRequest() as stop:
        while step < total_steps and not stopped_early:
            batches = epoch_batches(lengths, args.batch_size, args.seed, epoch)
            while batch_in_epoch < len(batches) and step < total_steps:
                indices = batches[batch_in_epoch]
                batch = to_device(masker([train_ids[i] for i in indices], step_generator(args.seed, step)), device)
                with autocast(device):
                    result = model(**batch)
                result["loss"].backward()
                if args.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                batch_in_epoch += 1
                if step == head_warmup:
                    set_encoder_trainable(model, True)
                    # the encoder as it came, with a fitted head: the fair "before" for a new head
                    head_only = evaluate(model, heldout_batches, device)
                    metrics.write(event="eval", when="head_only", step=step, **head_only)
                    log(f"after {step} head-only steps (encoder unchanged): held-out accuracy "
                        f"{head_only['accuracy']:.4f}, perplexity {head_only['perplexity']:.2f}")
                loss_sum += result["loss"].detach() * result["n_masked"]
                correct_sum += result["n_correct"]
                masked_sum += result["n_masked"]
                tokens += sum(lengths[i] for i in indices)
                bar.update(1)
                if step % args.log_every == 0 or step == total_steps:
                    dt = time.time() - t_log
                    loss, acc = loss_sum.item() / max(masked_sum, 1), correct_sum.item() / max(masked_sum, 1)
                    if not math.isfinite(loss):
                        bar.close()
                        log(f"the training loss is {loss} at step {step}: stopping (no checkpoint written "
                            "after this point; lower --lr, or check the optimizer)")
                        return 1
                    metrics.write(event="train", step=step, epoch=epoch, loss=loss, accuracy=acc,
                                  lr=scheduler.get_last_lr()[0], tokens_per_s=tokens / dt)
                    bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", tok_s=f"{tokens / dt:.0f}")
                    loss_sum.zero_(), correct_sum.zero_()
                    masked_sum, tokens, t_log = 0, 0, time.time()
                if stop.requested:  # Ctrl-C: this step's update is done, so a checkpoint here is exact
                    checkpoint()
                    bar.close()
                    command = " ".join(["python -m minibert pretrain", *map(shlex.quote, argv)]
                                       + ([] if args.resume else ["--resume"]))
                    log(f"stopped after step {step}, checkpoint saved: continue with {command}")
                    raise KeyboardInterrupt  # the run did not finish: callers (and shells) must know
                if deadline is not None and time.time() > deadline:
                    log(f"--max-minutes {args.max_minutes} reached at step {step}: checkpointing and stopping")
                    stopped_early = True
                    break
                if step % args.save_every == 0:
                    checkpoint()
                    saved_at = step
            if batch_in_epoch == len(batches):
                epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    if saved_at != step:
        checkpoint()
    train_seconds = elapsed_before + time.time() - t_train

    after = evaluate(model, heldout_batches, device)
    metrics.write(event="eval", when="after", step=step, **after)
    model.save_pretrained(out / "model", vocab_file=folder / "vocab.txt")
    summary = {
        "before": before,
        "head_only": next((r for r in metrics.read() if r.get("when") == "head_only"), None),
        "after": after, "steps": step, "total_steps": total_steps, "epochs_done": epoch,
        "stopped_early": stopped_early, "train_seconds": round(train_seconds, 1),
        "wall_seconds_this_process": round(time.time() - t_start, 1),
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "head": "initialised (none in the weights)" if head_is_new else "loaded from the weights",
        "corpus": {"splits": list(splits), "sentences_read_per_file": per_file,
                   "distinct_sentences": len(sentences), "train_sentences": len(train_ids),
                   "train_tokens": sum(lengths), "heldout_sentences": len(heldout_ids)},
        "options": vars(args), "model": str(out / "model"),
    }
    write_json(summary, out / "summary.json")
    log(f"after:  held-out masked-token accuracy {after['accuracy']:.4f}, perplexity {after['perplexity']:.2f}")
    log(f"{step} steps in {train_seconds:.0f} s on {summary['device_name']}; model written to {out / 'model'} "
        f"(fine-tune it with: python -m minibert train --weights {out / 'model'})")
    return 0

