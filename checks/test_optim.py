"""minibert.optim.AdamW (both paths) against torch.optim.AdamW and a float64 NumPy
transcription; bitwise resume from a state_dict; hyperparameter errors; LR schedules."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.optim import AdamW
from minibert.schedule import constant, linear_warmup_decay, make_scheduler

STEPS = 55  # the issue asks for 50+ steps
NONE_PROB = 0.15  # chance a parameter has no grad at a step: it must then be skipped


# ---------------------------------------------------------------------------------------
# Drawing problems: parameter groups with their own hyperparameters, and gradients.

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
hyperparameters = st.fixed_dictionaries({
    "lr": st.floats(1e-5, 0.1),
    "betas": st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.9999)),
    "eps": st.one_of(st.just(0.0), st.floats(1e-10, 1e-3)),
    "weight_decay": st.one_of(st.just(0.0), st.floats(0.0, 0.5)),
    "amsgrad": st.booleans(),
})
problems = st.fixed_dictionaries({
    # one to three groups; each group is (hyperparameters, parameter shapes)
    "groups": st.lists(st.tuples(hyperparameters, st.lists(shapes, min_size=1, max_size=3)),
                       min_size=1, max_size=3),
    "seed": st.integers(0, 2**31 - 1),
})


def make_grads(shape_groups, steps, seed, dtype=torch.float32):
    """grads[step][group][i]: a seeded normal tensor, or None (skip) with NONE_PROB."""
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(steps):
        step = []
        for group_shapes in shape_groups:
            step.append([torch.randn(s, generator=gen, dtype=dtype)
                         if torch.rand((), generator=gen) >= NONE_PROB else None
                         for s in group_shapes])
        grads.append(step)
    return grads


def make_params(shape_groups, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed + 1)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in group] for group in shape_groups]


def run(make_optimizer, problem, grads, init, start=0, stop=None):
    """Copy `init` into fresh parameters, build the optimizer on them with the problem's
    groups (the first group takes the constructor defaults), and step through grads[start:stop].
    Returns (params, optimizer, peaks), peaks as in `step`."""
    params = [[t.clone().requires_grad_() for t in group] for group in init]
    (defaults, _), *others = problem["groups"]
    param_groups = [{"params": params[0]}]
    param_groups += [{"params": ps, **hp} for ps, (hp, _) in zip(params[1:], others)]
    optimizer = make_optimizer(param_groups, defaults)
    peaks = step(optimizer, params, grads[start:stop])
    return params, optimizer, peaks


def step(optimizer, params, grads):
    """One optimizer step per entry of grads. Returns, per parameter, the largest magnitude
    it took along the way: the scale against which rounding differences are measured."""
    peaks = [p.detach().abs().max() for p in flat(params)]
    for step_grads in grads:
        for group, group_grads in zip(params, step_grads):
            for p, g in zip(group, group_grads):
                p.grad = None if g is None else g.clone()
        optimizer.step()
        peaks = [torch.maximum(peak, p.detach().abs().max()) for peak, p in zip(peaks, flat(params))]
    return peaks


def flat(params):
    return [p.detach() for group in params for p in group]


def relative_error(ours, ref, scale):
    """Largest element-wise difference, relative to `scale`, the largest magnitude the
    reference parameter took during the run. Rounding differences are a few ulps of the
    values the computation went through; an element-wise ratio would be meaningless for an
    element that happens to end near zero."""
    return ((ours - ref).abs().max() / scale).item()


torch_single = lambda groups, hp: torch.optim.AdamW(groups, **hp, foreach=False)  # noqa: E731
torch_foreach = lambda groups, hp: torch.optim.AdamW(groups, **hp, foreach=True)  # noqa: E731
ours_readable = lambda groups, hp: AdamW(groups, **hp, foreach=False)  # noqa: E731
ours_fused = lambda groups, hp: AdamW(groups, **hp, foreach=True)  # noqa: E731


def ours_fused_sliced(groups, hp):
    """The fused path with its CPU cache blocking cutting even these small tensors into
    5-element slices, so the slicing is exercised."""
    optimizer = AdamW(groups, **hp, foreach=True)
    optimizer.cpu_block_elements = 5
    return optimizer


def ours_fused_device_scalars(groups, hp):
    """The fused path computing its bias corrections on the device, as it does inside a
    CUDA-graph capture: the capture's arithmetic, checked on any machine."""
    optimizer = AdamW(groups, **hp, foreach=True)
    optimizer.scalars_on_device = True
    return optimizer


# ---------------------------------------------------------------------------------------
# Equal to the references.

