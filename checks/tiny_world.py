"""A tiny random BERT and tiny CS224N-format CSVs, for fast CPU checks of the MT-BERT system.

The data has learnable signal: the sentiment class is given by one word, a pair is a
paraphrase when both sentences name the same animal, and the similarity is 5 times the
fraction of shared words. So every stage can lower its loss in a few steps.
"""

import random
from pathlib import Path

import torch

from minibert.config import BertConfig
from minibert.model import BertModel

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MOODS = ["awful", "bad", "fine", "good", "great"]  # class 0..4
ANIMALS = ["dog", "cat", "bird", "fish", "horse", "cow"]
WORDS = ["the", "a", "movie", "film", "was", "is", "very", "runs", "sleeps", "eats", "plays",
         "big", "small", "red", "old", "?", "."]
VOCAB = SPECIAL + MOODS + ANIMALS + WORDS


def sentence(rng, words):
    return " ".join(words + rng.sample(WORDS[:14], 3)) + " ."


def write_csv(path, header, rows, two_index_columns=False):
    """CS224N format: tab-separated, a header, an unnamed index column first (two in the
    real test-student files: a header "0<TAB><TAB>id..." and rows "1<TAB>0.0<TAB>...")."""
    lines = [("0\t" if two_index_columns else "") + "\t" + "\t".join(header)]
    lines += [(f"{i + 1}\t{float(i)}\t" if two_index_columns else f"{i}\t") + "\t".join(map(str, r))
              for i, r in enumerate(rows)]
    Path(path).write_text("\n".join(lines) + "\n")


def make_data(folder, n=(24, 12, 8), seed=0, quora_bad_row=True):
    """Write the sst, quora and sts train/dev/test-student CSVs (n examples per split)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test-student"), n):
        test = split == "test-student"
        sst, para, sts = [], [], []
        for k in range(size):
            c = rng.randrange(5)
            sst.append([f"sst{split}{k}", sentence(rng, [MOODS[c]])] + ([] if test else [c]))
            a, b = rng.choice(ANIMALS), rng.choice(ANIMALS)
            para.append([f"qq{split}{k}", sentence(rng, [a]), sentence(rng, [b])]
                        + ([] if test else [float(a == b)]))
            s1, s2 = rng.sample(WORDS[:14], 4), rng.sample(WORDS[:14], 4)
            sim = 5 * len(set(s1) & set(s2)) / 4
            sts.append([f"sts{split}{k}", " ".join(s1), " ".join(s2)] + ([] if test else [sim]))
        if split == "dev" and quora_bad_row:  # the real file's dirt: an empty label
            para.append(["qqbad", "what is a dog ?", '"what is a cat ?', ""])
        # the real test-student files have two index columns
        write_csv(folder / f"ids-sst-{split}.csv", ["id", "sentence"] + ([] if test else ["sentiment"]), sst, test)
        write_csv(folder / f"quora-{split}.csv", ["id", "sentence1", "sentence2"] + ([] if test else ["is_duplicate"]), para, test)
        write_csv(folder / f"sts-{split}.csv", ["id", "sentence1", "sentence2"] + ([] if test else ["similarity"]), sts, test)
    return folder


def add_cfimdb(folder):
    """CFIMDB-format files (binary sentiment) made from the SST ones: positive = "good" or
    "great" (classes 3, 4)."""
    from minibert.data import read_examples

    folder = Path(folder)
    for split in ("train", "dev", "test-student"):
        rows = read_examples(folder / f"ids-sst-{split}.csv", "sst")
        test = split == "test-student"
        write_csv(folder / f"ids-cfimdb-{split}.csv", ["id", "sentence"] + ([] if test else ["sentiment"]),
                  [[e.id, e.texts[0]] + ([] if test else [int(e.label >= 3)]) for e in rows], test)
    return folder


def make_weights(folder, seed=0, hidden=32, layers=2):
    """A random 2-layer BERT over VOCAB, saved in Hugging Face format with its vocab.txt."""
    folder = Path(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def make_world(root):
    """-> (weights folder, data folder) under root."""
    root = Path(root)
    return make_weights(root / "bert"), make_data(root / "data")
