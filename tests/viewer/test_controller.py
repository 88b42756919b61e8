"""The viewer's controller without Qt: request and cache policy, timing, study preparation, the whole-volume run
and its pending save, Figure-2 export on its own lane, eps grid, recent files, model switching.

Lanes are :class:`app.viewer.jobs.ManualLane`: jobs run when the test says so and their reports are delivered
when the test says so, which is how a late report of an older request is produced on purpose."""

from collections import defaultdict

import numpy as np
import pytest
from viewer_study import write_model, write_study

from app.viewer.controller import ViewerController
from app.viewer.jobs import ManualLane


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    import app.nets.zoo as zoo_mod

    models = tmp_path / "models"
    write_model(models, "tiny")
    write_model(models, "tiny2", seed=1)
    write_model(models, "small16", seed=2, size=16)
    monkeypatch.setattr(zoo_mod, "MODELS_DIR", models)
    study, mask = write_study(tmp_path / "study")
    return {"study": study, "mask": mask, "tmp": tmp_path, "models": models}


def make(zoo, **kw):
    """A controller with manual lanes and a record of every event; the study is loaded, the model chosen."""
    lanes = {n: ManualLane(n) for n in ("slice", "volume", "export", "load")}
    from app.figure import write_figure2

    ctl = ViewerController(
        lanes=lanes,
        device="cpu",
        precompute_eps_grid=kw.pop("precompute", False),
        prefetch_slices=kw.pop("prefetch", False),
        figure_writer=write_figure2,
        **kw,
    )
    seen = defaultdict(list)
    for name in ("result", "timing", "error", "status", "saved", "export_done", "volume_running", "recent", "info"):
        getattr(ctl.events, name).connect(seen[name].append)
    assert ctl.set_model("tiny")
    ctl.open_study(zoo["study"], zoo["mask"])
    lanes["load"].run()
    assert ctl.state.study is not None
    return ctl, lanes, seen


def finals(seen):
    return [s.result for s in seen["result"] if s.final]


def test_first_result_then_cached_values_answer_at_once_with_their_own_timing(zoo):
    clock = Clock()
    ctl, lanes, seen = make(zoo, clock=clock)
    k = ctl.state.slice_index
    assert k == 2 and ctl.want.key == ("tiny", 2, 0.2)
    clock.t += 56.11  # the solver takes long (the job runs "meanwhile")
    lanes["slice"].run()
    r = ctl.shown
    assert r.eps == pytest.approx(0.2) and r.slice_index == k and finals(seen) == [r]
    assert seen["timing"][-1].endswith("shown after 56.11 s")
    # +MG off: the base result was computed on the way (one decoder pass) and is shown at once, from the cache,
    # and the figure is the time from *this* request to the screen
    clock.t += 30.0
    submitted = lanes["slice"].submitted
    ctl.state.use_mg = False
    assert ctl.shown.eps == 0.0 and lanes["slice"].submitted == submitted
    assert seen["timing"][-1] == f"cached ({ctl.shown.steps} steps) | shown after 0.00 s"
    clock.t += 12.0
    ctl.state.use_mg = True
    assert ctl.shown is r and seen["timing"][-1].endswith("shown after 0.00 s")
    assert seen["result"][-1].cached


def test_newest_request_wins_and_a_late_result_of_an_older_request_is_not_shown(zoo):
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    seen["result"].clear()
    lane = lanes["slice"]
    ctl.state.eps = 0.1
    g1 = lane.generation
    ctl.state.eps = 0.3  # replaces the waiting job
    assert lane.generation == g1 + 1
    lane.run()
    assert [round(r.eps, 3) for r in finals(seen)] == [0.3]
    assert ctl.cache.get("tiny", 2, 0.1) is None  # the replaced job never ran
    # now a job that ran but whose reports arrive after a newer request: cached, never shown
    seen["result"].clear()
    ctl.state.eps = 0.4
    lane.step()  # computes 0.4; its report is still in the event queue
    ctl.state.eps = 0.45
    lane.deliver()
    assert ctl.cache.get("tiny", 2, 0.4) is not None
    assert all(abs(s.result.eps - 0.4) > 1e-9 for s in seen["result"])
    lane.run()
    assert finals(seen)[-1].eps == pytest.approx(0.45) and ctl.shown.eps == pytest.approx(0.45)


