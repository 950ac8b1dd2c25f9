"""An exponential moving average of the weights (beyond the paper: `train --ema DECAY`).

After optimizer step t = 1, 2, ... every trained parameter theta has a shadow copy

    ema <- d_t * ema + (1 - d_t) * theta,      d_t = min(decay, (1 + t) / (10 + t))

and evaluation, best/ and the prediction files use the shadows, while training goes on from
the raw weights. Averaging the last few hundred steps' weights (Polyak & Juditsky 1992; the
schedule of d_t is TensorFlow's ExponentialMovingAverage with num_updates) smooths out the
noise of the last steps; in a round-robin epoch, which ends with hundreds of steps on SST and
STS alone, it may also keep part of what the paraphrase steps before them taught the encoder
(it did after one and two epochs, not after three: results/study.md). Without the warm-up of
d_t, the shadows of randomly initialised heads would still hold decay^t of their start after
t steps (0.999^845 = 0.43 after a whole epoch of the full data).

The shadows are float32 copies on the parameters' device. An update runs in the training
loop after every step, so it is one multi-tensor lerp over all of them (a few kernel launches
on a GPU, not one per parameter); its cost was not measured apart from the step's.
"""

from contextlib import contextmanager

import torch


class EMA:
    def __init__(self, named_params, decay: float):
        """`named_params`: (name, parameter) pairs, e.g. from model.named_parameters(); the
        names key the checkpoint's ema.safetensors, as they key model.safetensors."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        named = dict(named_params)
        self.names, self.params = list(named), list(named.values())
        self.decay = decay
        self.shadows = [p.detach().float().clone() for p in self.params]  # start at the weights

    def decay_at(self, step: int) -> float:
        """d_t after optimizer step `step` (1 for the first): small at first, then `decay`."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move every shadow towards its parameter, after optimizer step `step`."""
        d = self.decay_at(step)
        # every shadow at once: ema + (1 - d) (theta - ema) = d ema + (1 - d) theta
        torch._foreach_lerp_(self.shadows, [p.float() for p in self.params], 1.0 - d)

    @contextmanager
    def applied(self):
        """Inside the block the parameters hold the shadows; after it, exactly what they held."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, ema in zip(self.params, self.shadows):
                p.copy_(ema)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return dict(zip(self.names, self.shadows))

    def load_state_dict(self, tensors: dict) -> None:
        missing, unexpected = set(self.names) - set(tensors), set(tensors) - set(self.names)
        if missing or unexpected:
            raise ValueError(f"the saved moving average does not match the trained parameters: missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]} "
                             f"({len(missing)} and {len(unexpected)} in all)")
        for name, ema in zip(self.names, self.shadows):
            if tensors[name].shape != ema.shape:  # copy_ would broadcast a wrong shape silently
                raise ValueError(f"saved shadow {name}: shape {tuple(tensors[name].shape)}, "
                                 f"expected {tuple(ema.shape)}")
            ema.copy_(tensors[name])
