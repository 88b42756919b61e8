"""Findings against a mask with known components: volumes in ml from the voxel size, centres, extents, slice
ranges, mean D, 26-connectivity, order by size, and the study-level score."""

import numpy as np
import pytest

from app.core.findings import Finding, find_findings, label_findings, outline, reported_findings, study_score

AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, 5], [0, 0, 3.0, 100], [0, 0, 0, 1]])  # 2x2x3 mm = 12 mm^3


@pytest.fixture
def known():
    mask = np.zeros((20, 20, 10), bool)
    d = np.zeros(mask.shape, np.float32)
    mask[2:6, 3:6, 1:3] = True  # 4*3*2 = 24 voxels
    d[2:6, 3:6, 1:3] = 0.5
    mask[10:12, 10:12, 5:9] = True  # 2*2*4 = 16 voxels, D 0.25 and 0.75 in halves -> mean 0.5
    d[10:12, 10:12, 5:7] = 0.25
    d[10:12, 10:12, 7:9] = 0.75
    mask[15, 15, 0] = True  # a single voxel ...
    mask[16, 16, 1] = True  # ... touching this one by a corner only: one finding under 26-connectivity
    d[15, 15, 0], d[16, 16, 1] = 0.3, 0.9
    return mask, d


def test_components_volumes_centres(known):
    mask, d = known
    fs = find_findings(mask, d, AFFINE)
    assert [f.voxels for f in fs] == [24, 16, 2]  # largest first; the corner pair is one finding
    assert [f.label for f in fs] == [1, 2, 3]
    np.testing.assert_allclose([f.volume_ml for f in fs], [24 * 0.012, 16 * 0.012, 2 * 0.012])
    a, b, c = fs
    np.testing.assert_allclose(a.centre_voxel, (3.5, 4.0, 1.5))
    np.testing.assert_allclose(a.centre_mm, (-10 + 7.0, 5 + 8.0, 100 + 4.5))
    assert a.extent_mm == (8.0, 6.0, 6.0) and a.slices == (1, 2)
    assert a.mean_d == pytest.approx(0.5) and a.max_d == pytest.approx(0.5)
    assert b.slices == (5, 8) and b.centre_slice == 6  # centroid z = 6.5, rounded half to even
    assert b.mean_d == pytest.approx(0.5) and b.max_d == pytest.approx(0.75)
    assert c.slices == (0, 1) and c.mean_d == pytest.approx(0.6)
    assert Finding.from_dict(a.to_dict()) == a


def test_peak_slice_is_largest_cross_section():
    mask = np.zeros((10, 10, 6), bool)
    mask[2:4, 2:4, 1] = True  # 4 voxels
    mask[1:6, 1:6, 2] = True  # 25 voxels: the peak
    mask[2:3, 2:3, 3] = True
    (f,) = find_findings(mask, None, np.eye(4))
    assert f.peak_slice == 2 and f.voxels == 30 and np.isnan(f.mean_d)


def test_labels_ordered_by_size_and_outline(known):
    mask, _ = known
    lab, n = label_findings(mask)
    assert n == 3 and (lab == 1).sum() == 24 and (lab == 2).sum() == 16 and (lab == 3).sum() == 2
    ring = outline(lab[:, :, 1], 1)
    assert ring.sum() == 4 * 3 - 2 * 1  # a 4x3 rectangle's boundary: all but its 2x1 interior
    assert not outline(lab[:, :, 1], 2).any()