def test_results_of_a_previous_study_or_model_are_dropped(zoo):
    ctl, lanes, seen = make(zoo)
    lane = lanes["slice"]
    lane.step()  # the first study's result, not yet delivered
    other, _ = write_study(zoo["tmp"] / "other", shape=(40, 48, 6))
    ctl.open_study(other)
    lanes["load"].run()
    lane.deliver()  # arrives after the new study is on screen: same model, slice and eps, other study
    assert ctl.shown is None and len(ctl.cache) == 0
    lane.run()
    assert ctl.shown is not None and ctl.state.study.name == "head.nii.gz"  # write_study names it so
    # a model switch drops the old model's late reports the same way
    ctl.state.eps = 0.3
    lane.step()
    assert ctl.set_model("tiny2")
    lane.deliver()
    assert all(r.model == "tiny2" for r in ctl.cache._d.values())


def test_study_is_prepared_in_the_job_once_per_model_input(zoo):
    ctl, lanes, seen = make(zoo)
    preps = ctl.state.study._preps
    # opening the study and choosing the model prepared nothing on the calling (GUI) thread
    assert preps.computed == 0 and not ctl.session.slices.is_prepared
    assert "preparing head.nii.gz for tiny" in seen["info"][-1]
    lanes["slice"].run()
    assert preps.computed == 1 and ctl.session.slices.is_prepared
    assert ctl.set_model("tiny2")  # same input format (32x32, 1 channel, same normalisation): no new preparation
    lanes["slice"].run()
    assert preps.computed == 1 and ctl.shown.model == "tiny2"
    assert ctl.set_model("small16")  # another size: prepared once, in the job
    assert preps.computed == 1
    lanes["slice"].run()
    assert preps.computed == 2 and ctl.shown.model == "small16" and ctl.shown.s.shape == (40, 48)
    assert ctl.set_model("tiny")  # back: still cached
    lanes["slice"].run()
    assert preps.computed == 2 and ctl.shown.model == "tiny"


def test_a_study_that_does_not_fit_the_model_is_an_error_from_the_job(zoo, monkeypatch):
    ctl, lanes, seen = make(zoo)
    import app.data.pipeline as pipeline
    from app.errors import StudyError

    def unfit(*a, **k):
        raise StudyError("an RGB study does not fit a model with 1 channel(s)")

    monkeypatch.setattr(pipeline, "prepare_study", unfit)
    lanes["slice"].run()
    assert seen["error"] == [("Study does not fit the model", "an RGB study does not fit a model with 1 channel(s)")]
    assert ctl.session is None and ctl.shown is None


def test_save_waits_for_the_run_and_a_cancelled_run_never_saves_later(zoo):
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    first = zoo["tmp"] / "first.nii.gz"
    assert ctl.save_mask(str(first)) is False  # no volume yet: runs it first
    assert ctl.volume_run is not None and ctl.volume_run.save_path == str(first)
    ctl.cancel_volume()
    lanes["volume"].run()
    assert ctl.volume_run is None and not first.exists()
    ctl.run_volume()  # a later run without a save
    lanes["volume"].run()
    assert ctl.volume is not None and not first.exists()  # the stale path was not used
    second = zoo["tmp"] / "second.nii.gz"
    assert ctl.save_mask(str(second)) is True and second.exists()  # the run matches: written at once


