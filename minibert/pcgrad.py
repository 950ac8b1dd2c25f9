"""PCGrad: gradient surgery for multitask learning (Yu et al. 2020; paper section 3 and 4.3).

Tasks share the encoder. When two task gradients point in conflicting directions
(g_i . g_j < 0), adding them cancels part of each. PCGrad removes from g_i its component
along a conflicting g_j, projecting g_i onto the normal plane of g_j:

    g_i <- g_i - (g_i . g_j / |g_j|^2) g_j          (the paper's equation in section 3)

Each task's gradient is projected against the others' ORIGINAL gradients, one at a time in
a random order (Yu et al., Algorithm 1), and the update is the sum of the projected
gradients. With two tasks the result never conflicts with the other task. With three or
more, a later projection can bring back some conflict with an earlier task; only the
conflict with the task projected last is guaranteed gone. checks/test_pcgrad.py checks
exactly these properties and compares with a float64 brute-force transcription.

Surgery applies to the shared parameters (the encoder). Each head's parameters get only
their own task's gradient, which no other task touches, so there is nothing to project.
Under torch.distributed each task's gradient is averaged over processes before projection,
so every process projects the same vectors and takes the same step.

Two paths compute the same update, side by side:
- the readable one, `pcgrad_project`: the equation above on flat model-sized vectors, in
  float64. Each step copies every task's gradient several times: for MiniLM's 22.7M
  parameters on a 2-core CPU, a median 1.8 s a step against 0.17 s for the fast path, three
  trivial backward passes included in both; on an H200 both paths take 38 ms
  (`python -m minibert bench-pcgrad`, results/bench-pcgrad.md).
- the fast one, `pcgrad_weights`, which `pc_backward` uses. Every projected g_i' is a
  combination of the ORIGINAL gradients, g_i' = sum_k C[i, k] g_k (it starts as g_i, and each
  projection subtracts a multiple of some g_j). So every dot product the algorithm needs is
  g_i' . g_j = sum_k C[i, k] (g_k . g_j): a row of C times a column of the K x K Gram matrix
  G[k, j] = g_k . g_j. The whole algorithm runs on G and C, and the sum of the projected
  gradients is sum_k w[k] g_k with w = the column sums of C. The model-sized work left is
  K (K + 1) / 2 dot products and one weighted sum, parameter by parameter, without a copy.
checks/test_pcgrad.py proves the two paths equal.
"""

import torch
import torch.distributed as dist

# Below this |g|^2 the fast path's float32 products may fall under float32's normal range
# (about 1e-38) and lose digits, or vanish: |g|^2 could even come out 0 for a gradient that
# is not. A step with such a gradient (or a zero one) takes the float64 path instead. Above
# it, the at most 1.4e-45 lost per product, over up to 1e8 products, is about 1e-7 of
# |g_i| |g_j| at most.
TINY_SQ_NORM = 1e-30


def pcgrad_project(grads, generator=None):
    """grads: list of K flat gradient vectors (P,), one per task. Returns K projected vectors,
    each in its input's dtype (computed in float64: |g_j|^2 of a tiny float32 gradient
    underflows to zero).
    The random orders (the checks hold you to this rule, to compare with a brute force): for
    each task i in turn, 0..K-1, draw p = torch.randperm(K - 1, generator=generator) once;
    with others = [j for j in range(K) if j != i], g_i is projected against others[p[0]],
    then others[p[1]], and so on. `generator` (a torch.Generator on the CPU) thus fixes every
    projection order."""
    # BEGIN SOLUTION
    # In float64: |g_j|^2 of a tiny float32 gradient would underflow to zero. The vectors are
    # as long as the model, so each is converted, and each |g_j|^2 computed, only once.
    grads64 = [g.double() for g in grads]  # K x (P,)
    sq_norms = [torch.dot(g, g).clamp_min(1e-300) for g in grads64]  # K x |g_j|^2
    projected = []
    for i in range(len(grads)):
        g = grads64[i].clone()  # (P,), projected in place: no new model-sized vector per step
        others = [j for j in range(len(grads)) if j != i]
        order = torch.randperm(len(others), generator=generator).tolist()
        for j in (others[k] for k in order):
            # min(g . g_j, 0): subtract the component along g_j only when they conflict.
            # Written without an `if` so no value has to come back to the host.
            coef = torch.dot(g, grads64[j]).clamp(max=0) / sq_norms[j]  # 0-dim
            g.addcmul_(grads64[j], coef, value=-1)  # g <- g - coef * g_j
        projected.append(g.to(grads[i].dtype))
    return projected
    # END SOLUTION


