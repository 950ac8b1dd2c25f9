"""Step 2: the WordPiece tokenizer, from scratch.

What it teaches: normalisation (clean, strip accents, lower-case), pre-tokenisation
(whitespace and punctuation), greedy longest-match-first WordPiece with "##" continuations,
and [CLS] ... [SEP] framing.
Where: minibert/tokenizer.py (clean, strip_accents, normalize, pre_tokenize, wordpiece, and
WordPieceTokenizer._truncate: fitting a sentence or a pair into max_length).
Graded by: checks/test_tokenizer.py (`pytest checks/ -m step02`): equal ids to the Rust
BERT tokenizer of the `tokenizers` package on random and real text.
Then tokenizes a few sentences and, if `tokenizers` is installed, compares with it: expect
"same ids as the Rust tokenizer: yes" on every line.
"""

import sys

from _common import step_main

SENTENCES = ["The movie was unbelievably good!", "Don't touch my café, naïve señor.",
             "Transformers' self-attention isn't magic: it's matrix products."]


def demo(args, rest) -> int:
    from minibert.paths import weights_dir
    from minibert.tokenizer import WordPieceTokenizer

    vocab = weights_dir() / "vocab.txt"
    tok = WordPieceTokenizer.from_vocab(vocab)
    try:
        from tokenizers import BertWordPieceTokenizer
        ref = BertWordPieceTokenizer(str(vocab), lowercase=True)
    except ImportError:
        ref = None
    same = True
    for s in SENTENCES:
        ids = tok.encode(s)
        line = f"{s!r}\n   -> {tok.tokenize(s)}"
        if ref is not None:
            ok = ids == ref.encode(s).ids
            same &= ok
            line += f"\n   same ids as the Rust tokenizer: {'yes' if ok else 'NO'}"
        print(line)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(step_main("step02", __doc__, demo=demo))