def test_a_replaced_run_drops_its_save_and_the_save_keeps_its_tau(zoo):
    import nibabel as nib

    ctl, lanes, seen = make(zoo)
    p1, p2 = zoo["tmp"] / "p1.nii.gz", zoo["tmp"] / "p2.nii.gz"
    ctl.save_mask(str(p1))
    ctl.state.eps = 0.3
    ctl.save_mask(str(p2), tau=0.05)  # another eps: a new run replaces the first and its save
    ctl.state.tau = 0.9  # changed while the run goes on: the save keeps the tau it was asked with
    lanes["volume"].run()
    assert p2.exists() and not p1.exists()
    d = ctl.volume.d
    assert ctl.volume.eps == pytest.approx(0.3)
    expected = ctl.state.study.study.to_original(d > 0.05)
    np.testing.assert_array_equal(np.asarray(nib.load(str(p2)).dataobj) > 0, expected)
    assert expected.any()


def test_figure_export_has_its_own_lane_state_and_error_title(zoo, monkeypatch):
    ctl, lanes, seen = make(zoo)
    out = zoo["tmp"] / "mask.nii.gz"
    ctl.save_mask(str(out))  # a volume run with a save waiting for it
    vgen = lanes["volume"].generation
    fig = zoo["tmp"] / "fig.svg"
    ctl.export_figure(["tiny", "tiny2"], str(fig))
    assert lanes["volume"].generation == vgen and ctl.volume_run.save_path == str(out)  # not cancelled
    lanes["export"].run()
    assert fig.exists() and seen["export_done"] == [fig] and ctl.export_job is None
    # a failing export: its own title; the volume run and its save go on
    ctl.export_figure(["no-such-model"], str(zoo["tmp"] / "bad.svg"))
    lanes["export"].run()
    assert seen["error"][-1][0] == "Figure export failed" and "no-such-model" in seen["error"][-1][1]
    assert ctl.volume_run is not None
    lanes["volume"].run()
    assert out.exists() and seen["saved"] == [out]
    assert not any(t == "Whole-volume run failed" for t, _ in seen["error"])


def test_a_new_study_cancels_the_volume_run_and_its_save(zoo):
    ctl, lanes, seen = make(zoo)
    out = zoo["tmp"] / "m.nii.gz"
    ctl.save_mask(str(out))
    lanes["volume"].step()  # the run finished; its report is still queued
    other, _ = write_study(zoo["tmp"] / "other", shape=(40, 48, 6))
    ctl.open_study(other)
    lanes["load"].run()
    lanes["volume"].deliver()
    assert not out.exists() and ctl.volume is None and ctl.volume_run is None


def test_volume_failure_is_titled_as_such(zoo, monkeypatch):
    ctl, lanes, seen = make(zoo)
    from app.errors import CheckpointError

    def broken(*a, **k):
        raise CheckpointError("decoder exploded")

    monkeypatch.setattr(ctl.session, "run_volume", broken)
    ctl.save_mask(str(zoo["tmp"] / "m.nii.gz"))
    lanes["volume"].run()
    assert seen["error"] == [("Whole-volume run failed", "decoder exploded")]
    assert ctl.volume_run is None and seen["volume_running"][-1] is False


def test_volume_results_fill_the_cache_within_its_budget(zoo):
    from app.viewer.compute import result_nbytes

    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    one = result_nbytes(ctl.shown)
    ctl.cache.max_bytes = 3 * one  # room for three slices' results
    assert ctl.state.slice_index == 2
    assert ctl._slices_to_keep(ctl.state.study) == [3, 1, 2]  # the nearest three, the current one last
    ctl.run_volume()
    lanes["volume"].run()
    assert ctl.cache.nbytes <= 3 * one and len(ctl.cache) == 3
    # the slices around the current one are kept: browsing them needs no solver
    before = lanes["slice"].submitted
    for k in (1, 3, 2):
        ctl.state.slice_index = k
        assert ctl.shown.slice_index == k and lanes["slice"].submitted == before
        np.testing.assert_array_equal(ctl.shown.d, ctl.volume.d[:, :, k])
    ctl.state.slice_index = 5  # not kept: solved again
    assert lanes["slice"].submitted == before + 1