def pcgrad_weights(gram, generator=None):
    """The fast path: Algorithm 1 on the K x K Gram matrix gram[i, j] = g_i . g_j (float64, on
    the CPU). Returns w (K,) with sum_i g_i' = sum_k w[k] g_k. It draws its random orders by
    `pcgrad_project`'s rule (one randperm(K - 1) per task, in task order), so the same
    generator gives the same orders and both return the same update."""
    # BEGIN SOLUTION
    k = len(gram)
    coeffs = torch.eye(k, dtype=gram.dtype)  # (K, K) row i: g_i' = sum_k coeffs[i, k] g_k
    sq_norms = gram.diagonal().clamp_min(1e-300)  # (K,) |g_j|^2
    for i in range(k):
        others = [j for j in range(k) if j != i]
        order = torch.randperm(len(others), generator=generator).tolist()
        for j in (others[m] for m in order):
            dot = coeffs[i] @ gram[:, j]  # g_i' . g_j = sum_k coeffs[i, k] (g_k . g_j)
            coeffs[i, j] -= dot.clamp(max=0) / sq_norms[j]  # g_i' <- g_i' - coef g_j
    return coeffs.sum(0)  # (K,) sum_i g_i' = sum_k (sum_i coeffs[i, k]) g_k
    # END SOLUTION


def flatten(tensors, like):
    """Concatenate gradients into one vector, zeros where a parameter got no gradient."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1)
                      for t, p in zip(tensors, like)])


def set_grads(params, flat):
    """The inverse of `flatten`: write consecutive slices of `flat` into each p.grad."""
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def distributed() -> bool:
    """Whether this process is one of several under torch.distributed."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_mean(vector):
    """Average a tensor over all processes (a no-op without torch.distributed)."""
    if distributed():
        dist.all_reduce(vector)
        vector /= dist.get_world_size()
    return vector


def rows(a, b):
    """Dot products of the rows of two same-shaped tensors (a vector or a scalar is one row)."""
    def as_rows(t):
        return t.reshape(-1, t.shape[-1]) if t.dim() > 1 else t.reshape(1, -1)
    return torch.linalg.vecdot(as_rows(a), as_rows(b))  # (rows,)


def gram_matrix(grads):
    """grads: K lists of per-parameter gradients. Returns the (K, K) float64 Gram matrix on
    the CPU. The dot products are taken row by row (the last dimension) in the gradients'
    dtype and the rows summed in float64: one float32 dot over the 11.7M word embeddings was
    off by 6e-5 of |g|^2, row by row by 1.6e-7 (MiniLM-sized random gradients)."""
    k = len(grads)
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    sums = torch.stack([torch.cat([rows(a, b) for a, b in zip(grads[i], grads[j])]).double().sum()
                        for i, j in pairs]).cpu()  # (K (K + 1) / 2,), one transfer from the device
    gram = torch.zeros(k, k, dtype=torch.float64)
    for (i, j), s in zip(pairs, sums):
        gram[i, j] = gram[j, i] = s
    return gram


def averaged(grads, params):
    """Per-parameter gradients (one task's, or the step's), zeros where a parameter got none,
    averaged over processes under torch.distributed (one all-reduce of one flat vector)."""
    if distributed():
        flat = all_reduce_mean(flatten(grads, params))  # (P,)
        return [f.view_as(p) for f, p in zip(flat.split([p.numel() for p in params]), params)]
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]


def pc_backward(losses, shared_params, head_params=(), generator=None, fast=True):
    """Set .grad of every parameter from K task losses with PCGrad on the shared parameters.

    shared_params: parameters every task uses (the encoder); head_params: the rest, each used
    by one task. The shared parameters' update is the sum of the projected task gradients
    (Yu et al., Algorithm 1); each head's, its own task's gradient.
    fast: the Gram-matrix path (`pcgrad_weights`); False: the readable `pcgrad_project` on
    flat vectors. Returns the number of conflicting pairs among the original task gradients
    (a 0-dim tensor).
    """
    shared_params = [p for p in shared_params if p.requires_grad]
    head_params = [p for p in head_params if p.requires_grad]
    params = shared_params + head_params
    n = len(shared_params)
    task_grads = []  # K x [one gradient per parameter]
    for k, loss in enumerate(losses):
        gs = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
        task_grads.append(averaged(gs, params))
    shared = [gs[:n] for gs in task_grads]  # K x [gradient of each shared parameter]
    gram = gram_matrix(shared)  # (K, K)
    conflicts = (gram.triu(1) < 0).sum()  # pairs i < j with g_i . g_j < 0
    if fast and gram.diagonal().min() >= TINY_SQ_NORM:
        w = pcgrad_weights(gram, generator).tolist()
        for p, *gs in zip(shared_params, *shared):
            merged = gs[0] * w[0]
            for g, wk in zip(gs[1:], w[1:]):
                merged.add_(g, alpha=wk)  # sum_k w[k] g_k
            p.grad = merged
    else:
        flat = [flatten(gs, shared_params) for gs in shared]  # K x (n_shared,)
        merged = torch.stack(pcgrad_project(flat, generator)).sum(0)  # (n_shared,)
        set_grads(shared_params, merged)
    for p, *gs in zip(head_params, *[gs[n:] for gs in task_grads]):
        p.grad = sum(gs)  # each head: its own task's gradient, zeros from the others
    return conflicts
