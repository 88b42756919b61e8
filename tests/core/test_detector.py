import numpy as np
import pytest
import torch

from app.core.detector import Detector, PostProcessing
from app.core.device import resolve_device
from app.errors import Cancelled, CheckpointError, OptionError
from app.solver_options import FAST


@pytest.fixture
def slices():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 1, 32, 32, generator=g) * 0.2
    x[:, :, 8:24, 8:24] += 0.5
    return x


def test_base_only_equals_the_base_model(tiny_ae, slices):
    with torch.no_grad():
        s = tiny_ae.pseudo_normal(slices).numpy()
    stock = Detector(tiny_ae, batch_size=5, fold_batchnorm=False).run(slices, eps=0.5, base_only=True)
    np.testing.assert_array_equal(stock.s, s)  # the stock graph: bit-identical to the base model
    same_batch = Detector(tiny_ae, batch_size=5).run(slices, eps=0.5, base_only=True)
    np.testing.assert_allclose(same_batch.s, s, atol=1e-6)  # BatchNorm folded: float rounding only
    out = Detector(tiny_ae, batch_size=2).run(slices, eps=0.5, base_only=True)
    np.testing.assert_allclose(out.s, s, atol=1e-6)  # other batch sizes: float rounding only
    assert out.eps == 0.0 and (out.steps == 0).all()
    d_expected = np.abs(slices.numpy() - s).mean(1) * out.foreground
    np.testing.assert_allclose(out.d, d_expected, atol=1e-7)


