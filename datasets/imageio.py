"""Decode image files once into resized uint8 arrays (Pillow; torchvision is unavailable).

Every loader funnels its files through `load_images`, so a missing or unreadable file is
reported by name before training starts, and the decoded set is held in memory as uint8
(4x smaller than float32) and converted to floats one batch at a time.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the file or field and what to fix."""


def load_image(path: Path, *, size: int, mode: str, resample=Image.BILINEAR, mask: bool = False) -> np.ndarray:
    """One file -> uint8 array [C, size, size] (`mode` "RGB" or "L"). `mask`: a file whose
    values are only 0 and 1 is a 0/1 mask, read as 0/255 like the others."""
    if not path.is_file():
        raise DataError(f"image {path} is missing; check the data root / image folder flags")
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I"):  # 16-bit grey
                img = _eight_bit(img)
            if mask and max(np.ravel(img.getextrema())) == 1:
                img = img.point(lambda v: 255 if v else 0)
            arr = np.asarray(img.convert(mode).resize((size, size), resample), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"image {path} cannot be read ({err}); replace or remove it") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit grey image (Pillow's "I;16" or "I" modes) scaled by its bit depth to 8 bits;
    Pillow's own conversion saturates everything above 255."""
    wide = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"image {path} cannot be read ({err}); replace or remove it") from None


RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "area": Image.BOX}


def load_images(paths: list[Path], *, size: int, mode: str, resample: str = "bilinear",
                masks: bool = False) -> torch.Tensor:
    """Decode and resize many files (threads overlap the I/O) -> uint8 tensor [n, C, size, size].
    `resample`: bilinear (torchvision's Resize on a PIL image), nearest (keeps masks binary)
    or area (the box average of MONAI's default Resized). `masks`: 0/1 files read as 0/255."""
    resample = RESAMPLE[resample]
    if not paths:
        return torch.zeros(0, 1 if mode == "L" else 3, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = list(pool.map(lambda p: load_image(p, size=size, mode=mode, resample=resample, mask=masks), paths))
    return torch.from_numpy(np.stack(arrays))
