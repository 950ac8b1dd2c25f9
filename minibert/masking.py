"""Masked-language-model inputs: which tokens to hide, and what to show in their place.

BERT's pretraining objective (Devlin et al. 2019, section 3.1 "Task #1: Masked LM"), which
the paper continues on the task sentences before fine-tuning (MT-BERT section 4.3):

    1. select each token that is neither special ([CLS], [SEP], [PAD], ...) nor padding
       independently with probability 15% (as transformers' DataCollatorForLanguageModeling
       does), so the number selected varies from batch to batch and can be zero;
    2. of the selected tokens, replace 80% by [MASK], 10% by a random token, keep 10% as they are;
    3. the model must predict the original token at every selected position, and nowhere else.

Why not always [MASK]? [MASK] never appears when the model is fine-tuned; the random and
kept tokens teach it that any input token may need "repairing", so its representation of
every token stays useful, not just its representation of [MASK].

    input_ids   [CLS] the  movie was  great  [SEP] [PAD]
    masked_ids  [CLS] the [MASK] was  great  [SEP] [PAD]     "movie" selected, became [MASK]
    labels      -100  -100 movie -100 -100   -100  -100      -100 = ignored by cross_entropy

Whole-word masking (Google's later BERT release) selects words, not pieces: "embark ##ing"
is selected or left as a whole, so the model cannot guess "##ing" from "embark" next to it.
The 80/10/10 choice is still made per piece, as in Google's create_pretraining_data.py.

Every random number comes from the `generator` argument, and the same numbers are drawn
whatever the content of the batch (three (B, T) draws), so the same seed and batch always
give the same masks: before/after evaluations see identical masks, and resumed runs repeat.
"""

import torch

IGNORE_INDEX = -100  # label of positions that are not predicted (F.cross_entropy's default ignore_index)


