"""The masked-language-model head, and BERT with it on top (Devlin et al. 2019, section 3.1).

    h (B, T, C) from the encoder
      -> transform:  LayerNorm(GELU(W_t h + b_t))                           (B, T, C)
      -> decoder:    transform(h) E^T + b      E: the word embeddings (V, C) (B, T, V) logits
      -> cross-entropy against the original ids, at the masked positions only

The decoder reuses the input word-embedding matrix E ("weight tying", Press & Wolf 2017):
the score of word w is a dot product with w's own input embedding. It saves V x C
parameters (30522 x 384 = 11.7M for MiniLM) and means a head trained from scratch starts
from an output layer that already knows which words are alike.

Only ~15% of positions are masked, and the decoder is by far the largest matrix product
(C x V per position, V = 30522), so the training path gathers the masked positions first and
projects only those: (N, C) @ (C, V) with N ~ 0.15 B T, ~7x less work than (B, T, C) @ (C, V).
Calling the model without labels gives logits at every position (the reference path);
checks/test_mlm.py proves the two agree at the masked positions, and that both match
transformers' BertForMaskedLM.

Parameter names are Hugging Face's (`cls.predictions.transform.dense.weight`, ...), so the
head of a pretraining checkpoint such as bert-base-uncased loads as it is. all-MiniLM-L6-v2
was distilled into a sentence encoder and ships without one: `from_pretrained` then
initialises a new head and says so.
"""

import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.checkpoint import WeightsError, read_safetensors, write_safetensors
from minibert.config import BertConfig
from minibert.masking import IGNORE_INDEX
from minibert.model import BertModel, gelu

HEAD_PREFIX = "cls.predictions."


class BertPredictionHeadTransform(nn.Module):
    """dense -> GELU -> LayerNorm: one more nonlinear layer between encoder and vocabulary."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(gelu(self.dense(h)))  # (..., C)


class BertLMPredictionHead(nn.Module):
    """transform, then scores over the vocabulary with the (tied) word embeddings + a bias."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # (V,) the decoder's own bias

    def forward(self, h, word_embeddings):
        """h: (..., C); word_embeddings: (V, C), the encoder's input embedding matrix."""
        # BEGIN SOLUTION
        return self.transform(h) @ word_embeddings.T + self.bias  # (..., V)
        # END SOLUTION


