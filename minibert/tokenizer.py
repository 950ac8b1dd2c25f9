"""WordPiece tokenization, exactly as BERT does it.

BERT never sees characters: it sees ids into a fixed vocabulary of ~30k "word pieces"
(Devlin et al. 2019, Sec. 3, "Input/Output Representations"; WordPiece is from Wu et al.
2016). Turning text into ids takes three steps, each a plain function below:

1. normalize(text)    clean the text (drop NUL, U+FFFD and control characters, map every
                      whitespace character to " "), put spaces around CJK ideographs, and,
                      for an uncased vocabulary, strip accents (NFD, then drop the
                      non-spacing marks) and lower-case.
                      "Héllo,\tWORLD 中文" -> "hello, world  中  文 "
2. pre_tokenize(text) split on whitespace, and split every punctuation character off as
                      its own word.                  -> ["hello", ",", "world", "中", "文"]
3. wordpiece(word)    cut each word greedily into the longest pieces found in the
                      vocabulary; a piece that continues a word is spelled "##piece".
                      "unaffable" -> ["una", "##ffa", "##ble"]; no match -> ["[UNK]"]

Then `WordPieceTokenizer` adds the special tokens BERT was pretrained with:

    single sentence:  [CLS] A [SEP]              token_type_ids 0 ... 0
    sentence pair:    [CLS] A [SEP] B [SEP]      token_type_ids 0 ... 0 1 ... 1

truncates (longest-first for pairs), pads, and returns torch tensors for a batch.

Reference path and fast path. The three functions above are the readable definition.
`WordPieceTokenizer` gives the same ids much faster, because text repeats its words (the
46k train sentences hold ~900k words but only ~54k distinct ones): it splits the raw text on whitespace once (`str.split`, in C)
and looks every whitespace-separated chunk up in a dict that caches the ids the reference
path computed for it the first time. checks/test_tokenizer.py proves both paths equal.

Exactness. The ids match the Hugging Face `tokenizers` (Rust) BERT tokenizer, including
its corners, which differ slightly from Google's original Python code:
  - a character is a control character (dropped) if its category is Cc, Cf, Co or Cs;
    unassigned code points (Cn) are kept, as the Rust normalizer keeps them;
  - accents are stripped before lower-casing, and lower-casing is per character (no
    Greek final-sigma rule: "ΟΔΟΣ" -> "οδοσ", where str.lower() would give "οδος");
  - the CJK Extension E block starts at U+2B920 as in the Rust code (Google: U+2B820);
  - special tokens written in the text ("[MASK]", "[SEP]", ...) are recognised as such.
  - the Unicode tables are the reference's: Python's `unicodedata` (Unicode 14.0 in Python
    3.11) is newer than the category tables compiled into the Rust crates, so `category`
    overrides the 503 code points assigned or re-categorised in between (marks such as
    U+07FD, punctuation such as U+2E43-U+2E5D, mostly historic scripts).
That table, and so the exact match, holds on Python 3.11's Unicode 14.0; other versions may
differ on characters assigned or recategorised since, and checks/test_tokenizer.py's
every-code-point check is skipped there.
"""

import unicodedata
from pathlib import Path

import regex
import torch
from tqdm import tqdm

from minibert.errors import WeightsError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"  # prefix of a piece that continues a word
MAX_WORD_CHARS = 100  # a longer word is [UNK] without trying (BERT's max_input_chars_per_word)


# ----------------------------------------------------------------------------------------
# Character classes (the reference definitions)

