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
"""

import torch
import torch.distributed as dist


def pcgrad_project(grads, generator=None):
    """grads: list of K flat gradient vectors (P,), one per task. Returns K projected vectors.
    `generator` (a torch.Generator on the CPU) fixes the random projection orders."""
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


def all_reduce_mean(vector):
    """Average a tensor over all processes (a no-op without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(vector)
        vector /= dist.get_world_size()
    return vector


def pc_backward(losses, shared_params, head_params=(), generator=None, reduction="sum"):
    """Set .grad of every parameter from K task losses with PCGrad on the shared parameters.

    shared_params: parameters every task uses (the encoder); head_params: the rest, each used
    by one task. reduction: "sum" of projected gradients (Yu et al.) or their "mean".
    Returns the number of conflicting pairs among the original task gradients (a 0-dim
    tensor, left on the device so the step needs no host sync).
    """
    shared_params = [p for p in shared_params if p.requires_grad]
    head_params = [p for p in head_params if p.requires_grad]
    params = shared_params + head_params
    n_shared = sum(p.numel() for p in shared_params)
    task_grads = []
    for k, loss in enumerate(losses):
        gs = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
        task_grads.append(all_reduce_mean(flatten(gs, params)))  # (P,)
    shared = [g[:n_shared] for g in task_grads]
    conflicts = sum((torch.dot(shared[i], shared[j]) < 0).int()
                    for i in range(len(shared)) for j in range(i + 1, len(shared)))
    merged = torch.stack(pcgrad_project(shared, generator)).sum(0)  # (n_shared,)
    if reduction == "mean":
        merged /= len(losses)
    elif reduction != "sum":
        raise ValueError(f"reduction {reduction!r}: expected 'sum' or 'mean'")
    heads = torch.stack([g[n_shared:] for g in task_grads]).sum(0)  # each head: its own task only
    set_grads(params, torch.cat([merged, heads]))  # (P,)
    return conflicts
