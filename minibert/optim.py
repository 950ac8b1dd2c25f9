"""AdamW, with the AMSGrad extension, written from scratch.

The paper trains every stage with AdamW (Loshchilov & Hutter, "Decoupled weight decay
regularization", ref. [13]) and extends it with AMSGrad (ref. [14]); see section 5.3.
For one parameter p with gradient g at step t = 1, 2, ...:

    p   <- p * (1 - lr * weight_decay)          decoupled weight decay: it shrinks the
                                                weights directly instead of being added to
                                                the gradient (which Adam would rescale)
    m   <- beta1 * m + (1 - beta1) * g          first moment  (running mean of g)
    v   <- beta2 * v + (1 - beta2) * g * g      second moment (running mean of g^2)
    vmax <- max(vmax, v)                        AMSGrad only: never let the step grow
                                                because v shrank
    m_hat = m / (1 - beta1^t)                   bias corrections: m and v start at zero,
    v_hat = v / (1 - beta2^t)                   so early averages are too small
    p   <- p - lr * m_hat / (sqrt(v_hat) + eps) (with vmax in place of v under AMSGrad)

Two implementations of the same step live side by side:

* the readable one (`adamw_update`, the course reference) loops over parameters and
  updates one tensor at a time, exactly like the formulas above;
* the fast one (`AdamW(..., foreach=True)`) updates every parameter of a group at once
  with torch's multi-tensor `torch._foreach_*` kernels: a handful of kernel launches per
  step instead of a handful per parameter. It never copies a value from the device to
  the host: the step counter lives on the device, and a host-side mirror of it gives the
  bias corrections as plain Python numbers. Inside a CUDA-graph capture, where a replay
  must see the step advance, the bias corrections are computed on the device instead, so
  the whole step can be captured. On a CPU it also works through the tensors in
  cache-sized slices, which makes it faster than torch.optim.AdamW(foreach=True) there.

The readable step performs torch.optim.AdamW's floating-point operations in torch's order,
so it equals torch bit for bit; the eager fused step performs torch's multi-tensor operations
in torch's order, so it equals torch.optim.AdamW(foreach=True) bit for bit; with its scalars
on the device (a CUDA graph) it agrees to rounding, about 1e-7 relative.
checks/test_optim.py proves both against torch and a float64 NumPy transcription of the
formulas above. Every tensor in the update has the shape of its parameter. The state of a
parameter is torch's: `step` (a float32 scalar tensor on the parameter's device),
`exp_avg` (m), `exp_avg_sq` (v) and, with amsgrad, `max_exp_avg_sq` (vmax); state dicts
load into torch.optim.AdamW and back.
"""

from collections import defaultdict

import torch


def check_hyperparameters(lr, betas, eps, weight_decay) -> None:
    """Raise ValueError, naming the culprit, on hyperparameters AdamW cannot use."""
    # `not x >= 0` (rather than `x < 0`) also rejects NaN.
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"a tensor lr must hold one value, got shape {tuple(lr.shape)}")
    if not float(lr) >= 0.0:
        raise ValueError(f"lr must be >= 0, got {float(lr)}")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for name, beta in zip(("beta1", "beta2"), betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")


def adamw_update(param, grad, state, *, lr, beta1, beta2, eps, weight_decay, amsgrad) -> None:
    """One AdamW step for one parameter, in place: the formulas of the module docstring,
    in torch.optim.AdamW's exact order of floating-point operations, so that the result
    equals torch's bit for bit (checks/test_optim.py compares them with torch.equal; the
    textbook order is off by ~1e-7 after a few steps). That order, with t the new step:
      1. state["step"] += 1 (this function advances the counter, a float32 0-d tensor)
      2. weight decay:  p *= 1 - lr * weight_decay                  (only if weight_decay != 0)
      3. m: m.lerp_(g, 1 - beta1), i.e. m + (1 - beta1) (g - m)
      4. v: v *= beta2, then v += (1 - beta2) g g                   (Tensor.addcmul_)
      5. AMSGrad: vmax = max(vmax, v) in place, and vmax stands for v below
      6. denom = sqrt(v) / sqrt(1 - beta2^t) + eps                  (Python-float corrections)
      7. p += -(lr / (1 - beta1^t)) * m / denom                     (Tensor.addcdiv_)"""
    # BEGIN SOLUTION
    state["step"] += 1
    t = state["step"].item()  # a host sync per parameter: fine for the readable version

    # Decoupled weight decay (Loshchilov & Hutter, Algorithm 2, line 12; scaled by lr, as torch does).
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)

    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)  # m = beta1*m + (1-beta1)*g, as m + (1-beta1)*(g - m)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = beta2*v + (1-beta2)*g^2

    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    step_size = lr / bias_correction1

    if amsgrad:
        # AMSGrad normalises by the largest second moment seen so far.
        torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        second_moment = state["max_exp_avg_sq"]
    else:
        second_moment = exp_avg_sq

    # sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - beta2^t) + eps
    denom = (second_moment.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)  # p -= lr * m_hat / (sqrt(v_hat) + eps)
    # END SOLUTION


