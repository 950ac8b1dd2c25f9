"""The WordPiece tokenizer against the real reference: the Hugging Face `tokenizers` (Rust)
BERT tokenizer on the same vocab.txt, and transformers' BertTokenizer for the batch call and
decode. Every train sentence of the data, hypothesis text across Unicode categories, every
code point, sentence pairs with truncation, and bad input."""

import csv
import unicodedata

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibert.errors import WeightsError
from minibert.paths import data_dir
from minibert.tokenizer import WordPieceTokenizer, normalize, pre_tokenize

tokenizers = pytest.importorskip("tokenizers")


# tokenizers 0.23.1 and 0.23.2 split a pair's longest-first truncation differently from the
# releases before and after them: given "0:0:0" / "Héllo" x3 and 4 tokens in all, 0.22.2, 0.23.3
# and the classic algorithm (cut the longer sequence one token at a time, ties from the second)
# keep "0" from the first, those two keep "hello" from the second. Measured on 0.22.2, 0.23.1,
# 0.23.2 and 0.23.3; 0.23.1 is the release that added an early exit to truncation. Against those
# two versions the pair-truncation checks cannot tell right from wrong, so they are skipped.
skip_if_pair_truncation_differs = pytest.mark.skipif(
    tokenizers.__version__ in ("0.23.1", "0.23.2"),
    reason=f"tokenizers {tokenizers.__version__} truncates pairs unlike 0.22.2 and 0.23.3 (see above)")


@pytest.fixture(scope="module")
def vocab_path(weights_path):
    return str(weights_path / "vocab.txt")


@pytest.fixture(scope="module")
def tok(vocab_path):
    return WordPieceTokenizer.from_vocab(vocab_path, lowercase=True)


@pytest.fixture(scope="module")
def rust(vocab_path):
    return tokenizers.BertWordPieceTokenizer(vocab_path, lowercase=True)


@pytest.fixture(scope="module")
def hf(vocab_path):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizer(vocab=vocab_path, do_lower_case=True)  # the Rust-backed one in v5


def rust_encode(rust, text, pair=None, max_length=None):
    if max_length is None:
        rust.no_truncation()
    else:
        rust.enable_truncation(max_length)  # strategy longest_first, as ours
    enc = rust.encode(text, pair)
    return enc.ids, enc.type_ids


def read_sentences(files_and_columns):
    folder = data_dir()
    if not (folder / "sts-train.csv").is_file():
        pytest.skip(f"no data in {folder}: link it (data -> ../shared/data) or set MINIBERT_DATA")
    rows = []
    for name, columns in files_and_columns:
        with open(folder / name, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rows.append(tuple(row[c] for c in columns))
    return rows


# ----------------------------------------------------------------------------------------
# Real data


def test_every_train_sentence(tok, rust, vocab_path):
    """The 46,452 SST, Quora and STS train sentences, and the long CFIMDB reviews (no
    truncation), give exactly the Rust tokenizer's ids."""
    files = [("ids-sst-train.csv", ["sentence"]), ("quora-train.csv", ["sentence1", "sentence2"]),
             ("sts-train.csv", ["sentence1", "sentence2"])]
    sentences = [s for row in read_sentences(files) for s in row]
    assert len(sentences) == 46_452
    sentences += [s for (s,) in read_sentences([("ids-cfimdb-train.csv", ["sentence"])])]
    rust.no_truncation()
    expected = [e.ids for e in rust.encode_batch(sentences)]
    got = WordPieceTokenizer.from_vocab(vocab_path).encode_batch(sentences)  # a cold cache
    mismatches = [(s, g, e) for s, g, e in zip(sentences, got, expected) if g != e]
    assert not mismatches, f"{len(mismatches)} sentences differ, first: {mismatches[0]}"


@skip_if_pair_truncation_differs
def test_train_pairs_truncated(tok, rust):
    """Quora and STS pairs cut to 24 tokens: longest-first truncation and token types."""
    pairs = read_sentences([("quora-train.csv", ["sentence1", "sentence2"]), ("sts-train.csv", ["sentence1", "sentence2"])])
    rust.enable_truncation(24)
    expected = [(e.ids, e.type_ids) for e in rust.encode_batch(pairs)]
    got = [tok.encode_plus(a, b, max_length=24) for a, b in pairs]
    assert got == expected


# ----------------------------------------------------------------------------------------
# Generated text

# pieces that exercise one rule each; hypothesis glues them to random characters
PIECES = [
    "Héllo", "CAFÉ", "e\u0301", "n\u0303\u0323", "中文字", "\U0002b820", "\U0002b920", "한국어", "カタカナ",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "\u200b", "\u200c", "\ufeff", "\x00", "\ufffd", "\x1c", "\x0b", "\x85",
    "\xa0", "\u3000", "\u2028", "\t", "\n", "\r\n", "  ", "[MASK]", "[SEP]", "[CLS]", "[mask]", "[UNK",
    "ΟΔΟΣ", "İstanbul", "ǅ", "Straße", "ﬁ", "Ⅻ", "x" * 101, "ab" * 60, "don't", "##ing", "$5.00", "¿qué?",
    "unaffable", "antidisestablishmentarianism", "\U000f0000", "\U00050000", "\u0378",
]
any_char = st.characters(exclude_categories=("Cs",))
text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(any_char, max_size=6), st.just(" ")), max_size=12).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text)
def test_generated_text(tok, rust, text):
    ids = tok.encode(text)
    assert ids == rust_encode(rust, text)[0]
    # the readable reference path gives the same pieces as the cached fast path
    assert tok.tokenize_reference(text) == tok.tokenize(text)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=40))
