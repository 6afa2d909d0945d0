"""PNG / JPG / TIFF slices: 2D, not HU, with their bit depth kept for normalisation."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import CovidMTLError
from ..image import Image
from .checks import MAX_SIDE, check_shape

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _gray(frame) -> tuple[np.ndarray, int]:
    mode = frame.mode
    if mode in SIXTEEN_BIT_MODES:
        return np.asarray(frame, dtype=np.float32), 16
    if mode == "F":
        raise CovidMTLError("floating-point TIFF has no bit depth to scale by; save it as NIfTI")
    if mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1"):
        frame = frame.convert("RGBA").convert("RGB") if mode in ("RGBA", "LA", "PA", "P") else frame.convert("RGB")
        mode = "RGB"
    if mode == "RGB":
        frame = frame.convert("L")  # ITU-R 601 luma: what a viewer shows for a gray image stored as RGB
    return np.asarray(frame, dtype=np.float32), 8


def read_raster(path: Path) -> Image:
    from PIL import Image as PILImage

    source = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(source) as im:
                width, height = im.size
                # Refuse before decoding: a small file can expand to gigabytes (decompression bomb).
                if max(width, height) > MAX_SIDE:
                    raise CovidMTLError(f"{source}: image too large ({width}x{height} pixels); refusing to decode it")
                # A multi-page TIFF says how many frames it holds: the memory budget applies before any is decoded.
                check_shape((int(getattr(im, "n_frames", 1)), height, width), source)
                frames, depth = [], 8
                for index in range(getattr(im, "n_frames", 1)):
                    im.seek(index)
                    pixels, depth = _gray(im)
                    frames.append(pixels)
    except CovidMTLError as exc:
        if source in str(exc):
            raise
        raise CovidMTLError(f"{source}: {exc}") from exc
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise CovidMTLError(f"{source}: image too large, refused as a possible decompression bomb") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for truncated files
        raise CovidMTLError(f"{source}: not a readable image file ({type(exc).__name__}: {exc})") from exc
    array = np.ascontiguousarray(np.stack(frames, axis=0), dtype=np.float32)
    check_shape(array.shape, source)
    return Image(array=array, spacing=None, affine=None, is_hu=False, source=source, bit_depth=depth,
                 meta={"format": "raster"})
