"""PCGrad (minibert/pcgrad.py) against its definition and a float64 brute-force transcription:
the readable path (pcgrad_project) and the fast one (pcgrad_weights on the Gram matrix, which
pc_backward uses), each against the brute force."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from minibert.pcgrad import TINY_SQ_NORM, pc_backward, pcgrad_project, pcgrad_weights

finite = st.floats(-10, 10, allow_nan=False, width=32)


def task_grads(min_tasks=2, max_tasks=4):
    return st.integers(min_tasks, max_tasks).flatmap(
        lambda k: st.integers(1, 40).flatmap(lambda p: arrays(np.float32, (k, p), elements=finite)))


def brute_force(grads, seed):
    """Yu et al. Algorithm 1 in float64 NumPy, orders drawn the way pcgrad_project draws them.
    Returns the projected vectors and, per task, the task it was projected against last."""
    gen = torch.Generator().manual_seed(seed)
    out, last = [], []
    for i in range(len(grads)):
        g = grads[i].astype(np.float64).copy()
        others = [j for j in range(len(grads)) if j != i]
        order = [others[k] for k in torch.randperm(len(others), generator=gen).tolist()]
        for j in order:
            gj = grads[j].astype(np.float64)
            if g @ gj < 0:
                g = g - (g @ gj) / (gj @ gj) * gj
        out.append(g)
        last.append(order[-1])
    return out, last


@settings(max_examples=200, deadline=None)
@given(task_grads(), st.integers(0, 2**31 - 1))
def test_equals_brute_force(g, seed):
    ours = pcgrad_project([torch.from_numpy(r) for r in g], torch.Generator().manual_seed(seed))
    ref, _ = brute_force(g, seed)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.double().numpy(), b, rtol=1e-6, atol=1e-6 * (1 + np.abs(b).max()))


@settings(max_examples=200, deadline=None)
@given(task_grads(), st.integers(0, 2**31 - 1))
def test_no_conflict_with_the_task_projected_last(g, seed):
    """Two tasks: no pair conflicts after projection. More tasks: each projected gradient no
    longer conflicts with the task it was projected against last (Algorithm 1's guarantee)."""
    g64 = [torch.from_numpy(r).double() for r in g]
    ours = pcgrad_project(g64, torch.Generator().manual_seed(seed))
    _, last = brute_force(g, seed)
    for i, p in enumerate(ours):
        j = last[i]
        scale = float(g64[i].norm() * g64[j].norm()) + 1e-12
        assert float(p @ g64[j]) >= -1e-9 * scale


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, (3, 8), elements=st.floats(0, 10, width=32)), st.integers(0, 1000))
def test_non_conflicting_gradients_pass_unchanged(g, seed):
    """All-non-negative vectors never conflict: projection must leave them bit for bit."""
    grads = [torch.from_numpy(r) for r in g]
    for a, b in zip(pcgrad_project(grads, torch.Generator().manual_seed(seed)), grads):
        assert torch.equal(a, b)


def test_two_opposed_gradients_cancel_only_the_conflict():
    g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 0.0])
    p1, p2 = pcgrad_project([g1, g2])
    assert torch.allclose(p1, torch.tensor([0.0, 1.0]))  # component along g2 removed
    assert torch.allclose(p2, torch.tensor([-0.5, 0.5]))  # component along g1 removed
    assert float(p1 @ g2) >= 0 and float(p2 @ g1) >= 0


def toy_model(seed=0):
    torch.manual_seed(seed)
    shared = torch.nn.Linear(4, 4)
    heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(3))
    return shared, heads


def toy_losses(shared, heads, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 4, generator=gen)
    targets = torch.randn(3, 5, 1, generator=gen)
    return [((h(torch.tanh(shared(x))) - t) ** 2).mean() for h, t in zip(heads, targets)]


@settings(max_examples=200, deadline=None)
@given(task_grads(), st.integers(0, 2**31 - 1))
def test_gram_weights_equal_brute_force(g, seed):
    """The fast path's algorithm alone, on the exact Gram matrix: sum_k w[k] g_k is the sum of
    the projected gradients, with the same random orders."""
    g64 = g.astype(np.float64)
    w = pcgrad_weights(torch.from_numpy(g64 @ g64.T), torch.Generator().manual_seed(seed))
    ref, _ = brute_force(g, seed)
    expected = np.sum(ref, axis=0)
    np.testing.assert_allclose(w.numpy() @ g64, expected, rtol=1e-6, atol=1e-6 * (1 + np.abs(expected).max()))


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (3, 3), elements=st.floats(0, 10)), st.integers(0, 1000))
def test_gram_weights_without_conflicts_are_ones(gram, seed):
    """No negative dot product: nothing is projected, every task counts once, exactly."""
    w = pcgrad_weights(torch.from_numpy(gram + gram.T), torch.Generator().manual_seed(seed))
    assert w.tolist() == [1.0, 1.0, 1.0]


