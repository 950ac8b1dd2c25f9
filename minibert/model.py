"""BERT, the encoder (Devlin et al. 2019), written on plain torch tensors.

    input_ids (B, T) --embeddings--> x (B, T, C) --N x BertLayer--> h (B, T, C) --pooler--> (B, C)

Each BertLayer is a post-LayerNorm residual block (the original BERT, not pre-LN GPT-2):

    a = LayerNorm(x + Dropout(W_o Attention(x)))          # attention sub-block
    y = LayerNorm(a + Dropout(W_2 GELU(W_1 a)))            # feed-forward sub-block
    Attention(x) = concat_heads softmax(Q K^T / sqrt(d) + mask) V,  Q, K, V = x W_q, x W_k, x W_v

Module and parameter names follow transformers' modeling_bert.py (`encoder.layer.0.attention.
self.query.weight`, ...), so Hugging Face checkpoints load without a translation table and
`save_pretrained` writes files transformers loads.

Attention has two paths side by side: "math" spells the equation out (the course reference)
and "sdpa" calls F.scaled_dot_product_attention (fused kernels); checks/test_model.py proves
them equal. Select with `model.set_attention("math" | "sdpa")`.

The fast path: `model.set_fast(True)` runs every layer through minibert/ops.py instead
(one fused Q/K/V product, SDPA with a boolean mask, or no mask at all when
attention_mask is None so the flash kernel applies, and fused bias+GELU and
residual+LayerNorm ops with hand-written backward). Same parameters, same function:
checks/test_ops.py proves it equal to this reference. It is built to be compiled,
`torch.compile(model, fullgraph=True)`, and captured in a CUDA graph (minibert/cudagraph.py).
"""

import argparse
import math
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.checkpoint import WeightsError, read_safetensors, write_safetensors
from minibert.config import BertConfig
from minibert.ops import fused_layer, sdpa_mask

ATTENTION_IMPLS = ("math", "sdpa")