def replacement_candidates(vocab_size: int, special_ids) -> torch.Tensor:
    """The ids a selected token may be replaced by in the "random token" case: every id
    except the special ones (a random [CLS] or [PAD] in the middle of a sentence would teach
    nothing). (V - n_special,) LongTensor."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[torch.as_tensor(sorted(special_ids), dtype=torch.long)] = False
    return keep.nonzero().squeeze(1)


def word_starts(maskable: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """For whole-word masking: (B, T) index of the first piece of the word each position
    belongs to. A position starts a word unless it is a `##` continuation piece that
    follows a maskable token (a `##` piece right after [CLS] starts its own word).

    maskable, continuation: (B, T) bool. Returns (B, T) long."""
    B, T = maskable.shape
    prev_maskable = torch.cat([torch.zeros_like(maskable[:, :1]), maskable[:, :-1]], dim=1)  # (B, T)
    is_start = ~(continuation & prev_maskable)                                              # (B, T)
    pos = torch.arange(T, device=maskable.device).expand(B, T)                              # (B, T)
    # the start of my word is the last start at or before me: a running max of start positions
    return torch.where(is_start, pos, torch.zeros_like(pos)).cummax(dim=1).values          # (B, T)


def mask_tokens(input_ids: torch.Tensor, *, special_ids, mask_id: int, vocab_size: int,
                generator: torch.Generator, mlm_prob: float = 0.15, whole_word: bool = False,
                is_continuation: torch.Tensor = None, mask_frac: float = 0.8, random_frac: float = 0.1):
    """BERT's masking (see the module docstring).

    Args:
        input_ids: (B, T) LongTensor; padding must use an id in `special_ids` (e.g. [PAD]).
        special_ids: ids never selected (the tokenizer's `special_ids`: [PAD], [UNK], [CLS], [SEP], [MASK]).
        mask_id: the [MASK] id.  vocab_size: number of ids (random tokens are drawn below it).
        generator: a torch.Generator; all randomness comes from it (on its own device).
        mlm_prob: probability that a maskable token (or word, with whole_word) is selected.
        whole_word: select whole words: a token and the `##` pieces that follow it together.
        is_continuation: (V,) bool, True for `##` pieces (the tokenizer's `is_continuation`);
            needed for whole_word.
        mask_frac, random_frac: the 80% / 10% of selected tokens that become [MASK] / a
            random token; the rest (10%) keep their id.

    Returns (masked_ids, labels), both (B, T) LongTensors: masked_ids is the model's input,
    labels holds the original id at selected positions and IGNORE_INDEX everywhere else.
    """
    if input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be a (batch, length) LongTensor, got shape "
                         f"{tuple(input_ids.shape)} dtype {input_ids.dtype}")
    if not 0.0 <= mlm_prob <= 1.0 or not (0.0 <= mask_frac and 0.0 <= random_frac and mask_frac + random_frac <= 1.0):
        raise ValueError(f"expected 0 <= mlm_prob <= 1 and mask_frac + random_frac <= 1, got "
                         f"mlm_prob={mlm_prob}, mask_frac={mask_frac}, random_frac={random_frac}")
    if whole_word and is_continuation is None:
        raise ValueError("whole_word=True needs is_continuation, the (V,) bool tensor of `##` pieces "
                         "(WordPieceTokenizer.is_continuation)")
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}), got [{input_ids.min()}, {input_ids.max()}]")
    special = torch.as_tensor(sorted(special_ids), dtype=torch.long, device=input_ids.device)
    maskable = ~torch.isin(input_ids, special)  # (B, T) neither special nor padding
    continuation = is_continuation.to(input_ids.device)[input_ids] if whole_word else None  # (B, T)
    candidates = replacement_candidates(vocab_size, special_ids).to(input_ids.device)
    return select_and_replace(input_ids, maskable, continuation, candidates, mask_id, generator,
                              mlm_prob, mask_frac, random_frac)


def select_and_replace(input_ids, maskable, continuation, candidates, mask_id, generator,
                       mlm_prob, mask_frac, random_frac):
    """The core of `mask_tokens`, on checked inputs.

    input_ids, maskable: (B, T); continuation: (B, T) bool (True at `##` pieces) for
    whole-word masking, else None; candidates: (K,) ids for the random replacements.
    Returns (masked_ids, labels), see `mask_tokens`.

    1. select each maskable position with probability mlm_prob (with whole-word masking,
       every piece follows the draw of its word's first piece: see `word_starts`);
    2. labels = the original id at selected positions, IGNORE_INDEX elsewhere;
    3. at selected positions, with probability mask_frac put [MASK], with probability
       random_frac a random id from `candidates`, else leave the id as it is.
    Draw exactly three (B, T) tensors from `generator`, whatever the input, so that the
    masks depend only on the generator's seed and the batch."""
    # BEGIN SOLUTION
    # Three draws of the full shape, always, so the random numbers depend only on the seed and
    # the shape (the masks then also depend on which tokens are maskable).
    shape, dev = input_ids.shape, generator.device
    u_select = torch.rand(shape, generator=generator, device=dev).to(input_ids.device)   # (B, T)
    u_action = torch.rand(shape, generator=generator, device=dev).to(input_ids.device)   # (B, T)
    random_ids = candidates[torch.randint(len(candidates), shape, generator=generator,
                                          device=dev).to(input_ids.device)]           # (B, T)

    if continuation is not None:
        # every piece takes the draw of its word's first piece, so a word is all in or all out
        u_select = u_select.gather(1, word_starts(maskable, continuation))
    selected = maskable & (u_select < mlm_prob)                                        # (B, T)

    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = selected & (u_action < mask_frac)                                        # 80%: [MASK]
    to_random = selected & (u_action >= mask_frac) & (u_action < mask_frac + random_frac)  # 10%: random
    masked_ids = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked_ids = torch.where(to_random, random_ids, masked_ids)                        # the rest: kept
    return masked_ids, labels
    # END SOLUTION
