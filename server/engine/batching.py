"""Turning many inputs into forward passes: sort by length, cut by a token budget, pad.

Padded cost, not input count, is what a forward pass pays in memory and time, so the budget counts
`padded length x inputs` of each batch. Sorting by length first keeps the padding small.
"""

from __future__ import annotations

import numpy as np

from server.backends.base import TokenBatch


def bucket_length(length: int, limit: int) -> int:
    """`length` rounded up to one of four sizes per doubling (..., 16, 20, 24, 28, 32, 40, ..., 256, 320, ...), at
    most `limit`.

    Runtimes that compile or cache kernels per input shape (OpenVINO; PyTorch on CUDA) then see a bounded set of
    shapes, and their memory stops growing with every new length. It costs less than 1/4 more padding, 1/8 typically.
    """
    granule = 1 << max(0, length.bit_length() - 3)
    return min(-(-length // granule) * granule, max(limit, length))


def plan_batches(lengths: list[int], max_batch_tokens: int, max_batch_inputs: int) -> list[list[int]]:
    """Group input indices into batches whose padded size stays within the budget (`lengths`: padded lengths).

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


def power_of_two_chunks(indices: list[int]) -> list[list[int]]:
    """One planned pass cut into runs of a power of two inputs, largest first, in order (37 -> 32, 4, 1).

    For runtimes that keep memory for every shape they run (OpenVINO): rows then take one of 9 sizes up to 256, and
    with bucketed lengths the shapes stop being new after the first minutes of traffic. A pass is sorted longest
    first, so each run pads only to its own longest input, which also pads fewer tokens than a whole pass would."""
    chunks = []
    start = 0
    while start < len(indices):
        size = 1 << ((len(indices) - start).bit_length() - 1)
        chunks.append(indices[start : start + size])
        start += size
    return chunks


def pad_batch(
    id_lists: list[list[int]], pad_id: int, padding_side: str = "right", length: int | None = None
) -> TokenBatch:
    """Pad to `length` (a bucketed length, or SigLIP's fixed one), else to the batch's longest input."""
    longest = length or max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(id_lists), longest), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = ids
        attention_mask[row, span] = 1
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask)