@settings(max_examples=25, deadline=None)
@given(problems)
def test_both_paths_match_torch_adamw(problem):
    shape_groups = [s for _, s in problem["groups"]]
    grads = make_grads(shape_groups, STEPS, problem["seed"])
    init = make_params(shape_groups, problem["seed"])
    ref, ref_opt, peaks = run(torch_single, problem, grads, init)
    ref_foreach, _, _ = run(torch_foreach, problem, grads, init)
    readable, readable_opt, _ = run(ours_readable, problem, grads, init)
    fused, fused_opt, _ = run(ours_fused, problem, grads, init)
    sliced, _, _ = run(ours_fused_sliced, problem, grads, init)
    on_device, _, _ = run(ours_fused_device_scalars, problem, grads, init)
    for r, rf, a, b, c, d, peak in zip(flat(ref), flat(ref_foreach), flat(readable), flat(fused),
                                       flat(sliced), flat(on_device), peaks):
        # The readable path performs torch's single-tensor operations in torch's order, and
        # the eager fused path torch's multi-tensor ones (sliced or not).
        assert torch.equal(a, r)
        assert torch.equal(b, rf)
        assert torch.equal(c, rf)
        # With its scalars on the device (CUDA-graph capture) the fused path puts the step
        # size on the numerator as a rounded 0-d tensor: within 1e-6 of both torch paths.
        assert relative_error(d, r, peak) <= 1e-6
        assert relative_error(d, rf, peak) <= 1e-6
    # Skipped parameters kept their own step counts, as in torch.
    assert step_counts(readable_opt) == step_counts(fused_opt) == step_counts(ref_opt)


def step_counts(optimizer):
    return [float(optimizer.state[p]["step"]) if "step" in optimizer.state[p] else 0.0
            for group in optimizer.param_groups for p in group["params"]]


def numpy_adamw(problem, grads, init):
    """The algorithm of minibert/optim.py's docstring, in float64 NumPy, written from the
    formulas (not from torch's operation order). Returns the final parameters and, per
    parameter, the largest magnitude it took."""
    out, peaks = [], []
    groups = problem["groups"]
    for gi, (_, group_init) in enumerate(zip(groups, init)):
        hp = groups[gi][0]
        lr, (b1, b2), eps, wd, ams = (hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"],
                                      hp["amsgrad"])
        for i, p0 in enumerate(group_init):
            p = p0.numpy().astype(np.float64)
            m, v, vmax, t = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), 0
            peak = np.abs(p).max()
            for step_grads in grads:
                g = step_grads[gi][i]
                if g is None:
                    continue
                g = g.numpy().astype(np.float64)
                t += 1
                p = p * (1 - lr * wd)
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                vmax = np.maximum(vmax, v)
                m_hat = m / (1 - b1**t)
                v_hat = (vmax if ams else v) / (1 - b2**t)
                p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
                peak = max(peak, np.abs(p).max())
            out.append(p)
            peaks.append(peak)
    return out, peaks


@settings(max_examples=15, deadline=None)
@given(problems)
def test_both_paths_match_numpy_float64(problem):
    shape_groups = [s for _, s in problem["groups"]]
    grads = make_grads(shape_groups, STEPS, problem["seed"], dtype=torch.float64)
    init = make_params(shape_groups, problem["seed"], dtype=torch.float64)
    expected, peaks = numpy_adamw(problem, grads, init)
    for make in (ours_readable, ours_fused, ours_fused_sliced, ours_fused_device_scalars):
        params, _, _ = run(make, problem, grads, init)
        for ours, ref, peak in zip(flat(params), expected, peaks):
            assert relative_error(ours, torch.from_numpy(ref), peak) <= 1e-12


def test_tensor_lr_matches_float_lr():
    problem = {"groups": [({"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8,
                            "weight_decay": 0.1, "amsgrad": True}, [(4, 3), (5,)])], "seed": 7}
    grads = make_grads([[(4, 3), (5,)]], STEPS, 7)
    init = make_params([[(4, 3), (5,)]], 7)
    ref, _, peaks = run(torch_single, problem, grads, init)
    tensor_lr = lambda groups, hp: AdamW(groups, **{**hp, "lr": torch.tensor(hp["lr"])},  # noqa: E731
                                         foreach=True)
    ours, _, _ = run(tensor_lr, problem, grads, init)
    for a, r, peak in zip(flat(ours), flat(ref), peaks):
        assert relative_error(a, r, peak) <= 1e-6


# ---------------------------------------------------------------------------------------
# Resume: a state_dict round trip changes nothing, bit for bit.

@settings(max_examples=10, deadline=None)
@given(problems, st.integers(1, 19),
       st.sampled_from([ours_readable, ours_fused, ours_fused_sliced, ours_fused_device_scalars]))