def test_eps_positions_grid_snapping_and_nudging(zoo):
    ctl, lanes, seen = make(zoo)
    assert ctl.state.eps_max == 0.5 and ctl.eps_steps == 30
    step = ctl.eps_step
    assert ctl.eps_positions()[:2] == [0.0, step] and ctl.eps_positions()[-1] == pytest.approx(0.5)
    assert ctl.eps_grid() == [e for e in ctl.eps_positions() if e > 0]  # no card grid: every slider position
    ctl.session.eps_grid = [0.0, step / 4, step / 2, step, 0.25, 0.5]  # halvings near 0 as calibrate adds them
    assert ctl.eps_grid() == pytest.approx([step, 0.25, 0.5])
    assert ctl.snap_eps(0.255) == pytest.approx(0.25) and ctl.snap_eps(0.26) == pytest.approx(16 * step)
    ctl.state.eps = 0.2
    ctl.nudge_eps(3)
    assert ctl.state.eps == pytest.approx(0.25)


def test_precompute_runs_after_the_wanted_value_and_answers_the_slider(zoo):
    ctl, lanes, seen = make(zoo, precompute=True)
    ctl.eps_steps = 5
    lanes["slice"].run()
    k = ctl.state.slice_index
    assert all(ctl.cache.get("tiny", k, e) is not None for e in (0.1, 0.2, 0.3, 0.4, 0.5))
    before = lanes["slice"].submitted
    ctl.state.eps = 0.4
    assert ctl.shown.eps == pytest.approx(0.4) and ctl.shown.precomputed and lanes["slice"].submitted == before
    assert "precomputed with the eps grid" in seen["info"][-1]


def test_neighbours_solved_ahead_answer_scrolling_from_the_cache(zoo):
    """After a result the next two slices in the scrolling direction and one behind are solved at the same eps;
    scrolling then shows them at once, identical to a request that solved them; the direction follows the reader."""
    ctl, lanes, seen = make(zoo, prefetch=True)
    lane = lanes["slice"]
    lane.run()
    k, n = ctl.state.slice_index, ctl.session.slices.n_slices
    assert (k, n) == (2, 6)
    assert [j for j in range(n) if ctl.cache.get("tiny", j, 0.2) is not None] == [1, 2, 3, 4]
    ahead = ctl.cache.get("tiny", 3, 0.2)
    ctl.state.slice_index = 3  # scrolling up: shown from the cache, final, no solver run for it
    assert ctl.shown is ahead and seen["result"][-1].cached and seen["result"][-1].final
    assert seen["timing"][-1].startswith("cached")
    lane.run()  # the next slice up (5) is solved ahead; 4 and 2 were there already
    assert [j for j in range(n) if ctl.cache.get("tiny", j, 0.2) is not None] == [1, 2, 3, 4, 5]
    # what was solved ahead is what a request for that slice alone gives
    cold, lanes2, _ = make(zoo)
    cold.state.slice_index = 3
    lanes2["slice"].run()
    np.testing.assert_array_equal(cold.shown.d, ahead.d)
    np.testing.assert_array_equal(cold.shown.s, ahead.s)
    # scrolling down: the two below come first, the one above after them
    ctl.state.slice_index = 1
    assert [round(r.eps, 3) for r in [ctl.shown]] == [0.2] and ctl.shown.slice_index == 1
    lane.run()
    assert ctl.cache.get("tiny", 0, 0.2) is not None
    # +MG off: the neighbours are solved ahead for the base model too (eps 0)
    ctl.state.use_mg = False
    lane.run()
    assert all(ctl.cache.get("tiny", j, 0.0) is not None for j in (0, 1, 2))
    # nothing is solved ahead when it is off
    off, lanes3, _ = make(zoo)
    lanes3["slice"].run()
    assert [j for j in range(n) if off.cache.get("tiny", j, 0.2) is not None] == [2]


