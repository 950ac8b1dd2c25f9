"""MultitaskBERT: one shared BERT encoder and three task heads (paper section 4.2, fig. 2).

    sentence(s) --BERT--> h (B, T, C) --+--> SST head   -> 5 class logits      (eq. 1-2)
                                        +--> PD head    -> paraphrase logit    (eq. 4-5)
                                        +--> STS "head" -> similarity in [-5, 5] (eq. 3)

Sentence embeddings (eq. 1): the mean of the last hidden states over the real tokens
(padding excluded), and for SST a weighted sum alpha1 * e_[CLS] + alpha2 * mean.

Pairs (paraphrase, similarity) are siamese: each sentence is encoded on its own and the two
embeddings are compared, as in Sentence-BERT (the paper's ref. [5]). The training batches
stack both sentences of B pairs into one (2B, T) batch (see data.py) so BERT runs once.

A variant beyond the paper, para_input="cross" (a cross-encoder, as BERT's own paper does for
sentence pairs): the paraphrase head reads ONE sequence [CLS] s1 [SEP] s2 [SEP] (token type
1 on s2), so attention compares the two questions word by word in every layer instead of
only at the end through two fixed vectors; a linear layer on its mean pool gives the logit.
sts_input="cross" does the same for STS (5 sigmoid(linear) of the joint pool, a score in
[0, 5]). The paper's siamese cosine is the default there: it is what MiniLM was trained for,
and it scored better alone; a cross STS model is worth having as an ensemble member, since it
errs differently (results/study.md).

A checkpoint folder holds the whole model:
    DIR/encoder/        config.json, model.safetensors, vocab.txt (Hugging Face format)
    DIR/heads.safetensors   the heads' parameters
    DIR/heads.json          the heads' hyperparameters, and the tasks they were trained for
"""

import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.checkpoint import WeightsError, read_safetensors, write_json, write_safetensors
from minibert.data import TASKS
from minibert.model import BertModel


def mean_pool(h, attention_mask):
    """Mean of the hidden states over real tokens: h (B, T, C), mask (B, T) -> (B, C)."""
    # BEGIN SOLUTION
    m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, C)
    # END SOLUTION


STS_LOSSES = ("mse", "cosent")


SMOOTHING_KINDS = ("neighbours", "uniform")


def smoothed_targets(labels, num_classes: int, eps: float, kind: str = "neighbours"):
    """Label smoothing (beyond the paper): labels (B,) -> target distributions (B, K): eps of
    each label's probability mass moved off it, so the model is never asked for a probability
    of exactly 1 (Szegedy et al. 2016, "Rethinking the Inception Architecture", section 7).

    kind "uniform": eps / K on every class, the label's own included, as torch's
    cross_entropy(label_smoothing=eps): 1 - eps + eps / K stays on the label. kind
    "neighbours": SST's classes are ordered (very negative .. very positive), and a model's
    errors are mostly one step off (444 of 567 on dev for the control of results/study.md's
    label-smoothing section); 1 - eps stays on the label, and eps goes to its neighbours,
    label - 1 and label + 1, half each (all of it to the one neighbour of an end class), none
    to classes further away."""
    if kind not in SMOOTHING_KINDS:
        raise ValueError(f"kind must be one of {SMOOTHING_KINDS}, got {kind!r}")
    onehot = F.one_hot(labels, num_classes).float()  # (B, K)
    if kind == "uniform":
        return (1.0 - eps) * onehot + eps / num_classes
    if num_classes < 2:
        raise ValueError("neighbours smoothing needs at least 2 classes")
    below = F.pad(onehot[:, 1:], (0, 1))   # (B, K): 1 on label - 1 (none for class 0)
    above = F.pad(onehot[:, :-1], (1, 0))  # (B, K): 1 on label + 1 (none for the last class)
    near = below + above                   # one or two neighbours
    return (1.0 - eps) * onehot + eps * near / near.sum(-1, keepdim=True)


def nll(logp, target):
    """Cross-entropy from log-probabilities (B, K) against class indices (B,) or target
    distributions (B, K) (smoothed_targets); the batch mean."""
    return F.nll_loss(logp, target) if target.dim() == 1 else -(target * logp).sum(-1).mean()


