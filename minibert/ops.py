"""Fused ops: the encoder layer of model.py, computing the same function in fewer kernels.

model.py spells BERT out one operation at a time: that is the course reference, and on a
GPU every one of those operations is a kernel launch plus a round trip of its tensor
through device memory. A BERT layer is mostly three kinds of work:

    matrix products   x W          (Q, K, V, attention output, feed-forward in and out)
    attention         softmax(Q K^T / sqrt(d) + mask) V
    elementwise       bias + GELU, dropout, residual add + LayerNorm

The products already run near the chip's peak in cuBLAS; what is left to win is (1) doing
the three Q/K/V products as ONE product against the concatenated weights (one launch, a
3x wider matrix that uses the chip better), (2) attention through a flash kernel
(F.scaled_dot_product_attention) that never writes the (T, T) score matrix to memory, and
(3) the elementwise work in one pass over the tensor instead of several. This file has:

    bias_gelu(x, b)                        = gelu(x + b)                    (model.gelu)
    add_layer_norm(x, r, w, b, eps)        = LayerNorm(x + r)               (nn.LayerNorm)
    qkv_attention(x, self_attn, mask, p)   = BertSelfAttention(x) with one QKV product
    fused_layer(layer, x, mask)            = BertLayer(x), built from the three above

The first two are torch.autograd.Functions with a hand-written backward. Why bother, when
autograd can differentiate the plain code? Memory and passes: autograd keeps every
intermediate of the plain code alive for the backward (for GELU: x + b, x/sqrt 2, the erf,
1 + erf, ...), and runs one kernel per backward op. Our backward keeps only what its one
formula needs: for bias+GELU its two inputs, for residual+LayerNorm the normalised x_hat and
1/std (and the weight). torch.compile traces through these Functions
(forward and hand-written backward alike) and turns each into one or two kernels, which is
the fast path on a GPU; without compile they are still correct and lighter on memory.

All arithmetic runs in at least float32 (bf16 inputs under autocast are upcast inside the
op, as autocast does for LayerNorm), and in float64 for float64 inputs, so
torch.autograd.gradcheck can check the hand-written gradients. checks/test_ops.py proves
every op equal to its plain reference, and the fast model equal to the reference model.
"""

import math

import torch
import torch.nn.functional as F

# ---- bias + erf-GELU -----------------------------------------------------------------------


def compute_dtype(*tensors) -> torch.dtype:
    """The dtype the ops compute in: the inputs' common dtype, but never below float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def normal_cdf(u):
    """Phi(u), the standard normal CDF: GELU(u) = u * Phi(u) (Hendrycks & Gimpel 2016).
    Written with erfc, not 1 + erf: for very negative u, 1 + erf(u) cancels to a few float32
    ulps while erfc(-u) keeps full relative precision (the same function, better rounding)."""
    return 0.5 * torch.erfc(u * (-1.0 / math.sqrt(2.0)))


def normal_pdf(u):
    """phi(u) = exp(-u^2 / 2) / sqrt(2 pi), the derivative of Phi."""
    return torch.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi))


class BiasGelu(torch.autograd.Function):
    """y = GELU(x + b), erf form. Saves its inputs x and b for the backward, not u = x + b nor
    y: d GELU(u) / du = Phi(u) + u * phi(u), recomputed from u = x + b."""

    @staticmethod
    def forward(ctx, x, bias):
        # BEGIN SOLUTION
        ctx.save_for_backward(x, bias)
        u = x.to(compute_dtype(x, bias)) + bias  # (..., F)
        return (u * normal_cdf(u)).to(x.dtype)   # (..., F), the input's dtype (bf16 under autocast)
        # END SOLUTION

    @staticmethod
    def backward(ctx, dy):
        # BEGIN SOLUTION
        x, bias = ctx.saved_tensors
        u = x.to(compute_dtype(x, bias)) + bias                    # (..., F)
        du = dy.to(u.dtype) * (normal_cdf(u) + u * normal_pdf(u))  # (..., F)
        dbias = du.reshape(-1, du.shape[-1]).sum(0)                # (F,): b was broadcast over rows
        return du.to(x.dtype), dbias.to(bias.dtype)
        # END SOLUTION


def bias_gelu(x, bias):
    """GELU(x + bias); x: (..., F), bias: (F,). Returns x's shape and dtype."""
    if bias.dim() != 1 or x.shape[-1] != bias.shape[0]:
        raise ValueError(f"bias_gelu: bias must be ({x.shape[-1]},) to match x {tuple(x.shape)}, "
                         f"got {tuple(bias.shape)}")
    return BiasGelu.apply(x, bias)


# ---- residual add + LayerNorm -----------------------------------------------------------------


