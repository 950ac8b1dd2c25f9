"""From tokenized examples to padded batches, with little compute wasted on padding.

Sentences in this data average 17 tokens (p99 47); padding every batch to 128 would make
the encoder process ~7x more positions than there are tokens. Two cheap fixes:
- dynamic padding: pad each batch only to its own longest sequence;
- length bucketing: draw a large pool of examples, sort it by length and cut it into
  batches, so the examples of a batch have similar lengths. Batches are then shuffled, so
  training still sees a random order of batches (and within a pool, random examples).
"""

import torch


def pad_batch(input_ids, token_type_ids=None, pad_id: int = 0) -> dict:
    """list of B id lists -> {"input_ids", "attention_mask", "token_type_ids"}: (B, T) LongTensors,
    T the longest sequence in this batch."""
    B, T = len(input_ids), max(map(len, input_ids))
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    for i, seq in enumerate(input_ids):
        ids[i, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = 1
        if token_type_ids is not None:
            types[i, :len(seq)] = torch.as_tensor(token_type_ids[i], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def join_pair(ids1, ids2):
    """[CLS] s1 [SEP] and [CLS] s2 [SEP] (id lists) -> one pair sequence [CLS] s1 [SEP] s2 [SEP]
    and its token types (0 on [CLS] s1 [SEP], 1 on s2 [SEP]), as BERT's pair input."""
    ids = ids1 + ids2[1:]  # s2 without its own [CLS]
    return ids, [0] * len(ids1) + [1] * (len(ids2) - 1)


def bucketed_batches(lengths, batch_size: int, shuffle: bool = True, generator=None,
                     pool_batches: int = 50) -> list:
    """Indices 0..N-1 cut into batches of similar length.

    shuffle=False: one sort over everything (best packing; for evaluation, where order does
    not matter). shuffle=True: a random permutation, cut into pools of `pool_batches`
    batches, each pool sorted by length and cut into batches, then all batches shuffled."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    lengths = torch.as_tensor(lengths)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    pool = batch_size * pool_batches if shuffle else max(n, 1)
    batches = []
    for start in range(0, n, pool):
        chunk = order[start:start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]  # similar lengths side by side
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def real_token_fraction(batches, lengths) -> float:
    """Real tokens / positions the encoder processes (batch size x longest in batch), summed."""
    real = sum(lengths[i] for b in batches for i in b)
    processed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return real / max(processed, 1)
