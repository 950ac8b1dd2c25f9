"""The three tasks' data: CS224N-format CSVs -> tokenized datasets -> padded batches.

    ids-sst-*.csv     id, sentence, sentiment         SST-5 sentiment, labels 0..4
    ids-cfimdb-*.csv  id, sentence, sentiment         CFIMDB polarity, labels 0/1
    quora-*.csv       id, sentence1, sentence2, is_duplicate    paraphrase, 0.0/1.0
    sts-*.csv         id, sentence1, sentence2, similarity      similarity, 0.0..5.0
    *-test-student.csv  the same without the label column

The files are tab-separated with a header; the first, unnamed column is a row index we
ignore (the test-student files even have two). Text fields may be quoted, so we read them
with the csv module, never with str.split.

Real files are dirty: a row whose label is missing or not a number is skipped, and one
warning per file counts them (skipping is safer than guessing a label).

Tokenization happens once per dataset, and once per distinct sentence (Quora repeats
many). Sentence pairs are encoded as two separate sentences, not as one "[CLS] a [SEP] b
[SEP]" sequence: the paper's paraphrase and similarity heads compare two mean-pooled
sentence embeddings (section 4.2, a siamese encoder as in Sentence-BERT [5]). A pair batch
stacks the B first sentences and the B second sentences into ONE (2B, T) batch, so the
encoder runs once per step; the model splits the output in two halves. The cross-encoder
heads (beyond the paper, `--para-input cross`) read the joined sequence instead: for them
`collate(joint=True)` builds B rows of "[CLS] a [SEP] b [SEP]" with segment ids 0 then 1.
"""

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from minibert.batching import bucketed_batches, join_pair, pad_batch
from minibert.errors import InputError

TASKS = ("sst", "para", "sts")

# task -> (file prefix, text columns, label column, label kind)
FORMATS = {
    "sst": ("ids-sst", ("sentence",), "sentiment", "class"),
    "cfimdb": ("ids-cfimdb", ("sentence",), "sentiment", "class"),
    "para": ("quora", ("sentence1", "sentence2"), "is_duplicate", "binary"),
    "sts": ("sts", ("sentence1", "sentence2"), "similarity", "score"),
}
NUM_CLASSES = {"sst": 5, "cfimdb": 2}
SPLITS = ("train", "dev", "test")  # test = the unlabelled *-test-student.csv files


class DataError(InputError):
    """A data file or folder that cannot be used; the message names the file."""


def file_name(task: str, split: str) -> str:
    prefix = FORMATS[task][0]
    return f"{prefix}-{'test-student' if split == 'test' else split}.csv"


def missing_data_message(folder) -> str:
    lines = [f"data folder {folder} is missing files. It needs the CS224N multitask CSVs "
             "(tab-separated, see data/README.md):"]
    for task in ("sst", "para", "sts", "cfimdb"):
        lines.append("  " + ", ".join(file_name(task, s) for s in ("train", "dev")))
    lines.append("and, for test predictions where they exist, the *-test-student.csv files.")
    lines.append("Point --data-dir (or $MINIBERT_DATA) at that folder, "
                 "or link it: ln -s ../shared/data data")
    return "\n".join(lines)


def check_data_dir(folder, tasks=TASKS, splits=("train", "dev")) -> Path:
    """Fail early, listing which files go where, if the data folder lacks any needed file.
    (Test files are optional: this project's data has no quora-test-student.csv.)"""
    folder = Path(folder)
    missing = [file_name(t, s) for t in tasks for s in splits if not (folder / file_name(t, s)).is_file()]
    if missing:
        raise DataError(missing_data_message(folder) + f"\nMissing: {', '.join(missing)}")
    return folder


# ---- reading examples ---------------------------------------------------------------------


@dataclass
class Example:
    """One row: its id, one or two sentences, and its label (None in a test file)."""

    id: str
    texts: tuple  # (sentence,) or (sentence1, sentence2)
    label: float = None  # class index (as a float holding an int), 0/1, or a 0..5 score


