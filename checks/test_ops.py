"""minibert/ops.py's fused ops against their plain references, the fast model against the
reference model (and transformers), bucketed batches against padded ones, and the bench.

Runs on the CPU; every test that takes a device also runs on CUDA when there is one."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert import ops
from minibert.batching import bucketed_batches, pad_batch, real_token_fraction
from minibert.config import BertConfig
from minibert.model import BertModel, BertSelfAttention, additive_mask, gelu

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# relative error ||out - ref|| / ||ref|| allowed: float32 rounding, and bf16's 8-bit mantissa
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def small_config(**kw):
    d = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
    d.update(kw)
    return BertConfig(**d)


def random_mask(B, T, lengths_seed):
    """(B, T) 1/0 mask; row 0 is [CLS] alone (all padding but the first token)."""
    g = torch.Generator().manual_seed(lengths_seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 1
    return (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 17), st.sampled_from([8, 24, 64]))
dtypes = st.sampled_from([torch.float32, torch.bfloat16])


# ---- each op against its reference ----------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15, deadline=None)
@given(shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16))
def test_bias_gelu_matches_reference(device, shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=g)).to(device, dtype).requires_grad_()
    b = torch.randn(shape[-1], generator=g).to(device, dtype).requires_grad_()
    dy = torch.randn(shape, generator=g).to(device, dtype)
    out = ops.bias_gelu(x, b)
    # reference: model.gelu on float64 inputs, through autograd
    x64, b64 = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = gelu(x64 + b64)
    # Some CPU builds compute float32 erf to only ~1e-4 relative; torch's own F.gelu shares
    # that error. So: as close to float64 as torch's GELU in the same dtype, or within TOL.
    torch_err = rel_err(F.gelu(x.detach() + b.detach()), ref)
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_err(out, ref) < max(TOL[dtype], 2 * torch_err)
    out.backward(dy)
    ref.backward(dy.double())
    assert rel_err(x.grad, x64.grad) < max(TOL[dtype], 2 * torch_err)
    assert rel_err(b.grad, b64.grad) < max(TOL[dtype], 2 * torch_err)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15, deadline=None)
@given(shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16))
def test_add_layer_norm_matches_reference(device, shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x, r, dy = ((2 * torch.randn(shape, generator=g) + 1).to(device, dtype) for _ in range(3))
    w, b = (torch.randn(shape[-1], generator=g).to(device, dtype) for _ in range(2))
    leaves = [t.requires_grad_() for t in (x, r, w, b)]
    out = ops.add_layer_norm(x, r, w, b, 1e-12)
    refs = [t.detach().double().requires_grad_() for t in leaves]
    ref = F.layer_norm(refs[0] + refs[1], (shape[-1],), refs[2], refs[3], 1e-12)  # torch's LayerNorm
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_err(out, ref) < TOL[dtype]
    out.backward(dy)
    ref.backward(dy.double())
    for t, t_ref in zip(leaves, refs):
        assert rel_err(t.grad, t_ref.grad) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=10, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 16), dtype=dtypes, seed=st.integers(0, 2**16),
       masked=st.booleans())
def test_qkv_attention_matches_math_attention(device, B, T, dtype, seed, masked):
    torch.manual_seed(seed)
    attn = BertSelfAttention(small_config()).to(device)
    attn.impl = "math"  # the spelled-out reference of model.py
    x = torch.randn(B, T, 32, device=device)
    mask = random_mask(B, T, seed).to(device) if masked else None
    ref = attn(x, additive_mask(mask if masked else torch.ones(B, T, device=device), x.dtype))
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = ops.qkv_attention(x, attn, ops.sdpa_mask(mask), 0.0)
    assert out.shape == (B, T, 32)
    assert rel_err(out.float(), ref) < TOL[dtype]


def test_gradcheck_float64():
    """The hand-written backward passes against finite differences (float64)."""
    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w, b = (torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(ops.bias_gelu, (x, b))
    assert torch.autograd.gradcheck(lambda *a: ops.add_layer_norm(*a, 1e-5), (x, r, w, b))
    attn = BertSelfAttention(small_config(hidden_size=8, num_attention_heads=2)).double()
    xa = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    mask = ops.sdpa_mask(random_mask(2, 5, 1))
    assert torch.autograd.gradcheck(lambda t: ops.qkv_attention(t, attn, mask, 0.0), (xa,))


def test_ops_reject_bad_shapes():
    with pytest.raises(ValueError, match="bias must be"):
        ops.bias_gelu(torch.randn(2, 4), torch.randn(3))
    with pytest.raises(ValueError, match="same shape"):
        ops.add_layer_norm(torch.randn(2, 4), torch.randn(2, 3), torch.ones(4), torch.zeros(4), 1e-5)


# ---- the whole fast model against the reference --------------------------------------------------


def forward_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    (out["last_hidden_state"].pow(2).mean() + out["pooler_output"].pow(2).mean()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_fast_equals_reference(model, batch, tol):
    out_ref, g_ref = forward_and_grads(model.set_fast(False), batch)
    out, g = forward_and_grads(model.set_fast(True), batch)
    keep = batch["attention_mask"].bool()  # padding positions' outputs are unspecified
    assert rel_err(out["last_hidden_state"][keep], out_ref["last_hidden_state"][keep]) < tol
    assert rel_err(out["pooler_output"], out_ref["pooler_output"]) < tol
    assert g.keys() == g_ref.keys()
    total = torch.stack([t.norm() for t in g_ref.values()]).norm()  # the whole gradient's size
    for name in g:
        # Some gradients are zero in exact arithmetic, so only rounding is left to compare:
        # the key bias always (softmax ignores a constant added to a row of scores), and all of
        # Q and K when every query sees one key (T = 1, or a batch of [CLS]-only rows).
        # Those we compare on the scale of the whole gradient.
        if name.endswith("attention.self.key.bias") or g_ref[name].norm() < 1e-6 * total:
            assert (g[name] - g_ref[name]).norm() < tol * total, name
        else:
            assert rel_err(g[name], g_ref[name]) < tol, name


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), B=st.integers(1, 4), T=st.integers(1, 20))
def test_fast_model_matches_reference_random_configs(device, seed, B, T):
    torch.manual_seed(seed)
    heads = [1, 2, 4][seed % 3]
    model = BertModel(small_config(num_attention_heads=heads, num_hidden_layers=1 + seed % 2)).to(device)
    batch = dict(input_ids=torch.randint(1, 120, (B, T), device=device),
                 attention_mask=random_mask(B, T, seed).to(device),
                 token_type_ids=torch.randint(0, 2, (B, T), device=device))
    assert_fast_equals_reference(model, batch, 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_fast_model_matches_reference_minilm(weights_path, device):
    model = BertModel.from_pretrained(weights_path).to(device)
    torch.manual_seed(0)
    batch = dict(input_ids=torch.randint(1000, 30000, (3, 24), device=device),
                 attention_mask=random_mask(3, 24, 3).to(device),
                 token_type_ids=torch.zeros(3, 24, dtype=torch.long, device=device))
    assert_fast_equals_reference(model, batch, 1e-4)


def test_fast_model_matches_transformers(weights_path):
    """The REAL reference: transformers' BertModel on the same weights (eval, float32)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(weights_path, attn_implementation="eager", dtype=torch.float32).eval()
    model = BertModel.from_pretrained(weights_path).set_fast(True)
    ids = torch.randint(1000, 30000, (3, 24), generator=torch.Generator().manual_seed(1))
    mask = random_mask(3, 24, 5)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        out = model(ids, mask)
    keep = mask.bool()
    assert rel_err(out["last_hidden_state"][keep], ref.last_hidden_state[keep]) < 1e-5
    assert rel_err(out["pooler_output"], ref.pooler_output) < 1e-5