# Code points whose category differs between Python 3.11's Unicode 14 tables and the older
# tables of the Rust tokenizer we must equal: characters assigned since (mostly marks Mn and
# punctuation Po of Unicode 10-14), which the reference treats as unassigned (Cn), and
# three characters re-categorised since (below). Found by comparing every code point
# (checks/test_tokenizer.py::test_every_code_point). Pinned to Unicode 14.0: on another
# Python the unicodedata tables differ, ids may differ for characters assigned or
# recategorised since, and that check is skipped.
UNICODE_VERSION_GAPS = [
    (0x61D,), (0x7FD,), (0x890, 0x891), (0x898, 0x89F), (0x8CA, 0x8E2), (0x9FD, 0x9FE), (0xA76,),
    (0xAFA, 0xAFF), (0xB55,), (0xC04,), (0xC3C,), (0xC77,), (0xC84,), (0xD00,), (0xD3B, 0xD3C),
    (0xD81,), (0xEBA,), (0x166D,), (0x1734,), (0x180F,), (0x1885, 0x1886), (0x1ABF, 0x1ACE),
    (0x1B7D, 0x1B7E), (0x1DF6, 0x1DFB), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0xA82C,), (0xA8C5,),
    (0xA8FF,), (0xA9BD,), (0x10D24, 0x10D27), (0x10EAB, 0x10EAD), (0x10F46, 0x10F50),
    (0x10F55, 0x10F59), (0x10F82, 0x10F89), (0x11070,), (0x11073, 0x11074), (0x110C2,), (0x110CD,),
    (0x111C9,), (0x111CF,), (0x1123E,), (0x1133B,), (0x11438, 0x1143F), (0x11442, 0x11444),
    (0x11446,), (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D, 0x1145E), (0x11660, 0x1166C),
    (0x116B9,), (0x1182F, 0x11837), (0x11839, 0x1183B), (0x1193B, 0x1193C), (0x1193E,),
    (0x11943, 0x11946), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0,), (0x119E2,),
    (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A47), (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A9C), (0x11A9E, 0x11AA2),
    (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F,), (0x11C41, 0x11C45), (0x11C70, 0x11C71),
    (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6),
    (0x11D31, 0x11D36), (0x11D3A,), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47,),
    (0x11D90, 0x11D91), (0x11D95,), (0x11D97,), (0x11EF3, 0x11EF4), (0x11EF7, 0x11EF8), (0x11FFF,),
    (0x12FF1, 0x12FF2), (0x13430, 0x13438), (0x16E97, 0x16E9A), (0x16F4F,), (0x16FE2,), (0x16FE4,),
    (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021), (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE,),
    (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A), (0x1E95E, 0x1E95F),]
REFERENCE_CATEGORY = {cp: "Cn" for r in UNICODE_VERSION_GAPS for cp in range(r[0], r[-1] + 1)}
REFERENCE_CATEGORY[0x1734] = "Mn"  # Mc since Unicode 14
REFERENCE_CATEGORY[0x166D] = "Po"  # CANADIAN SYLLABICS CHI SIGN, So since Unicode 12
REFERENCE_CATEGORY[0x111C9] = "Po"  # SHARADA SANDHI MARK, Mn since Unicode 10


def category(ch: str) -> str:
    """unicodedata.category as the reference tokenizer's Unicode tables give it (exactly on
    Python 3.11's Unicode 14.0; see UNICODE_VERSION_GAPS)."""
    return REFERENCE_CATEGORY.get(ord(ch)) or unicodedata.category(ch)



def is_control(ch: str) -> bool:
    """Control characters are dropped. \\t \\n \\r are technically controls too, but BERT
    treats them as whitespace. Unassigned code points (Cn) are kept (see the docstring)."""
    if ch in "\t\n\r":
        return False
    return category(ch) in ("Cc", "Cf", "Co", "Cs")


def is_whitespace(ch: str) -> bool:
    """Unicode White_Space: \\t \\n \\r and the separators (Zs, Zl, Zp). The other
    White_Space characters (\\v \\f U+0085) are controls, dropped before this is asked."""
    return ch in " \t\n\r" or category(ch) in ("Zs", "Zl", "Zp")


def is_punctuation(ch: str) -> bool:
    """All ASCII non-alphanumerics count ("$", "+", "^", "`" are symbols, not punctuation,
    in Unicode, but BERT splits them off too), plus every Unicode P* category."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return category(ch).startswith("P")


def is_cjk(ch: str) -> bool:
    """CJK Unified Ideographs. These are written without spaces between words, so BERT
    treats each one as a word of its own. Hangul, Hiragana and Katakana are not included:
    they are written with spaces like Latin script. Ranges as in the Rust tokenizer."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0x20000 <= cp <= 0x2A6DF  # Extension B
        or 0x2A700 <= cp <= 0x2B73F  # Extension C
        or 0x2B740 <= cp <= 0x2B81F  # Extension D
        or 0x2B920 <= cp <= 0x2CEAF  # Extension E (Google's BERT: from 0x2B820)
        or 0xF900 <= cp <= 0xFAFF  # Compatibility Ideographs
        or 0x2F800 <= cp <= 0x2FA1F  # Compatibility Ideographs Supplement
    )


