"""Training stages and multitask schedules (paper sections 4.3 and 5.3).

Stages (--stage):
    baseline     BERT frozen, the heads trained on its features      (table 2, "baseline")
    multitask    BERT and all heads fine-tuned together, by a schedule
    single-task  after multitask: BERT frozen again, each head trained alone

Multitask schedules (--schedule) decide which task each optimizer step trains on:
    round-robin  every epoch, one pass over each task, one task after the other
    random       "random-shuffling-dropout": the task order is shuffled every epoch and each
                 task is trained during the epoch only with a probability (--task-probs,
                 default paraphrase 1/3, STS 9/10, SST 1/2: the big Quora set is used less)
    pcgrad       every epoch, the same number of examples drawn with replacement from each
                 task; a step takes one batch of EACH task and combines the three gradients
                 with gradient surgery (minibert/pcgrad.py)
    interleaved  beyond the paper (MT-DNN, Liu et al. 2019, section 3.1): every epoch, the
                 batches of round-robin, all tasks' in one shuffled order, so the encoder
                 never trains on one task for hundreds of steps in a row (round-robin's
                 paraphrase accuracy at the end of an epoch, after the SST and STS steps, lags
                 far behind it: results/study.md)

With BERT frozen the heads do not share any parameter, so training them one after the
other or interleaved is the same thing; those stages train all heads in one loop and keep,
for each task, the head of the epoch that scored best on dev for that task. The multitask
stage keeps the epoch with the best overall dev score.

A run folder (--out runs/NAME):
    config.json       the arguments            metrics.jsonl  one line per epoch
    checkpoints/      resumable training state (model, optimizer, schedule, RNG, position)
    best/             the selected model (MultitaskBERT.save format)
    predictions/      CS224N prediction files of best/ for dev and test-student
    summary.json      what the results table (`python -m minibert results`) reads

Resuming (--resume) continues from the newest checkpoint exactly where it stopped: the data
order of an epoch comes from a generator seeded by (seed, epoch), the position in the epoch
and every RNG state are saved, so on CPU the result is bitwise that of an uninterrupted run.
Checkpoints are written at the end of every epoch (and every --checkpoint-every steps); Ctrl-C
writes one too, at the end of the step it interrupts (runtime.StopRequest), so it loses nothing.
A resumed run takes its options from its config.json (only --device and the like may change);
one given again that disagrees is refused, not dropped without a word.

Several processes (torchrun --nproc-per-node N -m minibert train ...) split every epoch's
batches: process r takes batches r, r+N, r+2N, ... and the gradients are averaged across
processes before each step (one all-reduce of a flat vector; PCGrad averages each task's
gradient before the projection). All processes then take the same step; only rank 0
evaluates and writes files.
"""

import argparse
import contextlib
import copy
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from minibert.batching import bucketed_batches
from minibert.checkpoint import load_training_state, save_training_state, write_json
from minibert.data import TASKS, load_datasets
from minibert.ema import EMA
from minibert.evaluate import METRICS, evaluate, majority_baseline, metrics_from_outputs, write_split_predictions
from minibert.heads import SMOOTHING_KINDS, STS_LOSSES, MultitaskBERT, is_checkpoint, load_model, vocab_path
from minibert.optim import AdamW
from minibert.paths import DATA_DIR_HELP, data_dir, weights_dir
from minibert.pcgrad import averaged, distributed, pc_backward
from minibert.runtime import (HelpFormatter, MetricsLog, StopRequest, autocast, check_options, device_name,
                              pick_device, resume_point, resumed_options, seed_everything, to_device)
from minibert.schedule import make_scheduler
from minibert.tokenizer import WordPieceTokenizer

