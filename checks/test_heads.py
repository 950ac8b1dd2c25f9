"""The task heads (minibert/heads.py, paper section 4.2), against torch's own functions."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minibert.batching import join_pair, pad_batch
from minibert.config import BertConfig
from minibert.heads import (MultitaskBERT, cosent_loss, mean_pool, rdrop_loss, rdrop_mse_loss, smoothed_targets,
                            twice)
from minibert.model import BertModel
from minibert.checkpoint import WeightsError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    return MultitaskBERT(BertModel(config), dropout=0.1).eval()


def random_batch(B, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(5, 50, (B, T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    return ids * mask, mask


def random_pair(seed):
    """Four pairs of random sentences of mixed lengths: (ids1, mask1, ids2, mask2)."""
    return (*random_batch(4, [4, 7, 2, 5], seed), *random_batch(4, [6, 3, 5, 1], seed + 1))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.integers(0, 2**16))
def test_mean_pool_ignores_padding(lengths, seed):
    h = torch.randn(len(lengths), max(lengths) + 2, 8, generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(h.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
    expected = torch.stack([h[i, :n].mean(0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(h, mask), expected)


@pytest.fixture(scope="module")
def cross(model):
    """The same encoder with cross-encoder paraphrase and STS heads."""
    torch.manual_seed(1)
    return MultitaskBERT(model.bert, dropout=0.1, para_input="cross", sts_input="cross").eval()


@pytest.mark.parametrize("pair_input", ["siamese", "cross"])
def test_pair_predictions_do_not_depend_on_padding_or_batching(model, cross, pair_input):
    model = {"siamese": model, "cross": cross}[pair_input]
    ids1, m1 = random_batch(3, [4, 7, 2], 0)
    ids2, m2 = random_batch(3, [6, 3, 5], 1)
    with torch.no_grad():
        batched = model.predict_paraphrase(ids1, m1, ids2, m2), model.predict_similarity(ids1, m1, ids2, m2)
        for i in range(3):  # each pair alone, without any padding
            a = ids1[i:i + 1, :m1[i].sum()], m1[i:i + 1, :m1[i].sum()]
            b = ids2[i:i + 1, :m2[i].sum()], m2[i:i + 1, :m2[i].sum()]
            torch.testing.assert_close(model.predict_paraphrase(*a, *b)[0], batched[0][i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.predict_similarity(*a, *b)[0], batched[1][i], atol=1e-5, rtol=1e-5)


def test_similarity_is_five_times_torch_cosine(model):
    ids1, m1, ids2, m2 = random_pair(2)
    with torch.no_grad():
        got = model.predict_similarity(ids1, m1, ids2, m2)
        h1, h2 = model.bert(ids1, m1)["last_hidden_state"], model.bert(ids2, m2)["last_hidden_state"]
        expected = 5 * F.cosine_similarity(mean_pool(h1, m1), mean_pool(h2, m2), dim=-1)
    torch.testing.assert_close(got, expected)
    assert got.abs().max() <= 5


def test_cross_heads_read_each_pair_as_one_sequence(cross):
    """[CLS] s1 [SEP] s2 [SEP], token type 1 on s2 [SEP], mean-pooled, one linear layer (STS:
    5 sigmoid of it): computed here pair by pair without padding, against the batched heads."""
    ids1, m1 = random_batch(3, [4, 7, 2], 9)
    ids2, m2 = random_batch(3, [6, 3, 5], 10)
    with torch.no_grad():
        got = cross.predict_paraphrase(ids1, m1, ids2, m2)
        got_sts = cross.predict_similarity(ids1, m1, ids2, m2)
        for i in range(3):
            a, b = ids1[i, :m1[i].sum()], ids2[i, 1:m2[i].sum()]  # s2 loses its [CLS]
            ids = torch.cat([a, b])[None]  # (1, T)
            types = torch.cat([torch.zeros_like(a), torch.ones_like(b)])[None]
            h = cross.bert(ids, torch.ones_like(ids), types)["last_hidden_state"]  # (1, T, C)
            torch.testing.assert_close(got[i], cross.para_joint(h.mean(1))[0, 0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_sts[i], 5 * torch.sigmoid(cross.sts_joint(h.mean(1))[0, 0]),
                                       atol=1e-5, rtol=1e-5)
        # the training losses, on the joined batch: eq. 5 of these logits, MSE of these scores
        y = torch.tensor([1.0, 0.0, 1.0])
        joined = dict(zip(("input_ids", "attention_mask", "token_type_ids"), cross.join_pair(ids1, m1, ids2, m2)))
        torch.testing.assert_close(cross.loss("para", {**joined, "labels": y}),
                                   F.binary_cross_entropy_with_logits(got, y))
        torch.testing.assert_close(cross.loss("sts", {**joined, "labels": 4 * y}), F.mse_loss(got_sts, 4 * y))
    assert cross.joint_input("para") and cross.joint_input("sts") and not cross.joint_input("sst")
    assert {id(p) for p in cross.head_parameters("para")} == {id(p) for p in cross.para_joint.parameters()}
    assert {id(p) for p in cross.head_parameters("sts")} == {id(p) for p in cross.sts_joint.parameters()}
    para_only = MultitaskBERT(cross.bert, para_input="cross")
    assert para_only.joint_input("para") and not para_only.joint_input("sts") and not para_only.head_parameters("sts")
    for name in ("para_input", "sts_input"):
        with pytest.raises(ValueError, match=name):
            MultitaskBERT(cross.bert, **{name: "crossed"})


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 8), st.integers(2, 8)), min_size=1, max_size=5), st.integers(0, 2**16))
def test_join_pair_on_tensors_equals_data_pipeline(lengths, seed):
    """MultitaskBERT.join_pair (on padded tensors) lays pairs out exactly as data.py's
    joined batches do (batching.join_pair on id lists, then pad_batch)."""
    ids1, m1 = random_batch(len(lengths), [a for a, _ in lengths], seed)
    ids2, m2 = random_batch(len(lengths), [b for _, b in lengths], seed + 1)
    got = MultitaskBERT.join_pair(ids1, m1, ids2, m2)
    rows = [join_pair(a[:n].tolist(), b[:k].tolist()) for a, n, b, k in zip(ids1, m1.sum(1), ids2, m2.sum(1))]
    expected = pad_batch([ids for ids, _ in rows], [types for _, types in rows])
    for name, tensor in zip(("input_ids", "attention_mask", "token_type_ids"), got):
        assert torch.equal(tensor, expected[name]), name


def test_sentiment_uses_alpha_weighted_cls_and_mean(model):
    """Eq. 1 and 2, with alphas that differ, so that swapping or ignoring them shows."""
    torch.manual_seed(2)
    weighted = MultitaskBERT(model.bert, alpha1=0.2, alpha2=0.8).eval()
    ids, mask = random_batch(3, [5, 2, 4], 4)
    with torch.no_grad():
        h = model.bert(ids, mask)["last_hidden_state"]
        s = 0.2 * h[:, 0] + 0.8 * mean_pool(h, mask)  # eq. 1
        expected = weighted.sst_out(weighted.sst_norm(F.relu(weighted.sst_hidden(s))))  # eq. 2, eval: no dropout
        got = weighted.predict_sentiment(ids, mask)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, expected)


def test_paraphrase_head_is_eq_4(model):
    """Eq. 4: s' = ReLU(W s + b) for each mean-pooled sentence (one W for both), then
    sigmoid(W_PD [s1', s2', (s1' - s2')^2, |s1' - s2'|] + b_PD), written out by hand up to the
    logit inside the sigmoid (what predict_paraphrase returns)."""
    ids1, m1, ids2, m2 = random_pair(7)
    with torch.no_grad():
        W, b = model.para_proj.weight, model.para_proj.bias
        s1 = F.relu(mean_pool(model.bert(ids1, m1)["last_hidden_state"], m1) @ W.T + b)  # (B, C)
        s2 = F.relu(mean_pool(model.bert(ids2, m2)["last_hidden_state"], m2) @ W.T + b)
        features = torch.cat([s1, s2, (s1 - s2) ** 2, (s1 - s2).abs()], dim=-1)  # (B, 4C)
        expected = features @ model.para_out.weight[0] + model.para_out.bias[0]  # (B,) logits
        got = model.predict_paraphrase(ids1, m1, ids2, m2)
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected)


def test_losses_are_the_papers(model):
    ids1, m1, ids2, m2 = random_pair(5)
    stacked = MultitaskBERT.stack_pair(ids1, m1, ids2, m2)
    batch = {"input_ids": stacked[0], "attention_mask": stacked[1]}
    with torch.no_grad():
        y = torch.tensor([1.0, 0.0, 1.0, 0.0])
        p = model.predict_paraphrase(ids1, m1, ids2, m2).sigmoid()
        eq5 = -(y * p.log() + (1 - y) * (1 - p).log()).mean()  # eq. 5 (with its minus sign)
        torch.testing.assert_close(model.loss("para", {**batch, "labels": y}), eq5)
        s = torch.tensor([0.0, 2.5, 5.0, 1.0])
        eq3 = ((model.predict_similarity(ids1, m1, ids2, m2) - s) ** 2).mean()
        torch.testing.assert_close(model.loss("sts", {**batch, "labels": s}), eq3)
        c = torch.tensor([0, 4, 2, 1])
        sb = {"input_ids": ids1, "attention_mask": m1, "labels": c}
        torch.testing.assert_close(model.loss("sst", sb), F.nll_loss(model.predict_sentiment(ids1, m1).log_softmax(-1), c))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.sampled_from([0.0, 0.4, 2.5, 5.0])), min_size=1, max_size=12))
def test_cosent_loss_is_its_definition(rows):
    """log(1 + sum over label[i] > label[j] of exp(20 (cos[j] - cos[i]))), summed pair by pair
    in float64 Python (ties in the labels are drawn often: they must add nothing)."""
    cos, labels = (torch.tensor(c, dtype=torch.float32) for c in zip(*rows))
    terms = [math.exp(20 * (float(cj) - float(ci))) for ci, yi in zip(cos, labels)
             for cj, yj in zip(cos, labels) if yi > yj]
    torch.testing.assert_close(cosent_loss(cos, labels), torch.tensor(math.log1p(sum(terms))))


def test_cosent_sts_loss_ranks_the_scaled_cosines(model):
    ids1, m1, ids2, m2 = random_pair(5)
    ids, mask = MultitaskBERT.stack_pair(ids1, m1, ids2, m2)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0.0, 2.5, 5.0, 1.0])}
    with torch.no_grad():
        cos = model.predict_similarity(ids1, m1, ids2, m2) / 5
        torch.testing.assert_close(model.loss("sts", batch, sts_loss="cosent"), cosent_loss(cos, batch["labels"]))
    with pytest.raises(ValueError, match="sts_loss"):
        model.loss("sts", batch, sts_loss="mae")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.floats(0, 4), st.integers(0, 2**16))
def test_rdrop_loss_is_its_definition(B, K, alpha, seed):
    """The mean of the two cross-entropies plus alpha/2 times the two KL divergences, each
    from torch's F.kl_div (batchmean: summed over classes, averaged over the batch)."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(2, B, K, generator=g)
    y = torch.randint(0, K, (B,), generator=g)
    lp1, lp2 = z[0].log_softmax(-1), z[1].log_softmax(-1)
    kl12 = F.kl_div(lp2, lp1, log_target=True, reduction="batchmean")  # KL(p1 || p2)
    kl21 = F.kl_div(lp1, lp2, log_target=True, reduction="batchmean")  # KL(p2 || p1)
    ce = (F.cross_entropy(z[0], y) + F.cross_entropy(z[1], y)) / 2
    torch.testing.assert_close(rdrop_loss(z, y, alpha), ce + alpha * (kl12 + kl21) / 2)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 6), st.floats(0, 0.99), st.integers(0, 2**16))