def test_resume_is_bitwise_equal(problem, k, make):
    steps = 20
    shape_groups = [s for _, s in problem["groups"]]
    grads = make_grads(shape_groups, steps, problem["seed"])
    init = make_params(shape_groups, problem["seed"])
    full, full_opt, _ = run(make, problem, grads, init)

    first, first_opt, _ = run(make, problem, grads, init, stop=k)
    buffer = io.BytesIO()
    torch.save(first_opt.state_dict(), buffer)
    buffer.seek(0)
    # a fresh optimizer on parameters holding the values after step k
    resumed, resumed_opt, _ = run(make, problem, grads, [[p.detach() for p in g] for g in first],
                               stop=0)
    resumed_opt.load_state_dict(torch.load(buffer))
    step(resumed_opt, resumed, grads[k:])
    for a, b in zip(flat(full), flat(resumed)):
        assert torch.equal(a, b)
    full_states = [full_opt.state[p] for g in full for p in g]
    resumed_states = [resumed_opt.state[p] for g in resumed for p in g]
    for s, r in zip(full_states, resumed_states):
        assert s.keys() == r.keys()
        for key in s:
            assert torch.equal(s[key], r[key]), key


def test_state_dict_moves_between_torch_and_ours():
    """A torch.optim.AdamW checkpoint resumes in ours (both paths), and ours in torch."""
    problem = {"groups": [({"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0.01, "amsgrad": True}, [(6, 4), (4,)])], "seed": 3}
    shape_groups = [[(6, 4), (4,)]]
    grads = make_grads(shape_groups, 30, 3)
    init = make_params(shape_groups, 3)
    ref, _, peaks = run(torch_single, problem, grads, init)
    for first_make, then_make in [(torch_single, ours_readable), (torch_single, ours_fused),
                                  (ours_fused, torch_single)]:
        first, first_opt, _ = run(first_make, problem, grads, init, stop=10)
        then, then_opt, _ = run(then_make, problem, grads, [[p.detach() for p in g] for g in first],
                             stop=0)
        then_opt.load_state_dict(first_opt.state_dict())
        step(then_opt, then, grads[10:])
        for a, r, peak in zip(flat(then), flat(ref), peaks):
            assert relative_error(a, r, peak) <= 1e-6


# ---------------------------------------------------------------------------------------
# Clear errors.

@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -1e-3}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"eps": -1e-8}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"betas": (1.0, 0.999)}, "beta1"),
    ({"betas": (-0.1, 0.999)}, "beta1"),
    ({"betas": (0.9, 1.0)}, "beta2"),
    ({"betas": (0.9,)}, "betas"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([torch.zeros(2, requires_grad=True)], **kwargs)
    # ... also when only a later parameter group has them
    with pytest.raises(ValueError, match=match):
        AdamW([{"params": [torch.zeros(2, requires_grad=True)]},
               {"params": [torch.zeros(2, requires_grad=True)], **kwargs}])


def test_a_tensor_lr_must_be_on_its_parameters_device():
    """Elsewhere, each step would copy it over, and a captured CUDA graph would keep the value
    it had at capture; the meta device stands for a GPU here."""
    with pytest.raises(ValueError, match="lr is on cpu, parameters on meta"):
        AdamW([torch.zeros(2, device="meta", requires_grad=True)], lr=torch.tensor(1e-3))
    params = (p for p in [torch.zeros(2, requires_grad=True)])  # a generator, read once: still kept
    assert len(AdamW(params, lr=torch.tensor(1e-3)).param_groups[0]["params"]) == 1


@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_gradient_raises(foreach):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        AdamW(embedding.parameters(), foreach=foreach).step()


# ---------------------------------------------------------------------------------------
# Schedules.

def test_schedule_values_at_key_steps():
    assert [constant(s) for s in (0, 1, 1000)] == [1.0, 1.0, 1.0]
    schedule = linear_warmup_decay(warmup_steps=10, total_steps=110)
    assert schedule(0) == 0.0  # warm-up starts from zero
    assert schedule(5) == 0.5
    assert schedule(10) == 1.0  # peak right after warm-up
    assert schedule(60) == 0.5
    assert schedule(110) == 0.0  # decayed to zero at the end ...
    assert schedule(200) == 0.0  # ... and stays there
    assert linear_warmup_decay(0, 4)(0) == 1.0  # no warm-up: start at the peak
    for bad in [(-1, 10), (11, 10), (1.5, 10), (0, 0)]:  # (0, 0): an lr of 0 throughout
        with pytest.raises(ValueError):
            linear_warmup_decay(*bad)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler(AdamW([torch.zeros(1, requires_grad=True)]), "cosine")
    with pytest.raises(ValueError, match="total_steps must be ints, got 0 and None"):  # not given
        make_scheduler(AdamW([torch.zeros(1, requires_grad=True)]), "linear")


@pytest.mark.parametrize("warmup, total", [(0, 20), (5, 20), (20, 20), (7, 31)])
def test_linear_schedule_matches_transformers(warmup, total):
    transformers = pytest.importorskip("transformers")
    ours_opt = AdamW([torch.zeros(1, requires_grad=True)], lr=2e-3)
    ref_opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=2e-3)
    ours = make_scheduler(ours_opt, "linear", warmup_steps=warmup, total_steps=total)
    ref = transformers.get_linear_schedule_with_warmup(ref_opt, warmup, total)
    for _ in range(total + 3):
        assert ours_opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
        ours_opt.step()
        ref_opt.step()
        ours.step()
        ref.step()