def test_fast_model_without_mask_equals_all_ones_mask():
    """attention_mask=None takes SDPA's no-mask (flash) route; it must mean 'no padding'."""
    torch.manual_seed(0)
    model = BertModel(small_config()).eval().set_fast(True)
    ids = torch.randint(1, 120, (2, 9))
    with torch.no_grad():
        a = model(ids)["last_hidden_state"]
        b = model.set_fast(False)(ids, torch.ones_like(ids))["last_hidden_state"]
    assert rel_err(a, b) < 1e-5


def test_fast_model_compiles_fullgraph():
    """The fast encoder traces into ONE graph, forward and backward (fullgraph=True fails on
    any graph break; aot_eager: the tracing of torch.compile without generating kernels, so
    the CPU check takes seconds), and the traced graph computes what the eager model does:
    outputs and every parameter's gradient (eval mode: no dropout to draw differently)."""
    torch.manual_seed(0)
    model = BertModel(small_config()).eval().set_fast(True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids = torch.randint(1, 120, (2, 7))
    mask = random_mask(2, 7, 0)
    results = []
    for forward in (compiled, model):
        model.zero_grad(set_to_none=True)
        out = forward(ids, mask)["last_hidden_state"]  # (2, 7, C)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()  # not a plain sum: LayerNorm
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out_c, grads_c), (out_e, grads_e) = results
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    assert any("word_embeddings" in n for n in grads_e)
    for name, grad in grads_c.items():  # the traced graph also gives the unused pooler zeros, not None
        expected = grads_e.get(name, torch.zeros_like(grad))
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert grads_e.keys() <= grads_c.keys()