def test_ascii_fast_path_equals_reference(tok, rust, text):
    """Pure ASCII takes the regex path on a cache miss: same pieces as the reference path."""
    tok.clear_cache()  # every chunk is a miss
    assert tok.tokenize(text) == tok.tokenize_reference(text)
    assert tok.encode(text) == rust_encode(rust, text)[0]


@skip_if_pair_truncation_differs
@settings(max_examples=300, deadline=None)
@given(text, text, st.integers(3, 40))
def test_generated_pairs_truncated(tok, rust, a, b, max_length):
    assert tok.encode_plus(a, b, max_length=max_length) == rust_encode(rust, a, b, max_length)


@settings(max_examples=100, deadline=None)
@given(text, st.integers(2, 20))
def test_generated_single_truncated(tok, rust, a, max_length):
    assert tok.encode_plus(a, max_length=max_length) == rust_encode(rust, a, max_length=max_length)


CASE_SETTINGS = [(False, None), (True, False), (False, True)]  # (lowercase, strip_accents)


@pytest.fixture(scope="module")
def cased_pairs(vocab_path):
    return [
        (WordPieceTokenizer.from_vocab(vocab_path, lowercase=lc, strip_accents=sa),
         tokenizers.BertWordPieceTokenizer(vocab_path, lowercase=lc, strip_accents=sa))
        for lc, sa in CASE_SETTINGS
    ]


@settings(max_examples=200, deadline=None)
@given(text)
def test_cased_vocabulary_settings(cased_pairs, text):
    """lowercase=False keeps case and accents (strip_accents follows lowercase), and an
    explicit strip_accents overrides that, as in the Rust normalizer."""
    for ours, ref in cased_pairs:
        assert ours.encode(text) == ref.encode(text).ids


def test_every_code_point(tok, rust):
    """Each code point between two letters, "a?b": ids differ from the Rust tokenizer's
    nowhere (minibert.tokenizer.category reproduces the reference's older Unicode tables on
    the code points where they differ). All of planes 0-3 (surrogates aside) and U+E0000-U+E0FFF
    (plane 14's assigned block); the rest of planes 4-16 (unassigned, and private use in 15-16)
    sampled every 97th code point."""
    if unicodedata.unidata_version != "14.0.0":
        pytest.skip(f"tokenizer.UNICODE_VERSION_GAPS is pinned for Unicode 14.0 (Python 3.11), not {unicodedata.unidata_version}")
    code_points = [cp for cp in range(0x40000) if not 0xD800 <= cp <= 0xDFFF]
    code_points += list(range(0xE0000, 0xE1000)) + list(range(0x40000, 0xE0000, 97)) + list(range(0xE1000, 0x110000, 97))
    texts = [f"a{chr(cp)}b" for cp in code_points]
    rust.no_truncation()
    expected = [e.ids for e in rust.encode_batch(texts, add_special_tokens=False)]
    differ = {cp for cp, t, e in zip(code_points, texts, expected) if tok.tokenize(t) != [tok.ids_to_tokens[i] for i in e]}
    assert not differ, f"ids differ from the Rust tokenizer on: {sorted(hex(c) for c in differ)[:20]}"


