import numpy as np
import pytest

from server.engine.batching import pad_batch
from server.engine.pooling import cls_pool, l2_normalize, last_token_pool, mean_pool, truncate_dimensions


def test_mean_pool_ignores_padding():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])


def test_cls_pool_takes_first_position():
    hidden = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_array_equal(cls_pool(hidden, np.ones((2, 3))), hidden[:, 0])


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pool_finds_last_real_token_on_either_side(side):
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0, padding_side=side)
    hidden = batch.input_ids[..., None].astype(np.float32)  # each position carries its own token id
    np.testing.assert_array_equal(last_token_pool(hidden, batch.attention_mask)[:, 0], [7, 8])


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_torch_backend_pools_on_its_device_as_the_engine_pools(pooling, side):
    torch = pytest.importorskip("torch")
    from server.backends.torch import _POOLERS
    from server.engine.pooling import POOLERS

    batch = pad_batch([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]], pad_id=0, padding_side=side)
    hidden = np.random.default_rng(0).standard_normal((*batch.input_ids.shape, 8)).astype(np.float32)
    on_device = _POOLERS[pooling](torch.from_numpy(hidden), torch.from_numpy(batch.attention_mask)).numpy()
    np.testing.assert_allclose(on_device, POOLERS[pooling](hidden, batch.attention_mask), rtol=1e-5, atol=1e-6)


def test_truncate_dimensions_renormalises():
    vectors = l2_normalize(np.array([[3.0, 4.0, 12.0]], dtype=np.float32))
    truncated = truncate_dimensions(vectors, 2)
    assert truncated.shape == (1, 2)
    np.testing.assert_allclose(np.linalg.norm(truncated, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(truncated[0], [0.6, 0.8], rtol=1e-6)
    assert truncate_dimensions(vectors, None) is vectors
    assert truncate_dimensions(vectors, 3) is vectors


def test_lexical_weights_keep_the_largest_weight_per_token_without_specials_or_padding():
    from server.engine.sparse import lexical_weights

    weights = np.array([[0.0, 0.5, 0.9, 0.7, 0.3], [0.2, 0.4, 0.0, 0.8, 0.1]])
    ids = np.array([[101, 7, 8, 7, 102], [101, 9, 5, 102, 0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    rows = lexical_weights(weights, ids, mask, skip_ids=frozenset({0, 101, 102}))
    assert rows == [{7: 0.7, 8: 0.9}, {9: 0.4}]  # token 5 weighs 0: not listed