# ----------------------------------------------------------------------------------------
# The reference path: normalize -> pre_tokenize -> wordpiece


def clean(text: str) -> str:
    """Drop NUL, U+FFFD (the "replacement character" left by bad decoding) and control
    characters; map every whitespace character to a plain space."""
    # BEGIN SOLUTION
    out = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)
    # END SOLUTION


def strip_accents(text: str) -> str:
    """NFD splits "é" into "e" + U+0301 (a combining accent, category Mn); drop the Mn."""
    # BEGIN SOLUTION
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if category(ch) != "Mn")
    # END SOLUTION


def normalize(text: str, lowercase: bool = True, strip_accents_: bool | None = None) -> str:
    """Step 1. Accents are stripped when lower-casing unless strip_accents_ says otherwise
    (an uncased vocabulary has neither capitals nor accents)."""
    # BEGIN SOLUTION
    text = clean(text)
    text = "".join(f" {ch} " if is_cjk(ch) else ch for ch in text)
    should_strip = lowercase if strip_accents_ is None else strip_accents_
    if should_strip:
        text = strip_accents(text)
    if lowercase:
        # per character, as the Rust tokenizer does: str.lower() on the whole string would
        # apply the Greek final-sigma rule, which depends on the neighbouring characters
        text = "".join(ch.lower() for ch in text)
    return text
    # END SOLUTION


def pre_tokenize(text: str) -> list[str]:
    """Step 2: whitespace separates words and is dropped; each punctuation character
    becomes a word of its own. "don't!" -> ["don", "'", "t", "!"]."""
    # BEGIN SOLUTION
    words, current = [], []
    for ch in text:
        if is_whitespace(ch) or is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            if not is_whitespace(ch):
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words
    # END SOLUTION


def wordpiece(word: str, vocab, max_piece_chars: int = MAX_WORD_CHARS) -> list[str]:
    """Step 3: greedy longest-match-first. Take the longest prefix of the word that is in
    the vocabulary, then the longest "##"-prefixed piece of the rest, and so on. If some
    rest has no piece at all the whole word becomes [UNK] (not a partial match).
    max_piece_chars (the longest vocabulary entry) only saves trying longer candidates."""
    # BEGIN SOLUTION
    if len(word) > MAX_WORD_CHARS:
        return [UNK]
    pieces, start = [], 0
    while start < len(word):
        prefix = CONTINUATION if start > 0 else ""
        for end in range(min(len(word), start + max_piece_chars), start, -1):
            piece = prefix + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:  # no piece of the rest is in the vocabulary
            return [UNK]
    return pieces
    # END SOLUTION


