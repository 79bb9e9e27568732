import random

import numpy as np

from server.engine.batching import bucket_length, pad_batch, plan_batches, power_of_two_chunks


def test_plan_covers_every_input_once_within_budget():
    rng = random.Random(3)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    batches = plan_batches(lengths, max_batch_tokens=2048, max_batch_inputs=64)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert len(batch) <= 64
        assert max(lengths[i] for i in batch) * len(batch) <= 2048


def test_plan_sorts_by_length_to_cut_padding():
    lengths = [5, 100, 6, 99, 4, 98]
    batches = plan_batches(lengths, max_batch_tokens=300, max_batch_inputs=3)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[98, 99, 100], [4, 5, 6]]


def test_input_longer_than_budget_still_gets_its_own_batch():
    assert plan_batches([10, 5000, 10], max_batch_tokens=100, max_batch_inputs=8) == [[1], [0, 2]]


def test_pad_batch_right_and_left():
    right = pad_batch([[1, 2, 3], [4]], pad_id=0)
    np.testing.assert_array_equal(right.input_ids, [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(right.attention_mask, [[1, 1, 1], [1, 0, 0]])
    left = pad_batch([[1, 2, 3], [4]], pad_id=9, padding_side="left")
    np.testing.assert_array_equal(left.input_ids, [[1, 2, 3], [9, 9, 4]])
    np.testing.assert_array_equal(left.attention_mask, [[1, 1, 1], [0, 0, 1]])
    assert (left.real_tokens, left.padded_tokens) == (4, 6)


def test_bucketed_lengths_are_few_cover_the_input_and_cost_at_most_a_quarter():
    buckets = {bucket_length(length, limit=512) for length in range(1, 513)}
    assert len(buckets) <= 40  # 512 distinct lengths, a few shapes
    for length in range(1, 513):
        padded = bucket_length(length, limit=512)
        assert length <= padded <= 512
        assert padded < length * 1.25
    assert bucket_length(250, limit=256) == 256 and bucket_length(300, limit=256) == 300  # never below the input


def test_power_of_two_chunks_keep_order_and_cover_the_pass_once():
    assert power_of_two_chunks(list(range(37))) == [list(range(32)), list(range(32, 36)), [36]]
    assert power_of_two_chunks([7, 3, 5]) == [[7, 3], [5]]  # the pass's order (longest first) is kept
    assert power_of_two_chunks([]) == []
    sizes = set()
    for count in range(1, 257):
        chunks = power_of_two_chunks(list(range(count)))
        assert [i for chunk in chunks for i in chunk] == list(range(count))
        assert [len(c) for c in chunks] == sorted((len(c) for c in chunks), reverse=True)
        sizes.update(len(c) for c in chunks)
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 128, 256}  # 256 pass sizes, 9 shapes of rows
