"""Orthogonal views, Qt-free: coronal and sagittal reformats of a canonical (RAS) volume and the crosshair that
links them with the axial view.

Volumes are (X, Y, Z) in RAS+ order (:class:`app.io.Study`: X grows towards the patient's right, Y anterior, Z
superior). Every plane is returned as a (horizontal, vertical) array in voxel order and
shown like the axial view (:func:`app.viewer.slices.to_pyqtgraph`: the horizontal axis flipped, vertical up):

- axial (z = k): horizontal X, vertical Y -> patient right on the left of the screen, anterior up (radiological);
- coronal (y = j): horizontal X, vertical Z -> patient right on the left, superior up;
- sagittal (x = i): horizontal Y, vertical Z -> anterior on the left, superior up.

A :class:`Cursor` is one voxel (x, y, z); a click in a plane moves the two coordinates that plane shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANES = ("axial", "coronal", "sagittal")
#: (horizontal axis, vertical axis) of each plane, as indices into (x, y, z)
AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
#: the axis a plane cuts through (its slice index)
NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}
#: orientation letters (screen left, right, top, bottom) with the horizontal axis flipped on screen
LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


@dataclass(frozen=True)
class Cursor:
    x: int
    y: int
    z: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.x, self.y, self.z)

    def clamp(self, shape) -> Cursor:
        return Cursor(*(int(min(max(v, 0), n - 1)) for v, n in zip(self.as_tuple(), shape[:3], strict=True)))


def plane(vol: np.ndarray, which: str, cursor: Cursor) -> np.ndarray:
    """The plane through ``cursor`` as (horizontal, vertical[, C]) in voxel order."""
    c = cursor.clamp(vol.shape)
    if which == "axial":
        return vol[:, :, c.z]
    if which == "coronal":
        return vol[:, c.y, :]
    if which == "sagittal":
        return vol[c.x, :, :]
    raise ValueError(f"unknown plane {which!r}")


def point_in_plane(which: str, cursor: Cursor) -> tuple[int, int]:
    """The cursor's (horizontal, vertical) voxel index in ``which``."""
    h, v = AXES[which]
    t = cursor.as_tuple()
    return t[h], t[v]


def move_in_plane(which: str, cursor: Cursor, h: int, v: int) -> Cursor:
    """The cursor after a click at voxel (h, v) of ``which`` (the coordinate the plane cuts stays)."""
    t = list(cursor.as_tuple())
    a, b = AXES[which]
    t[a], t[b] = int(h), int(v)
    return Cursor(*t)


def plane_spacing(which: str, spacing) -> tuple[float, float]:
    a, b = AXES[which]
    return float(spacing[a]), float(spacing[b])


def screen_to_voxel(ix: int, iy: int, n_horizontal: int) -> tuple[int, int]:
    """An image-item pixel (column, row) of a plane shown flipped horizontally -> (h, v) voxel index."""
    return n_horizontal - 1 - int(ix), int(iy)


def voxel_to_screen(h: int, v: int, n_horizontal: int) -> tuple[int, int]:
    return n_horizontal - 1 - int(h), int(v)