# ---- bucketed / dynamically padded batches -------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
def test_bucketed_batches_give_same_per_example_outputs(fast):
    torch.manual_seed(0)
    model = BertModel(small_config()).eval().set_fast(fast)
    g = torch.Generator().manual_seed(0)
    lengths = [int(n) for n in torch.randint(1, 30, (12,), generator=g)]
    examples = [torch.randint(1, 120, (n,), generator=g).tolist() for n in lengths]
    with torch.no_grad():
        padded = model(**pad_batch(examples))["last_hidden_state"]  # (12, 29, C), all in one batch
        batches = bucketed_batches(lengths, 4, shuffle=True, generator=g)
        assert sorted(i for b in batches for i in b) == list(range(12))
        for b in batches:
            out = model(**pad_batch([examples[i] for i in b]))["last_hidden_state"]  # (4, T_b, C)
            for row, i in enumerate(b):
                n = lengths[i]
                assert rel_err(out[row, :n], padded[i, :n]) < 1e-5
    assert real_token_fraction(batches, lengths) > real_token_fraction([list(range(12))], lengths)


# ---- the benchmark runs (structure only, untimed) ------------------------------------------------


def test_bench_runs_tiny_on_cpu(tmp_path):
    import json

    from minibert.bench import main, train_flops_per_token
    # FLOP count: bert-base at T=128 is 3 x 175 MFLOP per token (the 10% MFU anchor)
    base = BertConfig()
    assert math.isclose(train_flops_per_token(base, 128), 3 * (2 * 12 * (4 * 768**2 + 2 * 768 * 3072)
                                                              + 4 * 12 * 128 * 768))
    assert main(["--device", "cpu", "--tiny", "--no-hf", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    variants = [r["variant"] for r in result["rows"]]
    assert variants == ["minibert reference", "minibert fast", "minibert compiled", "minibert compiled+graph"]
    assert all("error" not in r and r["seq_per_s"] > 0 for r in result["rows"]), [r.get("error") for r in result["rows"]]
    assert (tmp_path / "bench.md").read_text().startswith("# Training-step benchmark")
    assert all(r["mfu"] is None and r["of_measured_matmul"] is None for r in result["rows"])  # no GPU, no peak


def test_capture_step_needs_an_eager_step_first():
    """Captured without one, the optimizer's state would be created inside the graph, and
    every replay would create it afresh; off CUDA, the step itself comes back."""
    from minibert.cudagraph import capture_step
    with pytest.raises(ValueError, match="warmup must be at least 1"):
        capture_step(lambda: None, "cpu", warmup=0)
    step = lambda: None  # noqa: E731
    assert capture_step(step, "cpu") is step


def test_mfu_divides_by_the_datasheet_peak_of_the_named_chip():
    """MFU's denominator is the chip's dense bf16 datasheet peak (PaLM's definition), found
    by the name torch reports; a chip not in the table gets none rather than a guess."""
    from minibert.bench import datasheet_peak_tflops
    assert datasheet_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4  # SXM5: 1,979 with sparsity, halved
    assert datasheet_peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert datasheet_peak_tflops("NVIDIA H200") == 989.4
    assert datasheet_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert datasheet_peak_tflops("NVIDIA H100 NVL") is None and datasheet_peak_tflops("NVIDIA L40S") is None