def _parse_label(raw, kind, num_classes):
    """The label as a number, or None if it is missing or out of range."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if kind == "class":
        ok = value.is_integer() and 0 <= value < num_classes
    elif kind == "binary":
        ok = value in (0.0, 1.0)
    else:
        ok = 0.0 <= value <= 5.0
    return value if ok else None


def read_examples(path, task: str, labelled=None, allow_empty=False) -> list:
    """Read one CSV of `task` ("sst", "cfimdb", "para", "sts"). labelled: True, False, None
    (labelled unless the file name says test-student) or "header" (labelled if the header has
    the label column: `predict` reads any CSV). Malformed rows are skipped with one warning;
    a file with no usable row is an error, unless allow_empty."""
    path = Path(path)
    _, text_cols, label_col, kind = FORMATS[task]
    if labelled is None:
        labelled = "test-student" not in path.name

    def expected(with_label) -> tuple:
        return ("id", *text_cols) + ((label_col,) if with_label else ())

    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {what} (a {task} file with columns {', '.join(expected(labelled is True))})")
    examples, skipped = [], 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        if labelled == "header":
            labelled = label_col in columns
        if not set(expected(labelled)) <= set(columns):
            raise DataError(f"{path}: wrong header {columns}: expected tab-separated columns "
                            f"{', '.join(expected(labelled))} (after an unnamed index column)")
        for row in reader:
            texts = tuple((row.get(c) or "").strip() for c in text_cols)
            label = _parse_label(row.get(label_col), kind, NUM_CLASSES.get(task)) if labelled else None
            if not row.get("id") or not all(texts) or (labelled and label is None):
                skipped += 1
                continue
            examples.append(Example(row["id"], texts, label))
    why = f"empty or invalid {label_col if labelled else 'text'} field"
    if not examples and not allow_empty:  # nothing to train on, score or predict: say so here
        raise DataError(f"{path}: no usable rows" + (f" (all {skipped} malformed: {why})" if skipped
                                                     else ", only the header"))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed row(s) ({why})", stacklevel=3)
    return examples


def duplicate_closure(examples) -> list:
    """The paraphrase pairs that labelled ones imply, not labelled already (beyond the paper:
    data augmentation for `train --para-closure`). "Is a duplicate of" is an equivalence, so
    questions linked by duplicate pairs form groups (union-find), every two questions of a group
    are duplicates, and a non-duplicate pair (a, c) makes each question of a's group a
    non-duplicate of each of c's. A group that a non-duplicate pair splits (labels that
    contradict each other) implies nothing. Ids are "closure-N", in a fixed order."""
    parent = {}

    def root(q):
        parent.setdefault(q, q)
        while parent[q] != q:
            parent[q] = parent[parent[q]]  # path halving
            q = parent[q]
        return q

    for e in examples:
        a, b = root(e.texts[0]), root(e.texts[1])
        if e.label == 1.0:
            parent[a] = b
    groups = {}  # root -> its questions, in order of first appearance
    for q in parent:
        groups.setdefault(root(q), []).append(q)
    split = {root(e.texts[0]) for e in examples if e.label == 0.0 and root(e.texts[0]) == root(e.texts[1])}
    if split:
        warnings.warn(f"{len(split)} duplicate group(s) hold a non-duplicate pair; they imply no pairs",
                      stacklevel=2)
    seen = {frozenset(e.texts) for e in examples}
    implied = []

    def add(a, b, label):
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            implied.append(Example(f"closure-{len(implied)}", (a, b), label))

    for r, members in groups.items():
        if r not in split:
            for i, a in enumerate(members):
                for b in members[i + 1:]:
                    add(a, b, 1.0)
    for e in examples:
        ra, rc = root(e.texts[0]), root(e.texts[1])
        if e.label == 0.0 and ra != rc and ra not in split and rc not in split:
            for a in groups[ra]:
                for c in groups[rc]:
                    add(a, c, 0.0)
    return implied


def task_sentences(folder, tasks=TASKS, split: str = "train") -> list:
    """Every sentence of the tasks' files of one split, in file order (both sides of pairs):
    the text the benchmarks tokenize and encode."""
    folder = Path(folder)
    check_data_dir(folder, tasks, (split,))
    return [text for task in tasks for ex in read_examples(folder / file_name(task, split), task)
            for text in ex.texts]


def load_sst(path):
    return read_examples(path, "sst")


def load_cfimdb(path):
    return read_examples(path, "cfimdb")


def load_quora(path):
    return read_examples(path, "para")


def load_sts(path):
    return read_examples(path, "sts")


# ---- tokenized datasets and batches ---------------------------------------------------------


class TaskDataset:
    """A task split, tokenized once: `ids[k][i]` is the token ids of sentence k of example i.

    `batches()` cuts it into length-bucketed batches of example indices and `collate()`
    turns one batch into tensors:
      single sentences: input_ids, attention_mask (B, T), labels (B,)
      pairs:            input_ids, attention_mask (2B, T): rows 0..B-1 the first sentences,
                        rows B..2B-1 the second ones, labels (B,)
      pairs, joint=True: input_ids, attention_mask, token_type_ids (B, T) of
                        [CLS] s1 [SEP] s2 [SEP] rows, labels (B,)
    """

    def __init__(self, task, examples, tokenizer, max_length=128):
        self.task = task
        self.example_ids = [e.id for e in examples]
        self.n_sentences = len(examples[0].texts) if examples else len(FORMATS[task][1])
        self.pad_id = tokenizer.pad_id
        cache = {}  # sentence -> ids: each distinct sentence is tokenized once

        def encode(text):
            if text not in cache:
                cache[text] = tokenizer.encode(text, max_length=max_length)
            return cache[text]

        self.ids = [[encode(e.texts[k]) for e in examples] for k in range(self.n_sentences)]
        self.labelled = bool(examples) and examples[0].label is not None
        dtype = torch.long if FORMATS[task][3] == "class" else torch.float
        self.labels = torch.tensor([e.label for e in examples], dtype=dtype) if self.labelled else None
        # a pair batch is as long as its longest sentence, so bucket pairs by the longer one
        self.lengths = [max(len(s[i]) for s in self.ids) for i in range(len(self))]

    def __len__(self):
        return len(self.example_ids)

    def padded_lengths(self, joint=False) -> list:
        """Each example's length in a batch, as collate(idx, joint) lays it out: joined pairs
        are as long as the two together. (Evaluation buckets joined pairs by that; training
        keeps `lengths`, see train.epoch_plan.)"""
        if not joint:
            return self.lengths
        if self.n_sentences != 2:
            raise ValueError(f"{self.task}: joint=True needs sentence pairs")
        return [len(join_pair(a, b)[0]) for a, b in zip(*self.ids)]

    def batches(self, batch_size, shuffle=False, generator=None, joint=False) -> list:
        """Index batches of examples of similar length (little padding) for collate(idx, joint)."""
        return bucketed_batches(self.padded_lengths(joint), batch_size, shuffle=shuffle, generator=generator)

    def collate(self, indices, joint=False, swap=None) -> dict:
        """Tensors of the examples `indices` (see the class docstring). `swap`: pairs only, one
        bool per example, True to read that pair the other way round, (s2, s1) (training with
        a random pair order, train --random-pair-order)."""
        if (joint or swap is not None) and self.n_sentences != 2:
            raise ValueError(f"{self.task}: joint=True and swap need sentence pairs")
        flip = list(swap) if swap is not None else [False] * len(indices)

        def side(k, j):  # sentence k (0 or 1) of the batch's j-th pair, as it is to be read
            return self.ids[1 - k if flip[j] else k][indices[j]]

        B = len(indices)
        if joint:  # pairs joined into one sequence each (the cross-encoder's input)
            ids, types = zip(*(join_pair(side(0, j), side(1, j)) for j in range(B)))
            batch = pad_batch(ids, types, pad_id=self.pad_id)  # (B, T) with token types
        else:
            rows = [side(k, j) for k in range(self.n_sentences) for j in range(B)]
            batch = pad_batch(rows, pad_id=self.pad_id)  # (n_sentences * B, T)
            del batch["token_type_ids"]  # all zeros: every row is a single sentence
        if self.labelled:
            batch["labels"] = self.labels[indices]  # (B,)
        return batch

    def _view(self, **changes) -> "TaskDataset":
        """A copy sharing this one's tokens, with some attributes replaced."""
        out = object.__new__(TaskDataset)
        out.__dict__.update(self.__dict__, **changes)
        return out

    def subset(self, n, seed=0) -> "TaskDataset":
        """A random subset of n examples (all if n is None or larger): for quick runs."""
        if n is None or n >= len(self):
            return self
        keep = sorted(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].tolist())
        return self._view(example_ids=[self.example_ids[i] for i in keep], ids=[[s[i] for i in keep] for s in self.ids],
                          labels=self.labels[keep] if self.labelled else None,
                          lengths=[self.lengths[i] for i in keep])

    def swapped(self) -> "TaskDataset":
        """The same pairs read the other way round, (s2, s1), same ids and labels. Paraphrase
        and similarity are symmetric, but a head may not be (a cross-encoder reads s1 first;
        the siamese paraphrase head's features are [s1', s2', ...]): evaluation can ask both
        ways and average (evaluate.predict_dataset, both_orders). `lengths` (the longer
        sentence) and joined lengths do not change, so the batches are the same."""
        if self.n_sentences != 2:
            raise ValueError(f"{self.task}: swapped() needs sentence pairs")
        return self._view(ids=self.ids[::-1])


def load_datasets(folder, tokenizer, tasks=TASKS, splits=SPLITS, limit=None, max_length=128,
                  seed=0, para_closure=False) -> dict:
    """{split: {task: TaskDataset}} for every task and split whose file exists (train and
    dev must); `limit` keeps a random subset of at most `limit` examples per task and split
    (quick runs, tests); `para_closure` adds the pairs that Quora train's labels imply
    (duplicate_closure) to its train split, before `limit` draws its subset from them all."""
    folder = check_data_dir(folder, tasks, [s for s in splits if s != "test"])
    data = {}
    for split in splits:
        data[split] = {}
        for task in tasks:
            path = folder / file_name(task, split)
            if not path.is_file():
                continue
            # the test files are optional: one without a usable row is left out, as a missing one
            examples = read_examples(path, task, allow_empty=split == "test")
            if not examples:
                warnings.warn(f"{path}: no usable rows; no {task} test predictions", stacklevel=2)
                continue
            if para_closure and (split, task) == ("train", "para"):
                examples = examples + duplicate_closure(examples)
            data[split][task] = TaskDataset(task, examples, tokenizer, max_length).subset(limit, seed)
    return data