class AdamW(torch.optim.Optimizer):
    """AdamW with optional AMSGrad, a drop-in for torch.optim.AdamW.

    Args:
        params: parameters or parameter groups (dicts that may override any option below).
        lr: learning rate, a float, or a one-element tensor on the parameters' device (update
            it in place, e.g. from a schedule, to change it inside a captured CUDA graph).
        betas: (beta1, beta2), the decay rates of the first and second moments, in [0, 1).
        eps: added to sqrt(v_hat) so the step stays finite when v is tiny.
        weight_decay: decoupled weight decay: each step multiplies p by (1 - lr*weight_decay).
        amsgrad: normalise by the running maximum of the second moment (AMSGrad).
        foreach: False runs the readable per-parameter step (`adamw_update`); True runs the
            fused multi-tensor step (`torch._foreach_*`, no host syncs, CUDA-graph safe).
            Both give the same results up to float rounding.

    Parameters whose .grad is None are skipped (their step counter does not advance).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, foreach=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, foreach=foreach)
        super().__init__(params, defaults)
        # The fused step groups parameters that have taken the same number of steps, so it
        # can share their bias corrections (see `_foreach_step`). It reads those counts from
        # this host-side mirror of state["step"] rather than from the device tensors, which
        # would cost a sync.
        self._host_steps = {}
        self._host_steps_stale = False  # set by a CUDA-graph capture, see `_foreach_step`

    def add_param_group(self, param_group: dict) -> None:
        # Check before torch fills in the defaults and appends the group.
        merged = {**self.defaults, **param_group}
        check_hyperparameters(merged["lr"], merged["betas"], merged["eps"], merged["weight_decay"])
        lr = merged["lr"]
        if isinstance(lr, torch.Tensor):
            params = param_group["params"]
            params = param_group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
            elsewhere = {str(p.device) for p in params if p.device != lr.device}
            if elsewhere:  # each step would copy it over (and a CUDA graph would keep its first value)
                raise ValueError(f"a tensor lr must be on its parameters' device: lr is on {lr.device}, "
                                 f"parameters on {', '.join(sorted(elsewhere))}")
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            # torch keeps `step` on the CPU unless asked otherwise; we keep it next to its
            # parameter (as torch does with capturable=True) so the fused step never syncs.
            if "step" in state:
                state["step"] = state["step"].to(dtype=torch.float32, device=p.device)

    def __setstate__(self, state: dict) -> None:  # unpickling, and the end of load_state_dict
        super().__setstate__(state)
        self._rebuild_host_steps()  # one sync, here, outside any CUDA graph

    def _rebuild_host_steps(self) -> None:
        self._host_steps = {p: int(s["step"].item()) for p, s in self.state.items() if "step" in s}
        self._host_steps_stale = False

    def _init_state(self, p: torch.Tensor, amsgrad: bool) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimisation step; `closure` (optional) re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError("AdamW does not support sparse gradients; "
                                     "use torch.optim.SparseAdam for sparse embeddings")
                if torch.is_complex(p):
                    raise ValueError(f"AdamW here supports real parameters only, got {p.dtype}")
                self._init_state(p, group["amsgrad"])
            if not params:
                continue
            if group["foreach"]:
                self._foreach_step(group, params)
            else:
                beta1, beta2 = group["betas"]
                lr = float(group["lr"])  # torch does the same with a tensor lr
                for p in params:
                    adamw_update(p, p.grad, self.state[p], lr=lr, beta1=beta1, beta2=beta2,
                                 eps=group["eps"], weight_decay=group["weight_decay"],
                                 amsgrad=group["amsgrad"])
            for p in params:
                self._host_steps[p] = self._host_steps.get(p, 0) + 1
        return loss

    # ----------------------------------------------------------------------------------
    # The fused multi-tensor step.

    def _foreach_step(self, group: dict, params: list) -> None:
        """`adamw_update` for a whole group at once, with no host syncs.

        The element-wise work runs as torch._foreach_* kernels over lists of tensors. The
        per-parameter scalars (bias corrections, step size) depend on the parameter's step
        count t; to apply them with the fast single-scalar kernels we bucket parameters
        that share t (normally all of them: a parameter only falls behind when its grad was
        None) and compute the scalars once per bucket: as Python floats from the host
        mirror of t, or, inside a CUDA-graph capture, as 0-d tensors from the device
        counters.
        """
        capturing = _is_capturing(params[0].device)
        if self._host_steps_stale and not capturing:
            self._rebuild_host_steps()

        buckets = defaultdict(list)  # (device, dtype, steps taken) -> params
        for p in params:
            buckets[p.device, p.dtype, self._host_steps.get(p, 0)].append(p)

        # Inside a capture the scalars must come from the device step counters (a replay
        # advances them); so must they with a tensor lr (it may change between replays).
        on_device = capturing or self.scalars_on_device or isinstance(group["lr"], torch.Tensor)
        for (_, _, taken), bucket in buckets.items():
            self._foreach_bucket(group, bucket, None if on_device else taken + 1)

        if capturing:
            # Replays advance the device counters but not this mirror. The buckets it
            # defines stay right (a graph steps the same parameters every replay), but the
            # counts go stale: rebuild them (one sync) before the next eager step.
            self._host_steps_stale = True

    def _foreach_bucket(self, group: dict, params: list, t=None) -> None:
        """One step for parameters that share device, dtype and step count: t, the step
        they are taking, if it is known on the host; None to read it on the device."""
        lr, (beta1, beta2) = group["lr"], group["betas"]
        states = [self.state[p] for p in params]
        torch._foreach_add_([s["step"] for s in states], 1)

        # The scalars, once for the bucket. decay does not depend on the step.
        decay = 1 - lr * group["weight_decay"]
        if t is not None:
            # Python floats, as torch.optim.AdamW computes them: the kernels take them as
            # arguments, so they cost no kernel launches of their own.
            bias_correction2_sqrt = (1 - beta2**t) ** 0.5
            neg_step_size = (lr / (1 - beta1**t)) * -1
        else:
            # 0-d tensors on the device, computed in float64 (as the floats above) and
            # rounded once to the precision the kernels use. Only _foreach_mul_/_foreach_div_
            # take them: their tensor-scalar kernels read them on the device, with no host
            # sync, so a CUDA graph can capture them.
            t = states[0]["step"].to(torch.float64)  # all params in the bucket share t
            scalar_dtype = torch.float64 if params[0].dtype == torch.float64 else torch.float32
            bias_correction2_sqrt = (1 - beta2**t).sqrt().to(scalar_dtype)
            neg_step_size = (-lr / (1 - beta1**t)).to(scalar_dtype)
            if isinstance(decay, torch.Tensor):  # a tensor lr: keep the kernels' scalars on their device
                decay = decay.to(params[0].device)
        scalars = dict(decay=decay, beta1=beta1, beta2=beta2, eps=group["eps"],
                       bias_correction2_sqrt=bias_correction2_sqrt, neg_step_size=neg_step_size)

        tensor_lists = [params, [p.grad for p in params], [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states]]
        if group["amsgrad"]:
            tensor_lists.append([s["max_exp_avg_sq"] for s in states])
        # On a GPU one launch per op covers the whole bucket. On a CPU, each op over the
        # whole bucket would stream every tensor through main memory, eight or nine times a
        # step; running all the ops on one cache-sized slice at a time instead is two to
        # three times faster (python -m minibert bench-optim).
        if params[0].device.type == "cpu":
            blocks = cache_blocks(tensor_lists, self.cpu_block_elements)
        else:
            blocks = [tensor_lists]
        for block in blocks:
            foreach_update(*block, **scalars, weight_decay=group["weight_decay"])

    # The CPU fused step works on slices of about this many elements (1 MiB of float32 per
    # tensor kind; a few MiB in all, which stays in cache between the ops).
    cpu_block_elements = 1 << 18
    # True computes the bias corrections on the device even outside a CUDA-graph capture
    # (the checks set it, so the capture's arithmetic is also proven on a CPU).
    scalars_on_device = False


def foreach_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, decay, beta1,
                   beta2, eps, bias_correction2_sqrt, neg_step_size, weight_decay) -> None:
    """The element-wise part of `adamw_update` for lists of tensors, steps 2-7 in the same
    order, as torch._foreach_* calls over the lists, with the step-dependent scalars precomputed:
    decay = 1 - lr * weight_decay, bias_correction2_sqrt = sqrt(1 - beta2^t) and
    neg_step_size = -lr / (1 - beta1^t), Python floats or 0-d tensors. The caller has already
    advanced the step counters. torch._foreach_addcdiv_'s `value` must be a Python number:
    a tensor neg_step_size multiplies the m's first (torch._foreach_mul), then addcdiv_ adds
    those products divided by the denominators with no `value`."""
    # BEGIN SOLUTION: adamw_update's formulas, each as one torch._foreach_* call over the lists
    if weight_decay != 0:
        torch._foreach_mul_(params, decay)  # decoupled weight decay
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v ...
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)  # ... + (1-beta2) g^2
    if max_exp_avg_sqs is not None:  # AMSGrad
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denoms = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrt)
    torch._foreach_add_(denoms, eps)  # sqrt(v_hat) + eps
    if isinstance(neg_step_size, torch.Tensor):
        # addcdiv's `value` must be a Python number, so a tensor step size goes on the
        # numerator in a pass of its own (on the denominator, lr = 0 would divide by zero)
        steps = torch._foreach_mul(exp_avgs, neg_step_size)
        torch._foreach_addcdiv_(params, steps, denoms)  # p -= step_size * m / (sqrt(v_hat) + eps)
    else:
        torch._foreach_addcdiv_(params, exp_avgs, denoms, value=neg_step_size)
    # END SOLUTION


def cache_blocks(tensor_lists: list, block_elements: int) -> list:
    """Cut parallel lists of same-shaped tensors (params, grads, exp_avgs, ...) into blocks
    of about `block_elements` elements: each block is again parallel lists, of flat views
    (slices) of the original tensors, so in-place updates land in the originals."""
    blocks, current, size = [], [[] for _ in tensor_lists], 0
    for tensors in zip(*tensor_lists):  # one parameter: its p, grad, exp_avg, ...
        if all(t.is_contiguous() for t in tensors):
            pieces = zip(*(t.view(-1).split(block_elements) for t in tensors))
        else:
            pieces = [tensors]  # slicing would need a copy: keep it whole
        for piece in pieces:
            for kind, t in zip(current, piece):
                kind.append(t)
            size += piece[0].numel()
            if size >= block_elements:
                blocks.append(current)
                current, size = [[] for _ in tensor_lists], 0
    if current[0]:
        blocks.append(current)
    return blocks


def _is_capturing(device: torch.device) -> bool:
    """True while a CUDA graph is being captured on the current stream."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()
