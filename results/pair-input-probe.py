"""The probe behind --para-input cross (results/study.md): one pair task trained ALONE, its
sentences read either siamese (each encoded on its own, the paper's heads) or as one
[CLS] s1 [SEP] s2 [SEP] sequence (a cross-encoder: mean pool, one linear layer; for STS
5 * sigmoid of it, trained with MSE).

    python results/pair-input-probe.py para|sts siamese|cross EPOCHS [LIMIT]

Encoder lr 5e-5, heads 1e-3, batch 32, linear warm-up 10% then decay, weight decay 1e-3,
seed 0; prints the dev metric after each epoch. A probe, not a stage: the cross-encoder
that won (paraphrase) lives in minibert/heads.py.
"""

import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.data import load_datasets
from minibert.evaluate import score
from minibert.heads import load_model, mean_pool, vocab_path
from minibert.optim import AdamW
from minibert.paths import data_dir, weights_dir
from minibert.schedule import make_scheduler
from minibert.tokenizer import WordPieceTokenizer

task, mode, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
torch.manual_seed(0)
weights = weights_dir()
tok = WordPieceTokenizer.from_vocab(vocab_path(weights))
data = load_datasets(data_dir(), tok, tasks=(task,), splits=("train", "dev"), limit=limit)
train, dev = data["train"][task], data["dev"][task]
model = load_model(weights)
cross_head = nn.Linear(model.bert.config.hidden_size, 1)


def forward(ds, idx):
    """Paraphrase logits or similarity scores (B,) for the examples idx of ds."""
    if mode == "siamese":  # the paper's heads
        b = ds.collate(idx)
        head = model.paraphrase_logit if task == "para" else model.similarity_score
        return head(b["input_ids"], b["attention_mask"])
    b = ds.collate(idx, joint=True)  # (B, T): [CLS] s1 [SEP] s2 [SEP]
    h = model.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"])["last_hidden_state"]
    z = cross_head(model.dropout(mean_pool(h, b["attention_mask"]))).squeeze(-1)  # (B,)
    return z if task == "para" else 5 * torch.sigmoid(z)


def loss_fn(out, y):
    return F.binary_cross_entropy_with_logits(out, y) if task == "para" else F.mse_loss(out, y)


heads = list(cross_head.parameters()) + model.head_parameters(task)
optimizer = AdamW([{"params": heads, "lr": 1e-3}, {"params": list(model.bert.parameters()), "lr": 5e-5}],
                  weight_decay=1e-3, foreach=True)
g = torch.Generator().manual_seed(0)
plans = [train.batches(32, shuffle=True, generator=g) for _ in range(epochs)]
total = sum(map(len, plans))
scheduler = make_scheduler(optimizer, "linear", int(0.1 * total), total)
for epoch, plan in enumerate(plans, 1):
    model.train(), cross_head.train()
    t0 = time.time()
    for idx in plan:
        loss = loss_fn(forward(train, idx), train.labels[idx].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval(), cross_head.eval()
    out = torch.empty(len(dev))
    with torch.inference_mode():
        for idx in dev.batches(64):
            out[idx] = forward(dev, idx)
    out = out.sigmoid() if task == "para" else out
    print(f"{task} {mode} epoch {epoch}: dev {score(task, out, dev.labels):.4f} ({time.time() - t0:.0f} s)", flush=True)