class AddLayerNorm(torch.autograd.Function):
    """y = LayerNorm(x + residual) * weight + bias (Ba et al. 2016), the 'Add & Norm' of BERT.

    Forward:  s = x + r,  xhat = (s - mean(s)) / sqrt(var(s) + eps),  y = xhat * w + b.
    Backward, with g = dy * w (per row of C features):
        ds = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var(s) + eps)
    and dx = dr = ds (the add passes its gradient to both inputs), dw = sum dy * xhat,
    db = sum dy over rows. We save xhat and 1/std: everything the backward needs."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        # BEGIN SOLUTION
        dtype = compute_dtype(x, residual, weight)
        s = x.to(dtype) + residual.to(dtype)                          # (..., C)
        mean = s.mean(-1, keepdim=True)                               # (..., 1)
        rstd = torch.rsqrt(s.var(-1, unbiased=False, keepdim=True) + eps)  # (..., 1)
        xhat = (s - mean) * rstd                                      # (..., C)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.dtypes = (x.dtype, residual.dtype, bias.dtype)
        # autocast runs LayerNorm in float32 and returns float32: we do the same
        out_dtype = torch.promote_types(torch.promote_types(x.dtype, residual.dtype), weight.dtype)
        return (xhat * weight + bias).to(out_dtype)                   # (..., C)
        # END SOLUTION

    @staticmethod
    def backward(ctx, dy):
        # BEGIN SOLUTION
        xhat, rstd, weight = ctx.saved_tensors
        x_dtype, r_dtype, b_dtype = ctx.dtypes
        dy = dy.to(xhat.dtype)                                        # (..., C)
        g = dy * weight                                               # (..., C)
        ds = (g - g.mean(-1, keepdim=True)
              - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd      # (..., C)
        C = xhat.shape[-1]
        dweight = (dy * xhat).reshape(-1, C).sum(0)                   # (C,)
        dbias = dy.reshape(-1, C).sum(0)                              # (C,)
        return ds.to(x_dtype), ds.to(r_dtype), dweight.to(weight.dtype), dbias.to(b_dtype), None
        # END SOLUTION


def add_layer_norm(x, residual, weight, bias, eps: float):
    """LayerNorm(x + residual) over the last dimension; x, residual: (..., C); weight, bias: (C,)."""
    if x.shape != residual.shape:
        raise ValueError(f"add_layer_norm: x {tuple(x.shape)} and residual {tuple(residual.shape)} "
                         "must have the same shape")
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"add_layer_norm: weight and bias must be ({x.shape[-1]},), got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    return AddLayerNorm.apply(x, residual, weight, bias, eps)


# ---- attention with one QKV product -----------------------------------------------------------


def sdpa_mask(attention_mask):
    """(B, T) of 1 = token, 0 = padding  ->  (B, 1, 1, T) booleans, True = may attend, or None.

    None is returned only when the caller passes no mask at all (None); it lets SDPA pick the
    flash kernel, which takes no mask. A batch without padding still gets a boolean mask (of
    all True): training and evaluation always pass the tokenizer's attention_mask; bench.py's
    fixed-shape batches pass none. A boolean mask selects the memory-efficient kernel and, unlike model.additive_mask, needs
    no dtype to match the activations (bf16 under autocast)."""
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)


def qkv_attention(x, self_attn, mask, dropout_p: float):
    """BertSelfAttention's function with the three projections done as one product.

    x: (B, T, C); self_attn: a model.BertSelfAttention (its query/key/value Linears hold the
    weights, under their Hugging Face names); mask: sdpa_mask(...) or None.
    Returns (B, T, C), heads concatenated."""
    B, T, C = x.shape
    H = self_attn.n_head
    # Concatenating the weights each call costs one small copy (3 C^2 numbers, fused into the
    # bf16 cast under autocast), and keeps the parameters, and so the checkpoints, unchanged.
    w = torch.cat([self_attn.query.weight, self_attn.key.weight, self_attn.value.weight])  # (3C, C)
    b = torch.cat([self_attn.query.bias, self_attn.key.bias, self_attn.value.bias])        # (3C,)
    qkv = F.linear(x, w, b)                                          # (B, T, 3C)
    q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)   # each (B, H, T, D)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, T, D)
    return y.transpose(1, 2).reshape(B, T, C)                        # (B, T, C)


# ---- a whole BERT layer -----------------------------------------------------------------------


def fused_residual_output(out, h, residual):
    """model.BertResidualOutput's function: LayerNorm(residual + dropout(dense(h)))."""
    ln = out.LayerNorm
    return add_layer_norm(out.dropout(out.dense(h)), residual, ln.weight, ln.bias, ln.eps)


def fused_layer(layer, x, mask):
    """model.BertLayer's function on the fused ops. x: (B, T, C); mask: sdpa_mask(...) or None."""
    # BEGIN SOLUTION
    attn = layer.attention
    p = attn.self.dropout_p if layer.training else 0.0
    a = fused_residual_output(attn.output, qkv_attention(x, attn.self, mask, p), x)  # (B, T, C)
    up = layer.intermediate.dense
    h = bias_gelu(F.linear(a, up.weight), up.bias)  # (B, T, 4C): the bias rides with the GELU
    return fused_residual_output(layer.output, h, a)  # (B, T, C)
    # END SOLUTION
