"""app.core.ensemble: several models' maps, each scaled by its normal tissue's median, averaged; known answers."""

import json

import numpy as np
import pytest
import torch

from app.core.detector import Detector, PostProcessing
from app.core.ensemble import (
    EnsembleDetector,
    Member,
    calibrate,
    choose_tau,
    ensemble_card,
    file_sha256,
    is_ensemble,
    load_ensemble,
    member_fingerprint,
    normal_median,
)
from app.data.splits import VolumeSet
from app.errors import CheckpointError, OptionError


def _model(seed: int, latent: int):
    from app.nets import ModelConfig, create_model

    torch.manual_seed(seed)
    return create_model(ModelConfig("ae-l1", image_size=32, latent_dim=latent, width=4)).freeze()


@pytest.fixture
def slices():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 32, 32, generator=g) * 0.2 + 0.3
    x[:, :, :, :3] = 0.0  # a background strip
    x[:2, :, 12:18, 12:18] += 0.5  # a bright square on two slices
    return x.numpy()


def test_normal_median_reads_only_normal_eroded_foreground():
    d = np.zeros((1, 8, 8), np.float32)
    fg = np.zeros((1, 8, 8), bool)
    fg[0, 1:7, 1:7] = True  # 6 x 6; eroded by 1 px: the inner 4 x 4 (rows and columns 2..5)
    d[0, 2:6, 2:6] = np.arange(16).reshape(4, 4)  # the inner voxels hold 0..15
    d[0, 1] = 100.0  # the eroded rim: never read
    lesion = np.zeros((1, 8, 8), bool)
    lesion[0, 2, 2:6] = True  # the row holding 0..3 is lesion: the rest holds 4..15, median 9.5
    assert normal_median(d, fg, lesion, erode_px=1) == 9.5
    assert normal_median(d, fg, np.zeros_like(lesion), erode_px=1) == 7.5  # 0..15
    with pytest.raises(OptionError, match="zero on normal tissue"):
        normal_median(np.zeros_like(d), fg, lesion, erode_px=1)


def test_choose_tau_takes_the_first_best_threshold():
    maps = np.ones((2, 3, 8, 8), np.float32)  # normal tissue at 1
    masks = np.zeros((2, 3, 8, 8), bool)
    masks[:, 1, 2:6, 2:6] = True
    maps[masks] = 5.0  # the lesions at 5: any tau in [1, 5) separates them exactly (D > tau)
    tau, best, table = choose_tau(maps, masks, PostProcessing(), taus=[0.5, 1.0, 2.0, 6.0])
    assert (tau, best) == (1.0, 1.0)
    assert table[0] < 1.0 and table[3] == 0.0
    # a component rule larger than a lesion drops it: nothing is found at any tau
    tau, best, _ = choose_tau(maps, masks, PostProcessing(min_component_px=17), taus=[1.0, 2.0])
    assert best == 0.0


