"""Turning many inputs into forward passes: sort by length, cut by a token budget, pad.

Padded cost, not input count, is what a forward pass pays in memory and time, so the budget counts
`longest input x inputs` of each batch. Sorting by length first keeps the padding small.
"""

from __future__ import annotations

import numpy as np

from server.backends.base import TokenBatch


def plan_batches(lengths: list[int], max_batch_tokens: int, max_batch_inputs: int) -> list[list[int]]:
    """Group input indices into batches whose padded size stays within the budget.

    An input longer than the whole budget still gets a batch of its own: refusing it here would lose an input
    that the API already accepted (the per-input token limit is enforced earlier, at the API).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted longest first, so the batch's first input sets its padded length.
        longest = lengths[current[0]] if current else lengths[index]
        if current and (longest * (len(current) + 1) > max_batch_tokens or len(current) >= max_batch_inputs):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad_batch(
    id_lists: list[list[int]], pad_id: int, padding_side: str = "right", length: int | None = None
) -> TokenBatch:
    """Pad to the batch's longest input, or to `length` for models trained on fixed-length text (SigLIP)."""
    longest = length or max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(id_lists), longest), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = ids
        attention_mask[row, span] = 1
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask)
