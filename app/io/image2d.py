"""2D pictures (PNG, JPEG, TIFF, BMP): fundus photographs, OCT B-scans, screenshots of slices.

A picture becomes a one-slice study whose axial slice, shown the way the whole app shows slices (radiological:
anterior up, patient's right on the viewer's left; see :func:`app.data.slices.axial_image`), is the picture
as it appears in an image viewer. The original grid is (rows, columns, 1) with orientation P-L-S, so a mask
saved for it is the picture's own pixel grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.study import Study, make_study, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: rows go to posterior, columns to the patient's left, one slice (1 mm pixels: pictures have no spacing)
PICTURE_AFFINE = np.array([[0.0, -1.0, 0, 0], [-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def picture_to_study(pixels: np.ndarray, source: str, warnings: list[str] | None = None) -> Study:
    """(H, W) grey or (H, W, 3) RGB pixel array -> Study."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, None, :]
    else:
        raise StudyError(f"{source}: expected a grey or RGB picture, got shape {arr.shape}")
    return make_study(arr, PICTURE_AFFINE, "OT", source, warnings, meta={"format": "picture"})


def load_picture(path: Path) -> Study:
    from PIL import Image, UnidentifiedImageError

    warnings: list[str] = []
    try:
        with Image.open(path) as im:
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                warnings.append(f"{path.name} has {n_frames} frames; using the first")
            mode = im.mode
            if mode in ("RGBA", "P", "LA", "CMYK", "YCbCr", "PA"):
                im = im.convert("RGB" if mode != "LA" else "L")
            elif mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise StudyError(f"{path.name}: not a readable image ({one_line(exc)})") from None
    if (
        arr.ndim == 3
        and arr.shape[2] == 3
        and np.array_equal(arr[..., 0], arr[..., 1])
        and np.array_equal(arr[..., 0], arr[..., 2])
    ):
        arr = arr[..., 0]  # grey stored as RGB
    if arr.ndim == 3 and arr.shape[2] not in (3,):
        raise StudyError(f"{path.name}: unsupported channel count {arr.shape[2]}")
    study = picture_to_study(arr.astype(np.float32), str(path), warnings)
    study.meta["bit_depth_max"] = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    return study