def test_uniform_smoothing_is_torchs_label_smoothing(B, K, eps, seed):
    """Cross-entropy against the uniform smoothed targets is torch's
    cross_entropy(label_smoothing=eps), alone and inside rdrop_loss (alpha 0: its mean CE)."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(2, B, K, generator=g)
    y = torch.randint(0, K, (B,), generator=g)
    target = smoothed_targets(y, K, eps, "uniform")  # (B, K)
    torch.testing.assert_close(F.cross_entropy(z[0], target), F.cross_entropy(z[0], y, label_smoothing=eps))
    torch.testing.assert_close(rdrop_loss(z, target, 0.0), (F.cross_entropy(z[0], y, label_smoothing=eps)
                                                            + F.cross_entropy(z[1], y, label_smoothing=eps)) / 2)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6).flatmap(lambda K: st.tuples(st.just(K), st.lists(st.integers(0, K - 1), min_size=1,
                                                                          max_size=8))), st.floats(0, 0.99))
def test_neighbours_smoothing_is_its_definition(classes_and_labels, eps):
    """1 - eps on the label, eps shared equally by the classes one step away (one at an end),
    written out class by class; every row sums to 1; eps 0 is the one-hot label."""
    K, labels = classes_and_labels
    expected = []
    for y in labels:
        near = [c for c in (y - 1, y + 1) if 0 <= c < K]
        expected.append([1 - eps if c == y else eps / len(near) if c in near else 0.0 for c in range(K)])
    got = smoothed_targets(torch.tensor(labels), K, eps)
    torch.testing.assert_close(got, torch.tensor(expected))
    torch.testing.assert_close(got.sum(-1), torch.ones(len(labels)))
    torch.testing.assert_close(smoothed_targets(torch.tensor(labels), K, 0.0), F.one_hot(torch.tensor(labels), K).float())


def test_sst_smoothing_changes_the_sst_loss_only(model):
    """model.loss(smoothing=eps): SST's loss is torch's cross-entropy with the smoothed targets
    (as probabilities), with or without R-Drop (eval mode: its two passes agree); the pair
    tasks' losses ignore it; an unknown kind is refused."""
    ids, mask = random_batch(4, [4, 7, 2, 5], 7)
    c = torch.tensor([0, 4, 2, 1])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": c}
    with torch.no_grad():
        logits = model.predict_sentiment(ids, mask)
        for kind in ("neighbours", "uniform"):
            expected = F.cross_entropy(logits, smoothed_targets(c, 5, 0.3, kind))
            torch.testing.assert_close(model.loss("sst", batch, smoothing=0.3, smoothing_kind=kind), expected)
            torch.testing.assert_close(model.loss("sst", batch, rdrop=2.0, smoothing=0.3, smoothing_kind=kind), expected)
        assert not torch.equal(model.loss("sst", batch, smoothing=0.3), model.loss("sst", batch))
        for task, labels in (("para", torch.tensor([1.0, 0.0, 1.0, 0.0])), ("sts", torch.tensor([0.0, 2.5, 5.0, 1.0]))):
            ids1, m1, ids2, m2 = random_pair(5)
            pair = pair_batch(model, task, (ids1, m1, ids2, m2), labels)
            torch.testing.assert_close(model.loss(task, pair, smoothing=0.3), model.loss(task, pair))
        with pytest.raises(ValueError, match="kind"):
            model.loss("sst", batch, smoothing=0.3, smoothing_kind="gaussian")


