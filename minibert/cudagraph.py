"""Capture a whole training step as one CUDA graph, and replay it.

A small BERT (MiniLM-L6: 6 layers, 384 wide) at batch 64 x 128 is launch-bound on a big
GPU: each of its ~1,000 kernels per training step (forward, backward, optimizer) finishes
in a few microseconds, about the time the CPU needs to launch the next one, so the GPU
waits on Python. A CUDA graph records the step's kernels once and replays them with one
launch: the CPU cost disappears.

What a captured step requires (https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs):
- static shapes and static memory: every replay reads its inputs from the same tensors, so
  copy each new batch INTO them (`static["input_ids"].copy_(batch)`), never rebind them;
- no host syncs inside the step (`.item()`, `print(loss)`, data-dependent Python control
  flow): the optimizer must keep its step counter on the device (minibert.optim.AdamW with
  foreach=True does; torch.optim.AdamW needs capturable=True);
- a few eager warm-up steps on a side stream first, so lazy state (optimizer moments,
  cuBLAS workspaces, torch.compile's compilation) exists before capture.
Random numbers (dropout) are safe: PyTorch's CUDA generator advances its offset on each
replay, so every replay draws fresh dropout masks.
"""

import torch


def capture_step(step, device, warmup: int = 3):
    """step() -> outputs: one training step on static input tensors (it should begin with
    optimizer.zero_grad(set_to_none=True), so the gradients live in the graph's memory).

    Returns a function that runs the same step as one CUDA graph replay and returns the
    step's outputs (the same tensors each time, overwritten by each replay). On a device
    other than CUDA there are no graphs: it returns `step` itself.

    warmup (at least 1): eager steps first, on a side stream, so that everything a first step
    creates (the optimizer's state, autograd's buffers) exists before the capture; created
    inside it, the replays would create it afresh every time (Adam's moments zeroed at
    every step)."""
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1 (see capture_step's docstring), got {warmup}")
    if torch.device(device).type != "cuda":
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()

    def replay():
        graph.replay()
        return outputs

    replay.graph = graph  # keep it (and its memory pool) alive with the function
    return replay