STAGES = ("baseline", "multitask", "single-task")
SCHEDULES = ("round-robin", "random", "pcgrad", "interleaved")
TASK_PROBS = {"para": 1 / 3, "sts": 9 / 10, "sst": 1 / 2}  # section 4.3
RUNTIME_ARGS = ("resume", "out", "device", "stop_after_step", "progress")  # may change on resume
# --quick: a CPU-sized run on subsets (run_all.sh's quick profile, the assignments' --quick).
# Subsets give far fewer steps than full runs, so smaller batches and a larger step for the
# heads (which start from random) let every head learn within 2 epochs.
QUICK = dict(limit=300, epochs=2, batch_size=16, head_lr=3e-3, pcgrad_samples=225)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m minibert train", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter, allow_abbrev=False)
    p.add_argument("--stage", choices=STAGES, default="multitask")
    p.add_argument("--schedule", choices=SCHEDULES, default="round-robin",
                   help="multitask schedule (the frozen-encoder stages train all heads in one loop)")
    p.add_argument("--weights", help="a BERT folder (Hugging Face format), or a previous run's best/ "
                   "checkpoint (default: all-MiniLM-L6-v2)")
    p.add_argument("--out", required=True, help="the run folder, e.g. runs/multitask-round-robin")
    p.add_argument("--name", help="the run's name in the results table (default: the folder name)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--epochs", type=int, default=5, help="passes over the training data")
    p.add_argument("--lr", type=float, default=5e-5, help="the encoder's learning rate (the frozen "
                   "stages use --head-lr only)")
    p.add_argument("--head-lr", type=float, default=1e-3,
                   help="the heads' learning rate: they start from random, so they need a larger one "
                   "than the pretrained encoder (with 5e-5 the paraphrase head barely leaves its prior)")
    p.add_argument("--layer-lr-decay", type=float, default=1.0, help="layer-wise lr decay: each encoder "
                   "layer learns at this times the lr of the one above it (the top one at --lr); 1: off")
    p.add_argument("--lr-schedule", choices=("constant", "linear"), default="linear")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warm-up")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, help="rows per inference batch (default: 256 on a "
                   "GPU, 32 on a CPU)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="section 5.3")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout of the heads")
    p.add_argument("--alpha1", type=float, help="weight of e_[CLS] in the SST input (eq. 1; default: 0.5, "
                   "or the --weights checkpoint's)")
    p.add_argument("--alpha2", type=float, help="weight of the mean pool in the SST input (default: 0.5, "
                   "or the --weights checkpoint's)")
    p.add_argument("--para-input", choices=MultitaskBERT.PAIR_INPUTS, help="paraphrase head: siamese "
                   "(the paper's, each sentence encoded alone) or cross (one [CLS] s1 [SEP] s2 [SEP] "
                   "sequence, beyond the paper; default: siamese, or the --weights checkpoint's)")
    p.add_argument("--sts-input", choices=MultitaskBERT.PAIR_INPUTS, help="STS head: siamese (the "
                   "paper's cosine) or cross (5 sigmoid(linear) of the joined pair, beyond the paper; "
                   "default: siamese, or the --weights checkpoint's)")
    p.add_argument("--random-pair-order", action="store_true", help="read each training pair as (s1, s2) "
                   "or (s2, s1) at random (beyond the paper: both tasks are symmetric, a cross-encoder "
                   "head is not)")
    p.add_argument("--tasks", default="para,sst,sts", help="the tasks to train and evaluate, e.g. sts "
                   "for the similarity task alone")
    p.add_argument("--sts-loss", choices=STS_LOSSES, default="mse", help="STS training loss: the paper's "
                   "mse of 5 cos against the label (eq. 3), or cosent, a ranking loss (beyond the paper)")
    p.add_argument("--sst-rdrop", type=float, default=0.0, help="R-Drop on SST (beyond the paper): "
                   "each SST batch runs twice with its own dropout, and the symmetric KL between the two "
                   "predictions, times this weight, joins the loss; 0: off")
    p.add_argument("--sst-smoothing", type=float, default=0.0, help="label smoothing on SST (beyond the "
                   "paper): eps of each target's probability moves off its label, to other classes "
                   "(--sst-smoothing-kind); 0: off")
    p.add_argument("--sst-smoothing-kind", choices=SMOOTHING_KINDS, default="neighbours",
                   help="neighbours: eps to the classes one step away (SST's classes are ordered); "
                   "uniform: eps / 5 to every class, as torch's label_smoothing")
    p.add_argument("--sts-rdrop", type=float, default=0.0, help="R-Drop on STS (beyond the paper; "
                   "with --sts-loss mse): each STS batch runs twice with its own dropout, and the mean "
                   "squared difference of the two predictions, times this weight, joins the loss; 0: off")
    p.add_argument("--para-closure", action="store_true", help="add the paraphrase pairs that Quora "
                   "train's labels imply (duplicates of duplicates, and so on; beyond the paper)")
    p.add_argument("--para-rdrop", type=float, default=0.0, help="R-Drop on paraphrase (beyond the "
                   "paper): as --sst-rdrop, the KL between the two passes' Bernoulli predictions; 0: off")
    p.add_argument("--ema", type=float, default=0.0, help="evaluate and keep an exponential moving "
                   "average of the weights with this decay, e.g. 0.998, the one tried (beyond the paper, "
                   "minibert/ema.py); 0: off")
    p.add_argument("--task-order", default="para,sst,sts", help="round-robin order of the tasks")
    p.add_argument("--task-probs", default="para=1/3,sts=9/10,sst=1/2",
                   help="random schedule: probability of training each task in an epoch")
    p.add_argument("--pcgrad-samples", type=int,
                   help="pcgrad: examples drawn per task per epoch (default: the middle task size: the "
                   "median of three, the larger of two)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence")
    p.add_argument("--limit", type=int, help="at most this many examples per task and split (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    p.add_argument("--log-every", type=int, default=20, help="steps between loss readings")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="steps between mid-epoch checkpoints (0: only at the end of each epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of --out")
    p.add_argument("--stop-after-step", type=int, help="checkpoint and stop after this many steps "
                   "(to test resuming; a run resumed at or past it stops after its next step)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--quick", action="store_true", help="defaults for a CPU-sized run: "
                   + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quick" in argv:
        p.set_defaults(**QUICK)  # options given explicitly still win
    args = p.parse_args(argv)
    args.task_probs = parse_task_probs(args.task_probs)
    args.task_order = parse_task_order(args.task_order)
    args.tasks = parse_tasks(args.tasks)
    check_options(args, at_least={"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "log_every": 1,
                                  "pcgrad_samples": 1, "limit": 1, "checkpoint_every": 0,
                                  "max_length": 2,  # 2: [CLS] and [SEP]
                                  "lr": 0, "head_lr": 0, "weight_decay": 0},
                  fractions=("warmup", "dropout"))
    if not 0 < args.layer_lr_decay <= 1:
        raise SystemExit(f"--layer-lr-decay {args.layer_lr_decay}: expected 0 < d <= 1 (1: off)")
    for name in ("sst_rdrop", "para_rdrop", "sts_rdrop"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a weight >= 0 (0: off)")
    if not 0 <= args.sst_smoothing < 1:
        raise SystemExit(f"--sst-smoothing {args.sst_smoothing}: expected 0 <= eps < 1 (0: off)")
    if not 0 <= args.ema < 1:
        raise SystemExit(f"--ema {args.ema}: expected a decay 0 <= d < 1 (0: off)")
    if args.sts_rdrop and args.sts_loss != "mse":
        raise SystemExit(f"--sts-rdrop goes with --sts-loss mse, got --sts-loss {args.sts_loss}")
    if args.resume:
        args = resumed_options(p, argv, args, RUNTIME_ARGS,
                               hint=f"--weights {args.out}/best goes on from its best model")
    return args


def parse_task_probs(text) -> dict:
    if isinstance(text, dict):
        return text
    probs = dict(TASK_PROBS)
    for item in filter(None, text.split(",")):
        task, _, value = item.partition("=")
        num, _, den = value.partition("/")
        try:
            probs[task.strip()] = float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            raise SystemExit(f"--task-probs: cannot read {item!r}: expected task=p, e.g. para=1/3") from None
        if task.strip() not in TASKS or not 0 <= probs[task.strip()] <= 1:
            raise SystemExit(f"--task-probs: {item!r}: expected a task of {TASKS} and 0 <= p <= 1")
    return probs


def task_list(text) -> list:
    """"para,sst" -> ["para", "sst"]; a list (a resumed run's config) as it is."""
    return text if isinstance(text, list) else [t.strip() for t in text.split(",")]


def parse_tasks(text):
    tasks = task_list(text)
    if not tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(TASKS):
        raise SystemExit(f"--tasks {text!r}: expected one or more of {', '.join(TASKS)}, each at most once")
    return [t for t in TASKS if t in tasks]


def parse_task_order(text):
    order = task_list(text)
    if sorted(order) != sorted(TASKS):
        raise SystemExit(f"--task-order {text!r}: expected each of {', '.join(TASKS)} once")
    return order


# ---- the plan of an epoch: which task trains on which examples at each step -----------------


def epoch_plan(args, train, epoch) -> list:
    """The steps of one epoch, each a list of (task, example indices): one pair per step,
    or one per task for pcgrad. Depends only on (seed, epoch): resumable and the same on
    every process. Pair batches are bucketed by their longer sentence, the cross-encoder's
    too: bucketing those by joined length scored lower in the one run tried (results/study.md)."""
    g = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
    bs = args.batch_size
    if args.stage == "multitask" and args.schedule == "pcgrad":
        # BEGIN SOLUTION
        n = args.pcgrad_samples or sorted(len(ds) for ds in train.values())[len(train) // 2]
        per_task = {}
        for task, ds in train.items():
            drawn = torch.randint(len(ds), (n,), generator=g).tolist()  # with replacement
            batches = bucketed_batches([ds.lengths[i] for i in drawn], bs, generator=g)
            per_task[task] = [[drawn[j] for j in b] for b in batches]
        return [[(t, per_task[t][k]) for t in train] for k in range(math.ceil(n / bs))]
        # END SOLUTION
    order = [t for t in args.task_order if t in train]
    if args.stage == "multitask" and args.schedule == "random":
        # BEGIN SOLUTION
        order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
        keep = torch.rand(len(order), generator=g) < torch.tensor([args.task_probs[t] for t in order])
        order = [t for t, k in zip(order, keep.tolist()) if k]
        # END SOLUTION
    steps = [[(t, b)] for t in order for b in train[t].batches(bs, shuffle=True, generator=g)]
    if args.stage == "multitask" and args.schedule == "interleaved":
        steps = [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]
    return steps


def my_share(plan, rank, world):
    """Process `rank`'s steps: every world-th one, the same count on every process (the
    last few steps are dropped) so that every process joins every all-reduce."""
    n = len(plan) // world
    return plan[rank::world][:n]


# ---- one optimizer step -------------------------------------------------------------------


def all_reduce_gradients(params):
    """Average the gradients over processes: one all-reduce of one flat vector. A gradient
    missing on some processes counts as zeros there (processes may train different tasks in
    one step); a parameter with no gradient on any process keeps none, as on one process, so
    that AdamW leaves it alone (no weight decay, no step on old momentum). Reading the flags
    back is one small host sync a step, after the all-reduce. A no-op on one process."""
    if distributed():
        had = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)  # (n,)
        *grads, had = averaged([p.grad for p in params] + [had], params + [had])  # the flags ride along
        for p, g, h in zip(params, grads, had.tolist()):
            p.grad = g if h > 0 else None


def train_step(model, step_tasks, train, device, args, shared, heads, step) -> dict:
    """Forward, backward and gradient merge for one step; returns {task: loss (0-dim)}."""
    losses = {}
    for task, idx in step_tasks:
        swap = None
        if args.random_pair_order and train[task].n_sentences == 2:
            # each pair read either way round with probability 1/2, fixed by (seed, step, task)
            g = torch.Generator().manual_seed(args.seed * 100_003 + 7919 * step + 2 + TASKS.index(task))
            swap = (torch.rand(len(idx), generator=g) < 0.5).tolist()
        batch = train[task].collate(idx, joint=model.joint_input(task), swap=swap)
        batch = to_device(batch, device)
        with autocast(device, args.amp):
            losses[task] = model.loss(task, batch, sts_loss=args.sts_loss, rdrop=getattr(args, f"{task}_rdrop"),
                                      smoothing=args.sst_smoothing, smoothing_kind=args.sst_smoothing_kind)
        if len(step_tasks) == 1:
            losses[task].backward()
    if len(step_tasks) == 1:
        all_reduce_gradients(shared + heads)
    else:  # pcgrad: the projection order is random, fixed by (seed, step) for resuming
        g = torch.Generator().manual_seed(args.seed * 100_003 + 7919 * step + 1)
        pc_backward(list(losses.values()), shared, heads, generator=g)
    return losses


# ---- selection of the best model ------------------------------------------------------------


class BestTracker:
    """Keeps best/ up to date. Multitask: the whole model of the best overall dev score.
    Frozen encoder: for each task, the head of its best epoch (the heads are independent);
    heads from a checkpoint count as epoch -1, scored before training.
    It also keeps the dev outputs of what best/ holds, so the run's end need not evaluate
    best/ on dev again (they are those of its epochs; a resumed run lacks the earlier ones)."""

    def __init__(self, folder, per_task, scores=None):
        self.folder, self.per_task = Path(folder), per_task
        self.scores = dict(scores or {})  # metric name -> best value
        self.best_model = None
        self.dev_outputs = {}  # task -> best/'s dev outputs, where seen in this process

    def update(self, model, metrics, vocab, outputs) -> list:
        keys = [METRICS[t] for t in TASKS if METRICS[t] in metrics] if self.per_task else ["overall"]
        improved = [k for k in keys if metrics[k] > self.scores.get(k, -math.inf)]
        if not improved:
            return []
        if self.per_task:
            if self.best_model is None:
                # a resumed run rebuilds best/ from disk; building a model initialises every
                # weight at random first, which must not draw on the run's own random numbers (later
                # dropout masks), or the run would no longer be the uninterrupted one
                with torch.random.fork_rng(devices=[]):
                    self.best_model = (load_model(self.folder) if (self.folder / "heads.json").is_file()
                                       else copy.deepcopy(model)).cpu()
            tasks = [t for t in TASKS if METRICS[t] in improved]
            src = dict(model.named_parameters())
            with torch.no_grad():
                for name, p in self.best_model.named_parameters():
                    if any(p is q for t in tasks for q in self.best_model.head_parameters(t)):
                        p.copy_(src[name])
            to_save = self.best_model
        else:
            to_save, tasks = model, list(outputs)
        # per task: with the encoder frozen, task t's outputs depend on its own head only
        self.dev_outputs.update({t: outputs[t] for t in tasks})
        for k in improved:
            self.scores[k] = metrics[k]
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        to_save.save(tmp, vocab=vocab)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(tmp, self.folder)  # best/ is always a complete model
        return improved


# ---- the run ------------------------------------------------------------------------------


def setup_distributed(device):
    """Under torchrun (WORLD_SIZE > 1): join the process group. Returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def check_head_options(args, model, weights, data, resumed: bool):
    """--alpha1 / --alpha2 / --para-input / --sts-input must match a checkpoint's heads (they
    shape the heads its weights were trained in), and a joined pair must fit the encoder's
    positions. A resumed run is not asked again: its options come from its config.json (where
    runs from before this check recorded alpha 0.5 whatever the checkpoint had, and trained
    with the checkpoint's), and the command line cannot change them (resumed_options)."""
    for name in ("alpha1", "alpha2", "para_input", "sts_input"):
        wanted, has = getattr(args, name), getattr(model, name)
        if not resumed and wanted is not None and wanted != has:
            raise SystemExit(f"--{name.replace('_', '-')} {wanted}: the checkpoint {weights} has {has}")
    for task in ("para", "sts"):
        if model.joint_input(task):
            pairs = [d[task] for d in data.values() if task in d]
            longest = max((n for ds in pairs for n in ds.padded_lengths(joint=True)), default=0)
            if longest > model.bert.config.max_position_embeddings:
                raise SystemExit(f"--{task}-input cross: the longest joined {task} pair has {longest} tokens, "
                                 f"more than the model's {model.bert.config.max_position_embeddings} "
                                 "positions: lower --max-length")


def main(argv=None) -> int:
    run(parse_args(sys.argv[1:] if argv is None else argv))
    return 0


def encoder_groups(bert, lr: float, layer_decay: float = 1.0) -> list:
    """The optimizer's parameter groups for the encoder's trainable parameters (none when frozen).

    layer_decay 1.0: one group at `lr`, as in the paper. Below 1: layer-wise learning-rate decay
    (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?", section 5.3): the top
    layer (and the pooler) learns at lr, each layer below at layer_decay times the one above it,
    the embeddings at lr * layer_decay^N. Lower layers hold the most general features, so they
    are moved least."""
    named = [(name, p) for name, p in bert.named_parameters() if p.requires_grad]
    if not named:
        return []
    if layer_decay == 1.0:
        # one group, not N + 1 groups at the same lr: the optimizer state, and so the
        # checkpoints, of earlier runs have one group, and they still resume
        return [{"params": [p for _, p in named], "lr": lr}]
    n_layers = bert.config.num_hidden_layers

    def depth(name):  # embeddings 0, encoder.layer.i i + 1, the pooler on top (N)
        if name.startswith("encoder.layer."):
            return int(name.split(".")[2]) + 1
        return 0 if name.startswith("embeddings.") else n_layers

    by_depth = {}
    for name, p in named:
        by_depth.setdefault(depth(name), []).append(p)
    return [{"params": ps, "lr": lr * layer_decay ** (n_layers - d)} for d, ps in sorted(by_depth.items())]


def run(args) -> MultitaskBERT:
    """Train as `args` (from parse_args) say; returns the model as it is at the end."""
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    device = pick_device(args.device)
    rank, world = setup_distributed(device)
    # the checkpoint to go on from, or None (a resumed run's options came from its config.json
    # in parse_args: resumed_options)
    found = resume_point(out, args.resume, log=print if rank == 0 else lambda *_: None)
    seed_everything(args.seed)  # the same initial heads in every process
    weights = weights_dir(args.weights)
    tok = WordPieceTokenizer.from_vocab(vocab_path(weights))
    data = load_datasets(data_dir(args.data_dir), tok, tasks=args.tasks, limit=args.limit,
                         max_length=args.max_length, seed=args.seed, para_closure=args.para_closure)
    train, dev = data["train"], data["dev"]

    # the head options given (the others: MultitaskBERT's defaults, or a checkpoint's own)
    given = {k: getattr(args, k) for k in ("alpha1", "alpha2", "para_input", "sts_input")
             if getattr(args, k) is not None}
    model = load_model(weights, dropout=args.dropout, **given).to(device)
    frozen = args.stage != "multitask"
    # What an ensemble may take from this run's checkpoints: the tasks trained here, and, with
    # the encoder frozen, those that --weights was trained for. A fine-tuned encoder no longer
    # fits the heads of the tasks it was not trained on here.
    model.add_tasks(args.tasks, keep=frozen)
    check_head_options(args, model, weights, data, resumed=found is not None)
    model.freeze_encoder(frozen)
    if rank:
        torch.manual_seed(args.seed + 1_000_003 * rank)  # but each process its own dropout
    shared = [p for p in model.bert.parameters() if p.requires_grad]
    heads = [p for t in TASKS for p in model.head_parameters(t)]
    groups = [{"params": heads, "lr": args.head_lr}] + encoder_groups(model.bert, args.lr, args.layer_lr_decay)
    optimizer = AdamW(groups, lr=args.lr, weight_decay=args.weight_decay, foreach=True)
    trained = {id(p) for p in shared + heads}
    ema = EMA([(n, p) for n, p in model.named_parameters() if id(p) in trained], args.ema) if args.ema else None
    # with BERT frozen, a task whose head has no parameters (the paper's STS) has nothing to train
    trainable = {t: ds for t, ds in train.items() if not frozen or model.head_parameters(t)}
    if not trainable:
        raise SystemExit(f"--stage {args.stage} --tasks {','.join(args.tasks)}: nothing to train (with the "
                         "encoder frozen, the paper's STS has no parameters of its own)")
    plans = [my_share(epoch_plan(args, trainable, e), rank, world) for e in range(args.epochs)]
    total = sum(map(len, plans))
    if total == 0:  # e.g. --schedule random with every drawn probability 0, or more processes than batches
        raise SystemExit(f"--schedule {args.schedule}, {args.epochs} epoch(s): the plan has no training step "
                         f"for this process; check --task-probs, --tasks and --limit")
    scheduler = make_scheduler(optimizer, args.lr_schedule, int(args.warmup * total), total)

    # where to start: a fresh run, or the newest checkpoint
    state = {"epoch": 0, "pos": 0, "step": 0, "best": {}, "elapsed": 0.0, "loss": {}, "count": {}}
    if found is not None:
        state = load_training_state(found, model, optimizer, scheduler, ema=ema)["extra"]
        if rank:  # rank 0's RNG was saved; give the others their own stream again
            torch.manual_seed(args.seed + 1_000_003 * rank + 7919 * state["step"])
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if found is None:  # a fresh run: nothing of an older run in this folder counts
            shutil.rmtree(out / "best", ignore_errors=True)
        write_json(vars(args), out / "config.json")
        # the epochs after the checkpoint are redone
        metrics_log.start(None if found is None else lambda r: r["epoch"] < state["epoch"])
        print(f"{args.stage} ({args.schedule}) on {device_name(device)}, {world} process(es); "
              f"train sizes {', '.join(f'{t} {len(d)}' for t, d in train.items())}; "
              f"{total} steps" + (f"; resuming at step {state['step']}" if found else ""))
    best = BestTracker(out / "best", per_task=frozen, scores=state["best"])
    vocab = vocab_path(weights)
    name = args.name or out.name

    def checkpoint(epoch, pos, loss_sum, count):
        if rank == 0:
            extra = {**state, "epoch": epoch, "pos": pos, "best": best.scores,
                     "elapsed": state["elapsed"] + time.time() - t_start,
                     "loss": {t: v.item() for t, v in loss_sum.items()}, "count": count}
            save_training_state(ckpt_dir, state["step"], model, optimizer, scheduler, extra=extra, ema=ema)

    def end_of_epoch(epoch, train_time, n_sent, loss_sum, count):
        """Evaluate on dev, keep best/, log the epoch; epoch -1: the model before training."""
        if rank == 0:
            with ema.applied() if ema else contextlib.nullcontext():  # evaluate and keep the average
                metrics, outputs = evaluate(model, dev, device, args.eval_batch_size)
                improved = best.update(model, metrics, vocab, outputs)
            metrics_log.write(run=name, stage=args.stage, schedule=args.schedule, epoch=epoch,
                              step=state["step"], dev=metrics, overall=metrics.get("overall"),
                              train_loss={t: (loss_sum[t] / count[t]).item() for t in TASKS if count.get(t)},
                              train_time=round(train_time, 3),
                              sent_per_s=round(world * n_sent / train_time, 1) if train_time else 0.0,
                              improved=improved)
            print((f"epoch {epoch + 1}: " if epoch >= 0 else "before training: ")
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                  + (f" (best: {', '.join(improved)})" if improved else ""))
        if epoch >= 0:
            checkpoint(epoch + 1, 0, {}, {})
        if world > 1:
            dist.barrier()

    t_start = time.time()
    if frozen and found is None and is_checkpoint(weights):
        # The single-task stage starts from trained heads. They compete with its epochs, so
        # best/ never holds a head that scores lower on dev than the one the stage was given.
        end_of_epoch(-1, 0.0, 0, {}, {})
    model.train()
    stopped = False
    # Ctrl-C stops at the end of a step, with a checkpoint (one process only: see StopRequest)
    with StopRequest(enabled=world == 1) as stop:
        for epoch in range(state["epoch"], args.epochs):
            resumed = epoch == state["epoch"] and state["pos"] > 0
            plan, start = plans[epoch], state["pos"] if resumed else 0
            # per-task sums of the training loss, on the device (reading them is a host sync)
            loss_sum = {t: torch.tensor(state["loss"].get(t, 0.0) if resumed else 0.0, device=device)
                        for t in TASKS}
            count = dict(state["count"]) if resumed else dict.fromkeys(TASKS, 0)
            t_epoch, n_sent = time.time(), 0
            bar = tqdm(total=len(plan), initial=start, desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=rank != 0 or not args.progress, dynamic_ncols=True)
            for i in range(start, len(plan)):
                losses = train_step(model, plan[i], train, device, args, shared, heads, state["step"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                if ema:
                    ema.update(state["step"])
                for task, loss in losses.items():
                    loss_sum[task] += loss.detach().float()
                    count[task] += 1
                n_sent += sum(len(idx) * train[t].n_sentences for t, idx in plan[i])
                bar.update(1)
                # the loop's only host sync on one process with round-robin, random or
                # interleaved (pcgrad reads its K x K Gram matrix back every step, and under
                # torchrun all_reduce_gradients its flags)
                if (i + 1) % args.log_every == 0:
                    bar.set_postfix(loss=f"{sum(l.item() for l in losses.values()):.3f}",
                                    sent_s=f"{world * n_sent / (time.time() - t_epoch):.0f}")
                stopped = stop.requested or (args.stop_after_step is not None
                                             and state["step"] >= args.stop_after_step)
                if stopped or (args.checkpoint_every and state["step"] % args.checkpoint_every == 0
                               and i + 1 < len(plan)):
                    checkpoint(epoch, i + 1, loss_sum, count)
                if stopped:
                    break
            bar.close()
            if stopped:
                if rank == 0:
                    with contextlib.suppress(OSError):  # after Ctrl-C, a `| tee` may be gone
                        print(f"stopped after step {state['step']}, checkpoint saved: continue with "
                              f"python -m minibert train --out {out} --resume", flush=True)
                if stop.requested:
                    raise KeyboardInterrupt  # the run did not finish: callers (and shells) must know
                break
            end_of_epoch(epoch, time.time() - t_epoch, n_sent, loss_sum, count)

    if rank == 0 and not stopped:
        finish(args, name, out, data, device, state["elapsed"] + time.time() - t_start, world, best.dev_outputs)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return model


def finish(args, name, out, data, device, elapsed, world, dev_outputs):
    """Evaluate best/, write its prediction files and summary.json. `dev_outputs`: best/'s
    dev outputs as BestTracker saw them; evaluated again unless they cover every task."""
    model = load_model(out / "best").to(device)
    if set(dev_outputs) == set(data["dev"]):
        dev_out = {t: dev_outputs[t] for t in data["dev"]}  # in the data's task order
        dev_metrics = metrics_from_outputs(dev_out, data["dev"])
    else:
        dev_metrics, dev_out = evaluate(model, data["dev"], device, args.eval_batch_size)
    write_split_predictions(out / "predictions", "dev", data["dev"], dev_out)
    _, test_out = evaluate(model, data["test"], device, args.eval_batch_size)
    write_split_predictions(out / "predictions", "test", data["test"], test_out)
    rows = MetricsLog(out / "metrics.jsonl").read()

    def best_epoch(key):  # the last epoch that improved `key` (BestTracker's own record)
        return max((r["epoch"] for r in rows if key in r.get("improved", ())), default=None)

    # the epoch each dev figure comes from: multitask, best/'s (the best overall) for every one;
    # frozen, each task's own (the overall figure is their mean, of no one epoch)
    if args.stage == "multitask":
        epochs = dict.fromkeys(dev_metrics, best_epoch("overall"))
    else:
        epochs = {k: best_epoch(k) for k in dev_metrics if k != "overall"}
    write_json({"name": name, "stage": args.stage, "schedule": args.schedule if args.stage == "multitask" else None,
                "para_input": model.para_input, "sts_input": model.sts_input, "config": vars(args), "dev": dev_metrics,
                "majority": majority_baseline(data["train"], data["dev"]),
                "best_epoch": epochs,
                "wall_time_s": round(elapsed, 1), "device": device_name(device), "world_size": world,
                "torch": torch.__version__}, out / "summary.json")
    print(f"{name}: best dev " + ", ".join(f"{k} {v:.4f}" for k, v in dev_metrics.items())
          + f"; {elapsed:.0f} s; files in {out}")
