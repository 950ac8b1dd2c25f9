"""Data loading (minibert/data.py): the CS224N CSV format, dirty rows, clear errors, batches."""

import itertools
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.batching import real_token_fraction
from minibert.data import (DataError, Example, TaskDataset, check_data_dir, duplicate_closure, load_datasets,
                           load_quora, load_sst, load_sts, read_examples)
from minibert.tokenizer import WordPieceTokenizer
from tiny_world import VOCAB, make_data, write_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return WordPieceTokenizer.from_vocab(path)


def test_loads_each_format(data):
    sst = load_sst(data / "ids-sst-train.csv")
    assert len(sst) == 24 and sst[0].id == "ssttrain0" and len(sst[0].texts) == 1
    assert all(e.label in range(5) for e in sst)
    sts = load_sts(data / "sts-train.csv")
    assert len(sts) == 24 and len(sts[0].texts) == 2 and all(0 <= e.label <= 5 for e in sts)
    test = read_examples(data / "ids-sst-test-student.csv", "sst")  # two index columns, no label
    assert len(test) == 8 and test[0].id == "ssttest-student0" and test[0].label is None
    assert test[0].texts[0].startswith(("awful", "bad", "fine", "good", "great"))
    # labelled="header" (predict's): labelled exactly where the header has the label column
    assert [e.label for e in read_examples(data / "ids-sst-test-student.csv", "sst", "header")] == [None] * 8
    dev = read_examples(data / "ids-sst-dev.csv", "sst", "header")
    assert dev and None not in {e.label for e in dev}
    assert [e.label for e in dev] == [e.label for e in read_examples(data / "ids-sst-dev.csv", "sst")]


def test_malformed_row_skipped_with_counting_warning(data):
    with pytest.warns(UserWarning, match=r"quora-dev.csv: skipped 1 malformed row"):
        rows = load_quora(data / "quora-dev.csv")
    assert len(rows) == 12 and "qqbad" not in {r.id for r in rows}
    assert {r.label for r in rows} <= {0.0, 1.0}


def test_out_of_range_label_is_malformed(tmp_path):
    (tmp_path / "s.csv").write_text("\tid\tsentence\tsentiment\n0\ta\tgood .\t7\n1\tb\tbad .\t1\n")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [e.id for e in read_examples(tmp_path / "s.csv", "sst")] == ["b"]


def test_a_file_without_a_usable_row(data, tok, tmp_path):
    """is an error naming it, except an (optional) test file, left out as a missing one is."""
    (tmp_path / "s.csv").write_text("\tid\tsentence\tsentiment\n0\ta\tgood .\t\n")
    with pytest.raises(DataError, match=r"s.csv: no usable rows \(all 1 malformed"):
        read_examples(tmp_path / "s.csv", "sst")
    copy = tmp_path / "data"
    copy.mkdir()
    for f in data.glob("*.csv"):
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "sts-test-student.csv").write_text("\tid\tsentence1\tsentence2\n")  # the header alone
    with pytest.warns(UserWarning, match="sts-test-student.csv: no usable rows; no sts test predictions"):
        sets = load_datasets(copy, tok, splits=("dev", "test"))
    assert "sts" in sets["dev"] and "sts" not in sets["test"] and "sst" in sets["test"]
    (copy / "sts-dev.csv").write_text("\tid\tsentence1\tsentence2\tsimilarity\n")
    with pytest.raises(DataError, match="sts-dev.csv: no usable rows, only the header"):
        load_datasets(copy, tok, splits=("dev",))


def test_wrong_header_names_file_and_columns(tmp_path):
    bad = tmp_path / "quora-train.csv"
    bad.write_text("\tid\tquestion1\tquestion2\tlabel\n0\ta\tx\ty\t1\n")
    with pytest.raises(DataError, match=r"quora-train.csv.*expected.*id, sentence1, sentence2, is_duplicate"):
        load_quora(bad)


def test_missing_folder_says_which_files_go_where(tmp_path):
    with pytest.raises(DataError) as e:
        check_data_dir(tmp_path / "nowhere")
    msg = str(e.value)
    for name in ("ids-sst-train.csv", "quora-dev.csv", "ids-cfimdb-train.csv", "--data-dir"):
        assert name in msg
    assert "quora-test-student.csv" not in msg  # the test files are optional (this data has none for Quora)
    assert "for test predictions where they exist, the *-test-student.csv files" in msg


