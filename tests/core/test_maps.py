import numpy as np
import pytest
from scipy import ndimage

from app.core.maps import (
    confusion_counts,
    confusion_rgb,
    detection_mask,
    difference_map,
    fill_holes,
    foreground_mask,
    postprocess,
)


def test_difference_map_averages_channels():
    x = np.zeros((3, 2, 2), np.float32)
    s = np.zeros((3, 2, 2), np.float32)
    x[0] = 0.9
    assert np.allclose(difference_map(x, s, channel_axis=0), 0.3)
    assert np.allclose(difference_map(x[0], s[0]), 0.9)


def test_foreground_fills_dark_lesions_inside_the_brain():
    x = np.zeros((20, 20))
    x[4:16, 4:16] = 0.5
    x[8:12, 8:12] = 0.0  # a dark lesion inside the brain
    fg = foreground_mask(x)
    assert fg[10, 10] and fg[5, 5] and not fg[0, 0]
    stack = foreground_mask(np.stack([x, np.zeros_like(x)]))
    assert stack.shape == (2, 20, 20) and stack[0, 10, 10] and not stack[1].any()


def test_postprocess_masks_and_median_filters():
    d = np.zeros((9, 9), np.float32)
    d[4, 4] = 1.0  # a single hot pixel is removed by a 3x3 median
    d[0:3, 6:9] = 0.7
    fg = np.ones((9, 9), bool)
    fg[:, 8] = False
    out = postprocess(d, fg, median_size=3)
    assert out[4, 4] == 0.0
    assert out[1, 7] == pytest.approx(0.7)
    assert (out[:, 8] == 0).all()
    # per slice, not across slices
    stack = np.stack([d, np.zeros_like(d)])
    assert postprocess(stack, None, median_size=3)[1].max() == 0


def test_confusion_colours_follow_figure_2():
    pred = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1, 0], [1, 0]], bool)
    rgb = confusion_rgb(pred, gt)
    assert tuple(rgb[0, 0]) == (255, 0, 0)  # TP red
    assert tuple(rgb[0, 1]) == (0, 0, 255)  # FP blue
    assert tuple(rgb[1, 0]) == (0, 255, 0)  # FN green
    assert tuple(rgb[1, 1]) == (0, 0, 0)  # TN black
    assert confusion_counts(pred, gt) == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert detection_mask(np.array([0.2, 0.5, 0.7]), 0.5).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        confusion_rgb(pred, gt[:1])


def test_erode_foreground_shrinks_a_square_by_the_radius_on_every_side():
    from app.core.maps import erode_foreground

    fg = np.zeros((2, 21, 21), bool)
    fg[:, 5:16, 5:16] = True  # 11 x 11
    out = erode_foreground(fg, 2)
    expect = np.zeros_like(fg)
    expect[:, 7:14, 7:14] = True  # 7 x 7, in each slice separately
    assert np.array_equal(out, expect)
    assert np.array_equal(erode_foreground(fg, 0), fg)


def test_remove_small_components_keeps_8_connected_blobs_at_the_size_limit():
    from app.core.maps import detection_mask, remove_small_components

    m = np.zeros((12, 12), bool)
    m[1, 1] = m[2, 2] = m[3, 3] = True  # 3 px, diagonal: one 8-connected component
    m[6:8, 6:11] = True  # 10 px
    assert np.array_equal(remove_small_components(m, 3), m)  # both reach 3
    kept = remove_small_components(m, 4)
    assert kept.sum() == 10 and kept[6:8, 6:11].all()
    d = m.astype(np.float32) * 0.5
    assert np.array_equal(detection_mask(d, 0.4, 4), kept)
    assert np.array_equal(detection_mask(d, 0.5, 0), np.zeros_like(m))  # strictly greater than tau


def test_postprocess_erosion_zeroes_the_rim_and_keeps_the_inside():
    from app.core.maps import postprocess

    d = np.ones((15, 15), np.float32)
    fg = np.zeros((15, 15), bool)
    fg[2:13, 2:13] = True
    out = postprocess(d, fg, median_size=0, erode_px=3)
    assert out[2:5, :].sum() == 0 and out[:, 10:13].sum() == 0
    assert np.all(out[5:10, 5:10] == 1)


def test_study_detection_mask_scales_the_component_rule_to_the_study_pixels():
    """A rule of 8 model pixels at 2 mm/px is 32 mm^2: on a 1 mm study grid that is 32 voxels, so an 8-voxel
    blob goes and a 40-voxel blob stays; each axial plane is labelled on its own."""
    from types import SimpleNamespace

    from app.core.maps import study_detection_mask

    geometry = SimpleNamespace(pixel_mm=2.0, spacing=(1.0, 1.0, 3.0))
    d = np.zeros((30, 30, 2), np.float32)
    d[2:4, 2:6, 0] = 1.0  # 8 voxels
    d[10:15, 10:18, 0] = 1.0  # 40 voxels
    d[2:4, 2:6, 1] = 1.0
    out = study_detection_mask(d, 0.5, geometry, 8)
    assert out[..., 0].sum() == 40 and out[..., 1].sum() == 0
    assert np.array_equal(study_detection_mask(d, 0.5, geometry, 0), d > 0.5)


