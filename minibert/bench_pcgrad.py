"""bench-pcgrad: one PCGrad step's gradient merge on the MiniLM-sized parameter set, the
readable path (pcgrad_project) next to the fast one (pcgrad_weights on the Gram matrix).

    python -m minibert bench-pcgrad [--device cpu|cuda] [--steps N] [--tasks K] [--json PATH]

The parameters have the shapes of all-MiniLM-L6-v2's encoder (22.7M in 103 tensors, as
bench-optim). Task k's loss is sum(p * g_k) over the parameters, with g_k random, so its
gradient is exactly g_k and its backward pass costs one multiply per parameter. A timed step
is one `pc_backward` call: K backward passes, the merge, the writes to .grad; both paths pay
the same backward passes. The paths are timed in turn, step by step, so a load change on a
shared machine hits both alike; the table reports the median and the fastest step, and how
far the fast path's merged gradient is from the readable one's (|fast - ref| / |ref|).
"""

import time

import torch
from tqdm import tqdm

from minibert.bench_optim import bert_parameter_shapes, parser, report, shapes_config, summary, sync
from minibert.pcgrad import pc_backward

PATHS = {"readable (pcgrad_project, flat float64 vectors)": False,
         "fast (pcgrad_weights, Gram matrix)": True}


def bench(device: torch.device, steps: int, warmup: int, tasks: int, config: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    shapes = list(bert_parameter_shapes(config).values())
    params = [torch.zeros(s, device=device, requires_grad=True) for s in shapes]
    # g_0 = r_0 and g_k = r_k - r_0 / 2: every g_k (k > 0) conflicts with g_0, as a merge must
    # handle (independent random vectors are all but orthogonal: next to nothing to project)
    r = [[torch.randn(s, generator=gen) * 1e-3 for s in shapes] for _ in range(tasks)]
    grads = [[(rk - (r0 / 2 if k else 0)).to(device) for rk, r0 in zip(r[k], r[0])] for k in range(tasks)]

    def step(fast, seed):
        losses = [sum((p * g).sum() for p, g in zip(params, gs)) for gs in grads]  # not timed
        sync(device)
        start = time.perf_counter()
        conflicts = pc_backward(losses, params, generator=torch.Generator().manual_seed(seed), fast=fast)
        sync(device)
        return time.perf_counter() - start, int(conflicts)

    times = {name: [] for name in PATHS}
    for i in tqdm(range(warmup + steps), desc=f"PCGrad merges ({device.type})", unit="round"):
        for name, fast in PATHS.items():  # in turn, see the module docstring
            t, conflicts = step(fast, i)
            if i >= warmup:
                times[name].append(t)
    merged = {}
    for name, fast in PATHS.items():  # the same step (same projection orders) on both paths
        step(fast, 0)
        merged[name] = torch.cat([p.grad.reshape(-1) for p in params]).double()
    ref, fast = merged.values()
    return {**summary(device, params, steps, warmup, times, "path"), "tasks": tasks,
            "conflicting_pairs": conflicts, "relative_difference": float((fast - ref).norm() / ref.norm())}


def markdown_table(result: dict) -> str:
    lines = [f"PCGrad step (pc_backward: {result['tasks']} backward passes and the merge), "
             f"{result['parameters'] / 1e6:.1f}M parameters in {result['tensors']} tensors, "
             f"{result['device']}, torch {result['torch']}, {result['steps']} timed steps each, in turn",
             "",
             "| path | median ms/step | min ms/step |",
             "|---|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['path']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} |")
    lines.append(f"\n{result['conflicting_pairs']} conflicting pairs of task gradients a step; "
                 f"|fast - readable| / |readable| on one step: {result['relative_difference']:.1e}")
    return "\n".join(lines)


def main(argv) -> int:
    p = parser("python -m minibert bench-pcgrad", __doc__, steps=10, warmup=2, what="path")
    p.add_argument("--tasks", type=int, default=3, help="task gradients per step (the paper's 3)")
    args = p.parse_args(argv)
    config = shapes_config(p, args)
    if args.tasks < 2:
        p.error("--tasks must be >= 2")
    result = bench(torch.device(args.device), args.steps, args.warmup, args.tasks, config)
    return report(result, markdown_table(result), args.json)