def test_sst_rdrop_compares_two_dropout_passes(model):
    """Without dropout (eval) both passes agree, and the loss is the plain cross-entropy. With
    dropout the two copies of the batch must draw different masks: the agreement term (the
    difference between weights 2 and 1, same random draws) is then above zero."""
    ids, mask = random_batch(4, [4, 7, 2, 5], 7)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 4, 2, 1])}
    with torch.no_grad():
        torch.testing.assert_close(model.loss("sst", batch, rdrop=3.0), model.loss("sst", batch))
        assert rdrop_agreement(model, "sst", batch) > 1e-6


def rdrop_agreement(model, task, batch):
    """R-Drop's agreement term alone: in train mode, under the same random draws, the loss at
    weight 2 minus the loss at weight 1 (0 if the two copies drew the same dropout masks)."""
    model.train()
    try:
        losses = []
        for alpha in (1.0, 2.0):
            torch.manual_seed(0)
            losses.append(model.loss(task, batch, rdrop=alpha))
    finally:
        model.eval()
    return losses[1] - losses[0]


def pair_batch(model, task, pair, labels):
    """`pair` (ids1, mask1, ids2, mask2) laid out as data.py's collate does for `task`'s head
    (model.pair_input: joined for a cross-encoder, else stacked), with `labels`."""
    keys = ("input_ids", "attention_mask", "token_type_ids")  # stacked pairs have no token types
    return {**dict(zip(keys, model.pair_input(task, *pair))), "labels": labels}