def rdrop_loss(logits, labels, alpha):
    """R-Drop (Liang et al. 2021, beyond the paper) on two dropout passes of one batch:
    logits (2, B, K), labels (B,) or target distributions (B, K) -> 0-dim.

        L = (CE(z1, y) + CE(z2, y)) / 2 + alpha * (KL(p1 || p2) + KL(p2 || p1)) / 2

    Dropout makes every training forward pass a different sub-network. The KL term asks two of
    them to agree on the class distribution, a regulariser aimed at overfitting a small train
    set (SST: 7,544 training sentences; alone, its dev accuracy peaks after two or three epochs)."""
    logp1, logp2 = logits.float().log_softmax(-1)  # (B, K) each; float32 under bf16 autocast
    ce = (nll(logp1, labels) + nll(logp2, labels)) / 2  # cross-entropy of each pass
    # sum_k p1 (log p1 - log p2), averaged over the batch; and the same the other way round
    kl = ((logp1.exp() * (logp1 - logp2)).sum(-1) + (logp2.exp() * (logp2 - logp1)).sum(-1)).mean()
    return ce + alpha * kl / 2


def rdrop_mse_loss(scores, labels, alpha):
    """R-Drop for a regression head (the R-Drop paper's recipe for STS-B) on two dropout passes
    of one batch: scores (2, B), labels (B,) -> 0-dim.

        L = (MSE(s1, y) + MSE(s2, y)) / 2 + alpha * MSE(s1, s2)

    The squared difference of the two predictions takes the place of rdrop_loss's KL terms; it
    is symmetric already, so alpha/2 times its two directions is alpha times it."""
    s1, s2 = scores.float()  # (B,) each
    return (F.mse_loss(s1, labels) + F.mse_loss(s2, labels)) / 2 + alpha * F.mse_loss(s1, s2)


def twice(x, stacked_pair=False):
    """A batch doubled along dim 0 for R-Drop, so one forward pass runs it twice and each copy
    draws its own dropout masks: (N, T) -> (2N, T), the first N rows the first copy. A stacked
    pair batch [s1; s2] (2B, T) becomes [s1; s1; s2; s2], so that its halves still pair up and
    the head's (2B,) outputs are again the first copy's B, then the second's. None stays None."""
    if x is None:
        return None
    if stacked_pair:
        return x.unflatten(0, (2, -1)).repeat(1, 2, 1).flatten(0, 1)  # (2, B, T) -> (2, 2B, T) -> (4B, T)
    return x.repeat(2, 1)  # (2N, T)


def cosent_loss(cos, labels, scale=20.0):
    """CoSENT (Su 2022, beyond the paper): a ranking loss on cosines, (B,) and (B,) -> 0-dim.

        L = log(1 + sum over pairs (i, j) with labels[i] > labels[j] of exp(scale * (cos[j] - cos[i])))

    MSE asks each cosine to equal label / 5; STS is scored by correlation, which only needs
    the more similar pair to get the larger cosine. CoSENT penalises exactly the pairs of the
    batch that are ranked the wrong way round (softly: scale sets how sharply)."""
    cos = cos.float()  # exp(20 x) needs float32 even under bf16 autocast
    diff = scale * (cos[None, :] - cos[:, None])  # (B, B): scale * (cos[j] - cos[i]) at [i, j]
    wrong_way = labels[:, None] > labels[None, :]  # (B, B): the pairs with labels[i] > labels[j]
    diff = diff.masked_fill(~wrong_way, float("-inf"))
    zero = diff.new_zeros(1)  # the "1 +" inside the log: exp(0)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


