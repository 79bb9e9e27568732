"""Image inputs of image-text models (CLIP, SigLIP): decoding `data:image/...;base64,` URIs (and http(s) URLs where
enabled) and preprocessing as the model's own `preprocessor_config.json` says, written once for every backend.

Preprocessing follows transformers' CLIP/SigLIP image processors step by step (RGB, bicubic resize with PIL,
centre crop, rescale, normalise), so pixels match what the model was trained on.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_URI_PREFIX = "data:image/"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000  # decompression bombs: refuse before decoding


class BadImage(ValueError):
    """An input that should be an image and is not one; the message says why."""


def read_image_bytes(item: str, allow_urls: bool) -> bytes:
    if item.startswith(DATA_URI_PREFIX):
        header, _, payload = item.partition(",")
        if not header.endswith(";base64"):
            raise BadImage("an image data URI must be base64 (data:image/<type>;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadImage("the image data URI is not valid base64") from None
    elif not allow_urls:
        raise BadImage("image URLs are disabled on this server (--allow-image-urls); send a data:image/ URI")
    else:
        try:
            with urllib.request.urlopen(item, timeout=10) as response:
                data = response.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise BadImage(f"the image URL could not be fetched: {exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    return data


@dataclass(frozen=True)
class ImageProcessing:
    """The steps of the model's preprocessor_config.json (CLIPImageProcessor / SiglipImageProcessor)."""

    height: int
    width: int
    shortest_edge: int | None  # CLIP: resize the short side to this, keep the aspect ratio, then crop
    crop: bool
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ImageProcessing:
        path = model_dir / "preprocessor_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} has no preprocessor_config.json; image inputs need it")
        config = json.loads(path.read_text())
        size = config.get("size", {})
        crop = bool(config.get("do_center_crop", False))
        crop_size = config.get("crop_size", size) if crop else size
        return cls(
            height=int(crop_size.get("height", size.get("shortest_edge", 224))),
            width=int(crop_size.get("width", size.get("shortest_edge", 224))),
            shortest_edge=size.get("shortest_edge"),
            crop=crop,
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            mean=tuple(config.get("image_mean", (0.5, 0.5, 0.5))),
            std=tuple(config.get("image_std", (0.5, 0.5, 0.5))),
            resample=int(config.get("resample", 3)),  # PIL bicubic
        )

    def __call__(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> float32 [3, height, width]."""
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise BadImage(f"the image has more than {MAX_IMAGE_PIXELS} pixels")
            image = image.convert("RGB")
        except BadImage:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for undecodable bytes
            raise BadImage(f"the image could not be decoded ({type(exc).__name__})") from None
        if self.shortest_edge:
            short, long = sorted((image.width, image.height))
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
        else:
            size = (self.width, self.height)
        image = image.resize(size, resample=self.resample, reducing_gap=None)
        pixels = np.asarray(image, dtype=np.float32)
        if self.crop:
            top, left = (pixels.shape[0] - self.height) // 2, (pixels.shape[1] - self.width) // 2
            pixels = pixels[top : top + self.height, left : left + self.width]
        pixels = (pixels * self.rescale_factor - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return pixels.transpose(2, 0, 1)