# ----------------------------------------------------------------------------------------
# The batch call and decode, against transformers


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(text, text), min_size=1, max_size=5), st.integers(3, 30), st.sampled_from(["longest", "max_length"]))
def test_batch_call(tok, hf, pairs, max_length, padding):
    texts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    for second in (None, seconds):
        ours = tok(texts, second, max_length=max_length, padding=padding)
        ref = hf(texts, second, max_length=max_length, truncation=True, padding=padding, return_tensors="pt")
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert ours[key].dtype == torch.long
            assert torch.equal(ours[key], ref[key]), key


@settings(max_examples=150, deadline=None)
@given(text, st.booleans())
def test_decode(tok, hf, text, skip_special_tokens):
    ids = tok.encode(text)
    expected = hf.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
    assert tok.decode(ids, skip_special_tokens=skip_special_tokens) == expected
    assert tok.decode(torch.tensor(ids), skip_special_tokens=skip_special_tokens) == expected


# ----------------------------------------------------------------------------------------
# The pieces by hand, the vocabulary, and bad input


def test_known_examples(tok):
    assert normalize("Héllo,\tWORLD 中文") == "hello, world  中  文 "
    assert pre_tokenize("don't!") == ["don", "'", "t", "!"]
    assert tok.tokenize("Héllo, unaffable [MASK]!") == ["hello", ",", "una", "##ffa", "##ble", "[MASK]", "!"]
    assert tok.tokenize("x" * 101) == ["[UNK]"] and tok.tokenize("x" * 100) != ["[UNK]"]
    assert normalize("ΟΔΟΣ") == "οδοσ"  # per-character lower-casing: no final sigma
    ids, types = tok.encode_plus("a b", "c")
    assert tok.decode(ids, skip_special_tokens=False) == "[CLS] a b [SEP] c [SEP]"
    assert tok.decode(tok.encode("Un-believable, isn't it?")) == "un - believable, isn ' t it?"
    assert types == [0, 0, 0, 0, 1, 1]


def test_vocabulary_attributes(tok):
    assert len(tok) == len(tok.ids_to_tokens) == len(tok.vocab) == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.special_ids == {0, 100, 101, 102, 103}
    assert tok.is_continuation.shape == (len(tok),) and tok.is_continuation.dtype == torch.bool
    assert tok.is_continuation[tok.vocab["##ing"]] and not tok.is_continuation[tok.vocab["ing"]]
    assert int(tok.is_continuation.sum()) == sum(t.startswith("##") for t in tok.ids_to_tokens)


@pytest.mark.parametrize("padding, T", [("longest", 0), ("max_length", 16)])
def test_empty_batch_is_two_dimensional(tok, padding, T):
    batch = tok([], max_length=16, padding=padding)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (0, T) and batch[key].dtype == torch.long, key


@pytest.mark.parametrize("text", ["", " ", "\t\n \u3000\xa0", "\x00\u200b\ufffd"])
def test_empty_text_gives_cls_sep(tok, text):
    assert tok.encode(text) == [tok.cls_id, tok.sep_id]
    assert tok.tokenize(text) == []


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a list"]])
def test_non_str_is_a_type_error(tok, bad):
    calls = [tok.tokenize, tok.encode, lambda x: tok([x])]
    if bad is not None:  # pair=None means no pair
        calls.append(lambda x: tok.encode("fine", pair=x))
    for call in calls:
        with pytest.raises(TypeError, match="must be a str"):
            call(bad)


def test_bad_arguments(tok, tmp_path):
    with pytest.raises(ValueError, match="one pair per text"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], padding="right")
    with pytest.raises(ValueError, match="at least 3"):
        tok.encode("a", "b", max_length=2)
    with pytest.raises(ValueError, match="needs a max_length"):
        tok(["a"], max_length=None, padding="max_length")
    with pytest.raises(TypeError, match="list of str"):
        tok(123)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_vocab(tmp_path / "missing.txt")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(WeightsError, match="vocab.txt: the vocabulary lacks the special tokens"):
        WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")