def _spy_solves(ctl, on_solve):
    """Record every (slice, eps) the session solves; ``on_solve(j, eps, should_stop)`` runs as each solve starts
    (a reader's key press while the worker is busy with it)."""
    sess, calls = ctl.session, []
    orig = sess.solve_slice

    def spy(j, e, **kw):
        calls.append((j, round(e, 3)))
        on_solve(j, e, kw.get("should_stop") or (lambda: False))
        return orig(j, e, **kw)

    sess.solve_slice = spy
    return calls


def test_a_slice_being_solved_ahead_is_neither_stopped_nor_solved_twice(zoo):
    """The reader presses Up onto slice 3 while the worker solves it ahead: that solve goes on (not stopped by the
    newer request), is shown when it arrives, and is not asked for again; the newer request plans 4 and 5."""
    ctl, lanes, seen = make(zoo, prefetch=True)
    lanes["slice"].cancel()  # the opening request, planned before the spy: asked again below
    ctl.cache.clear()
    stopped = []

    def press_up(j, e, should_stop):
        if (j, round(e, 3)) == (3, 0.2) and ctl.state.slice_index == 2:
            ctl.state.slice_index = 3
            stopped.append(should_stop())

    calls = _spy_solves(ctl, press_up)
    ctl.request()
    lanes["slice"].run()
    assert stopped == [False]  # still wanted after the newer request
    assert any("being solved ahead" in m for m in seen["info"])
    assert calls == [(2, 0.0), (2, 0.2), (3, 0.2), (4, 0.2), (5, 0.2)]  # 3 once; 1 (behind 2) no longer wanted
    assert ctl.shown.slice_index == 3 and ctl.shown.final and ctl.shown.eps == pytest.approx(0.2)


def test_scrolling_on_lets_the_slice_after_finish(zoo):
    """Up onto slice 3 (solved ahead, shown from the cache) while slice 4 is being solved ahead: 4 is still wanted
    from 3, so its solve is not stopped and not started again; a jump away stops what is no longer wanted."""
    ctl, lanes, seen = make(zoo, prefetch=True)
    lanes["slice"].cancel()
    ctl.cache.clear()
    stopped = {}

    def on_solve(j, e, should_stop):
        if (j, round(e, 3)) == (4, 0.2) and ctl.state.slice_index == 2:
            ctl.state.slice_index = 3  # cached: shown at once
            assert ctl.shown.slice_index == 3 and ctl.shown.final
            stopped[4] = should_stop()
        if (j, round(e, 3)) == (5, 0.2):
            ctl.state.slice_index = 0  # a jump: 5 is no longer wanted
            stopped[5] = should_stop()

    calls = _spy_solves(ctl, on_solve)
    ctl.request()
    lanes["slice"].run()
    assert stopped == {4: False, 5: True}
    assert calls.count((4, 0.2)) == 1 and calls[:4] == [(2, 0.0), (2, 0.2), (3, 0.2), (4, 0.2)]
    assert ctl.cache.get("tiny", 4, 0.2) is not None and ctl.cache.get("tiny", 5, 0.2) is None


def test_scroll_direction_orders_the_slices_solved_ahead(zoo):
    ctl, lanes, _ = make(zoo, prefetch=True)
    assert ctl._neighbours(2) == [3, 4, 1]  # no move yet: up
    assert ctl._neighbours(1) == [0, 2]  # moved down: 0 (and -1, outside), then 2 behind
    assert ctl._neighbours(1) == [0, 2]  # the same slice again (an eps change): the direction stays
    assert ctl._neighbours(5) == [4]  # moved up to the top: nothing above


def test_model_switch_takes_the_card_and_asks_once(zoo):
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    ctl.state.tau = 0.7
    before = lanes["slice"].submitted
    assert ctl.set_model("tiny2")
    assert lanes["slice"].submitted == before + 1  # eps_max, eps and tau changed: one request
    assert (ctl.state.eps_max, ctl.state.eps, ctl.state.tau) == (0.5, 0.2, 0.15)  # the user's 0.7 replaced
    assert ctl.session.name == "tiny2" and len(ctl.cache) == 0
    assert not ctl.set_model("no-such-model")
    assert seen["error"][-1][0] == "Cannot use model" and ctl.session.name == "tiny2"


