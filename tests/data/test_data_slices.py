import numpy as np
import pytest

from app.core.metrics import dice
from app.data.phantom import brain_phantom
from app.data.slices import (
    axial_image,
    foreground_crop,
    from_model_slices,
    make_geometry,
    mask_to_model_slices,
    to_model_slices,
)
from app.errors import StudyError


def test_axial_image_is_radiological():
    v = np.zeros((4, 5, 2))
    v[3, 4, 1] = 1.0  # most Right, most Anterior voxel
    img = axial_image(v, 1)
    assert img.shape == (5, 4)
    # anterior at the top row, patient's right on the viewer's left column
    assert img[0, 0] == 1.0


def test_identity_scale_is_exact_both_ways(rng):
    v = rng.random((20, 30, 5)).astype(np.float32)
    g = make_geometry(v.shape, (1.0, 1.0, 1.0), 30)  # 30 mm tall, 20 wide -> padded 5 px each side
    x = to_model_slices(v, g)
    assert x.shape == (5, 1, 30, 30)
    for k in range(5):
        np.testing.assert_allclose(x[k, 0, :, 5:25], axial_image(v, k), atol=1e-6)
    assert np.all(x[:, :, :, :5] == 0) and np.all(x[:, :, :, 25:] == 0)
    np.testing.assert_allclose(from_model_slices(x[:, 0], g), v, atol=1e-6)
    m = rng.random(v.shape) > 0.5
    np.testing.assert_array_equal(from_model_slices(mask_to_model_slices(m, g).astype(np.float32), g, "mask"), m)


def test_physical_aspect_is_kept():
    # 2 x 3 mm pixels: 40 x 20 voxels = 80 mm wide (X) by 60 mm tall (Y)
    v = np.ones((40, 20, 1), np.float32)
    g = make_geometry(v.shape, (2.0, 3.0, 2.0), 64)
    x = to_model_slices(v, g)[0, 0]
    rows = np.flatnonzero(x.max(axis=1) > 0.5)
    cols = np.flatnonzero(x.max(axis=0) > 0.5)
    assert len(cols) == 64
    assert len(rows) == pytest.approx(48, abs=1)  # 60/80 * 64
    assert g.pixel_mm == pytest.approx(1.25)


def test_downsampling_has_no_ripple_and_masks_survive():
    v = np.ones((181, 217, 2), np.float32)
    g = make_geometry(v.shape, (1.0, 1.0, 1.0), 128)
    x = to_model_slices(v, g)
    inner = x[0, 0, 5:-5, 20:-20]
    assert np.abs(inner - 1).max() < 1e-5
    # a blob drawn on the study comes back on (nearly) the same voxels through a 1.7x downsampling
    zz = np.meshgrid(*[np.arange(n) for n in (181, 217, 2)], indexing="ij")
    blob = ((zz[0] - 90) ** 2 + (zz[1] - 100) ** 2) < 20**2
    back = from_model_slices(mask_to_model_slices(blob, g).astype(np.float32), g, "mask")
    assert dice(back, blob) > 0.97


def test_crop_to_foreground_and_subset_of_slices():
    vol, brain = brain_phantom((40, 48, 12))
    big = np.zeros((80, 90, 12), np.float32)
    big[10:50, 20:68] = vol
    box = foreground_crop(big > 0, (1.0, 1.0, 1.0), margin_mm=2)
    assert box[0] <= 10 + 4 and box[1] >= 46 and box[2] <= 24
    g = make_geometry(big.shape, (1, 1, 1), 32, slices=[3, 5, 7], crop=box)
    x = to_model_slices(big, g)
    assert x.shape == (3, 1, 32, 32)
    back = from_model_slices(x[:, 0], g)
    assert back.shape == big.shape
    assert np.all(back[:, :, [0, 1, 2, 4, 6, 8]] == 0)
    with pytest.raises(StudyError):
        make_geometry(big.shape, (1, 1, 1), 32, slices=[12])


def test_rgb_volumes_keep_channels(rng):
    v = rng.random((10, 10, 1, 3)).astype(np.float32)
    g = make_geometry(v.shape, (1, 1, 1), 10)
    x = to_model_slices(v, g)
    assert x.shape == (1, 3, 10, 10)
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), axial_image(v, 0), atol=1e-6)
    np.testing.assert_allclose(from_model_slices(x, g), v, atol=1e-6)
