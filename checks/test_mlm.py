"""The MLM head (minibert/mlm.py) against transformers' BertForMaskedLM, checkpoint
round trips, a short training run that must learn, and the pretrain stage end to end
(including an exact resume)."""

import json
import math
import re
import shlex
import signal

import pytest
import torch

from minibert.checkpoint import WeightsError
from minibert.config import BertConfig
from minibert.masking import IGNORE_INDEX, mask_tokens
from minibert.mlm import BertForMLM
from minibert.model import BertModel
from minibert.optim import AdamW

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=40)
SPECIAL = {0, 1, 2, 3, 4}  # [PAD] [UNK] [CLS] [SEP] [MASK] in the tiny vocabularies below
MASK = 4


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def hf_mlm(tmp_path, seed=0):
    """A tiny random transformers BertForMaskedLM, every parameter random (biases and
    LayerNorms too, so a mistake in any of them shows), saved as safetensors."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    ref = transformers.BertForMaskedLM(transformers.BertConfig(**TINY)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.3)
    ref.save_pretrained(tmp_path)
    return ref


def random_inputs(seed=0, B=3, T=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (B, T), generator=g)
    ids[:, 0] = 2
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 8:], ids[1, 8:] = 0, 0  # one padded row
    ids[1, 7] = 3
    masked, labels = mask_tokens(ids, special_ids=SPECIAL, mask_id=MASK, vocab_size=TINY["vocab_size"],
                                 generator=g, mlm_prob=0.4)
    return masked, attention_mask, labels


def test_logits_and_loss_equal_transformers(tmp_path):
    ref = hf_mlm(tmp_path)
    ours = BertForMLM.from_pretrained(tmp_path)
    assert ours.head_loaded
    ids, am, labels = random_inputs()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=am, labels=labels)
        full = ours(ids, am)["logits"]                  # reference path: every position
        out = ours(ids, am, labels=labels)              # training path: masked positions only
    sel = labels != IGNORE_INDEX
    assert sel.sum() > 3
    torch.testing.assert_close(full[am.bool()], expected.logits[am.bool()], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["logits"], expected.logits[sel], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["loss"], expected.loss, rtol=0, atol=1e-5)
    # the fast path is the reference path at the masked positions
    torch.testing.assert_close(out["logits"], full[sel], rtol=0, atol=1e-6)
    assert out["n_masked"] == sel.sum().item()
    assert out["n_correct"].item() == (expected.logits[sel].argmax(-1) == labels[sel]).sum().item()


def test_no_head_in_checkpoint_initialises_one(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    transformers.BertModel(transformers.BertConfig(**TINY)).save_pretrained(tmp_path)
    messages = []
    model = BertForMLM.from_pretrained(tmp_path, log=messages.append)
    assert not model.head_loaded
    assert messages == [f"no MLM head in {tmp_path / 'model.safetensors'}: initialised a new one"]
    head = model.head
    assert head.transform.dense.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.equal(head.transform.LayerNorm.weight, torch.ones(TINY["hidden_size"]))
    assert not head.bias.any() and not head.transform.dense.bias.any()


def test_real_minilm_has_no_head(weights_path):
    messages = []
    model = BertForMLM.from_pretrained(weights_path, log=messages.append)
    assert not model.head_loaded and "initialised a new one" in messages[0]


def test_save_load_round_trip_here_and_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_mlm(tmp_path / "src")
    ours = BertForMLM.from_pretrained(tmp_path / "src")
    (tmp_path / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(TINY["vocab_size"])))
    ours.save_pretrained(tmp_path / "out", vocab_file=tmp_path / "vocab.txt")
    assert (tmp_path / "out" / "vocab.txt").read_text() == (tmp_path / "vocab.txt").read_text()
    ids, am, _ = random_inputs(1)
    with torch.no_grad():
        expected = ours(ids, am)["logits"]
        again = BertForMLM.from_pretrained(tmp_path / "out")
        assert again.head_loaded
        torch.testing.assert_close(again(ids, am)["logits"], expected, rtol=0, atol=0)
        hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "out").eval()
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=am).logits, expected, rtol=0, atol=1e-5)
        # the encoder alone, as the multitask stage loads it (ours and transformers')
        h = ours.bert(ids, am)["last_hidden_state"]
        torch.testing.assert_close(BertModel.from_pretrained(tmp_path / "out")(ids, am)["last_hidden_state"], h,
                                   rtol=0, atol=0)
        hf_bert = transformers.BertModel.from_pretrained(tmp_path / "out").eval()
        torch.testing.assert_close(hf_bert(input_ids=ids, attention_mask=am).last_hidden_state, h,
                                   rtol=0, atol=1e-5)


def test_untied_decoder_is_refused(tmp_path):
    model = BertForMLM(BertModel(BertConfig(**TINY)))
    E = model.bert.embeddings.word_embeddings.weight
    heads = {"cls.predictions." + k: v for k, v in model.head.state_dict().items()}
    heads["cls.predictions.decoder.weight"] = E.detach() + 1.0
    with pytest.raises(WeightsError, match="differs from the word embeddings"):
        model.load_head(heads, "file.safetensors")
    heads["cls.predictions.decoder.weight"] = E.detach().clone()
    del heads["cls.predictions.transform.dense.bias"]
    with pytest.raises(WeightsError, match="missing key 'cls.predictions.transform.dense.bias'"):
        model.load_head(heads, "file.safetensors")


def test_a_few_hundred_steps_lower_the_masked_loss():
    """A tiny random BERT learns a tiny language: each sentence counts up from a random
    start (5 6 7 8 ...), so a masked token is predictable from its neighbours."""
    torch.manual_seed(0)
    V, T = TINY["vocab_size"], 12
    model = BertForMLM(BertModel(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
    start = torch.randint(5, V - T, (512, 1))
    ids = torch.cat([torch.full((512, 1), 2), start + torch.arange(T - 2), torch.full((512, 1), 3)], 1)

    def batch(rows, seed):
        return mask_tokens(ids[rows], special_ids=SPECIAL, mask_id=MASK, vocab_size=V,
                           generator=torch.Generator().manual_seed(seed))

    held_ids, held_labels = batch(slice(448, 512), 12345)  # fixed masks, never trained on

    def heldout_loss():
        with torch.no_grad():
            return model.eval()(held_ids, labels=held_labels)["loss"].item()

    before = heldout_loss()
    opt = AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        x, y = batch(torch.randint(0, 448, (32,)), step)
        model(x, labels=y)["loss"].backward()
        opt.step()
        opt.zero_grad()
    after = heldout_loss()
    assert before > math.log(V) - 0.5  # about uniform at the start
    assert after < 0.5 * before, f"held-out masked loss {before:.3f} -> {after:.3f}"


# ---- the stage end to end --------------------------------------------------------------------

WORDS = ("the a movie film was is great bad good plot actor how what why do you like "
         "question answer man woman plays guitar dog runs fast slow").split()


def write_tiny_project(root):
    """A data folder with the four train CSVs, and a tiny weights folder without an MLM head."""
    transformers = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(0)

    def sentence():
        return " ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(torch.randint(3, 9, (1,), generator=g)),),
                                                         generator=g).tolist())

    data = root / "data"
    data.mkdir()
    files = {"ids-sst-train.csv": ("sentence", "sentiment", lambda i: str(i % 5), 1),
             "ids-cfimdb-train.csv": ("sentence", "sentiment", lambda i: str(i % 2), 1),
             "quora-train.csv": ("sentence1\tsentence2", "is_duplicate", lambda i: f"{i % 2}.0", 2),
             "sts-train.csv": ("sentence1\tsentence2", "similarity", lambda i: "3.5", 2)}
    for name, (cols, label, value, n_texts) in files.items():
        rows = [f"{i}\tid{name[:3]}{i}\t" + "\t".join(sentence() for _ in range(n_texts)) + f"\t{value(i)}"
                for i in range(40)]
        (data / name).write_text(f"\tid\t{cols}\t{label}\n" + "\n".join(rows) + "\n")
    weights = root / "weights"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ing"]
    config = dict(TINY, vocab_size=len(vocab))
    transformers.BertModel(transformers.BertConfig(**config)).save_pretrained(weights)
    (weights / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return data, weights


def test_pretrain_stage_end_to_end_and_exact_resume(tmp_path):
    from minibert.checkpoint import read_safetensors
    from minibert.pretrain import main
    data, weights = write_tiny_project(tmp_path)
    common = ["--weights", str(weights), "--data-dir", str(data), "--batch-size", "16", "--max-steps", "8",
              "--heldout-frac", "0.1", "--head-warmup-steps", "2", "--log-every", "2", "--lr", "1e-3",
              "--device", "cpu", "--whole-word"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["corpus"]["splits"] == ["train"]
    assert summary["corpus"]["heldout_sentences"] + summary["corpus"]["train_sentences"] \
        == summary["corpus"]["distinct_sentences"]
    assert summary["head_only"]["step"] == 2 and summary["head"].startswith("initialised")
    assert summary["after"]["loss"] < summary["before"]["loss"]
    events = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [e.get("when") for e in events if e["event"] == "eval"] == ["before", "head_only", "after"]
    # the exported folder is what the multitask stage loads
    BertModel.from_pretrained(tmp_path / "a" / "model")
    assert BertForMLM.from_pretrained(tmp_path / "a" / "model").head_loaded

    # run b: killed by a tiny time budget after its first step, then resumed: same weights as a
    assert main(common + ["--out", str(tmp_path / "b"), "--max-minutes", "1e-9"]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["steps"] == 1
    assert main(common + ["--out", str(tmp_path / "b"), "--resume"]) == 0
    a = read_safetensors(tmp_path / "a" / "model" / "model.safetensors")
    b = read_safetensors(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and the same log: the stopped run's "after" and lines past its checkpoint are not kept twice
    lines = {d: [(e["event"], e.get("when"), e["step"])  # (a mean over --log-every steps may differ)
                 for e in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())] for d in "ab"}
    assert lines["a"] == lines["b"]
    # a fresh run into a folder with a checkpoint is refused; so is a resume with changed options
    with pytest.raises(SystemExit, match="already holds a run: pass --resume"):
        main(common + ["--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="--seed 0 in its config.json differ"):
        main(common + ["--out", str(tmp_path / "b"), "--resume", "--seed", "1"])
    # a run written before pretrain wrote a config.json: its checkpoint's options stand in for it
    config = (tmp_path / "b" / "config.json").read_text()
    (tmp_path / "b" / "config.json").unlink()
    with pytest.raises(SystemExit, match="--seed 0 in its checkpoint differ"):
        main(common + ["--out", str(tmp_path / "b"), "--resume", "--seed", "1"])
    (tmp_path / "b" / "config.json").write_text(config)
    # a resume that names no option takes the run's own (the config's): nothing to redo, the same model
    assert main(["--out", str(tmp_path / "b"), "--resume", "--device", "cpu"]) == 0
    c = read_safetensors(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.usefixtures("ctrl_c_reaches_python")
def test_pretrain_ctrl_c_checkpoints_the_step_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """The first Ctrl-C lets its step finish, checkpoints there, names the command that
    continues, and raises KeyboardInterrupt; that command then ends where an uninterrupted run
    ends, bitwise."""
    from minibert import pretrain
    from minibert.checkpoint import latest_checkpoint, read_safetensors
    data, weights = write_tiny_project(tmp_path)
    common = ["--weights", str(weights), "--data-dir", str(data), "--batch-size", "16", "--max-steps", "6",
              "--heldout-frac", "0.1", "--head-warmup-steps", "2", "--lr", "1e-3", "--device", "cpu"]
    assert pretrain.main(common + ["--out", str(tmp_path / "a")]) == 0
    real = pretrain.step_generator

    def generator(seed, step):  # called once per step, before its forward pass
        if step == 3:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the 4th step
        return real(seed, step)

    monkeypatch.setattr(pretrain, "step_generator", generator)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(common + ["--out", str(tmp_path / "b")])
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-0000004"
    assert not (tmp_path / "b" / "summary.json").exists()
    err = capsys.readouterr().err
    assert "Ctrl-C: stopping after this step" in err
    said = re.search(r"stopped after step 4, checkpoint saved: continue with python -m minibert pretrain (.*)", err)
    monkeypatch.setattr(pretrain, "step_generator", real)
    assert pretrain.main(shlex.split(said.group(1))) == 0  # the very command it named
    a, b = (read_safetensors(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