def test_tau_follows_the_card_per_mode_until_the_user_sets_one(zoo):
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    assert ctl.state.tau == pytest.approx(0.15) and ctl.tau_from_card  # the card's tau for +MG
    ctl.state.use_mg = False
    assert ctl.state.tau == pytest.approx(0.2) and ctl.tau_from_card  # the card's tau_base, as detect --base-only
    ctl.state.use_mg = True
    assert ctl.state.tau == pytest.approx(0.15)
    ctl.state.tau = 0.33  # the user's own
    ctl.state.use_mg = False
    assert ctl.state.tau == pytest.approx(0.33) and not ctl.tau_from_card
    assert ctl.set_model("tiny2")  # a new model: its card again
    assert ctl.state.tau == pytest.approx(0.2) and ctl.tau_from_card  # +MG is off: tau_base


def test_recent_files_newest_first_without_duplicates(zoo):
    from app.viewer.controller import MAX_RECENT, MemoryStore

    store = MemoryStore()
    ctl, lanes, seen = make(zoo, recent_store=store)
    assert store.items == [str(zoo["study"])] and seen["recent"][-1] == [str(zoo["study"])]
    for i in range(MAX_RECENT + 2):
        ctl.recent.add(f"/studies/{i}.nii.gz")
    ctl.recent.add(str(zoo["study"]))
    items = ctl.recent.items()
    assert items[0] == str(zoo["study"]) and len(items) == MAX_RECENT and len(set(items)) == MAX_RECENT
    assert items[1] == f"/studies/{MAX_RECENT + 1}.nii.gz"


def test_a_broken_file_is_a_readable_error_and_the_study_stays(zoo):
    ctl, lanes, seen = make(zoo)
    before = ctl.state.study
    bad = zoo["tmp"] / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not gzip" * 10)
    ctl.open_study(bad)
    lanes["load"].run()
    title, text = seen["error"][-1]
    assert title == "Cannot open study" and "broken.nii.gz" in text
    assert ctl.state.study is before


def test_readout_and_detection_follow_the_shown_result(zoo):
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    r = ctl.shown
    text = ctl.readout(10, 20)
    assert text.startswith("voxel (10, 20, 2)") and f"D {r.d[10, 20]:.3f}" in text and "GT " in text
    raw = ctl.state.study.raw_slice(2)[10, 20]  # values with their decimals, not a float32's binary expansion
    assert f"| input {float(raw):.2f} | pseudo-normal {float(r.s[10, 20]):.3f} | D " in text
    assert ctl.readout(-1, -1) == ""
    cursor = []
    ctl.events.cursor.connect(cursor.append)
    assert ctl.hover(10, 20) == text and ctl.hover(-1, -1) == ""
    assert cursor == [(10, 20, 2), None]
    rgba, dsc = ctl.detection()
    gt = ctl.state.study.gt_slice(2)
    from app.core.metrics import dice

    assert dsc == pytest.approx(dice(r.d > ctl.state.tau, gt))
    assert rgba.shape == (40, 48, 4)


