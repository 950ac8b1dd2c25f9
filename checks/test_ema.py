"""The moving average of the weights (minibert/ema.py) against its recurrence in float64 NumPy."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from minibert.ema import EMA


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.sampled_from([0.0, 0.5, 0.9, 0.999]), st.integers(0, 2**16),
       st.one_of(st.just(1), st.integers(1, 20_000)))
# the warm-up (1 + t) / (10 + t) reaches 0.9 at step 80 and 0.999 at step 8,990: updates that
# start there or later (a resumed run's) use the configured decay itself; these always run
@example(steps=5, decay=0.9, seed=0, start=78)  # the decay binds from step 80 on
@example(steps=5, decay=0.999, seed=0, start=9_000)
def test_shadows_follow_the_recurrence(steps, decay, seed, start):
    """`steps` updates after optimizer steps start, start + 1, ..."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    ema = EMA(zip("ab", params), decay)
    expected = [p.detach().double().numpy().copy() for p in params]  # the shadows start at the weights
    for t in range(start, start + steps):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=g))  # what an optimizer step would do
        ema.update(t)
        d = min(decay, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * p.detach().double().numpy() for e, p in zip(expected, params)]
    for shadow, e in zip(ema.shadows, expected):
        np.testing.assert_allclose(shadow.double().numpy(), e, rtol=1e-5, atol=1e-5)


def test_the_decay_warms_up_to_its_value():
    ema = EMA({"w": torch.nn.Parameter(torch.zeros(1))}, 0.999)
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(10**6) == 0.999


def test_applied_swaps_the_shadows_in_and_the_weights_back_bitwise():
    p = torch.nn.Parameter(torch.randn(4, 4))
    raw = p.detach().clone()
    ema = EMA({"w": p}, 0.9)
    ema.shadows[0].fill_(7.0)
    with pytest.raises(RuntimeError, match="inside"):
        with ema.applied():
            assert torch.equal(p, torch.full((4, 4), 7.0))
            raise RuntimeError("inside")  # an error in the block still restores the weights
    assert torch.equal(p, raw) and p.requires_grad


def test_state_round_trip_and_bad_input():
    params = {"w": torch.nn.Parameter(torch.randn(2)), "b": torch.nn.Parameter(torch.randn(3))}
    a, b = EMA(params.items(), 0.9), EMA(params.items(), 0.9)
    a.update(1)
    a.shadows[1].add_(1.0)
    assert list(a.state_dict()) == ["w", "b"]  # keyed by name, as model.safetensors is
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.shadows, b.shadows))
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        b.load_state_dict({"w": torch.zeros(2), "c": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"shadow b: shape \(1,\), expected \(3,\)"):
        b.load_state_dict({"w": torch.zeros(2), "b": torch.zeros(1)})  # copy_ would broadcast it
    with pytest.raises(ValueError, match="decay"):
        EMA(params.items(), 1.0)