def gelu(x):
    """The exact (erf) GELU of the original BERT: x * Phi(x), Phi the standard normal CDF."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def additive_mask(attention_mask, dtype):
    """(B, T) of 1 = real token, 0 = padding  ->  (B, 1, 1, T) of 0 / a very negative number.

    Added to the attention scores before the softmax, it gives padding keys zero weight.
    We use the dtype's most negative finite number, not -inf, so that a row whose keys are
    all padding gives a uniform softmax instead of NaN (its output is ignored anyway). That
    holds in the mask's own dtype: a cast to bf16 rounds float32's min to -inf. The
    tokenizer never makes an all-padding row ([CLS] and [SEP] are always there)."""
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - mask) * torch.finfo(dtype).min


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout (BERT section 3,
    "Input/Output Representations", and its figure 2)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        """input_ids, token_type_ids: (B, T) -> (B, T, C). Position t (0..T-1) of every
        sequence gets position embedding t; LayerNorm, then dropout, on the sum of the three."""
        # BEGIN SOLUTION
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = (self.word_embeddings(input_ids)                  # (B, T, C)
             + self.position_embeddings(positions)            # (T, C), broadcast over B
             + self.token_type_embeddings(token_type_ids))    # (B, T, C)
        return self.dropout(self.LayerNorm(x))
        # END SOLUTION


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, eq. 1)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob
        self.impl = "sdpa"

    def split_heads(self, x):
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x, mask):
        """x: (B, T, C); mask: (B, 1, 1, T) additive. Returns (B, T, C), heads concatenated."""
        q = self.split_heads(self.query(x))  # (B, H, T, D)
        k = self.split_heads(self.key(x))    # (B, H, T, D)
        v = self.split_heads(self.value(x))  # (B, H, T, D)
        p = self.dropout_p if self.training else 0.0
        if self.impl == "math":
            y = self.attend(q, k, v, mask, p)
        else:  # the fused kernel computes the same function; test_model.py checks it
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        B, H, T, D = y.shape
        return y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C)

    @staticmethod
    def attend(q, k, v, mask, dropout_p):
        """softmax(Q K^T / sqrt(d) + mask) V, spelled out. q, k, v: (B, H, T, D), d = D; mask:
        (B, 1, 1, T) additive (`additive_mask`: 0 where a key is attended, the dtype's most
        negative number at padding), broadcast over the scores (B, H, T, T). Dropout with
        probability dropout_p goes on the attention weights (after the softmax), as in BERT.
        Returns (B, H, T, D)."""
        # BEGIN SOLUTION
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
        weights = torch.softmax(scores + mask, dim=-1)              # (B, H, T, T), rows sum to 1
        weights = F.dropout(weights, dropout_p)                     # BERT drops attention weights
        return weights @ v                                          # (B, H, T, D)
        # END SOLUTION


class BertResidualOutput(nn.Module):
    """dense -> dropout -> add the sub-block's input -> LayerNorm: the 'Add & Norm' of a post-LN
    block. BERT has two per layer (`attention.output` and `output`), same code, other sizes."""

    def __init__(self, d_in: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(residual + self.dropout(self.dense(h)))  # (B, T, C)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x):
        return gelu(self.dense(x))  # (B, T, 4C)


class BertLayer(nn.Module):
    """One transformer block: attention sub-block, then feed-forward sub-block, each post-LN."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)
        self.fast = False  # BertModel.set_fast

    def forward(self, x, mask):
        """x: (B, T, C) -> (B, T, C). The attention sub-block (self.attention: attention, then
        dense, dropout, residual and LayerNorm), then the feed-forward sub-block
        (self.intermediate: dense to 4C and GELU; self.output: back to C, dropout, residual
        from the attention sub-block's output, LayerNorm)."""
        if self.fast:  # the same function on fused ops; mask is then ops.sdpa_mask(...)
            return fused_layer(self, x, mask)
        # BEGIN SOLUTION
        a = self.attention(x, mask)                 # (B, T, C)
        return self.output(self.intermediate(a), a)  # (B, T, C)
        # END SOLUTION


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask):
        for block in self.layer:
            x = block(x, mask)
        return x


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's sentence vector, trained by next-sentence prediction."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))  # (B, C)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.fast = False
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """BERT's initialisation: N(0, 0.02) weights, zero biases, identity LayerNorms."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_attention(self, impl: str) -> "BertModel":
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention implementation {impl!r}: expected one of {ATTENTION_IMPLS}")
        for block in self.encoder.layer:
            block.attention.self.impl = impl
        return self

    def set_fast(self, fast: bool = True) -> "BertModel":
        """Run the layers on minibert/ops.py's fused ops (True) or the reference code (False)."""
        self.fast = bool(fast)
        for block in self.encoder.layer:
            block.fast = self.fast
        return self

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids, attention_mask (1 = token, 0 = padding), token_type_ids: (B, T) integers.
        Returns {"last_hidden_state": (B, T, C), "pooler_output": (B, C)}."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds "
                             f"max_position_embeddings {self.config.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        if self.fast:  # None only if no attention_mask was passed: then SDPA may use flash
            mask = sdpa_mask(attention_mask)
        else:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            mask = additive_mask(attention_mask, x.dtype)
        h = self.encoder(x, mask)
        return {"last_hidden_state": h, "pooler_output": self.pooler(h)}

    # ---- weights in Hugging Face format -------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, **overrides) -> "BertModel":
        """Load a Hugging Face-format BERT folder (config.json + model.safetensors).
        `overrides` replace config values (e.g. hidden_dropout_prob=0.2). Returns eval mode."""
        path = Path(path)
        config = BertConfig.from_json(path / "config.json")
        for k, v in overrides.items():
            if not hasattr(config, k):
                raise ValueError(f"unknown config override {k!r}")
            setattr(config, k, v)
        model = cls(config)
        model.load_hf_state_dict(read_safetensors(path / "model.safetensors"), path / "model.safetensors")
        return model.eval()

    def load_hf_state_dict(self, state: dict, source="state dict") -> dict:
        """Copy a Hugging Face BERT state dict into this model, checking every key and shape.

        Accepts the `bert.` prefix of BertForPreTraining / BertForMaskedLM checkpoints, ignores
        the `position_ids` buffer old transformers saved, and returns the pretraining heads'
        tensors (`cls.*`) for whoever wants them (the MLM stage)."""
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        heads = {k: v for k, v in state.items() if k.startswith("cls.")}
        state = {k: v for k, v in state.items() if not k.startswith("cls.")
                 and k != "embeddings.position_ids"}
        self._check_config_matches(state, source)
        own = self.state_dict()
        missing = sorted(own.keys() - state.keys())
        if missing and set(missing) == {k for k in own if k.startswith("pooler.")}:
            # masked-LM-only checkpoints have no pooler; no stage here trains through it
            warnings.warn(f"{source}: no pooler weights; the pooler keeps its random initialisation")
            state = {**state, **{k: own[k] for k in missing}}
            missing = []
        unexpected = sorted(state.keys() - own.keys())
        if missing:
            raise WeightsError(f"{source}: missing key {missing[0]!r}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            raise WeightsError(f"{source}: unexpected key {unexpected[0]!r}"
                               + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise WeightsError(f"{source}: key {k!r} has shape {tuple(v.shape)}, the config "
                                   f"needs {tuple(own[k].shape)}")
            if not v.is_floating_point():
                raise WeightsError(f"{source}: key {k!r} has dtype {v.dtype}, expected floating point")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])  # casts, e.g. an fp16 copy of the weights into fp32 parameters
        return heads

    def _check_config_matches(self, state, source):
        """Say which config.json field disagrees with the file, before any per-key message."""
        c = self.config
        emb = state.get("embeddings.word_embeddings.weight")
        if emb is not None and emb.dim() == 2 and tuple(emb.shape) != (c.vocab_size, c.hidden_size):
            raise WeightsError(
                f"{source}: config does not match the weights: key 'embeddings.word_embeddings.weight' "
                f"is {tuple(emb.shape)} but config.json says vocab_size={c.vocab_size}, "
                f"hidden_size={c.hidden_size}")
        layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
        if layers and max(layers) + 1 != c.num_hidden_layers:
            raise WeightsError(f"{source}: config does not match the weights: the file has "
                               f"{max(layers) + 1} layers, config.json says "
                               f"num_hidden_layers={c.num_hidden_layers}")

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors, loadable here and by transformers' BertModel."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.state_dict(), path / "model.safetensors", metadata={"format": "pt"})
        self.config.to_json(path / "config.json")