class BertForMLM(nn.Module):
    """BertModel + MLM head; transformers' BertForMaskedLM, with the same parameter names."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.bert = bert
        self.config = bert.config
        # a ModuleDict so the keys read `cls.predictions.*`, as in Hugging Face checkpoints
        self.cls = nn.ModuleDict({"predictions": BertLMPredictionHead(bert.config)})
        self.init_head()
        self.head_loaded = False  # from_pretrained sets it when a checkpoint had a head

    @property
    def head(self) -> BertLMPredictionHead:
        return self.cls["predictions"]

    def init_head(self) -> None:
        """BERT's initialisation for a new head: N(0, 0.02) dense, identity LayerNorm, zero biases."""
        self.head.apply(self.bert._init_weights)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> dict:
        """Without labels: {"logits": (B, T, V)} at every position (the reference path).

        With labels ((B, T), IGNORE_INDEX where nothing is predicted), the training path:
        {"loss": mean cross-entropy over the N masked positions, "logits": (N, V),
         "targets": (N,), "n_masked": N, "n_correct": correct argmax predictions}."""
        h = self.bert(input_ids, attention_mask, token_type_ids)["last_hidden_state"]  # (B, T, C)
        E = self.bert.embeddings.word_embeddings.weight                                # (V, C)
        if labels is None:
            return {"logits": self.head(h, E)}                                         # (B, T, V)
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(labels.shape)}")
        # BEGIN SOLUTION
        selected = labels != IGNORE_INDEX   # (B, T)
        targets = labels[selected]          # (N,)
        logits = self.head(h[selected], E)  # (N, C) -> (N, V): project the masked positions only
        if targets.numel() == 0:
            # nothing masked (possible with tiny batches): a zero loss that still has a graph
            loss = logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits.float(), targets)  # fp32 softmax even under bf16 autocast
        n_correct = (logits.argmax(-1) == targets).sum()
        return {"loss": loss, "logits": logits, "targets": targets,
                "n_masked": targets.numel(), "n_correct": n_correct}
        # END SOLUTION

    # ---- weights in Hugging Face format -------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, log=print) -> "BertForMLM":
        """A Hugging Face-format folder: the encoder, and the MLM head when the file has one
        (else a new head, reported through `log`). Returns eval mode."""
        path = Path(path)
        file = path / "model.safetensors"
        bert = BertModel(BertConfig.from_json(path / "config.json"))
        heads = bert.load_hf_state_dict(read_safetensors(file), file)  # encoder in; cls.* back
        model = cls(bert)
        model.head_loaded = model.load_head(heads, file, log)  # False: a new head
        return model.eval()

    def load_head(self, heads: dict, source, log=print) -> bool:
        """Load `cls.predictions.*` tensors (as BertModel.load_hf_state_dict returns them).
        Returns True if a head was loaded, False if none was there (the new head stays)."""
        ignored = sorted(k for k in heads if not k.startswith(HEAD_PREFIX))
        if ignored:  # e.g. cls.seq_relationship.*, the next-sentence head of BertForPreTraining
            log(f"{source}: ignoring {len(ignored)} tensors that are not the MLM head ({ignored[0]}, ...)")
        state = {k.removeprefix(HEAD_PREFIX): v for k, v in heads.items() if k.startswith(HEAD_PREFIX)}
        if not state:
            log(f"no MLM head in {source}: initialised a new one")
            return False
        # the decoder is tied to the word embeddings: a stored copy must be that same matrix
        E = self.bert.embeddings.word_embeddings.weight
        decoder = state.pop("decoder.weight", None)
        if decoder is not None and not torch.equal(decoder.to(E.dtype), E.detach()):
            raise WeightsError(f"{source}: cls.predictions.decoder.weight differs from the word "
                               "embeddings; minibert ties them, so it cannot load an untied decoder")
        decoder_bias = state.pop("decoder.bias", None)  # transformers ties it to cls.predictions.bias
        if decoder_bias is not None:
            if "bias" in state and not torch.equal(decoder_bias, state["bias"]):
                raise WeightsError(f"{source}: cls.predictions.decoder.bias differs from cls.predictions.bias")
            state.setdefault("bias", decoder_bias)
        own = self.head.state_dict()
        for k in sorted(own.keys() | state.keys()):
            if k not in state:
                raise WeightsError(f"{source}: MLM head incomplete, missing key {HEAD_PREFIX + k!r}")
            if k not in own:
                raise WeightsError(f"{source}: unexpected MLM head key {HEAD_PREFIX + k!r}")
            if state[k].shape != own[k].shape:
                raise WeightsError(f"{source}: key {HEAD_PREFIX + k!r} has shape {tuple(state[k].shape)}, "
                                   f"the config needs {tuple(own[k].shape)}")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])
        return True

    def save_pretrained(self, path, vocab_file=None) -> None:
        """Write an HF-format folder: config.json, model.safetensors (encoder keys without a
        `bert.` prefix, as BertModel.save_pretrained writes them, plus `cls.predictions.*`)
        and, if given, vocab.txt. minibert's BertModel and BertForMLM load it, and so do
        transformers' BertModel and BertForMaskedLM (checks/test_mlm.py)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = dict(self.bert.state_dict())
        state.update({HEAD_PREFIX + k: v for k, v in self.head.state_dict().items()})
        write_safetensors(state, path / "model.safetensors", metadata={"format": "pt"})
        self.config.to_json(path / "config.json")
        if vocab_file is not None and Path(vocab_file).resolve() != (path / "vocab.txt").resolve():
            shutil.copyfile(vocab_file, path / "vocab.txt")
