"""BERT's MLM masking (minibert/masking.py): statistics, what is never touched, determinism,
whole words.

There is no reference implementation to compare draws with (transformers' data collator
draws its random numbers differently), so these checks test the definition: over many
tokens the fractions must be 15% selected, and of those 80% [MASK] / 10% random / 10% kept,
within tolerances of about 4 standard deviations of the binomial counts.
"""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minibert.masking import IGNORE_INDEX, mask_tokens, replacement_candidates

V = 1000
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103  # BERT's ids
SPECIAL = {PAD, UNK, CLS, SEP, MASK}
CONTINUATION = torch.zeros(V, dtype=torch.bool)
CONTINUATION[600:] = True  # ids 600..999 play the "##piece" tokens


def random_batch(seed, B, T, cont_prob=0.3):
    """[CLS] tokens [SEP] [PAD]... rows of random lengths; some tokens are [UNK] or ## pieces."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(104, 600, (B, T), generator=g)
    pieces = torch.randint(600, V, (B, T), generator=g)
    ids = torch.where(torch.rand(B, T, generator=g) < cont_prob, pieces, words)
    ids[torch.rand(B, T, generator=g) < 0.02] = UNK
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, n - 1], ids[i, n:] = CLS, SEP, PAD
    return ids


def mask(ids, seed, **kw):
    return mask_tokens(ids, special_ids=SPECIAL, mask_id=MASK, vocab_size=V,
                       generator=torch.Generator().manual_seed(seed), is_continuation=CONTINUATION, **kw)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), whole_word=st.booleans())
def test_fractions_are_15_80_10_10(seed, whole_word):
    ids = random_batch(seed, 512, 64)
    masked, labels = mask(ids, seed + 1, whole_word=whole_word)
    maskable = ~torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    selected = labels != IGNORE_INDEX
    n_sel = selected.sum().item()  # ~0.15 * 16k maskable tokens
    # the random case may draw the original token (p = 1/995): it then counts as kept
    to_mask = (masked == MASK) & selected
    to_random = (masked != MASK) & (masked != ids) & selected
    kept = (masked == ids) & selected
    assert n_sel / maskable.sum().item() == pytest.approx(0.15, abs=0.013 if whole_word else 0.012)
    assert to_mask.sum().item() / n_sel == pytest.approx(0.80, abs=0.035)
    assert to_random.sum().item() / n_sel == pytest.approx(0.10, abs=0.026)
    assert kept.sum().item() / n_sel == pytest.approx(0.10, abs=0.026)
    # the labels hold the original ids exactly where selected; nothing else changed
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 6), T=st.integers(2, 40),
       mlm_prob=st.sampled_from([0.15, 0.5, 1.0]), whole_word=st.booleans())
def test_special_and_padding_never_selected(seed, B, T, mlm_prob, whole_word):
    ids = random_batch(seed, B, T)
    masked, labels = mask(ids, seed, mlm_prob=mlm_prob, whole_word=whole_word)
    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(masked[special], ids[special])
    # random replacements are never special tokens either
    replaced = (labels != IGNORE_INDEX) & (masked != MASK)
    assert not torch.isin(masked[replaced], torch.tensor(sorted(SPECIAL - {MASK}))).any()
    if mlm_prob == 1.0:  # everything maskable is selected
        assert ((labels != IGNORE_INDEX) == ~special).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), whole_word=st.booleans())
def test_same_seed_same_masks(seed, whole_word):
    ids = random_batch(seed, 8, 32)
    a, b = mask(ids, seed, whole_word=whole_word), mask(ids, seed, whole_word=whole_word)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = mask(ids, seed + 1, whole_word=whole_word)
    assert not torch.equal(a[1], c[1])  # 8 x 32 tokens: two seeds agreeing is ~impossible


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 6), T=st.integers(2, 40),
       mlm_prob=st.sampled_from([0.15, 0.5]))
def test_whole_word_never_splits_a_word(seed, B, T, mlm_prob):
    ids = random_batch(seed, B, T, cont_prob=0.5)
    _, labels = mask(ids, seed, mlm_prob=mlm_prob, whole_word=True)
    selected = (labels != IGNORE_INDEX).tolist()
    ids = ids.tolist()
    for row, sel in zip(ids, selected):
        # walk the words: a maskable token and the ## pieces right after it
        i = 0
        while i < len(row):
            j = i + 1
            if row[i] not in SPECIAL:
                while j < len(row) and CONTINUATION[row[j]] and row[j] not in SPECIAL:
                    j += 1
                assert len(set(sel[i:j])) == 1, f"word {row[i:j]} split: selected {sel[i:j]}"
            i = j


def test_whole_word_with_real_vocab(weights_path):
    from minibert.tokenizer import WordPieceTokenizer
    tok = WordPieceTokenizer.from_vocab(weights_path / "vocab.txt")
    text = "unaffable embarking photosynthesis antidisestablishmentarianism " * 4
    ids = torch.tensor([tok.encode(text)] * 64)
    _, labels = mask_tokens(ids, special_ids=tok.special_ids, mask_id=tok.mask_id, vocab_size=len(tok),
                            generator=torch.Generator().manual_seed(0), mlm_prob=0.3, whole_word=True,
                            is_continuation=tok.is_continuation)
    sel = labels != IGNORE_INDEX
    cont = tok.is_continuation[ids]
    cont[:, 0] = False
    # every ## piece shares its predecessor's fate
    assert torch.equal(sel[:, 1:][cont[:, 1:]], sel[:, :-1][cont[:, 1:]])
    assert sel.any() and (~sel[:, 1:-1]).any()


def test_replacement_candidates_exclude_specials():
    c = replacement_candidates(V, SPECIAL)
    assert len(c) == V - len(SPECIAL) and not torch.isin(c, torch.tensor(sorted(SPECIAL))).any()


def test_bad_input_says_what_was_expected():
    ids = random_batch(0, 2, 8)
    with pytest.raises(ValueError, match="is_continuation"):
        mask_tokens(ids, special_ids=SPECIAL, mask_id=MASK, vocab_size=V,
                    generator=torch.Generator(), whole_word=True)
    with pytest.raises(ValueError, match=r"\(batch, length\) LongTensor"):
        mask(ids[0], 0)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        mask(ids + V, 0)