def test_fill_holes_equals_scipy_on_random_and_edge_cases():
    rng = np.random.default_rng(3)
    cases = [np.zeros((4, 5), bool), np.ones((3, 3, 3), bool), np.zeros(0, bool)]
    for shape in [(9,), (7, 9), (12, 10, 9), (1, 6), (3, 1, 4)]:
        for p in (0.2, 0.5, 0.8):
            for half in (False, True):
                m = rng.random(shape) < p
                if half:
                    m[: max(1, shape[0] // 2)] = False  # a mask away from one border: the cropped path
                cases.append(m)
    ring = np.zeros((20, 30, 20), bool)
    ring[5:15, 5:25, 5:15] = True
    ring[8:12, 8:12, 8:12] = False  # an enclosed cavity
    ring[8:12, 18:22, 8:12] = False  # a second one, opened to the outside by a tunnel
    ring[9, 19, 5:8] = False
    cases.append(ring)
    for m in cases:
        np.testing.assert_array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    assert fill_holes(ring)[10, 10, 10] and not fill_holes(ring)[10, 20, 10] and not fill_holes(ring)[9, 19, 6]


def test_foreground_mask_fills_holes_in_a_stack():
    x = np.zeros((2, 9, 9), np.float32)
    x[:, 2:7, 2:7] = 1.0
    x[:, 4, 4] = 0.0  # a dark hole inside
    assert foreground_mask(x)[:, 4, 4].all() and not foreground_mask(x, fill_holes=False)[:, 4, 4].any()
    assert foreground_mask(x[0])[4, 4]


def test_z_window_spans_the_nearest_odd_number_of_slices():
    from app.core.maps import z_window, z_window_slices

    assert [z_window_slices(v, 2.0) for v in (0, 2, 4, 6, 10, 14, 18)] == [1, 1, 1, 3, 5, 7, 9]
    assert z_window_slices(18, 1.0) == 17 and z_window_slices(18, 5.0) == 3 and z_window_slices(-1, 2.0) == 1
    with pytest.raises(ValueError):
        z_window_slices(6, 0.0)
    assert z_window(0, 10, 5).tolist() == [0, 0, 0, 1, 2] and z_window(9, 10, 3).tolist() == [8, 9, 9]


def test_z_mean_is_the_mean_over_neighbours_with_edges_repeated():
    from app.core.maps import z_mean, z_window

    rng = np.random.default_rng(1)
    d = rng.random((7, 4, 5)).astype(np.float32)
    fg = np.ones(d.shape, bool)
    fg[3, 0, :] = False
    out = z_mean(d, 5, fg)
    for k in range(7):
        want = d[z_window(k, 7, 5)].mean(axis=0) * fg[k]
        np.testing.assert_allclose(out[k], want, rtol=1e-5, atol=1e-6)
    assert not out[3, 0].any()
    np.testing.assert_array_equal(z_mean(d, 1, fg), d)  # one slice: unchanged (no foreground applied either)
    with pytest.raises(ValueError):
        z_mean(d, 4)


def test_a_shrinking_z_window_averages_the_slices_inside_the_volume():
    """edge "shrink": at the ends the mean is over the window's slices that exist (slice 0 of a 5-slice window:
    slices 0, 1, 2 once each), so the end slice's noise is averaged as much as the volume allows; inside the
    volume it is the same mean as "nearest"."""
    from app.core.maps import z_mean, z_window

    assert z_window(0, 10, 5, "shrink").tolist() == [0, 1, 2] and z_window(9, 10, 3, "shrink").tolist() == [8, 9]
    assert z_window(4, 10, 5, "shrink").tolist() == z_window(4, 10, 5).tolist() == [2, 3, 4, 5, 6]
    assert z_window(1, 2, 9, "shrink").tolist() == [0, 1]  # a window wider than the volume: all of it
    d = np.zeros((6, 2, 2), np.float32)
    d[0] = 9.0  # noise on the end slice only
    shrunk, nearest = z_mean(d, 5, edge="shrink"), z_mean(d, 5)
    assert shrunk[0, 0, 0] == pytest.approx(3.0)  # (9 + 0 + 0) / 3
    assert nearest[0, 0, 0] == pytest.approx(27.0 / 5)  # slice 0 three times: (9 * 3 + 0 + 0) / 5
    assert shrunk[2, 0, 0] == pytest.approx(9.0 / 5) and nearest[2, 0, 0] == pytest.approx(9.0 / 5)  # inside: same
    rng = np.random.default_rng(2)
    d = rng.random((7, 3, 4)).astype(np.float32)
    fg = np.ones(d.shape, bool)
    fg[6, 1, :] = False
    out = z_mean(d, 5, fg, "shrink")
    for k in range(7):
        np.testing.assert_allclose(out[k], d[z_window(k, 7, 5, "shrink")].mean(axis=0) * fg[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="edge rule"):
        z_mean(d, 5, edge="reflect")