@pytest.mark.parametrize("para_input", ["siamese", "cross"])
def test_para_rdrop_is_bce_plus_the_bernoulli_kl(model, cross, para_input):
    """Paraphrase R-Drop, either head, in train mode with the two passes' logits caught: the
    mean of their BCEs (eq. 5) plus alpha/2 times the two KL divergences between
    Bernoulli(sigmoid(z1)) and Bernoulli(sigmoid(z2)), written out on probabilities in float64."""
    model = {"siamese": model, "cross": cross}[para_input]
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    batch = pair_batch(model, "para", random_pair(10), y)
    with torch.no_grad():
        caught, original = [], model.paraphrase_logit
        model.paraphrase_logit = lambda *a: caught.append(original(*a)) or caught[-1]
        model.train()
        try:
            loss = model.loss("para", batch, rdrop=2.0)
        finally:
            model.eval()
            del model.paraphrase_logit
    p1, p2 = caught[0].double().sigmoid().unflatten(0, (2, -1))  # (B,) each: the two passes
    yy = y.double()

    def bce(p):
        return -(yy * p.log() + (1 - yy) * (1 - p).log()).mean()

    def kl(p, q):  # KL(Bernoulli(p) || Bernoulli(q)), averaged over the batch
        return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()

    expected = (bce(p1) + bce(p2)) / 2 + 2.0 * (kl(p1, p2) + kl(p2, p1)) / 2
    assert abs(loss.item() - expected.item()) <= 1e-5 * max(1.0, expected.item())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.floats(0, 4), st.integers(0, 2**16))