def load_vocab(path) -> list[str]:
    """vocab.txt: one token per line, the line number is the id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no vocabulary file at {path}: expected a BERT vocab.txt (one token per line), "
            "e.g. weights/all-MiniLM-L6-v2/vocab.txt from `python -m minibert fetch-weights`"
        )
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


# ----------------------------------------------------------------------------------------
# The tokenizer: special tokens, truncation, padding, batches, and the fast path


# a run of ASCII non-punctuation, or one ASCII punctuation character (33-47, 58-64, 91-96,
# 123-126); for chunks of raw text that hold no whitespace and no control characters
_ASCII_WORDS = regex.compile(r"[^!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


def _check_str(text, what="text"):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}: {text!r:.60}")


class WordPieceTokenizer:
    """ids = tok.encode("A sentence.")                   [CLS] a sentence . [SEP]
    ids, type_ids = tok.encode_plus("A", "B")            [CLS] a [SEP] b [SEP], 0 0 0 1 1
    batch = tok(["A", "B c"], max_length=128)            dict of (B, T) LongTensors
    """

    def __init__(self, tokens: list[str], lowercase: bool = True, strip_accents: bool | None = None):
        self.ids_to_tokens = list(tokens)
        self.vocab = {token: i for i, token in enumerate(self.ids_to_tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}: expected a BERT vocab.txt")
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}
        # for whole-word masking: does this id continue the word before it?
        self.is_continuation = torch.tensor([t.startswith(CONTINUATION) for t in self.ids_to_tokens])  # (V,)
        self.max_piece_chars = max(len(t) for t in self.ids_to_tokens)
        # special tokens typed in the text are kept whole, before any normalization
        self._special_split = regex.compile("(" + "|".join(regex.escape(t) for t in SPECIAL_TOKENS) + ")")
        self._cache = {}  # raw whitespace-separated chunk -> its ids (the fast path)

    @classmethod
    def from_vocab(cls, path, lowercase: bool = True, strip_accents: bool | None = None):
        """lowercase=True for an uncased vocabulary (bert-base-uncased, all-MiniLM-L6-v2)."""
        try:
            return cls(load_vocab(path), lowercase=lowercase, strip_accents=strip_accents)
        except ValueError as e:  # a vocab.txt without the special tokens: name the file
            raise WeightsError(f"{path}: {e}") from None

    def clear_cache(self):
        """Forget the cached chunks (the cache grows with the distinct chunks seen: about
        54k, a few MB, for all the train sentences)."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    # -- text -> pieces ------------------------------------------------------------------

    def tokenize_reference(self, text: str) -> list[str]:
        """The readable path: normalize -> pre_tokenize -> wordpiece, character by character."""
        _check_str(text)
        pieces = []
        for segment in self._special_split.split(text):
            if segment in SPECIAL_TOKENS:
                pieces.append(segment)
                continue
            for word in pre_tokenize(normalize(segment, self.lowercase, self.strip_accents)):
                pieces += wordpiece(word, self.vocab, self.max_piece_chars)
        return pieces

    def _chunk_ids(self, chunk: str) -> list[int]:
        """A cache miss: the reference path on one whitespace-free chunk of raw text, or,
        for pure ASCII (nearly all English), one precompiled regex that does the same:
        ASCII has no accents, no CJK, and only the 32 ASCII punctuation characters."""
        if chunk.isascii():
            words = _ASCII_WORDS.findall(chunk.lower() if self.lowercase else chunk)
        else:
            words = pre_tokenize(normalize(chunk, self.lowercase, self.strip_accents))
        ids = [self.vocab[p] for w in words for p in wordpiece(w, self.vocab, self.max_piece_chars)]
        self._cache[chunk] = ids
        return ids

    def _ids(self, text: str) -> list[int]:
        """The fast path, same ids as tokenize_reference. Normalization never looks across
        a whitespace character (NFD, lower-casing, CJK spacing are per character), so the
        raw text can be split on whitespace first and each chunk looked up in the cache.
        Only control characters must go first: "a\\x1cb" is one word "ab" for BERT, but
        str.split() would cut it at \\x1c."""
        if "[" in text:  # possibly a special token typed in the text: do segments apart
            ids = []
            for segment in self._special_split.split(text):
                ids += [self.vocab[segment]] if segment in SPECIAL_TOKENS else self._ids_plain(segment)
            return ids
        return self._ids_plain(text)

    def _ids_plain(self, text: str) -> list[int]:
        # isprintable() is False for any control, and for any whitespace except " "; both
        # are rare, so the common case skips the per-character clean() entirely
        if not text.isprintable() or "\ufffd" in text:
            text = "".join(ch for ch in text if not (ch == "\x00" or ch == "\ufffd" or is_control(ch)))
        cache, ids = self._cache, []
        for chunk in text.split():  # str.split() splits on exactly BERT's whitespace now
            chunk_ids = cache.get(chunk)
            ids += chunk_ids if chunk_ids is not None else self._chunk_ids(chunk)
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Text -> word pieces, without special tokens. "Hello!" -> ["hello", "!"]."""
        _check_str(text)
        return [self.ids_to_tokens[i] for i in self._ids(text)]

    # -- pieces -> model input -----------------------------------------------------------

    def _truncate(self, a: list[int], b: list[int] | None, max_length: int | None):
        """Cut the content to fit max_length together with the special tokens (budget =
        max_length - 2 for one sentence, - 3 for a pair). A single sentence keeps its first
        `budget` ids. A pair that fits is left alone; otherwise, if the shorter side fits in
        half the budget (2 * shorter <= budget) it is kept whole and the longer side gets the
        rest, else each side gets budget // 2 and the odd token, if any, goes to the longer
        side (to B when they are the same length). Each side keeps its first ids.
        This is the rule of the Hugging Face tokenizers library. max_length None: no cut.
        A max_length too small for the special tokens alone (under 2, or 3 for a pair) raises
        ValueError("max_length must be at least N for the special tokens, got M")."""
        # BEGIN SOLUTION
        if max_length is None:
            return a, b
        budget = max_length - (2 if b is None else 3)  # [CLS] A [SEP] (B [SEP])
        if budget < 0:
            raise ValueError(f"max_length must be at least {max_length - budget} for the special tokens, got {max_length}")
        if b is None:
            return a[:budget], None
        if len(a) + len(b) <= budget:
            return a, b
        n_short, n_long = sorted((len(a), len(b)))
        if 2 * n_short <= budget:  # the shorter fits in half the budget: keep it whole
            n_long = budget - n_short
        else:  # both exceed half: half each, the odd token to the longer (on a tie: to B)
            n_short, n_long = budget // 2, budget - budget // 2
        n_a, n_b = (n_long, n_short) if len(a) > len(b) else (n_short, n_long)
        return a[:n_a], b[:n_b]
        # END SOLUTION

    def encode_plus(self, text: str, pair: str | None = None, max_length: int | None = None):
        """-> (input_ids, token_type_ids), both lists of ints, with [CLS] and [SEP] added.
        token_type 0 marks sentence A (and its [CLS] and [SEP]), 1 marks sentence B."""
        _check_str(text)
        if pair is not None:
            _check_str(pair, "pair")
        a, b = self._truncate(self._ids(text), None if pair is None else self._ids(pair), max_length)
        ids = [self.cls_id, *a, self.sep_id]
        type_ids = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            type_ids += [1] * (len(b) + 1)
        return ids, type_ids

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None) -> list[int]:
        """-> input ids with [CLS] and [SEP]; see encode_plus for the token types."""
        return self.encode_plus(text, pair, max_length)[0]

    def encode_batch(self, texts, pairs=None, max_length: int | None = None, progress: bool = False) -> list[list[int]]:
        """Many texts (or pairs) -> lists of ids, unpadded: for tokenizing a dataset once."""
        texts, pairs = self._check_batch(texts, pairs)
        items = zip(texts, pairs) if pairs is not None else ((t, None) for t in texts)
        items = tqdm(items, total=len(texts), desc="tokenizing", unit="sent", disable=not progress)
        return [self.encode_plus(t, p, max_length)[0] for t, p in items]

    @staticmethod
    def _check_batch(texts, pairs):
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):
            pairs = [pairs]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs: expected one pair per text")
        return texts, pairs

    def __call__(self, texts, pairs=None, max_length: int = 512, padding: str = "longest") -> dict:
        """A batch, ready for the model: a dict of (B, T) LongTensors input_ids,
        attention_mask (1 = real token, 0 = padding) and token_type_ids. Sequences longer
        than max_length are truncated; padding="longest" pads to the longest sequence of
        the batch, padding="max_length" to max_length."""
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs a max_length to pad to, got None")
        texts, pairs = self._check_batch(texts, pairs)
        encoded = [self.encode_plus(t, None if pairs is None else pairs[i], max_length) for i, t in enumerate(texts)]
        T = max_length if padding == "max_length" else max((len(ids) for ids, _ in encoded), default=0)
        pad = [self.pad_id] * T

        def batch_tensor(rows):  # padded Python lists -> one (B, T) tensor: much faster than row by row
            # the reshape keeps an empty batch 2-D: torch.tensor([]) alone has shape (0,)
            return torch.tensor(rows, dtype=torch.long).reshape(len(encoded), T)

        input_ids = batch_tensor([ids + pad[len(ids):] for ids, _ in encoded])  # (B, T)
        attention_mask = batch_tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids, _ in encoded])  # (B, T)
        token_type_ids = batch_tensor([types + [0] * (T - len(types)) for _, types in encoded])  # (B, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    # -- ids -> text ---------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids back to text: pieces joined by spaces, "##" continuations glued to the piece
        before, and no space before "." "," "?" "!" (the clean-up of the Hugging Face
        WordPiece decoder, kept to give the same text). Lossy by design: case and accents are gone, and "don't" comes
        back as "don ' t"."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        pieces = [self.ids_to_tokens[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        text = pieces[0] if pieces else ""  # a leading "##" piece has nothing to glue to
        for piece in pieces[1:]:
            if piece.startswith(CONTINUATION):
                text += piece[len(CONTINUATION):]
            else:
                piece = " " + piece
                for before, after in _DECODE_CLEANUP:
                    piece = piece.replace(before, after)
                text += piece
        return text


# the clean-up of the Hugging Face WordPiece decoder, applied to each " " + piece
_DECODE_CLEANUP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                   (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]
