"""The metrics (minibert/evaluate.py) against NumPy's: Pearson's r against np.corrcoef, as the
CS224N starter code computes it; accuracy against a count; the overall score against the
unweighted mean of the three tasks' metrics, computed in NumPy."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minibert.evaluate import accuracy, metrics_from_outputs, pearson_r, score

finite = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 60).flatmap(lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n),
                                                      st.lists(finite, min_size=n, max_size=n))))
def test_pearson_r_equals_numpy_corrcoef(xy):
    x, y = np.array(xy[0]), np.array(xy[1])
    if x.std() < 1e-6 or y.std() < 1e-6:  # (near) constant: corrcoef may be nan, ours stays finite
        assert np.isfinite(pearson_r(x, y))
        return
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)


def test_constant_scores_have_no_correlation():
    assert pearson_r([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=50))
def test_accuracy_counts_matches(pairs):
    pred, gold = zip(*pairs)
    assert accuracy(pred, gold) == sum(p == g for p, g in pairs) / len(pairs)


def test_score_reads_each_task_s_outputs():
    sst = torch.tensor([[0.1, 0.7, 0.1, 0.05, 0.05], [0.5, 0.1, 0.1, 0.2, 0.1]])  # argmax 1, 0
    assert score("sst", sst, torch.tensor([1, 1])) == 0.5
    assert score("para", torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(2 / 3)
    sts, gold = torch.tensor([0.5, 2.0, 4.5]), torch.tensor([1.0, 2.5, 4.0])
    assert score("sts", sts, gold) == pytest.approx(np.corrcoef(sts.numpy(), gold.numpy())[0, 1], abs=1e-6)
    # scores outside the labels' scale 0..5 (5 cos reaches -5) are clipped to it first
    outside, gold = torch.tensor([-2.0, -0.5, 1.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 1.5, 3.0, 4.5])
    clipped = np.array([0.0, 0.0, 1.0, 3.0, 4.0])
    assert score("sts", outside, gold) == pytest.approx(np.corrcoef(clipped, gold.numpy())[0, 1], abs=1e-6)
    assert score("sts", outside + 2.0, gold) == pytest.approx(np.corrcoef([0.0, 1.5, 3.0, 5.0, 5.0], gold.numpy())[0, 1], abs=1e-6)


def test_overall_is_the_unweighted_mean_of_the_tasks():
    """Section 5.2: overall = (SST accuracy + paraphrase accuracy + STS r) / 3, each metric
    computed here in NumPy from the same outputs; a split without labels has no metric."""
    g = torch.Generator().manual_seed(0)
    n = 40
    outputs = {"sst": torch.rand(n, 5, generator=g).softmax(-1), "para": torch.rand(n, generator=g),
               "sts": 6 * torch.rand(n, generator=g) - 0.5}
    labels = {"sst": torch.randint(0, 5, (n,), generator=g), "para": torch.randint(0, 2, (n,), generator=g).float(),
              "sts": 5 * torch.rand(n, generator=g)}
    sets = {t: SimpleNamespace(labelled=True, labels=y) for t, y in labels.items()}
    sst = np.mean(outputs["sst"].numpy().argmax(-1) == labels["sst"].numpy())
    para = np.mean((outputs["para"].numpy() > 0.5) == labels["para"].numpy().astype(bool))
    sts = np.corrcoef(np.clip(outputs["sts"].numpy(), 0, 5), labels["sts"].numpy())[0, 1]
    m = metrics_from_outputs(outputs, sets)
    assert m["sst_acc"] == pytest.approx(sst) and m["para_acc"] == pytest.approx(para)
    assert m["sts_r"] == pytest.approx(sts, abs=1e-6)
    assert m["overall"] == pytest.approx(np.mean([sst, para, sts]), abs=1e-6)
    assert len({round(sst, 6), round(para, 6), round(float(sts), 6)}) == 3  # a weighting would show
    # an unlabelled split (test) has no metric, and the overall is the mean of the others
    sets["sts"] = SimpleNamespace(labelled=False, labels=None)
    m = metrics_from_outputs(outputs, sets)
    assert "sts_r" not in m and m["overall"] == pytest.approx(np.mean([sst, para]))