def implied_by_brute_force(examples):
    """What labelled pairs imply, derived the slow way: duplicates by repeated transitive steps
    until nothing changes, then non-duplicates as any pair (x, y) with x ~ a, y ~ c for a
    labelled non-duplicate (a, c). Returns {frozenset pair: label} of the pairs not labelled."""
    questions = sorted({q for e in examples for q in e.texts})
    same = {(q, q) for q in questions} | {(a, b) for e in examples if e.label == 1.0 for a, b in
                                          (e.texts, e.texts[::-1])}
    while True:
        more = {(a, c) for a, b in same for b2, c in same if b == b2} - same
        if not more:
            break
        same |= more
    out = {frozenset(p): 1.0 for p in same if p[0] != p[1]}
    for e in examples:
        if e.label == 0.0:
            a, c = e.texts
            out.update({frozenset((x, y)): 0.0 for x, y in itertools.product(questions, questions)
                        if (x, a) in same and (y, c) in same})
    labelled = {frozenset(e.texts) for e in examples}
    return {p: label for p, label in out.items() if p not in labelled}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=9), st.data())
def test_duplicate_closure_implies_exactly_what_the_labels_do(group_of, draw):
    """Questions q0..qn in hidden groups (group_of); labelled pairs drawn at random, each
    labelled by the groups, so the labels never contradict. The closure must add exactly the
    pairs a brute-force derivation implies, each once and with its true label."""
    n = len(group_of)
    pairs = draw.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1]),
                               max_size=12, unique_by=lambda p: frozenset(p)))
    examples = [Example(f"e{i}", (f"q{a}", f"q{b}"), float(group_of[a] == group_of[b])) for i, (a, b) in enumerate(pairs)]
    implied = duplicate_closure(examples)
    got = {frozenset(e.texts): e.label for e in implied}
    assert len(got) == len(implied)  # each pair once, whichever way round
    assert got == implied_by_brute_force(examples)
    assert all(e.label == float(group_of[int(e.texts[0][1:])] == group_of[int(e.texts[1][1:])]) for e in implied)
    assert [e.id for e in implied] == [f"closure-{i}" for i in range(len(implied))]


def test_duplicate_closure_leaves_a_contradicted_group_out():
    # a ~ b ~ c, but (a, c) labelled a non-duplicate: that group implies nothing, with a warning;
    # the consistent group d ~ e ~ f still implies (d, f)
    ex = [Example("1", ("a", "b"), 1.0), Example("2", ("b", "c"), 1.0), Example("3", ("a", "c"), 0.0),
          Example("4", ("d", "e"), 1.0), Example("5", ("e", "f"), 1.0), Example("6", ("a", "d"), 0.0)]
    with pytest.warns(UserWarning, match="1 duplicate group"):
        implied = duplicate_closure(ex)
    assert [(e.texts, e.label) for e in implied] == [(("d", "f"), 1.0)]


def test_para_closure_grows_only_quora_train(data, tok, tmp_path):
    folder = shutil.copytree(data, tmp_path / "data")
    write_csv(folder / "quora-train.csv", ["id", "sentence1", "sentence2", "is_duplicate"], [
        ["c1", "what is a dog ?", "what is a cat ?", 1.0], ["c2", "what is a cat ?", "what is a cow ?", 1.0],
        ["c3", "what is a cow ?", "what is a fish ?", 0.0]], False)
    plain = load_datasets(folder, tok, tasks=["para", "sst"], splits=("train", "dev"))
    grown = load_datasets(folder, tok, tasks=["para", "sst"], splits=("train", "dev"), para_closure=True)
    # implied: dog ~ cow; dog and cat are not fish either
    assert grown["train"]["para"].example_ids == ["c1", "c2", "c3", "closure-0", "closure-1", "closure-2"]
    assert grown["train"]["para"].labels.tolist() == [1, 1, 0, 1, 0, 0]
    assert len(grown["dev"]["para"]) == len(plain["dev"]["para"])
    assert len(grown["train"]["sst"]) == len(plain["train"]["sst"])


def test_pair_batches_stack_both_sentences(data, tok):
    ds = load_datasets(data, tok, splits=("train",))["train"]["para"]
    idx = [3, 0, 5]
    batch = ds.collate(idx)
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].shape == (3,)
    for row, (k, i) in enumerate([(0, 3), (0, 0), (0, 5), (1, 3), (1, 0), (1, 5)]):
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == ds.ids[k][i]  # first sentences, then second
        assert batch["input_ids"][row, n:].eq(tok.pad_id).all()