class MultitaskBERT(nn.Module):
    PAIR_INPUTS = ("siamese", "cross")  # how a pair task reads its two sentences

    def __init__(self, bert: BertModel, dropout=0.1, alpha1=0.5, alpha2=0.5, sst_hidden=None,
                 num_labels=5, para_input="siamese", sts_input="siamese", tasks=TASKS):
        super().__init__()
        for name, value in (("para_input", para_input), ("sts_input", sts_input)):
            if value not in self.PAIR_INPUTS:
                raise ValueError(f"{name} must be one of {self.PAIR_INPUTS}, got {value!r}")
        C = bert.config.hidden_size
        sst_hidden = sst_hidden or C
        self.bert = bert
        self.hparams = dict(dropout=dropout, alpha1=alpha1, alpha2=alpha2, sst_hidden=sst_hidden,
                            num_labels=num_labels, para_input=para_input, sts_input=sts_input, tasks=[])
        self.add_tasks(tasks)
        self.alpha1, self.alpha2 = alpha1, alpha2
        self.para_input, self.sts_input = para_input, sts_input
        # SST: a 2-layer feed-forward network; ReLU, LayerNorm and dropout on the first layer
        self.sst_hidden = nn.Linear(C, sst_hidden)
        self.sst_norm = nn.LayerNorm(sst_hidden)
        self.sst_out = nn.Linear(sst_hidden, num_labels)
        if para_input == "siamese":
            # Paraphrase: per sentence Linear + ReLU + dropout, then one linear layer on 4 features
            self.para_proj = nn.Linear(C, C)
            self.para_out = nn.Linear(4 * C, 1)
        else:  # cross-encoder: one linear layer on the pooled joint encoding of the pair
            self.para_joint = nn.Linear(C, 1)
        if sts_input == "cross":  # the paper's STS (eq. 3) has no parameters; a cross-encoder one
            self.sts_joint = nn.Linear(C, 1)
        self.dropout = nn.Dropout(dropout)
        self.encoder_frozen = False

    # ---- which parameters belong to what -------------------------------------------------

    @property
    def tasks(self) -> list:
        """The tasks the heads were trained for, in TASKS order (heads.json keeps them)."""
        return self.hparams["tasks"]

    def add_tasks(self, tasks, keep=True):
        """Record that the model is trained for `tasks` too (saved in heads.json); keep=False:
        for `tasks` alone. An ensemble averages each task over its members trained for it, so
        a one-task specialist (train --tasks sts) can join one without its untrained heads
        voting on the other tasks."""
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task {sorted(unknown)[0]!r}: expected some of {TASKS}")
        self.hparams["tasks"] = [t for t in TASKS if (keep and t in self.tasks) or t in tasks]

    def head_parameters(self, task):
        """The parameters only `task` uses (the paper's STS has none)."""
        para = [self.para_proj, self.para_out] if self.para_input == "siamese" else [self.para_joint]
        sts = [self.sts_joint] if self.sts_input == "cross" else []
        modules = {"sst": [self.sst_hidden, self.sst_norm, self.sst_out], "para": para, "sts": sts}[task]
        return [p for m in modules for p in m.parameters()]

    def joint_input(self, task) -> bool:
        """Does `task` read its pairs as one joined sequence (data.py's collate(joint=True))?"""
        return {"para": self.para_input, "sts": self.sts_input}.get(task) == "cross"

    def symmetric(self, task) -> bool:
        """Does `task`'s head give a pair (s1, s2) the output of (s2, s1)? Only the paper's STS
        cosine does; the siamese paraphrase head reads [s1', s2', ...] in order, and a
        cross-encoder reads s1 first (evaluate.predict_dataset's both_orders)."""
        return task == "sts" and self.sts_input == "siamese"

    def freeze_encoder(self, frozen=True):
        """Freeze BERT (baseline and single-task stages): no gradients, and kept in eval mode
        so its outputs are deterministic features (no dropout) and it runs under no_grad."""
        self.encoder_frozen = frozen
        for p in self.bert.parameters():
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.encoder_frozen:
            self.bert.eval()
        return self

    # ---- embeddings ---------------------------------------------------------------------

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """BERT's last hidden states (B, T, C) in float32 (under bf16 autocast, pooling sums
        many vectors: keep it out of bf16's 8-bit mantissa); no autograd when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            return self.bert(input_ids, attention_mask, token_type_ids)["last_hidden_state"].float()

    def joint_pool(self, input_ids, attention_mask, token_type_ids):
        """Joined pairs (B, T) -> the mean pool of their joint encoding (B, C), dropped out:
        what a cross-encoder head's linear layer reads."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, C): both sentences
        return self.dropout(mean_pool(h, attention_mask))  # (B, C)

    def pair_embeddings(self, input_ids, attention_mask):
        """A stacked pair batch (2B, T) -> the mean-pooled embeddings u, v: (B, C) each."""
        e = mean_pool(self.encode(input_ids, attention_mask), attention_mask)  # (2B, C)
        return e.chunk(2)

    @staticmethod
    def stack_pair(ids1, mask1, ids2, mask2):
        """Two (B, T1), (B, T2) batches -> one (2B, max(T1, T2)) batch, right-padded."""
        T = max(ids1.shape[1], ids2.shape[1])
        pad = lambda x: F.pad(x, (0, T - x.shape[1]))  # pad id and mask value are both 0
        return torch.cat([pad(ids1), pad(ids2)]), torch.cat([pad(mask1), pad(mask2)])

    @staticmethod
    def join_pair(ids1, mask1, ids2, mask2):
        """Two right-padded (B, T1), (B, T2) batches of [CLS] s [SEP] rows -> the cross-encoder's
        (B, T) input_ids, attention_mask, token_type_ids of [CLS] s1 [SEP] s2 [SEP] rows.

        batching.join_pair does this for one pair of id lists (data.py's joined batches); here
        it is done on the tensors where they are, with one host sync (T, the longest joined
        row: padding to T1 + T2 - 1 instead could pass the encoder's positions even where
        every real row fits).
        """
        B, T1 = ids1.shape
        n1, n2 = mask1.sum(1, keepdim=True), mask2.sum(1, keepdim=True)  # (B, 1) real lengths
        T = int((n1 + n2 - 1).max())  # s2 drops its [CLS]
        pos = torch.arange(T, device=ids1.device).expand(B, -1)  # (B, T)
        first = pos < n1  # (B, T): [CLS] s1 [SEP]
        second = ~first & (pos < n1 + n2 - 1)  # s2 [SEP]: s2's row from position 1 (no [CLS])
        from1 = ids1.gather(1, pos.clamp(max=T1 - 1))  # (B, T)
        from2 = ids2.gather(1, (pos - n1 + 1).clamp(0, ids2.shape[1] - 1))  # (B, T)
        input_ids = torch.where(first, from1, torch.where(second, from2, torch.zeros_like(from2)))
        return input_ids, (first | second).to(mask1.dtype), second.long()

    # ---- the three tasks: forward from a batch of data.py --------------------------------

    def sentiment_logits(self, input_ids, attention_mask):
        """(B, T) -> (B, num_labels) class logits (eq. 1-2)."""
        # BEGIN SOLUTION
        h = self.encode(input_ids, attention_mask)  # (B, T, C)
        s = self.alpha1 * h[:, 0] + self.alpha2 * mean_pool(h, attention_mask)  # (B, C), eq. 1
        s = self.dropout(self.sst_norm(F.relu(self.sst_hidden(s))))  # (B, sst_hidden)
        return self.sst_out(s)  # (B, num_labels); argmax is the prediction (eq. 2)
        # END SOLUTION

    def paraphrase_logit(self, input_ids, attention_mask, token_type_ids=None):
        """Stacked pairs (2B, T) -> (B,) logits of "is a paraphrase" (eq. 4); with
        para_input="cross", joined pairs (B, T) and their token types instead."""
        # BEGIN SOLUTION
        if self.para_input == "cross":
            return self.para_joint(self.joint_pool(input_ids, attention_mask, token_type_ids)).squeeze(-1)  # (B,)
        u, v = self.pair_embeddings(input_ids, attention_mask)  # (B, C) each
        u = self.dropout(F.relu(self.para_proj(u)))  # s1' (B, C)
        v = self.dropout(F.relu(self.para_proj(v)))  # s2' (B, C), same layer: siamese
        features = torch.cat([u, v, (u - v) ** 2, (u - v).abs()], dim=-1)  # (B, 4C)
        return self.para_out(features).squeeze(-1)  # (B,); sigmoid gives the probability
        # END SOLUTION

    def similarity_score(self, input_ids, attention_mask, token_type_ids=None, eps=1e-8):
        """Stacked pairs (2B, T) -> (B,) scaled cosine similarity in [-5, 5] (eq. 3); with
        sts_input="cross", joined pairs (B, T) and their token types -> (B,) scores in [0, 5]."""
        # BEGIN SOLUTION
        if self.sts_input == "cross":
            logit = self.sts_joint(self.joint_pool(input_ids, attention_mask, token_type_ids))  # (B, 1)
            return 5.0 * logit.squeeze(-1).float().sigmoid()  # (B,): the labels' range
        u, v = self.pair_embeddings(input_ids, attention_mask)  # (B, C) each
        cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(eps)  # (B,)
        return 5.0 * cos
        # END SOLUTION

    def loss(self, task, batch, sts_loss="mse", rdrop=0.0, smoothing=0.0, smoothing_kind="neighbours"):
        """The task's training loss on a batch of data.py (a 0-dim tensor); `sts_loss`: the
        paper's "mse" or "cosent" (see cosent_loss); `rdrop` > 0: R-Drop's agreement term of
        that weight joins the loss (see rdrop_loss; STS: rdrop_mse_loss, with the MSE loss);
        `smoothing` > 0: SST's cross-entropy against smoothed_targets of that eps and kind."""
        ids, mask, y = batch["input_ids"], batch["attention_mask"], batch["labels"]
        types = batch.get("token_type_ids")  # joined pairs only
        # R-Drop runs the batch twice in one forward pass: each copy draws its own dropout masks
        stacked = task != "sst" and not self.joint_input(task)  # a siamese pair batch [s1; s2]
        if task == "sst":
            if smoothing:
                y = smoothed_targets(y, self.sst_out.out_features, smoothing, smoothing_kind)  # (B, K)
            if rdrop:
                logits = self.sentiment_logits(twice(ids), twice(mask))  # (2B, K)
                return rdrop_loss(logits.unflatten(0, (2, -1)), y, rdrop)
            return F.cross_entropy(self.sentiment_logits(ids, mask), y)  # y: indices or distributions
        if task == "para":
            if rdrop:
                logit = self.paraphrase_logit(twice(ids, stacked), twice(mask, stacked), twice(types))  # (2B,)
                # sigmoid(z) is the softmax of the two logits (0, z), and BCE its cross-entropy:
                # the KL terms of rdrop_loss then compare two Bernoulli distributions
                two_class = torch.stack([torch.zeros_like(logit), logit], -1)  # (2B, 2)
                return rdrop_loss(two_class.unflatten(0, (2, -1)), y.long(), rdrop)
            # eq. 5 is binary cross-entropy of sigmoid(logit); BCE-with-logits computes the
            # same loss from the logit via log-sigmoid, which does not overflow or log(0)
            return F.binary_cross_entropy_with_logits(self.paraphrase_logit(ids, mask, types), y)
        if task == "sts":
            if sts_loss not in STS_LOSSES:
                raise ValueError(f"sts_loss must be one of {STS_LOSSES}, got {sts_loss!r}")
            if rdrop:
                if sts_loss != "mse":
                    raise ValueError(f"R-Drop on STS goes with the mse loss, got {sts_loss!r}")
                score = self.similarity_score(twice(ids, stacked), twice(mask, stacked), twice(types))  # (2B,)
                return rdrop_mse_loss(score.unflatten(0, (2, -1)), y, rdrop)
            score = self.similarity_score(ids, mask, types)  # (B,), on the labels' 0-5 scale
            if sts_loss == "mse":
                return F.mse_loss(score, y)  # eq. 3
            return cosent_loss(score / 5.0, y)
        raise ValueError(f"unknown task {task!r}: expected sst, para or sts")

    def predict(self, task, batch):
        """Outputs to average in an ensemble: SST class probabilities (B, 5), paraphrase
        probabilities (B,), similarity scores (B,)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if task == "sst":
            return self.sentiment_logits(ids, mask).float().softmax(-1)
        if task == "para":
            return self.paraphrase_logit(ids, mask, batch.get("token_type_ids")).float().sigmoid()
        return self.similarity_score(ids, mask, batch.get("token_type_ids")).float()

    # ---- the CS224N starter code's names ---------------------------------------------------

    def predict_sentiment(self, input_ids, attention_mask):
        """(B, T) -> (B, 5) logits."""
        return self.sentiment_logits(input_ids, attention_mask)

    def predict_paraphrase(self, input_ids_1, attention_mask_1, input_ids_2, attention_mask_2):
        """Two (B, T) batches -> (B,) logits (the probability is their sigmoid)."""
        return self.paraphrase_logit(*self.pair_input("para", input_ids_1, attention_mask_1,
                                                      input_ids_2, attention_mask_2))

    def predict_similarity(self, input_ids_1, attention_mask_1, input_ids_2, attention_mask_2):
        """Two (B, T) batches -> (B,) similarity scores (see similarity_score)."""
        return self.similarity_score(*self.pair_input("sts", input_ids_1, attention_mask_1,
                                                      input_ids_2, attention_mask_2))

    def pair_input(self, task, *pair):
        """Two (B, T) batches -> what `task`'s head reads: joined (input_ids, attention_mask,
        token_type_ids) for a cross-encoder, else stacked (input_ids, attention_mask)."""
        return self.join_pair(*pair) if self.joint_input(task) else self.stack_pair(*pair)

    # ---- save and load -----------------------------------------------------------------

    def save(self, folder, vocab=None):
        """Write the checkpoint folder (see the module docstring); `vocab`: a vocab.txt to copy."""
        folder = Path(folder)
        self.bert.save_pretrained(folder / "encoder")
        if vocab is not None and Path(vocab).resolve() != (folder / "encoder" / "vocab.txt").resolve():
            shutil.copyfile(vocab, folder / "encoder" / "vocab.txt")
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith("bert.")}
        write_safetensors(heads, folder / "heads.safetensors")
        write_json(self.hparams, folder / "heads.json")

    @classmethod
    def load(cls, folder, **overrides):
        """Load a checkpoint folder written by `save`; `overrides` replace hyperparameters
        (e.g. dropout). Returns the model in eval mode."""
        folder = require_checkpoint(folder)
        hparams = {**json.loads((folder / "heads.json").read_text()), **overrides}
        model = cls(BertModel.from_pretrained(folder / "encoder"), **hparams)
        heads = read_safetensors(folder / "heads.safetensors")
        missing, unexpected = model.load_state_dict(heads, strict=False)
        missing = [k for k in missing if not k.startswith("bert.")]
        if missing or unexpected:
            raise WeightsError(f"{folder / 'heads.safetensors'}: "
                               + (f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"))
        return model.eval()


def is_checkpoint(folder) -> bool:
    return (Path(folder) / "heads.json").is_file()


def require_checkpoint(folder) -> Path:
    """`folder` as a Path if it is a MultitaskBERT checkpoint, else a WeightsError saying so."""
    if not is_checkpoint(folder):
        raise WeightsError(f"{folder}: not a MultitaskBERT checkpoint (no heads.json; expected a run's best/ "
                           "folder: encoder/, heads.safetensors, heads.json)")
    return Path(folder)


def vocab_path(folder) -> Path:
    """The vocab.txt of a BERT folder or of a MultitaskBERT checkpoint folder."""
    folder = Path(folder)
    return folder / "encoder" / "vocab.txt" if is_checkpoint(folder) else folder / "vocab.txt"


def load_model(folder, **hparams) -> MultitaskBERT:
    """A checkpoint folder (encoder and heads), or a BERT folder (new heads, `hparams`, trained
    for no task yet)."""
    if is_checkpoint(folder):
        return MultitaskBERT.load(folder, **{k: v for k, v in hparams.items() if k == "dropout"})
    return MultitaskBERT(BertModel.from_pretrained(folder), **{"tasks": (), **hparams})