def test_rdrop_mse_loss_is_its_definition(B, alpha, seed):
    """The mean of the two passes' squared errors plus alpha times the mean squared difference
    of the two passes, computed in float64 NumPy."""
    g = torch.Generator().manual_seed(seed)
    s, y = 5 * torch.rand(2, B, generator=g), 5 * torch.rand(B, generator=g)
    s1, s2, yy = s[0].double().numpy(), s[1].double().numpy(), y.double().numpy()
    expected = (((s1 - yy) ** 2).mean() + ((s2 - yy) ** 2).mean()) / 2 + alpha * ((s1 - s2) ** 2).mean()
    assert abs(rdrop_mse_loss(s, y, alpha).item() - expected) <= 1e-5 * max(1.0, expected)


def test_twice_keeps_stacked_pairs_paired():
    s1, s2 = torch.tensor([[1], [2]]), torch.tensor([[3], [4]])  # two pairs: (1, 3) and (2, 4)
    u, v = twice(torch.cat([s1, s2]), stacked_pair=True).chunk(2)  # what pair_embeddings splits
    assert u.flatten().tolist() == [1, 2, 1, 2] and v.flatten().tolist() == [3, 4, 3, 4]
    assert twice(s1).flatten().tolist() == [1, 2, 1, 2] and twice(None) is None


@pytest.mark.parametrize("task", ["para", "sts"])
@pytest.mark.parametrize("pair_input", ["siamese", "cross"])
def test_pair_rdrop_compares_two_dropout_passes(model, cross, task, pair_input):
    """R-Drop on a pair task, either head: without dropout (eval) the two passes agree and the
    loss is the plain one (eq. 5's BCE, eq. 3's MSE), so each copy's pairs still line up; with
    dropout the copies must differ (the agreement term, the difference between weights 2 and 1
    under the same draws, is above 0)."""
    model = {"siamese": model, "cross": cross}[pair_input]
    y = torch.tensor([0.0, 1.0, 1.0, 0.0]) if task == "para" else torch.tensor([0.0, 2.5, 5.0, 1.0])
    pair = random_pair(8)
    batch = pair_batch(model, task, pair, y)
    with torch.no_grad():
        if task == "para":
            plain = F.binary_cross_entropy_with_logits(model.predict_paraphrase(*pair), y)
        else:
            plain = F.mse_loss(model.predict_similarity(*pair), y)
        torch.testing.assert_close(model.loss(task, batch, rdrop=3.0), plain)
        assert rdrop_agreement(model, task, batch) > 1e-6
    if task == "sts":
        with pytest.raises(ValueError, match="mse"):
            model.loss("sts", batch, sts_loss="cosent", rdrop=1.0)


def test_frozen_encoder_gets_no_gradient_and_no_dropout(model):
    model.freeze_encoder(True).train()
    try:
        assert not model.bert.training and model.training
        ids, mask = random_batch(2, [3, 5], 7)
        model.loss("sst", {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([1, 2])}).backward()
        assert all(p.grad is None for p in model.bert.parameters())
        assert model.sst_out.weight.grad is not None
    finally:
        model.freeze_encoder(False).eval()
        model.zero_grad(set_to_none=True)


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "ckpt")
    loaded = MultitaskBERT.load(tmp_path / "ckpt")
    ids, mask = random_batch(3, [5, 2, 4], 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_sentiment(ids, mask), model.predict_sentiment(ids, mask), rtol=0, atol=0)
    assert loaded.hparams == model.hparams
    cross = MultitaskBERT(model.bert, para_input="cross", sts_input="cross").eval()
    cross.save(tmp_path / "cross")
    loaded = MultitaskBERT.load(tmp_path / "cross")
    ids2, mask2 = random_batch(3, [1, 6, 3], 11)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_paraphrase(ids, mask, ids2, mask2),
                                   cross.predict_paraphrase(ids, mask, ids2, mask2), rtol=0, atol=0)
        torch.testing.assert_close(loaded.predict_similarity(ids, mask, ids2, mask2),
                                   cross.predict_similarity(ids, mask, ids2, mask2), rtol=0, atol=0)
    assert (loaded.para_input, loaded.sts_input) == ("cross", "cross")
    with pytest.raises(WeightsError, match="not a MultitaskBERT checkpoint"):
        MultitaskBERT.load(tmp_path)