def linear_losses(grads, shapes):
    """Parameters of the given shapes, and K losses sum(p * g_k) whose gradients are the rows
    of `grads` (K, P) exactly, cut into those shapes."""
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    sizes = [int(np.prod(s)) for s in shapes]
    losses = [sum((p * c.reshape(p.shape)).sum() for p, c in zip(params, torch.from_numpy(row).split(sizes)))
              for row in grads]
    return params, losses


@settings(max_examples=200, deadline=None)
@given(task_grads(), st.integers(0, 2**31 - 1), st.data())
def test_pc_backward_fast_path_equals_brute_force(g, seed, data):
    """pc_backward's default path, through autograd, with the gradient cut into parameters
    of several shapes: the Gram matrix is summed parameter by parameter."""
    cuts = sorted(data.draw(st.sets(st.integers(1, g.shape[1] - 1), max_size=3))) if g.shape[1] > 1 else []
    bounds = [0, *cuts, g.shape[1]]
    shapes = [() if b - a == 1 else (b - a,) if k % 2 else (1, b - a)  # scalars, vectors, matrices
              for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    params, losses = linear_losses(g, shapes)
    pc_backward(losses, params, generator=torch.Generator().manual_seed(seed))
    got = torch.cat([p.grad.reshape(-1) for p in params]).double().numpy()
    ref, _ = brute_force(g, seed)
    expected = np.sum(ref, axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * (1 + np.abs(expected).max()))


def test_pc_backward_takes_the_float64_path_for_tiny_gradients():
    """Gradients of about 1e-22: their float32 squares (1e-44) fall below float32's normal
    range, so the Gram matrix would be wrong; the step must still project exactly."""
    g = np.array([[1.0, 1.0, 0.5], [-1.0, 0.0, 0.25]], dtype=np.float32) * np.float32(1e-22)
    params, losses = linear_losses(g, [(3,)])
    assert float(np.sum(g[1].astype(np.float64) ** 2)) < TINY_SQ_NORM
    pc_backward(losses, params, generator=torch.Generator().manual_seed(0))
    expected = np.sum(brute_force(g, 0)[0], axis=0)
    np.testing.assert_allclose(params[0].grad.double().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_pc_backward_projects_shared_and_keeps_heads_separate(fast):
    shared, heads = toy_model()
    losses = toy_losses(shared, heads)
    sp, hp = list(shared.parameters()), list(heads.parameters())
    # expected: per-task gradients by plain autograd, projected by pcgrad_project, summed
    per_task = [torch.autograd.grad(l, sp + hp, retain_graph=True, allow_unused=True) for l in losses]
    flat_shared = [torch.cat([g.reshape(-1) for g in gs[:len(sp)]]) for gs in per_task]
    expected = torch.stack(pcgrad_project(flat_shared, torch.Generator().manual_seed(3))).sum(0)
    pc_backward(losses, sp, hp, generator=torch.Generator().manual_seed(3), fast=fast)
    got = torch.cat([p.grad.reshape(-1) for p in sp])
    assert torch.allclose(got, expected, atol=1e-7)
    for k, head in enumerate(heads):  # a head's gradient is its own task's, untouched
        own = torch.autograd.grad(toy_losses(shared, heads)[k], list(head.parameters()))
        for p, g in zip(head.parameters(), own):
            assert torch.allclose(p.grad, g, atol=1e-7)


def test_pc_backward_without_conflicts_is_the_plain_summed_gradient():
    shared, heads = toy_model()
    losses = toy_losses(shared, heads)
    sp = list(shared.parameters())
    # make every task identical: no conflicts, so PCGrad must equal d(sum of losses)
    same = [losses[0], losses[0] * 2, losses[0] * 0.5]
    conflicts = pc_backward(same, sp, generator=torch.Generator().manual_seed(0))
    assert int(conflicts) == 0
    plain = torch.autograd.grad(sum(toy_losses(shared, heads)[:1]) * 3.5, sp)
    for p, g in zip(sp, plain):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_bench_pcgrad_runs_tiny_on_cpu(tmp_path):
    """`python -m minibert bench-pcgrad`'s measurement on a tiny config (structure, untimed):
    both paths run, its gradients conflict, and the two merges agree."""
    from minibert.bench_pcgrad import PATHS, bench, markdown_table

    tiny = dict(vocab_size=50, hidden_size=8, num_hidden_layers=1, intermediate_size=16,
                max_position_embeddings=16, type_vocab_size=2)
    result = bench(torch.device("cpu"), steps=1, warmup=0, tasks=3, config=tiny)
    assert [r["path"] for r in result["rows"]] == list(PATHS)
    assert result["conflicting_pairs"] == 2 and result["relative_difference"] < 1e-6
    assert result["tensors"] == 5 + 16 + 2 and "| fast (pcgrad_weights" in markdown_table(result)
