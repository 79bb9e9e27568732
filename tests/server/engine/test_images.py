"""Image inputs: decoding data URIs and preprocessing exactly as transformers' CLIP and SigLIP processors do."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from server.engine.images import BadImage, ImageProcessing, read_image_bytes


def png(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("processor_class", ["CLIPImageProcessor", "SiglipImageProcessor"])
@pytest.mark.parametrize("size", [(300, 200), (123, 456), (224, 224), (20, 30)])
def test_preprocessing_matches_transformers(tmp_path, processor_class, size):
    import transformers

    processor = getattr(transformers, processor_class)()
    processor.save_pretrained(tmp_path)
    data = png(*size)
    expected = processor(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
    got = ImageProcessing.from_model_dir(tmp_path)(data)
    assert got.shape == expected.shape == (3, 224, 224)
    assert np.abs(got - expected).max() < 1e-5


def test_grayscale_and_alpha_images_become_rgb(tmp_path):
    """Structured pixels, not a blank image (on which any channel mix-up would pass): as transformers converts them."""
    import transformers

    processor = transformers.CLIPImageProcessor()
    processor.save_pretrained(tmp_path)
    processing = ImageProcessing.from_model_dir(tmp_path)
    rng = np.random.default_rng(1)
    for mode, channels in (("L", 1), ("RGBA", 4)):
        pixels = rng.integers(0, 255, (48, 64, channels), dtype=np.uint8)
        if mode == "RGBA":
            pixels[..., 3] = np.where(pixels[..., 3] > 127, 255, 0)  # some pixels transparent
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze(), mode).save(buffer, format="PNG")
        expected = processor(images=Image.open(buffer).convert("RGB"), return_tensors="np")["pixel_values"][0]
        got = processing(buffer.getvalue())
        assert got.shape == (3, 224, 224) and got.std() > 0.1, mode
        assert np.abs(got - expected).max() < 1e-5, mode


def test_data_uris_decode_and_bad_ones_say_why(tmp_path):
    data = png(10, 10)
    assert read_image_bytes(data_uri(data), allow_urls=False) == data
    with pytest.raises(BadImage, match="not valid base64"):
        read_image_bytes("data:image/png;base64,@@@", allow_urls=False)
    with pytest.raises(BadImage, match="must be base64"):
        read_image_bytes("data:image/png,rawbytes", allow_urls=False)
    with pytest.raises(BadImage, match="image URLs are disabled"):
        read_image_bytes("https://example.com/cat.png", allow_urls=False)
    import transformers

    transformers.SiglipImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(BadImage, match="could not be decoded"):
        ImageProcessing.from_model_dir(tmp_path)(b"not an image at all")
