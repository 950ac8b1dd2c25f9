"""`python -m minibert bench-tokenizer`: tokenizer throughput, ours next to the reference.

Tokenizes the 46,452 train sentences of SST, Quora and STS (the Quora and STS pairs count
as two sentences each) to ids with [CLS] and [SEP], no truncation, and prints sentences
per second for:

    ours, cold          a fresh WordPieceTokenizer, empty word cache (as a fresh process)
    ours, warm          the same instance again, every word cached
    transformers Python BertTokenizerLegacy (the classic pure-Python BertTokenizer)
    transformers Rust   BertTokenizer (tokenizers-backed, "BertTokenizerFast"), one batch call

The reference rows need transformers; they are left out without it. transformers is
imported only here, lazily, for those rows: the tokenizer itself never uses it. Each row is
the best of --repeats runs (a fresh tokenizer for every cold run), since on a shared
machine the best run is the least disturbed one; except the pure-Python reference, run
once: it takes seconds, and is far behind either way.
"""

import argparse
import time

from minibert.paths import data_dir, weights_dir
from minibert.tokenizer import WordPieceTokenizer

def train_sentences(folder) -> list[str]:
    """The 46,452 train sentences of SST, Quora and STS (both sides of the pairs)."""
    from minibert.data import task_sentences
    return task_sentences(folder)


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def reference_rows(vocab, sentences, repeats):
    """(name, seconds) for transformers' tokenizers on the same vocab, or [] without it."""
    try:
        from transformers.models.bert.tokenization_bert import BertTokenizer
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    except ImportError:
        return []
    python = BertTokenizerLegacy(vocab_file=str(vocab), do_lower_case=True)
    rust = BertTokenizer(vocab=str(vocab), do_lower_case=True)
    # ids only, as ours: no attention masks or token types to build
    kwargs = dict(return_attention_mask=False, return_token_type_ids=False)
    return [
        ("transformers Python BertTokenizer (one run)", best_time(lambda: python(sentences, **kwargs), 1)),
        ("transformers Rust BertTokenizerFast, batch", best_time(lambda: rust(sentences, **kwargs), repeats)),
    ]


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m minibert bench-tokenizer", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--data-dir", default=None, help="CS224N data folder (default: data/)")
    parser.add_argument("--vocab", default=None, help="vocab.txt (default: the all-MiniLM-L6-v2 weights)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best counts (default 3)")
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    args = parser.parse_args(argv)

    vocab = args.vocab or weights_dir() / "vocab.txt"
    sentences = train_sentences(data_dir(args.data_dir))
    print(f"{len(sentences):,} train sentences (SST, Quora, STS), vocab {vocab}")

    warm = WordPieceTokenizer.from_vocab(vocab)
    rows = [
        ("ours, cold cache", best_time(lambda: WordPieceTokenizer.from_vocab(vocab).encode_batch(sentences), args.repeats)),
        ("ours, warm cache", best_time(lambda: warm.encode_batch(sentences), args.repeats + 1)),  # 1st run warms
    ]
    if not args.no_reference:
        rows += reference_rows(vocab, sentences, args.repeats)

    rate = {name: len(sentences) / seconds for name, seconds in rows}
    width = max(map(len, rate))
    for name, seconds in rows:
        print(f"  {name:<{width}}  {rate[name]:>10,.0f} sentences/s  ({seconds:.2f} s)")
    rust = "transformers Rust BertTokenizerFast, batch"
    if rust in rate:
        print(f"ratio ours (cold) / Rust batch: {rate['ours, cold cache'] / rate[rust]:.2f}x"
              f", warm: {rate['ours, warm cache'] / rate[rust]:.2f}x")
    print("(cold includes loading the 30k-entry vocabulary; timings on a shared machine vary)")
    return 0