def test_the_ensemble_map_is_the_post_processed_mean_of_the_scaled_maps(slices):
    post = PostProcessing(median_size=3, erode_px=1)
    dets = [Detector(_model(0, 8), batch_size=4), Detector(_model(1, 6), batch_size=4)]
    members = [Member("a", dets[0], eps=0.3, scale_mg=0.02, scale_base=0.05),
               Member("b", dets[1], eps=0.6, scale_mg=0.5, scale_base=0.25)]  # fmt: skip
    ens = EnsembleDetector(members, post)
    for factor, base in ((0.0, True), (1.0, False)):
        out = ens.run(slices, factor, max_steps=5)
        raw = [m.detector.run(slices, m.eps * factor, base_only=base, raw=True, max_steps=5) for m in members]
        mean = (raw[0].d / members[0].scale(base) + raw[1].d / members[1].scale(base)) / 2
        mean *= members[0].scale(base)  # in the first member's units
        from app.core.maps import postprocess

        np.testing.assert_allclose(out.d, postprocess(mean, raw[0].foreground, 3, 1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out.s, raw[0].s)  # the first member's pseudo-normal
        assert out.eps == (0.0 if base else 1.0) and out.post is post
    # each member solves at factor x its own eps: member b's distance can reach 0.6, a's only 0.3
    runs = ens.raw_runs(slices, 1.0)
    assert (runs[0].distance <= 0.3 * 1.001).all() and (runs[1].distance <= 0.6 * 1.001).all()
    with pytest.raises(OptionError, match="factor"):
        ens.run(slices, -1.0)
    with pytest.raises(OptionError, match="two members"):
        EnsembleDetector(members[:1])


def test_one_factor_per_slice_gives_each_slice_what_its_own_factor_gives(slices):
    """The protocol solves (slice, eps) pairs in one run (app.core.protocol.compute_maps): a slice at factor 0 is
    the ensemble of base models (base scales), one at 1 the card's operator (+ MG scales), each as in a run of its
    own; the distance is the first member's as a factor of its eps; ``raw`` leaves out the post-processing."""
    post = PostProcessing(median_size=3, erode_px=1)
    members = [Member("a", Detector(_model(0, 8), batch_size=3), eps=0.3, scale_mg=0.02, scale_base=0.05),
               Member("b", Detector(_model(1, 6), batch_size=3), eps=0.6, scale_mg=0.5, scale_base=0.25)]  # fmt: skip
    ens = EnsembleDetector(members, post)
    factors = np.array([0.0, 1.0, 1.0, 0.0])
    mixed = ens.run(slices, factors, max_steps=5)
    base, mg = ens.run(slices, 0.0, max_steps=5), ens.run(slices, 1.0, max_steps=5)
    for i, f in enumerate(factors):
        want = base if f == 0 else mg
        np.testing.assert_allclose(mixed.d[i], want.d[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mixed.s[i], want.s[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mixed.eps, factors)
    assert mixed.steps[0] == 0 and mixed.steps[1] > 0  # base slices take no solver steps
    first = members[0].detector.run(slices, 0.3, raw=True, max_steps=5)
    np.testing.assert_allclose(mg.distance, first.distance / 0.3, rtol=1e-6)  # in units of member a's eps (0.3)
    assert (mg.distance > 0).all() and (mg.distance <= 1.001).all()
    # raw: the scaled mean in the first member's units, before the median and the erosion
    raw = ens.run(slices, factors, max_steps=5, raw=True)
    runs = [m.detector.run(slices, m.eps * factors, raw=True, max_steps=5) for m in members]
    scale = np.where(factors == 0, 0.05, 0.02)[:, None, None]
    mean = (runs[0].d / np.where(factors == 0, 0.05, 0.02)[:, None, None]
            + runs[1].d / np.where(factors == 0, 0.25, 0.5)[:, None, None]) / 2 * scale  # fmt: skip
    np.testing.assert_allclose(raw.d, mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(OptionError, match="one value per slice"):
        ens.run(slices, np.ones(3))
    with pytest.raises(OptionError, match="factor"):
        ens.run(slices, np.array([1.0, np.nan, 1.0, 1.0]))


def test_a_member_at_eps_0_reads_its_base_map_at_every_factor(slices):
    """A base member (``scripts/ensemble_card.py --base-member``: eps 0 in the card) costs one forward pass: at
    any factor its map is its base model's, scaled by its + MG scale at factor > 0, while the others solve."""
    post = PostProcessing(median_size=3, erode_px=1)
    members = [Member("a", Detector(_model(0, 8), batch_size=4), eps=0.3, scale_mg=0.02, scale_base=0.05),
               Member("b", Detector(_model(1, 6), batch_size=4), eps=0.0, scale_mg=0.4, scale_base=0.25)]  # fmt: skip
    ens = EnsembleDetector(members, post)
    runs = ens.raw_runs(slices, 1.0, max_steps=5)
    base_b = members[1].detector.run(slices, 0.0, base_only=True, raw=True)
    np.testing.assert_array_equal(runs[1].d, base_b.d)
    assert (runs[1].steps == 0).all() and (runs[0].steps > 0).all()
    out = ens.run(slices, 1.0, max_steps=5, raw=True)
    want = (runs[0].d / 0.02 + base_b.d / 0.4) / 2 * 0.02  # b's base map divided by its + MG scale
    np.testing.assert_allclose(out.d, want, rtol=1e-5, atol=1e-6)
    assert (out.steps > 0).all()  # the first member still solves: the ensemble's + MG is MatchGen


def test_calibrate_writes_a_card_that_loads_and_refuses_a_changed_member(slices, tmp_path):
    from app.nets.checkpoint import save_checkpoint

    cards = [{"chosen": {"eps": 0.2 + 0.2 * s, "tau": 0.1}, "domain": {"modality": "MR" if s == 0 else "CT"}}
             for s in (0, 1)]  # fmt: skip
    stems = [save_checkpoint(_model(s, 8), tmp_path / f"m{s}", cards[s]) for s in (0, 1)]
    masks = np.zeros((2, 2, 32, 32), bool)
    masks[:, 0, 12:18, 12:18] = True  # the bright square: a lesion on the first slice of each realisation
    images = np.stack([slices[[0, 2]], slices[[1, 3]]])
    vols = VolumeSet(images, masks, masks.astype(np.uint8), [["a", "b"]] * 2, [0, 1], [0, 1])
    post = PostProcessing(erode_px=1)
    members = [Member.from_zoo(str(stem))[0] for stem in stems]
    # each member at its card's eps, with its card's hash and fingerprint
    assert [m.eps for m in members] == pytest.approx([0.2, 0.4])
    for m, stem in zip(members, stems, strict=True):
        assert m.card_sha256 == file_sha256(stem.with_suffix(".json"))
        assert m.card_fingerprint == member_fingerprint(stem.with_suffix(".json"))
    choice = calibrate(members, vols, post, log=lambda *_: None)
    # the scales are the members' normal-tissue medians over both realisations
    flat = images.reshape(4, 1, 32, 32)
    for m in members:
        base_run = m.detector.run(flat, 0.0, base_only=True, raw=True)
        assert m.scale_base == normal_median(base_run.d, base_run.foreground, masks.reshape(4, 32, 32), 1)
    # the bright square stands out of both members' maps: the chosen tau finds it
    assert choice["val_volume_dice"] > 0.5 and choice["eps"] == 1.0 and choice["n_volumes"] == 2
    # tau is chosen on the mean of the scaled maps and stored in the first member's units
    assert choice["tau"] == choice["scaled_tau"]["mg"] * members[0].scale_mg
    assert choice["tau_base"] == choice["scaled_tau"]["base"] * members[0].scale_base
    progress = []
    EnsembleDetector(members, post).run(flat, 1.0, progress=lambda d, n: progress.append((d, n)))
    assert progress == [(4, 8), (8, 8)]  # both members' slices counted together
    card = ensemble_card("pair", members, post, choice, {"data_dir": "x"})
    assert is_ensemble(card) and card["eps_range"] == {"eps_min": 0.0, "eps_max": 1.0}
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(card))
    ens, loaded = load_ensemble(path)
    assert [m.scale_mg for m in ens.members] == [m.scale_mg for m in members] and ens.post == post
    assert loaded["domain"] == {"modality": "MR"}  # the first member's: what the study is checked against
    np.testing.assert_array_equal(ens.run(flat, 1.0).d, EnsembleDetector(members, post).run(flat, 1.0).d)
    # a triage measurement recorded on a member changes its card file but not what the ensemble was made with
    c = json.loads(stems[1].with_suffix(".json").read_text())
    stems[1].with_suffix(".json").write_text(json.dumps({**c, "triage": [{"auroc": 0.5}]}))
    assert load_ensemble(path)[0].members[1].card_fingerprint == loaded["members"][1]["card_fingerprint"]
    # a member recalibrated since: its scales are stale, so the ensemble is refused
    c["chosen"]["tau"] = 0.3
    stems[1].with_suffix(".json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="changed since the ensemble was calibrated"):
        load_ensemble(path)
    with pytest.raises(CheckpointError, match="not an ensemble card"):
        load_ensemble(stems[0].with_suffix(".json"))
