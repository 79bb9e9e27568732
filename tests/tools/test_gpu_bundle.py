"""The GPU host's bundle, built and unpacked here: its model must stay MiniLM, and its wheels must be our pins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from corpus.texts import varied_texts
from tools.gpu_bundle import (
    CONSTRAINTS,
    GROUP,
    PACKAGES,
    PACKED_WEIGHTS,
    WEIGHTS,
    pack_model,
    pinned,
    unpack_model,
)


@pytest.fixture(scope="module")
def unpacked(minilm_dir, tmp_path_factory):
    packed = tmp_path_factory.mktemp("packed")
    pack_model(minilm_dir, packed / "minilm")
    out = tmp_path_factory.mktemp("unpacked") / "minilm"
    unpack_model(packed / "minilm", out)
    return packed / "minilm", out


def test_the_packed_model_is_under_a_third_of_the_weights_and_keeps_every_other_file(minilm_dir, unpacked):
    packed, _ = unpacked
    original = (minilm_dir / WEIGHTS).stat().st_size
    assert (packed / PACKED_WEIGHTS).stat().st_size < 0.3 * original  # 1.125 of 4 bytes a weight
    assert not (packed / WEIGHTS).exists()
    kept = {p.relative_to(minilm_dir) for p in minilm_dir.rglob("*") if p.is_file()} - {
        Path(WEIGHTS),
        Path("README.md"),
    }
    assert kept <= {p.relative_to(packed) for p in packed.rglob("*") if p.is_file()}


def test_unpacked_weights_are_minilms_within_half_a_step_of_each_group(minilm_dir, unpacked):
    _, out = unpacked
    original, restored = load_file(minilm_dir / WEIGHTS), load_file(out / WEIGHTS)
    assert restored.keys() == original.keys()
    for name, weight in original.items():
        assert restored[name].dtype == np.float32 and restored[name].shape == weight.shape
        if weight.ndim < 2:
            assert np.array_equal(restored[name], weight), name
        else:
            groups = weight.reshape(*weight.shape[:-1], -1, GROUP)
            half_step = np.abs(groups).max(axis=-1, keepdims=True) / 254
            error = np.abs(restored[name].reshape(groups.shape) - groups)
            assert (error <= half_step * 1.0001 + 1e-12).all(), name
            assert not np.array_equal(restored[name], weight), name  # really packed, not copied


def test_the_unpacked_model_embeds_as_minilm(minilm_dir, unpacked):
    """What the GPU host measures is MiniLM: the same embeddings but for the weights' rounding."""
    from server.engine.embedder import Embedder
    from server.settings import EngineSettings

    _, out = unpacked
    texts = varied_texts(64)
    real = Embedder(EngineSettings(model=str(minilm_dir), device="cpu"), "torch").embed_texts(texts).dense
    restored = Embedder(EngineSettings(model=str(out), device="cpu"), "torch").embed_texts(texts).dense
    cosines = (real * restored).sum(axis=1)
    assert cosines.min() >= 0.999
    assert cosines.min() < 1 - 1e-7  # the rounding shows: it is not the real weights


def test_every_bundled_package_is_pinned_as_the_install_pins_it():
    requirements = pinned(PACKAGES, CONSTRAINTS)
    assert len(requirements) == len(PACKAGES)
    pins = dict(line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line)
    assert requirements[PACKAGES.index("transformers")] == f"transformers=={pins['transformers']}"


def test_a_package_without_a_pin_stops_the_bundle(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\ntransformers==4.57.6\nPydantic_Core==2.50.5\n")
    assert pinned(("transformers", "pydantic-core"), constraints) == ["transformers==4.57.6", "pydantic-core==2.50.5"]
    with pytest.raises(SystemExit, match="orjson"):
        pinned(("transformers", "orjson"), constraints)