def test_controller_imports_no_qt():
    import subprocess
    import sys

    code = (
        "import sys, app.viewer.controller, app.viewer.jobs; "
        "assert not any(m.startswith(('PySide6', 'pyqtgraph', 'qasync')) for m in sys.modules), 'Qt imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manual_lane_newest_wins_and_follow_ups():
    lane = ManualLane()
    got = []
    lane.listen(lambda g, k, p: got.append((g, k, p)), lambda g, m: got.append((g, "failed", m)))

    def job(tag):
        def run(ctx):
            ctx.emit("final", tag)
            ctx.follow_up.append(lambda c: c.emit("bg", tag))

        return run

    g1 = lane.submit(job("a"))
    g2 = lane.submit(job("b"))  # replaces a
    lane.run()
    assert got == [(g2, "final", "b"), (g2, "bg", "b")] and g1 < g2 and lane.is_idle()
    got.clear()
    lane.submit(lambda ctx: (_ for _ in ()).throw(ValueError("boom")))
    lane.run()
    assert got[0][1] == "failed" and "ValueError: boom" in got[0][2]


def test_executor_lane_runs_on_its_own_thread_and_hands_reports_over():
    import threading

    from app.viewer.jobs import ExecutorLane

    posted, got, ran_on = [], [], []
    lane = ExecutorLane("test", posted.append)  # the "GUI thread" runs what was posted when it likes
    lane.listen(lambda g, k, p: got.append((g, k, p)), lambda g, m: got.append((g, "failed", m)))
    done = threading.Event()

    def job(ctx):
        ran_on.append(threading.current_thread())
        ctx.emit("study", 42)
        done.set()

    g = lane.submit(job)
    assert done.wait(10)
    for _ in range(100):
        if lane.is_idle():
            break
        threading.Event().wait(0.01)
    assert ran_on[0] is not threading.main_thread() and got == []  # nothing delivered behind the GUI's back
    for fn in posted:
        fn()
    assert got == [(g, "study", 42)]
    lane.stop()
    assert lane.generation > g


def test_the_readout_names_a_capped_objective(zoo):
    """A card calibrated with ``--loss-cap`` applies the capped objective; the readout must not call it plain L1."""
    from app.nets.checkpoint import read_card, write_card

    card = read_card(zoo["models"] / "tiny2")
    card["calibration"] = {"settings": {"solver_options": {"method": "spg", "loss_cap": 0.2}, "max_steps": 5}}
    write_card(zoo["models"] / "tiny2", card)
    ctl, lanes, seen = make(zoo)
    lanes["slice"].run()
    assert seen["info"][-1].splitlines()[-1].startswith("L1 loss ")  # the plain objective of "tiny"
    assert ctl.set_model("tiny2")
    lanes["load"].run()
    lanes["slice"].run()
    assert ctl.session.solver.loss_cap == 0.2
    assert seen["info"][-1].splitlines()[-1].startswith("L1 loss (capped at 0.2) ")


def test_the_readout_says_detected_where_the_detection_panel_shows_it(zoo):
    """The card's minimum component size removes small pieces of D > tau from the detection panel; the pixel readout
    says "detected" by the same mask, not by D > tau alone."""
    import json

    card_path = zoo["models"] / "tiny.json"
    card = json.loads(card_path.read_text())
    card["postprocess"] = {"min_component_px": 40}
    card_path.write_text(json.dumps(card))
    ctl, lanes, _ = make(zoo)
    lanes["slice"].run()
    d = ctl.shown.d
    ctl.state.tau = float(np.quantile(d, 0.97))  # a few pixels above tau, in pieces of every size
    shown = ctl.shown_detection()
    raw = d > ctl.state.tau
    assert shown.sum() < raw.sum()  # the rule dropped some pieces ...
    dropped = np.argwhere(raw & ~shown)
    kept = np.argwhere(shown)
    for x, y in dropped[:5]:  # ... the readout calls them not detected, as the panel shows them
        assert "| not detected" in ctl.readout(int(x), int(y))
    for x, y in kept[:5]:
        assert "| detected" in ctl.readout(int(x), int(y))
    rgba, _ = ctl.detection()  # the panel's overlay: a dropped piece outside the lesion is not painted
    gt = ctl.state.study.gt_slice(ctl.state.slice_index)
    assert (rgba[..., 3] > 0)[kept[:, 0], kept[:, 1]].all()
    outside = [(x, y) for x, y in dropped if not gt[x, y]]
    assert outside and all(rgba[x, y, 3] == 0 for x, y in outside)
    ctl.state.tau = float(np.quantile(d, 0.5))  # a new tau: recomputed, not the previous tau's mask
    assert ctl.shown_detection().sum() > shown.sum()