def main(argv=None) -> int:
    """`python -m minibert check-model`: load the weights, embed sentences, print what came out."""
    from minibert.paths import weights_dir
    from minibert.tokenizer import WordPieceTokenizer

    p = argparse.ArgumentParser(prog="python -m minibert check-model", description=main.__doc__, allow_abbrev=False)
    p.add_argument("--weights", help="a Hugging Face-format BERT folder (default: all-MiniLM-L6-v2)")
    args = p.parse_args(argv)
    folder = weights_dir(args.weights)
    model = BertModel.from_pretrained(folder)
    tok = WordPieceTokenizer.from_vocab(folder / "vocab.txt")
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded {folder}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
          f"{c.num_attention_heads} heads, {n_params / 1e6:.1f}M parameters")
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."]
    batch = tok(sentences)
    with torch.no_grad():
        out = model(**batch)
    h, m = out["last_hidden_state"], batch["attention_mask"].unsqueeze(-1)
    mean = (h * m).sum(1) / m.sum(1)  # (B, C) mean over real tokens
    cos = F.cosine_similarity(mean[:, None], mean[None, :], dim=-1)  # (B, B)
    print(f"last_hidden_state {tuple(h.shape)}, pooler_output {tuple(out['pooler_output'].shape)}")
    for i in (1, 2):
        print(f"cosine(mean-pooled {sentences[0]!r}, {sentences[i]!r}) = {cos[0, i]:.3f}")
    if not cos[0, 1] > cos[0, 2]:
        print("FAILED: the paraphrase is not closer than the unrelated sentence")
        return 1
    print("ok: the paraphrase is closer than the unrelated sentence")
    return 0