def test_study_score(known):
    mask, d = known
    fs = find_findings(mask, d, AFFINE)
    fg = np.zeros(mask.shape, bool)
    fg[:, :, :9] = True  # 3,600 foreground voxels: the 99.9th percentile lies between the 5th and 4th largest
    d = d.copy()
    d[0, 0, 4] = d[1, 0, 4] = d[2, 0, 4] = 0.95  # outside every finding, on slice 4: not a finding's D
    sc = study_score(fs, mask, d, AFFINE, fg)
    # the score: the highest D inside a finding -- the corner pair's 0.9, not the unflagged 0.95
    assert sc.score == sc.peak_d == pytest.approx(0.9)
    assert sc.peak_slice == 0  # that finding's largest cross-section (one voxel on slices 0 and 1: the first)
    vals = np.sort(d[fg])  # recorded beside it: the quantiles of D over the foreground
    assert sc.d_q999 == pytest.approx(np.quantile(vals, 0.999)) and 0.75 < sc.d_q999 < 0.9
    assert (sc.d_q50, sc.d_q90) == (pytest.approx(np.quantile(vals, 0.5)), pytest.approx(np.quantile(vals, 0.9)))
    assert sc.largest_ml == pytest.approx(24 * 0.012)
    assert sc.flagged_ml == pytest.approx(42 * 0.012) and sc.n_findings == 3
    # ties of the peak D: the larger finding's peak slice
    d3 = d.copy()
    d3[2:6, 3:6, 2] = 0.9  # the 24-voxel finding now reaches 0.9 too, on its slice 2 (its cross-sections are equal)
    assert study_score(fs_tied := find_findings(mask, d3, AFFINE), mask, d3, AFFINE, fg).peak_slice == 1
    assert fs_tied[0].max_d == pytest.approx(0.9)
    # without findings: 0, whatever D is; the slice with the highest D
    sc_none = study_score([], np.zeros_like(mask), d, AFFINE, fg)
    assert sc_none.score == sc_none.peak_d == 0.0 and sc_none.n_findings == 0 and sc_none.peak_slice == 4
    assert sc_none.d_q999 == sc.d_q999  # the quantiles need no detection
    empty = np.zeros_like(mask)
    d2 = np.zeros_like(d)
    d2[3, 3, 7] = 0.1
    sc0 = study_score([], empty, d2, AFFINE, np.zeros(mask.shape, bool))  # no foreground: quantiles 0
    assert sc0.score == 0.0 and sc0.d_q999 == 0.0 and sc0.peak_slice == 7 and sc0.largest_ml == 0.0
    assert find_findings(empty, d2, AFFINE) == []


def test_reported_findings_keep_only_those_above_the_cut_and_the_score_keeps_every_outlined_one(known):
    """Hysteresis: outlined at tau (the mask), reported when the finding's highest D exceeds the cut. The findings'
    peaks are 0.5 (24 voxels), 0.75 (16) and 0.9 (the corner pair)."""
    mask, d = known
    lab, _ = label_findings(mask)
    cands = find_findings(mask, d, AFFINE, labels=lab)
    shown, fs = reported_findings(cands, lab, 0.6)
    assert [f.voxels for f in fs] == [16, 2] and [f.label for f in fs] == [1, 2]  # renumbered, largest first
    assert shown.sum() == 18 and not shown[2:6, 3:6, 1:3].any() and shown[10:12, 10:12, 5:9].all()
    assert [f.max_d for f in fs] == [pytest.approx(0.75), pytest.approx(0.9)]
    assert fs == find_findings(shown, d, AFFINE)  # what labelling and measuring the reported mask again gives
    _, none = reported_findings(cands, lab, 0.9)  # strictly above: a peak of exactly the cut is not
    assert none == [] and reported_findings(cands, lab, 0.95)[0].sum() == 0
    # the score is the most suspicious outlined finding's, reported or not; volumes are those reported
    d2 = d.copy()
    d2[16, 16, 1] = 0.55  # the corner pair now peaks below the cut, the 16-voxel finding carries the score ...
    cands2 = find_findings(mask, d2, AFFINE, labels=lab)
    shown2, fs2 = reported_findings(cands2, lab, 0.8)  # ... and nothing is reported above 0.8
    sc = study_score(fs2, shown2, d2, AFFINE, candidates=cands2)
    assert fs2 == [] and sc.score == sc.peak_d == pytest.approx(0.75) and sc.peak_slice == 5
    assert sc.n_findings == 0 and sc.flagged_ml == 0.0 and sc.largest_ml == 0.0
    assert study_score(fs2, shown2, d2, AFFINE).score == 0.0  # without the candidates: nothing reported, 0