def test_schedule_fills_a_tensor_lr_in_place():
    lr = torch.tensor(1e-3)
    opt = AdamW([torch.zeros(1, requires_grad=True)], lr=lr, foreach=True)
    scheduler = make_scheduler(opt, "linear", warmup_steps=2, total_steps=4)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.0
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.5e-3)


# ---------------------------------------------------------------------------------------
# CUDA graphs (runs only where there is a GPU).

def test_capture_path_and_host_mirror_rebuild_on_cpu(monkeypatch):
    """The code a CUDA-graph capture runs, on any machine: steps 3-9 take the capture's path
    (bias corrections from the device step counters, the host mirror marked stale). A real
    capture runs that Python once and its replays none, so the mirror is left at 4 while the
    counters reach 10; the eager steps after must rebuild it from the counters. Bit for bit
    the same as an optimizer computing on the device on exactly those steps."""
    import minibert.optim as optim
    gen = torch.Generator().manual_seed(0)
    shapes_ = [(64, 32), (32,), (7, 3)]
    init = [torch.randn(s, generator=gen) for s in shapes_]
    grads = [[torch.randn(s, generator=gen) for s in shapes_] for _ in range(12)]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, amsgrad=True, foreach=True)
    graphed, eager = ([t.clone().requires_grad_() for t in init] for _ in range(2))
    graphed_opt, eager_opt = AdamW(graphed, **hp), AdamW(eager, **hp)
    capturing = {"now": False}
    monkeypatch.setattr(optim, "_is_capturing", lambda device: capturing["now"])
    for i in range(12):
        for p, q, g in zip(graphed, eager, grads[i]):
            p.grad, q.grad = g.clone(), g.clone()
        capturing["now"] = 3 <= i < 10
        graphed_opt.step()
        capturing["now"] = False
        if i == 9:  # what one capture (at step 3) and six replays leave in the host mirror
            graphed_opt._host_steps = {p: 4 for p in graphed}
        eager_opt.scalars_on_device = 3 <= i < 10
        eager_opt.step()
    for a, b in zip(graphed, eager):
        assert torch.equal(a, b)
    assert graphed_opt._host_steps == {p: 12 for p in graphed}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_step_replays_in_a_cuda_graph():
    gen = torch.Generator().manual_seed(0)
    shapes_ = [(64, 32), (32,), (7, 3)]
    init = [torch.randn(s, generator=gen).cuda() for s in shapes_]
    grads = [[torch.randn(s, generator=gen).cuda() for s in shapes_] for _ in range(12)]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, amsgrad=True, foreach=True)

    eager = [t.clone().requires_grad_() for t in init]
    eager_opt = AdamW(eager, **hp)
    graphed = [t.clone().requires_grad_() for t in init]
    graphed_opt = AdamW(graphed, **hp)
    for p in graphed:
        p.grad = torch.zeros_like(p)  # static gradient buffers the graph reads

    def set_grads(params, step_grads, copy):
        for p, g in zip(params, step_grads):
            if copy:
                p.grad.copy_(g)
            else:
                p.grad = g.clone()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps, eager, on a side stream
        for i in range(3):
            set_grads(graphed, grads[i], copy=True)
            graphed_opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # capture records the step without running it
        graphed_opt.step()
    for i in range(3, 10):
        set_grads(graphed, grads[i], copy=True)
        graph.replay()
    for i in range(10, 12):  # eager again after replays
        set_grads(graphed, grads[i], copy=True)
        graphed_opt.step()

    for i in range(12):
        # A capture computes the bias corrections on the device, eager steps on the host
        # (from the step counts' host mirror, rebuilt after the replays): the same split
        # here makes every step the same arithmetic, so the two runs must agree bit for bit.
        eager_opt.scalars_on_device = 3 <= i < 10
        set_grads(eager, grads[i], copy=False)
        eager_opt.step()
    torch.cuda.synchronize()
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)
    assert float(graphed_opt.state[graphed[0]]["step"]) == 12


@pytest.mark.parametrize("make", [ours_readable, ours_fused, ours_fused_device_scalars])
def test_zero_lr_with_zero_gradients_stays_finite(make):
    """Linear warm-up starts at lr = 0; a zero gradient there must give a zero update
    (an earlier fused step divided by -lr and wrote 0/0 = NaN)."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = make([p], dict(lr=0.0, weight_decay=0.01))
    p.grad = torch.tensor([0.0, 1.0, 0.0])
    opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))
