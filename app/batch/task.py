"""One batch task: one study in, ``DIR/<study-id>/`` out. Runs on a Dask worker (any process, any machine that
sees the inputs, the model and the output folder).

The study goes through the path ``detect`` takes (:func:`detect_volume`, which ``detect`` calls):
``app.io.load_study`` -> ``app.data.prepare_study`` (brain extraction, the card's normalisation and domain) ->
``Detector.from_card(...).run`` on the slices with foreground (the card's solver and post-processing) ->
``to_study_grid`` -> D inside the brain -> D > tau with the card's component rule, so the batch mask of a study
equals ``detect``'s (tested). The model is loaded once per worker process
(:func:`get_detector` caches it; :class:`ModelPreload` loads it when a worker starts, and again on a worker that
replaces a killed one), never once per study.

Outputs (each written atomically: temporary file + rename; ``result.json`` last, so its presence means the study
is complete): ``mask.nii.gz`` on the study's original grid, beside it the brain mask used
(``mask_brainmask.nii.gz``, when one was found) and the preprocessing record (``mask_preprocessing.json``, also
inside ``result.json``: warnings, brain extraction and N4, timings), optionally ``difference.nii.gz`` and
``pseudo_normal.nii.gz``, for a DICOM study ``mask.seg.dcm`` (the mask as a DICOM SEG over the source series,
written by :func:`app.io.seg.write_seg` as ``detect --seg`` writes it), ``thumbnail.png`` (the most abnormal
slice with the detection overlaid) and ``result.json``. A study that cannot be read or analysed gets a
``result.json`` with ``status: failed`` and the error, and the batch goes on.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.atomic import atomic_write_bytes
from app.batch.inputs import StudyRef
from app.core.findings import SCORE_VERSION
from app.filehash import file_sha256
from app.solver_options import SOLVE_BATCH

RESULT = "result.json"
MASK = "mask.nii.gz"
DIFFERENCE = "difference.nii.gz"
PSEUDO_NORMAL = "pseudo_normal.nii.gz"
THUMBNAIL = "thumbnail.png"
SEG = "mask.seg.dcm"  # DICOM input only: the mask as a DICOM SEG over the source series
RESULT_VERSION = 1
#: bumped when the detection itself changes (a rerun then redoes studies done before): 2 = detect's whole path
#: (brain extraction, the card's erosion and component rule, D kept inside the brain)
DETECTION_VERSION = 2


@dataclass(frozen=True)
class BatchSettings:
    """Everything that decides a study's result (plus how to compute it). Plain values: sent to every worker."""

    model: str  # checkpoint stem (absolute path)
    model_name: str
    card_sha256: str
    weights_sha256: str
    eps: float
    tau: float
    base_only: bool = False
    solver: str = "card"  # card | paper | fast (as detect --solver)
    max_steps: int | None = None
    batch_size: int = SOLVE_BATCH
    device: str = "cpu"
    threads: int = 1  # torch threads per worker process
    maps: bool = False
    skull_strip: bool = True  # brain extraction of skull-on brain MRI (detect --no-skull-strip turns it off)
    #: report only findings whose highest D exceeds this (the card's screening cut, ``screening.report_above``; the
    #: outline stays D > tau); None: every finding
    report_above: float | None = None
    #: app.core.triage_evidence.card_fingerprint of the card: what a rerun compares (a recorded triage measurement
    #: changes the card's file, and its SHA-256 above, but no study's result)
    card_fingerprint: str = ""

    @classmethod
    def for_checkpoint(cls, stem: str | os.PathLike, eps: float, tau: float, **options) -> BatchSettings:
        """Settings for the checkpoint ``stem`` (absolute path, no suffix): its name and the SHA-256 of its card
        and weights filled in, the rest from ``options``."""
        stem = Path(stem)
        card_hash, weights_hash = model_hashes(stem)
        return cls(
            model=str(stem),
            model_name=stem.name,
            card_sha256=card_hash,
            weights_sha256=weights_hash,
            eps=eps,
            tau=tau,
            card_fingerprint=_card_fingerprint(stem.with_suffix(".json")),
            **options,
        )

    def key(self) -> dict:
        """What a finished study must have been computed with to be skipped on a rerun."""
        return {
            "model": self.model_name,
            # the card's content without its triage measurements: recording one changes no study's result
            "card": self.card_fingerprint or self.card_sha256,
            "weights_sha256": self.weights_sha256,
            "eps": self.eps,
            "tau": self.tau,
            "base_only": self.base_only,
            "solver": self.solver,
            "max_steps": self.max_steps,
            "skull_strip": self.skull_strip,
            "detection": DETECTION_VERSION,
            "score": SCORE_VERSION,
            # only when set: results made before the cut existed keep their key
            **({"report_above": self.report_above} if self.report_above is not None else {}),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def record_header(ref: StudyRef, settings: BatchSettings) -> dict:
    """What every study record of a batch starts with (result.json, and the failure records of the runner): the
    input, its fingerprint and the settings a rerun compares to decide whether the study is done."""
    return {
        "version": RESULT_VERSION,
        "id": ref.id,
        "input": ref.to_dict(),
        "input_fingerprint": ref.fingerprint(),
        "settings": settings.key(),
        "model_card_sha256": settings.card_sha256,
        "eps": settings.eps,
        "tau": settings.tau,
    }


def raw_card(path: Path) -> dict | None:
    """:func:`app.nets.card.read_raw_card`, imported when called: importing this module (a Dask scheduler does when
    it unpickles a batch task) must not import torch, which ``app.nets`` does."""
    from app.nets.card import read_raw_card

    return read_raw_card(path)


def model_hashes(stem: Path) -> tuple[str, str]:
    """(card SHA-256, weights SHA-256) of the checkpoint ``stem``; for an ensemble card (app.core.ensemble) the
    weights hash covers every member's card and weights."""
    from app.core.ensemble import is_ensemble, members_weights_sha256

    card_file = stem.with_suffix(".json")
    card = raw_card(card_file)
    if is_ensemble(card):
        return file_sha256(card_file), members_weights_sha256(card)
    return file_sha256(card_file), file_sha256(stem.with_suffix(".safetensors"))


def _card_fingerprint(path: Path) -> str:
    from app.core.triage_evidence import card_fingerprint

    card = raw_card(path)
    return "" if card is None else card_fingerprint(card)  # unreadable: the file hash stands in


# ---- the model, once per worker process -------------------------------------------------------------------------
_LOCK = threading.Lock()
_DETECTORS: dict[tuple, tuple] = {}
_LOADS = {"count": 0}


def detector_loads() -> int:
    """How many times this process has loaded a model (a test checks it is once per worker)."""
    return _LOADS["count"]


def _cache_key(s: BatchSettings) -> tuple:
    return (s.model, s.card_sha256, s.weights_sha256, s.device, s.solver, s.max_steps, s.batch_size)


def get_detector(settings: BatchSettings):
    """(detector, model, card, device) for ``settings``, loaded on first use in this process and cached. The files
    on this worker must be the ones the client hashed (else the worker would silently run another model)."""
    key = _cache_key(settings)
    with _LOCK:
        hit = _DETECTORS.get(key)
        if hit is not None:
            return hit
        import torch

        from app.allocator import keep_freed_memory
        from app.core.device import resolve_device
        from app.core.ensemble import load_detector
        from app.errors import CheckpointError

        keep_freed_memory()  # a worker process: freed arrays reused, not faulted in again (app/allocator.py)

        if settings.threads and settings.threads > 0:
            torch.set_num_threads(int(settings.threads))
        stem = Path(settings.model)
        try:
            card_hash, weights_hash = model_hashes(stem)
        except OSError as exc:
            raise CheckpointError(f"model {stem} cannot be read on {socket.gethostname()} ({exc})") from None
        if (card_hash, weights_hash) != (settings.card_sha256, settings.weights_sha256):
            raise CheckpointError(
                f"model {stem} on {socket.gethostname()} differs from the client's (card or weights hash); "
                "give every worker the same model files"
            )
        device = resolve_device(settings.device)
        # the detector detect builds (a model's or an ensemble card's): the card's solver, layout, post-processing
        det, model, card = load_detector(
            stem, device, batch_size=settings.batch_size, solver=settings.solver, max_steps=settings.max_steps
        )
        _LOADS["count"] += 1
        _DETECTORS.clear()  # one model per worker: a new model replaces the old one
        _DETECTORS[key] = (det, model, card, device)
        return _DETECTORS[key]


try:  # the plugin base class; without distributed the task still runs in-process (tests, detect-equivalence)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class ModelPreload(_WorkerPlugin):  # type: ignore[misc,valid-type]
    """Loads the batch's model when a worker joins (and on the worker Dask starts in place of a killed one), so the
    first study on each worker does not pay for it and a wrong model file fails early, in the worker's log."""

    name = "matchgen-model"

    def __init__(self, settings: BatchSettings):
        self.settings = settings

    def setup(self, worker=None):
        try:
            get_detector(self.settings)
        except Exception:  # noqa: BLE001 - the task reports the same error per study, readably
            pass


# ---- the pipeline (same as detect) ----------------------------------------------------------------------------
@dataclass
class StudyMaps:
    d: np.ndarray  # canonical (X, Y, Z) difference map, 0 outside the brain (as detect writes it)
    s: np.ndarray  # canonical pseudo-normal (X, Y, Z[, C]); 0 on slices without foreground (as detect writes it)
    mask: np.ndarray  # canonical bool: the detection (D > tau, the card's component rule)
    foreground: np.ndarray  # canonical bool: the normalised study above the foreground threshold
    slices_analysed: int
    solver_steps: float  # mean steps per analysed slice
    solve_s: float
    prep: object = None  # the app.data.pipeline.PreparedStudy (brain mask, preprocessing record, domain warnings)
    prepare_s: float = 0.0  # prepare_study: N4 + brain extraction (skull-on MRI), normalisation, slicing


def detect_volume(
    study, detector, model, card: dict | None, eps: float, tau: float, base_only: bool, *, skull_strip: bool = True,
    progress=None,
) -> StudyMaps:  # fmt: skip
    """A whole study through the model: the one detection ``detect`` and ``batch`` share (``detect`` calls this).
    ``app.data.prepare_study`` (brain extraction unless ``skull_strip`` is False, the card's normalisation and
    domain checks) -> ``Detector.run`` on the slices with foreground (the detector from
    :meth:`~app.core.detector.Detector.from_card`: the card's solver and post-processing, D averaged over the
    card's z window of axial slices) -> the study grid -> D
    kept inside the brain -> the detection D > tau without components below the card's ``min_component_px``
    (:func:`app.core.maps.study_detection_mask`)."""
    from app.core.maps import study_detection_mask
    from app.data.domain import domain_from_card
    from app.data.pipeline import prepare_study, restrict_map_to_brain, to_study_grid
    from app.foreground import FOREGROUND_THRESHOLD

    cfg = model.config
    t_prep = time.perf_counter()
    prep = prepare_study(
        study, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=skull_strip, domain=domain_from_card(card)
    )
    t0 = time.perf_counter()
    prepare_s = t0 - t_prep
    out = detector.run(prep.x, eps, base_only=base_only, progress=progress)
    solve_s = time.perf_counter() - t0
    d_model = detector.post.across_slices(out.d, out.foreground, prep.geometry.spacing[2])  # the card's z window
    d_vol = restrict_map_to_brain(to_study_grid(d_model, prep.geometry, "map"), prep)  # the scalp is never flagged
    mask = study_detection_mask(d_vol, tau, prep.geometry, detector.post.min_component_px)
    s = np.where(out.analysed[:, None, None, None], out.s, 0.0).astype(np.float32)
    s_vol = to_study_grid(s if s.shape[1] > 1 else s[:, 0], prep.geometry, "map")
    grey = prep.volume if prep.volume.ndim == 3 else prep.volume.mean(axis=3)
    n = int(out.analysed.sum())
    steps = float(out.steps[out.analysed].mean()) if n else 0.0
    return StudyMaps(d_vol, s_vol, mask, grey > FOREGROUND_THRESHOLD, n, steps, solve_s, prep, prepare_s)


# ---- writing ---------------------------------------------------------------------------------------------------
def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def thumbnail_png(raw_slice: np.ndarray, mask_slice: np.ndarray, spacing_xy, window=None, longest: int = 192) -> bytes:
    """PNG bytes: the slice in radiological orientation (patient right on the left, anterior up), grey, with the
    detection filled in translucent red and outlined."""
    import io

    from PIL import Image
    from scipy import ndimage

    from app.viewer.slices import to_screen

    raw = np.asarray(raw_slice, dtype=np.float32)
    if raw.ndim == 3:
        raw = raw.mean(axis=2)
    if window is None:
        nz = raw[raw != 0]
        lo, hi = np.percentile(nz if nz.size else raw, [1, 99.5]) if raw.size else (0.0, 1.0)
    else:
        lo, hi = window
    grey = np.clip((raw - lo) / max(float(hi - lo), 1e-6), 0, 1)
    m = np.asarray(mask_slice, dtype=bool)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    red = np.array([1.0, 0.15, 0.1])
    rgb[m] = 0.55 * rgb[m] + 0.45 * red
    edge = m & ~ndimage.binary_erosion(m, border_value=0)
    rgb[edge] = red
    img = Image.fromarray((to_screen(rgb) * 255 + 0.5).astype(np.uint8), "RGB")
    sx, sy = (float(v) for v in spacing_xy)
    w, h = img.size[0] * sx, img.size[1] * sy  # screen columns run along X, rows along Y
    scale = longest / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _load(ref: StudyRef):
    from app.io import load_study
    from app.io.dicom import load_dicom_series

    if ref.kind == "dicom-series":
        return load_dicom_series(list(ref.files), ref.source)
    return load_study(ref.files[0])


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _clear_outputs(d: Path) -> None:
    from app.viewer.study_run import beside_paths

    for name in (MASK, SEG, DIFFERENCE, PSEUDO_NORMAL, THUMBNAIL):
        (d / name).unlink(missing_ok=True)
    for p in beside_paths(d / MASK):
        p.unlink(missing_ok=True)


def process_study(ref: StudyRef, settings: BatchSettings, out_dir: str) -> dict:
    """Analyse one study and write ``out_dir/<id>/``; returns the study's ``result.json`` content. Errors a study
    can cause are recorded (``status: failed``), never raised; a killed worker is Dask's to retry."""
    from app.core.ensemble import family_of
    from app.core.findings import (
        SCORE_DEFINITION,
        find_findings,
        intensity_deviation_q999,
        label_findings,
        reported_findings,
        study_score,
    )
    from app.errors import MatchGenError
    from app.io import save_mask, save_on_study_grid
    from app.io.seg import AlgorithmInfo, is_dicom_study, write_seg
    from app.io.study import one_line
    from app.viewer.study_run import all_warnings, preprocessing_record, write_beside

    t_start = time.perf_counter()
    started = time.time()
    folder = Path(out_dir) / ref.id
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    notes: list[str] = []
    result: dict = {
        **record_header(ref, settings),
        "worker": _worker_name(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    try:
        t = time.perf_counter()
        det, model, card, device = get_detector(settings)
        timings["model_s"] = time.perf_counter() - t
        result["device"] = str(device)
        result["search_precision"] = det.solver.precision  # fp32 where the device has no bfloat16 (app.core.device)
        result["model_loads_in_process"] = detector_loads()
        t = time.perf_counter()
        study = _load(ref)
        timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        vol = detect_volume(
            study, det, model, card, settings.eps, settings.tau, settings.base_only, skull_strip=settings.skull_strip
        )
        timings["solve_s"] = vol.solve_s
        timings["prepare_s"] = time.perf_counter() - t - vol.solve_s
        timings["preprocess_s"] = vol.prepare_s
        t = time.perf_counter()
        labels, _ = label_findings(vol.mask)
        findings = candidates = find_findings(vol.mask, vol.d, study.affine, labels=labels)
        if settings.report_above is not None:  # outlined at tau, reported above the cut (the mask written too)
            vol.mask, findings = reported_findings(candidates, labels, settings.report_above)
        score = study_score(findings, vol.mask, vol.d, study.affine, vol.foreground, candidates=candidates)
        timings["findings_s"] = time.perf_counter() - t
        t = time.perf_counter()
        _clear_outputs(folder)
        save_mask(study, vol.mask, folder / MASK)
        outputs = {"mask": MASK}
        if is_dicom_study(study):  # the writer detect --seg and the viewer use, over the source series
            family = family_of(card, model)
            algo = AlgorithmInfo.for_checkpoint(settings.model, family, settings.eps, settings.tau, settings.base_only)
            try:
                write_seg(study, vol.mask, folder / SEG, algo)
                outputs["seg"] = SEG
            except MatchGenError as exc:  # e.g. a multi-frame image: the NIfTI mask stands, the reason is recorded
                notes.append(f"no DICOM SEG: {one_line(exc)}")
        if settings.maps:
            save_on_study_grid(study, vol.d, folder / DIFFERENCE)
            save_on_study_grid(study, vol.s, folder / PSEUDO_NORMAL)
            outputs.update(difference=DIFFERENCE, pseudo_normal=PSEUDO_NORMAL)
        # the brain mask and the preprocessing record, as detect writes them beside its mask (app/viewer/study_run.py)
        info = {"name": settings.model_name, "card_sha256": settings.card_sha256}
        record = preprocessing_record(study, vol.prep, info, settings.eps, settings.tau, base_only=settings.base_only)
        brain_out, record_out = write_beside(study, vol.prep, folder / MASK, record)
        if brain_out is not None:
            outputs["brain_mask"] = brain_out.name
        outputs["preprocessing"] = record_out.name
        k = score.peak_slice
        png = thumbnail_png(study.data[:, :, k], vol.mask[:, :, k], study.spacing[:2])
        atomic_write_bytes(folder / THUMBNAIL, png)
        outputs["thumbnail"] = THUMBNAIL
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start
        spacing = study.spacing
        result.update(
            status="ok",
            outputs=outputs,
            warnings=all_warnings(study, vol.prep.warnings) + notes,
            preprocessing={k2: v for k2, v in record.items() if k2 not in ("model", "eps", "tau", "study")},
            grid={
                "shape": list(study.shape),
                "spacing_mm": [round(v, 6) for v in spacing],
                "original_shape": list(study.original_shape),
                "axcodes": "".join(study.original_axcodes),
                "modality": study.modality,
            },
            score=score.score,
            score_definition=SCORE_DEFINITION,
            peak_slice=score.peak_slice,
            largest_ml=score.largest_ml,
            flagged_ml=score.flagged_ml,
            n_findings=score.n_findings,
            n_outlined=len(candidates),  # findings of D > tau, before the reporting cut (the same without one)
            report_above=settings.report_above,
            d_q999=score.d_q999,
            peak_d=score.peak_d,
            d_q50=score.d_q50,
            d_q90=score.d_q90,
            intensity_q999=intensity_deviation_q999(vol.prep.volume, vol.foreground),
            findings=[f.to_dict() for f in findings[:200]],
            findings_listed=min(len(findings), 200),
            slices_analysed=vol.slices_analysed,
            solver_steps_mean=vol.solver_steps,
            timings={k2: round(v, 4) for k2, v in timings.items()},
        )
    except MatchGenError as exc:
        _clear_outputs(folder)
        result.update(status="failed", error=one_line(exc), timings=timings)
    except Exception as exc:  # noqa: BLE001 - a bug on one study must not stop an archive; recorded with its type
        _clear_outputs(folder)
        result.update(status="failed", error=f"internal error: {type(exc).__name__}: {one_line(exc)}", timings=timings)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(folder / RESULT, _finite(result))
    return result


def _finite(obj):
    """NaN/inf (e.g. mean D of a finding without a map) as null: result.json is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