def test_intensity_floor():
    """|x - median| / IQR at the 99.9th percentile over the foreground: known on a uniform ramp; one very bright
    or very dark voxel cluster raises it alike; no foreground or no spread gives 0."""
    from app.core.findings import intensity_deviation_q999

    x = np.linspace(0.0, 1.0, 10_001).reshape(1, 1, -1)  # median 0.5, IQR 0.5
    fg = np.ones(x.shape, bool)
    assert intensity_deviation_q999(x, fg) == pytest.approx(np.quantile(np.abs(x - 0.5), 0.999) / 0.5)
    base = np.full((20, 20, 10), 0.5) + np.random.default_rng(0).normal(0, 0.05, (20, 20, 10))
    fg = np.ones(base.shape, bool)
    bright, dark = base.copy(), base.copy()
    bright[:4, :4, :2] = 1.0
    dark[:4, :4, :2] = 0.0
    q0 = intensity_deviation_q999(base, fg)
    assert intensity_deviation_q999(bright, fg) > 2 * q0 and intensity_deviation_q999(dark, fg) > 2 * q0
    assert intensity_deviation_q999(base[..., None].repeat(2, axis=-1), fg) == pytest.approx(q0)  # channels: mean
    assert intensity_deviation_q999(base, np.zeros_like(fg)) == 0.0
    assert intensity_deviation_q999(np.ones_like(base), fg) == 0.0


def test_the_most_suspicious_finding_and_the_summary_line(known):
    """The most suspicious finding holds the highest D (the study's score's finding), ties going to the larger one;
    without D the largest; the summary line names it."""
    from app.core.findings import findings_summary, most_suspicious

    mask, d = known
    fs = find_findings(mask, d, AFFINE)
    top = most_suspicious(fs)
    assert top.voxels == 2 and top.max_d == pytest.approx(0.9)  # the corner pair, not the largest
    assert (
        findings_summary(fs) == "3 findings; the most suspicious: 0.024 ml on axial slices 0-1 (centre 0), peak D 0.9"
    )
    d2 = d.copy()
    d2[2:6, 3:6, 1] = 0.9  # the largest reaches 0.9 too: the tie goes to it
    assert most_suspicious(find_findings(mask, d2, AFFINE)).voxels == 24
    no_d = find_findings(mask, None, AFFINE)
    assert most_suspicious(no_d).voxels == 24 and "peak D" not in findings_summary(no_d)
    assert most_suspicious([]) is None and findings_summary([]) == "no findings (nothing flagged)"
    one = find_findings(mask & (np.arange(10) >= 5)[None, None, :], d, AFFINE)
    assert findings_summary(one).startswith("1 finding; the most suspicious: 0.192 ml on axial slices 5-8")


def test_centres_are_the_centres_of_mass_of_many_components():
    """Each finding's centre is its centre of mass (computed from its labelled voxels only, the same as ndimage's
    over the whole volume), on a volume with many components of irregular shape."""
    from scipy import ndimage

    from app.core.findings import find_findings, label_findings

    rng = np.random.default_rng(5)
    mask = ndimage.gaussian_filter(rng.random((40, 36, 30)), 1.2) > 0.53
    labels, n = label_findings(mask)
    assert n > 20
    found = find_findings(mask, None, np.diag([1.5, 1.5, 3.0, 1.0]), labels=labels)
    ref = ndimage.center_of_mass(np.ones(mask.shape), labels, range(1, n + 1))
    np.testing.assert_allclose([f.centre_voxel for f in found], ref, rtol=0, atol=1e-9)
    assert [f.label for f in found] == list(range(1, n + 1))