def test_matchgen_lowers_the_l1_loss_and_batching_does_not_change_it(tiny_ae, slices):
    base = Detector(tiny_ae, batch_size=5).run(slices, eps=0.0)
    a = Detector(tiny_ae, batch_size=5).run(slices, eps=0.5, max_steps=60)
    b = Detector(tiny_ae, batch_size=2).run(slices, eps=0.5, max_steps=60)
    # the reported loss is the L1 of the returned pseudo-normal, and the solution lies in the eps-ball
    np.testing.assert_allclose(a.loss, np.abs(slices.numpy() - a.s).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    assert (a.distance <= 0.5 * (1 + 1e-3)).all() and (a.steps > 0).all()
    assert not np.allclose(a.s, base.s, atol=1e-4)  # MatchGen moved away from the base model
    np.testing.assert_allclose(a.s, b.s, atol=1e-4)
    assert a.mask(0.1).shape == (5, 32, 32)


def test_same_postprocessing_for_base_and_mg(tiny_ae, slices):
    det = Detector(tiny_ae, post=PostProcessing(median_size=3))
    base = det.run(slices, 0.0)
    mg = det.run(slices, 0.3, max_steps=20)
    np.testing.assert_array_equal(base.foreground, mg.foreground)
    assert (base.d[~base.foreground] == 0).all() and (mg.d[~mg.foreground] == 0).all()


def test_progress_and_cancel(tiny_ae, slices):
    seen = []
    Detector(tiny_ae, batch_size=2).run(slices, 0.0, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    with pytest.raises(Cancelled):
        Detector(tiny_ae).run(slices, 0.3, should_stop=lambda: True)


def test_bad_inputs(tiny_ae, slices):
    det = Detector(tiny_ae)
    bad = slices.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(OptionError, match="NaN"):
        det.run(bad, 0.1)
    with pytest.raises(CheckpointError, match="expects images"):
        det.run(torch.zeros(2, 1, 16, 16), 0.1)
    with pytest.raises(OptionError):
        Detector(tiny_ae, batch_size=0)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(OptionError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="CUDA"):
            resolve_device("cuda")


def test_detector_applies_the_cards_post_processing_to_maps_and_masks(tiny_ae):
    from app.core.detector import Detector, PostProcessing
    from app.core.maps import erode_foreground, remove_small_components

    rng = np.random.default_rng(3)
    x = (rng.random((2, 1, 32, 32)) * 0.8 + 0.1).astype(np.float32)
    x[:, :, :4] = 0  # a background band
    plain = Detector(tiny_ae).run(x, 0.0)
    post = PostProcessing(erode_px=2, min_component_px=5)
    out = Detector(tiny_ae, post=post).run(x, 0.0)
    fg = erode_foreground(out.foreground, 2)
    assert np.allclose(out.d, plain.d * fg)  # the same map, zeroed on the eroded rim
    tau = float(np.quantile(out.d[fg], 0.9))
    assert np.array_equal(out.mask(tau), remove_small_components(out.d > tau, 5))
    with pytest.raises(OptionError):
        PostProcessing(median_size=-1)


def test_from_card_builds_what_the_card_names(tiny_ae):
    from app.solver_options import FAST, PAPER

    card = {
        "postprocess": {"median_size": 3, "erode_px": 2, "min_component_px": 10},
        "calibration": {"settings": {"max_steps": 30, "channels_last": True, "solver_options": FAST.__dict__}},
    }
    det = Detector.from_card(tiny_ae, card)
    assert det.solver.method == "spg" and det.solver.max_steps == 30 and det.channels_last
    assert det.post.median_size == 3 and det.solver_warning is None
    assert det.post.erode_px == 2 and det.post.min_component_px == 10  # the whole post-processing, not a part
    det = Detector.from_card(tiny_ae, card, solver="paper", median_size=0)
    assert det.solver == PAPER and det.post.median_size == 0 and "spg/bf16, 30 steps" in det.solver_warning
    bare = Detector.from_card(tiny_ae, {})
    assert bare.solver == PAPER and not bare.channels_last and bare.post.median_size == 0 and not bare.solver_warning


def test_run_skips_empty_slices_and_takes_one_eps_per_slice(tiny_ae, slices):
    x = slices.clone()
    x[2] = 0.0  # an empty slice: no foreground
    det = Detector(tiny_ae, batch_size=2)
    out = det.run(x, np.array([0.0, 0.5, 0.5, 0.3, 0.0], np.float32), max_steps=20)
    assert out.analysed.tolist() == [True, True, False, True, True]
    assert out.steps[2] == 0 and (out.d[2] == 0).all() and np.array_equal(out.s[2], x[2].numpy())
    assert out.steps[0] == out.steps[4] == 0 and (out.steps[[1, 3]] > 0).all()  # eps 0: the base model, no steps
    np.testing.assert_allclose(out.eps, [0.0, 0.5, 0.5, 0.3, 0.0], rtol=1e-7)
    for k, e in ((1, 0.5), (3, 0.3)):  # the same answer as each slice alone at its eps
        alone = det.run(x[k : k + 1], e, max_steps=20)
        np.testing.assert_allclose(out.d[k], alone.d[0], atol=1e-6)
        assert out.distance[k] <= e * (1 + 1e-6)
    every = det.run(x, 0.5, skip_empty=False, max_steps=2)
    assert every.analysed.all()
    with pytest.raises(OptionError):
        det.run(x, np.zeros(3), max_steps=2)


def _sections():
    """Two slices whose foreground is 16 x 16 and 8 x 8 pixels (a large and a small brain section)."""
    g = torch.Generator().manual_seed(5)
    x = torch.zeros(2, 1, 32, 32)
    x[0, :, 8:24, 8:24] = 0.5 + 0.2 * torch.rand(1, 16, 16, generator=g)
    x[1, :, 12:20, 12:20] = 0.5 + 0.2 * torch.rand(1, 8, 8, generator=g)
    return x


def test_eps_scaled_by_area_is_the_plain_solve_at_the_scaled_eps(tiny_ae):
    """With a reference area of 256 px the 8 x 8 section is solved at half the eps (sqrt(64 / 256)): exactly what a
    detector without scaling gives at eps 0.05 and 0.025 (both below the free optimum's distance, so both
    bind); the solution stays in the smaller ball, the reported factor
    says so, and the base model is untouched."""
    from app.core.detector import area_scaled_eps, foreground_area

    x = _sections()
    assert foreground_area(x.numpy()).tolist() == [256, 64]
    np.testing.assert_allclose(area_scaled_eps(0.4, np.array([256, 64, 0]), 256.0).numpy(), [0.4, 0.2, 0.025])
    e, half = 0.05, 0.025
    scaled = Detector(tiny_ae, solver=FAST, batch_size=2, eps_reference_area=256.0)
    plain = Detector(tiny_ae, solver=FAST, batch_size=2)
    a = scaled.run(x, e, max_steps=200)
    b = plain.run(x, np.array([e, half], np.float32), max_steps=200)
    np.testing.assert_allclose(a.d, b.d, atol=1e-6)
    np.testing.assert_allclose(a.eps_factor, [1.0, 0.5])
    assert a.distance[1] == pytest.approx(half, rel=1e-2)  # on the smaller sphere
    assert a.distance[1] / a.eps_factor[1] == pytest.approx(e, rel=1e-2)
    assert not np.allclose(a.s[1], plain.run(x, e, max_steps=200).s[1], atol=1e-6)  # it does change the small one
    base = scaled.run(x, e, base_only=True)
    np.testing.assert_array_equal(base.d, plain.run(x, 0.0).d)
    np.testing.assert_array_equal(base.eps_factor, [1.0, 1.0])
    # per-image eps (the protocol's pairs) are scaled too; the viewer's solve_batch as well
    c = scaled.run(x, np.array([e, e], np.float32), max_steps=200)
    np.testing.assert_allclose(c.d, a.d, atol=1e-6)
    _, res = scaled.solve_batch(x, e, max_steps=200)
    assert float(res.distance[1]) == pytest.approx(half, rel=1e-2)
    with pytest.raises(OptionError):
        Detector(tiny_ae, eps_reference_area=0.0)


def test_from_card_reads_the_eps_scaling(tiny_ae):
    from app.nets.card import card_eps_reference_area

    assert Detector.from_card(tiny_ae, {"eps_scaling": {"reference_area_px": 300}}).eps_reference_area == 300.0
    for bad in ({}, {"eps_scaling": {}}, {"eps_scaling": {"reference_area_px": -1}},
                {"eps_scaling": {"reference_area_px": "big"}}, {"eps_scaling": {"reference_area_px": True}},
                {"eps_scaling": {"reference_area_px": float("inf")}}, {"eps_scaling": 5}):  # fmt: skip
        assert card_eps_reference_area(bad) is None
        assert Detector.from_card(tiny_ae, bad).eps_reference_area is None


def test_protocol_distances_are_in_units_of_the_eps_given(tiny_ae):
    """compute_maps reports ||z - z0|| over the slice's eps factor, so the binding fraction and the eps range read
    against the eps the grid names."""
    from app.core.protocol import compute_maps, solver_facts

    x = _sections()
    det = Detector(tiny_ae, solver=FAST, batch_size=4, eps_reference_area=256.0)
    pm = compute_maps(det, x.numpy(), [0.0, 0.05], max_steps=200)
    np.testing.assert_allclose(pm.distance[0.05], [0.05, 0.05], rtol=1e-2)  # both bind, each at its own eps
    plain = compute_maps(Detector(tiny_ae, solver=FAST, batch_size=4), x.numpy(), [0.025], max_steps=200)
    assert pm.distance[0.05][1] == pytest.approx(2 * plain.distance[0.025][1], rel=1e-5)
    assert solver_facts(pm.steps[0.05], pm.distance[0.05], 0.05, 200)[0] == 1.0  # read against 0.025 it would be 0.5


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(False, False), (True, False), (False, True)])
def test_bfloat16_search_steps_only_on_a_cpu_that_has_them(tiny_ae, slices, monkeypatch, avx512_bf16, amx):
    """A card's bfloat16 search steps run as such on a CPU with bfloat16 arithmetic (AVX-512 BF16 or AMX); on any
    other CPU torch emulates it many times slower (a 9-slice window took minutes instead of seconds on an AVX2-only
    CPU), so the detector runs them in float32 and says so. The answer is the float32 search's."""
    from app.core.device import native_bf16, search_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    native = avx512_bf16 or amx
    assert native_bf16("cpu") is native and not native_bf16("meta")
    assert search_precision("fp32", "cpu") == ("fp32", None)  # float32 asked: float32 everywhere
    card = {"calibration": {"settings": {"max_steps": 8, "solver_options": FAST.__dict__}}}
    det = Detector.from_card(tiny_ae, card)
    assert det.solver.precision == ("bf16" if native else "fp32") and det.solver_warning is None
    assert (det.solver.method, det.solver.max_steps) == ("spg", 8)  # nothing else of the card's solver changes
    if native:
        assert det.precision_note is None
        return
    assert "float32 search steps instead of the card's bfloat16" in det.precision_note
    assert "AVX-512 BF16 or AMX" in det.precision_note
    out = det.run(slices, 0.5)
    from dataclasses import replace

    ref = Detector(tiny_ae, solver=replace(det.solver, precision="fp32"), post=det.post).run(slices, 0.5)
    np.testing.assert_array_equal(out.d, ref.d)