def test_joint_pair_batches_equal_the_reference_pair_encoding(data, tok, tmp_path):
    """collate(joint=True) (the cross-encoder's input) against the Hugging Face tokenizers'
    own encoding of the pair: the same ids and token types, row by row; with swap, the
    pairs marked True against its encoding of (s2, s1)."""
    tokenizers = pytest.importorskip("tokenizers")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    ref = tokenizers.BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=True)
    pairs = read_examples(data / "quora-train.csv", "para")
    ds = TaskDataset("para", pairs, tok)
    idx = [3, 0, 5, 1]
    for swap in (None, [True, False, False, True]):
        batch = ds.collate(idx, joint=True, swap=swap)
        assert batch["input_ids"].shape[0] == 4 and batch["labels"].shape == (4,)
        for row, i in enumerate(idx):
            n = int(batch["attention_mask"][row].sum())
            texts = pairs[i].texts[::-1] if swap and swap[row] else pairs[i].texts
            want = ref.encode(*texts)
            assert batch["input_ids"][row, :n].tolist() == want.ids
            assert batch["token_type_ids"][row, :n].tolist() == want.type_ids
            assert batch["input_ids"][row, n:].eq(tok.pad_id).all() and batch["token_type_ids"][row, n:].eq(0).all()
    sst = load_datasets(data, tok, splits=("train",))["train"]["sst"]
    with pytest.raises(ValueError, match="pairs"):
        sst.collate([0], joint=True)
    with pytest.raises(ValueError, match="pairs"):
        sst.batches(4, joint=True)


@pytest.mark.parametrize("joint", [False, True])
def test_swap_reads_the_chosen_pairs_the_other_way_round(data, tok, joint):
    """collate(swap=...) (train --random-pair-order) reads the pairs marked True as (s2, s1),
    the others as they are; swapped() (evaluation's both_orders) reads them all so."""
    ds = load_datasets(data, tok, splits=("train",))["train"]["para"]
    idx, swap = [3, 0, 5, 1], [True, False, False, True]
    got = ds.collate(idx, joint=joint, swap=swap)
    for j, (i, flipped) in enumerate(zip(idx, swap)):
        alone = (ds.swapped() if flipped else ds).collate([i], joint=joint)  # that pair, read as asked
        for row, want in zip([j] if joint else [j, j + len(idx)], range(2)):  # joint: one row; else 2
            n = int(alone["attention_mask"][want].sum())
            assert int(got["attention_mask"][row].sum()) == n
            for key in ("input_ids", "token_type_ids") if joint else ("input_ids",):
                assert got[key][row, :n].tolist() == alone[key][want, :n].tolist()
    assert ds.swapped().ids[0][3] == ds.ids[1][3] and torch.equal(got["labels"], ds.labels[idx])
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert same(ds.collate(idx, joint=joint, swap=[False] * 4), ds.collate(idx, joint=joint))
    assert same(ds.collate(idx, joint=joint, swap=[True] * 4), ds.swapped().collate(idx, joint=joint))
    assert not same(got, ds.collate(idx, joint=joint))
    sst = load_datasets(data, tok, splits=("train",))["train"]["sst"]
    with pytest.raises(ValueError, match="pairs"):
        sst.collate([0], swap=[True])
    with pytest.raises(ValueError, match="pairs"):
        sst.swapped()


def test_each_distinct_sentence_tokenized_once(data, tok):
    calls = []

    class Counting:
        pad_id = tok.pad_id

        def encode(self, text, max_length=None):
            calls.append(text)
            return tok.encode(text, max_length=max_length)

    ex = load_sst(data / "ids-sst-train.csv")
    TaskDataset("sst", ex + ex, Counting())
    assert len(calls) == len({e.texts[0] for e in ex})


@pytest.mark.parametrize("joint", [False, True])
def test_batches_cover_everything_once_with_little_padding(data, tok, joint):
    ds = load_datasets(data, tok, splits=("train",))["train"]["sts"]
    batches = ds.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0), joint=joint)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    # the lengths it buckets by are the collated ones: real tokens per row of collate(idx, joint)
    lengths = ds.padded_lengths(joint)
    for b in batches:
        real = ds.collate(b, joint=joint)["attention_mask"].sum(1).tolist()  # (B,) or (2B,): s1 rows, then s2
        padded = real if joint else [max(a, c) for a, c in zip(real[:len(b)], real[len(b):])]
        assert [lengths[i] for i in b] == padded
    assert real_token_fraction(batches, lengths) > 0.8


def test_real_files(data_path):
    with pytest.warns(UserWarning, match="quora-dev.csv: skipped 1 malformed row"):
        assert len(load_quora(data_path / "quora-dev.csv")) == 3999
    assert len(read_examples(data_path / "ids-sst-test-student.csv", "sst")) == 2210
    assert len(load_sts(data_path / "sts-dev.csv")) == 863
