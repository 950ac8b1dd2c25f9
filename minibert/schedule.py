"""Learning-rate schedules for the training stages.

A schedule is a multiplier on the optimizer's base learning rate, as a function of the
number of optimizer steps taken so far: lr(step) = base_lr * schedule(step). That is the
contract of torch.optim.lr_scheduler.LambdaLR, which `make_scheduler` wraps: it sets
lr = base_lr * schedule(0) at construction and lr = base_lr * schedule(k) after the k-th
`scheduler.step()`, so the k-th optimizer step (counting from 0) runs with schedule(k).

* `constant`: the multiplier is always 1 (the paper's fine-tuning runs, section 5.3).
* `linear_warmup_decay(warmup_steps, total_steps)`: rises linearly from 0 to 1 over the
  first `warmup_steps` steps (large early updates on a pretrained encoder, whose Adam
  second moments are still poor estimates, can wreck it), then falls linearly to 0 at
  `total_steps`. It is the schedule BERT was trained and usually fine-tuned with, and
  equals transformers' get_linear_schedule_with_warmup step for step (checks/test_optim.py).

A lr held in a tensor (for CUDA graphs, see optim.AdamW) works too: LambdaLR then fills
the tensor in place.
"""

from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class Constant:
    """lr multiplier 1 at every step."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class LinearWarmupDecay:
    """lr multiplier: step/warmup_steps during warm-up, then linear decay to 0 at total_steps.

    (A class rather than a closure so LambdaLR's state_dict can save it.)
    """

    warmup_steps: int
    total_steps: int

    def __post_init__(self):
        if not (isinstance(self.warmup_steps, int) and isinstance(self.total_steps, int)):
            raise ValueError(f"warmup_steps and total_steps must be ints, got "
                             f"{self.warmup_steps!r} and {self.total_steps!r}")
        if not 0 <= self.warmup_steps <= self.total_steps or self.total_steps < 1:
            raise ValueError(f"expected 0 <= warmup_steps <= total_steps and total_steps >= 1 (with none, "
                             f"the lr would be 0 throughout), got warmup_steps={self.warmup_steps}, "
                             f"total_steps={self.total_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps  # 0 at step 0, approaching 1
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return max(0.0, (self.total_steps - step) / decay_steps)  # 1 after warm-up, 0 at the end


constant = Constant()


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> LinearWarmupDecay:
    """The linear warm-up then linear decay multiplier (see the module docstring)."""
    return LinearWarmupDecay(warmup_steps, total_steps)


def make_scheduler(optimizer, name: str = "constant", warmup_steps: int = 0, total_steps: int = None):
    """A LambdaLR over `optimizer` for the schedule `name` ("constant" or "linear", which
    needs the run's `total_steps`); call `scheduler.step()` after every `optimizer.step()`."""
    if name == "constant":
        schedule = constant
    elif name == "linear":
        schedule = linear_warmup_decay(warmup_steps, total_steps)  # (None: refused there)
    else:
        raise ValueError(f"unknown schedule {name!r}, expected one of {SCHEDULES}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
