"""``bench triage``: does the study-level score put abnormal studies first?

Studies are built from the benchmark's held-out subject (the ITK KmeansTest T1, skull-stripped; never seen in
training, see :mod:`app.data.brain_proxy`): each study is an independent random augmentation of it
(:func:`app.data.augment.augment_volume`: voxel size, small rotation and scaling, elastic warp, gamma, bias field,
noise), so normal studies differ from each other as scans of one person on different days would; abnormal studies
get ``load`` synthetic lesions (:func:`app.data.lesions.insert_lesions`) on top, for several loads. Every study is
then run through ``batch`` (the same Dask path, same files) for each model, base model and +MG, and the worklist
is scored: AUROC of the study-level score for abnormal vs normal (scikit-learn), the ranks of the abnormal
studies in the worklist, the fraction of abnormal studies among the top n_abnormal, and the same AUROC for the
two alternative scores each result.json also records (total flagged volume; 99.9th percentile of D).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from app.core.triage_evidence import WHOLE_HEAD

#: the study-level scores compared: each result.json's ``score`` (the worklist's: the 99.9th percentile of D since
#: the 48-study measurement, the peak D and the largest finding's volume before), and candidates computed the same
#: way from any result.json:
#: ``largest_ml`` (the largest finding's volume), ``flagged_ml``, ``d_q999``, ``peak_d`` (max over findings of
#: their max D; 0 without findings) and ``d_mass`` (max over findings of mean D x volume in ml: the largest
#: integrated difference; added before the 48-study measurement, docs/bench/triage-48/rule.md), and, added before
#: the measurement with the z-window card (docs/bench/triage-z/rule.md), ``d_q999_rel`` (the 99.9th percentile of
#: D over the foreground divided by its median) and ``d_q999_q90`` (divided by its 90th percentile): the study's
#: most deviating tissue against its own typical tissue. Fixed before each measurement; the score was chosen among
#: them on the validation split only (``--split val``, docs/batch.md).
#: the candidates computed from D's quantiles (result.json since they were recorded: older results lack them)
RELATIVE = ("d_q999_rel", "d_q999_q90")
SCORES = ("score", "largest_ml", "flagged_ml", "d_q999", "peak_d", "d_mass", *RELATIVE)
#: the model-free floor reported beside (never the worklist's score): ``intensity_q999``, the 99.9th percentile of
#: |x - median| / IQR of the study's own normalised intensities (app.core.findings.intensity_deviation_q999)
FLOOR = "intensity_q999"
#: labels of the candidates in the tables
LABELS = {
    "score": "score",
    "largest_ml": "largest ml",
    "flagged_ml": "flagged ml",
    "d_q999": "q99.9 D",
    "peak_d": "peak D",
    "d_mass": "D mass",
    "d_q999_rel": "q99.9 / median D",
    "d_q999_q90": "q99.9 / q90 D",
    FLOOR: "floor: intensity q99.9",
}
#: bootstrap resamples for the AUROC intervals (studies resampled within each class, seeded)
N_BOOT = 2000
#: which slices of the held-out subject the studies are cut from: all of them, or only the validation block or
#: only the test blocks of the benchmark's ``middle`` layout (:func:`app.data.brain_proxy.split_blocks`; the
#: interleaved layout's blocks of 7-8 slices, 15 mm, are too thin to be studies), so a score can be chosen on
#: validation and tested apart. ``head-val`` and ``head-test`` are whole-head studies (every slice, as a scanner
#: delivers them) whose two roles differ by their seeds alone: choose on ``head-val``, report on ``head-test``
#: (docs/bench/triage-head/rule.md). Block studies hold 17-23 slices cut from inside the brain, so each has two
#: cut ends through brain tissue, and the validation block and the test blocks hold different anatomy.
SPLITS = ("all", "val", "test", "head-val", "head-test")


def split_blocks_of(study, split: str) -> list[tuple[int, int]]:
    """(first, last) canonical axial slice of each block of the held-out ``study`` in ``split``."""
    from app.data.brain_proxy import _slices_of, block_ranges, split_blocks

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if split in WHOLE_HEAD:  # every slice: nothing cut
        return [(0, study.shape[2] - 1)]
    _prep, brain_z = _slices_of(study)
    val_z, test_z = split_blocks(brain_z)
    return block_ranges(val_z if split == "val" else test_z)


#: each abnormal study's lesions numbered 1..n (0 elsewhere) beside its mask: a lesion whose mask falls in pieces is
#: still one lesion for the lesion-level figures (:func:`lesions_found`)
LESION_IDS = ".lesions.nii"


def _draw_study(study, brain, blocks, i: int, load: int, seed: int):
    """Study ``i`` of a plan: (volume, lesion mask, lesion numbers, spacing, lesion records), all drawn from its own
    seed (the records: :class:`app.data.lesions.Lesion`, number k is ``records[k - 1]``)."""
    from app.data.augment import augment_volume
    from app.data.lesions import insert_lesions

    rng = np.random.default_rng(seed * 100_000 + i)
    z0, z1 = blocks[i % len(blocks)]
    data, bmask = study.data[:, :, z0 : z1 + 1], brain[:, :, z0 : z1 + 1]
    vol, b, sp, _ = augment_volume(data, bmask, study.spacing, rng)
    mask = np.zeros(vol.shape, bool)
    ids = np.zeros(vol.shape, np.uint16)
    records = []
    if load:
        vol, mask, records = insert_lesions(vol, b, sp, rng, n_lesions=load, ids_out=ids)
    return vol, mask, ids, sp, records


def _save_ids(path: Path, ids: np.ndarray, aff: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(ids, aff), path)


def build_studies(
    folder: Path, n_normal: int, loads: list[int], per_load: int, seed: int = 0, log=print, split: str = "all"
) -> list:
    """Write the studies (NIfTI) and their truth (``truth.csv``, lesion masks, lesion numbers) into ``folder``;
    returns rows. With ``split`` val or test each study is cut from that split's block of slices (test: its two
    blocks in turn) before augmentation, so its lesions and its normal tissue come from those slices only. Studies
    already there are reused; those made before the lesion numbers were kept get them drawn again from their seeds
    (checked against their saved masks)."""
    import nibabel as nib

    from app.data.brain_proxy import held_out_subject

    folder.mkdir(parents=True, exist_ok=True)
    truth = folder / "truth.csv"
    plan = [("normal", 0)] * n_normal + [("lesion", k) for k in loads for _ in range(per_load)]
    if truth.is_file():
        rows = list(csv.DictReader(truth.open()))
        if len(rows) == len(plan) and all((folder / f"{r['id']}.nii.gz").is_file() for r in rows):
            log(f"reusing the {len(rows)} studies in {folder}")
            todo = [
                i for i, r in enumerate(rows) if int(r["lesions"]) and not (folder / f"{r['id']}{LESION_IDS}").is_file()
            ]
            if todo:
                log(f"drawing the lesion numbers of {len(todo)} studies again from their seeds")
                study, brain = held_out_subject(log)
                blocks = split_blocks_of(study, split)
                for i in todo:
                    sid = rows[i]["id"]
                    _vol, mask, ids, _sp, _recs = _draw_study(study, brain, blocks, i, int(rows[i]["lesions"]), seed)
                    saved = nib.load(folder / f"{sid}.mask.nii")
                    if not np.array_equal(np.asanyarray(saved.dataobj) > 0, mask):
                        raise RuntimeError(
                            f"{folder}: study {sid} differs from its seed's draw: make the studies afresh"
                        )
                    _save_ids(folder / f"{sid}{LESION_IDS}", ids, saved.affine)
            return rows
    study, brain = held_out_subject(log)
    blocks = split_blocks_of(study, split)
    log(f"split {split}: axial slices {', '.join(f'{a}-{b}' for a, b in blocks)} of the held-out subject")
    rows = []
    for i, (kind, load) in enumerate(plan):
        vol, mask, ids, sp, _recs = _draw_study(study, brain, blocks, i, load, seed)
        sid = f"{kind}{i:02d}" + (f"-{load}les" if load else "")
        aff = np.diag([*sp, 1.0])
        nib.save(nib.Nifti1Image(vol.astype(np.float32), aff), folder / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), folder / f"{sid}.mask.nii")
        if load:
            _save_ids(folder / f"{sid}{LESION_IDS}", ids, aff)
        ml = float(mask.sum() * np.prod(sp) / 1000)
        rows.append({"id": sid, "abnormal": int(load > 0), "lesions": load, "lesion_ml": f"{ml:.3f}"})
        log(f"study {sid}: {vol.shape} at {tuple(float(s) for s in sp)} mm, lesion volume {ml:.2f} ml")
    with truth.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "abnormal", "lesions", "lesion_ml"])
        w.writeheader()
        w.writerows(rows)
    return rows


def score_of(result: dict, key: str) -> float:
    """One of :data:`SCORES` from a study's result.json content."""
    findings = result.get("findings") or []
    if key == "peak_d":
        return max((float(f.get("max_d") or 0.0) for f in findings), default=0.0)
    if key == "d_mass":
        return max((float(f.get("mean_d") or 0.0) * float(f.get("volume_ml") or 0.0) for f in findings), default=0.0)
    if key == "largest_ml":  # findings are listed largest first
        return float(findings[0].get("volume_ml") or 0.0) if findings else 0.0
    if key in RELATIVE:
        if result.get("d_q999") is None or result.get("d_q50") is None:
            raise KeyError(f"{key} needs a result.json with d_q50 and d_q90 (batch since 2026-12-05): rerun it")
        q = float(result["d_q999"])
        ref = float(result["d_q50" if key == "d_q999_rel" else "d_q90"] or 0.0)
        return q / max(ref, 1e-6)  # finite for AUROC: a study whose typical D is 0 ranks by its q99.9 alone
    return float(result.get(key) or 0.0)


def _roc_auc():
    """scikit-learn's AUROC; scikit-learn is the ``bench`` extra, not a runtime dependency of the app."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from app.errors import OptionError

        raise OptionError("bench triage needs scikit-learn: pip install 'matchgen-viewer[bench]'") from None
    return roc_auc_score


def _pairwise_auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of each row: the fraction of (abnormal, normal) pairs the score orders right, ties counting half
    (the Mann-Whitney form of the area; equal to scikit-learn's, which a test checks). ``pos`` (..., P),
    ``neg`` (..., N)."""
    d = pos[..., :, None] - neg[..., None, :]
    return (d > 0).mean(axis=(-2, -1)) + 0.5 * (d == 0).mean(axis=(-2, -1))


def _class_resamples(y: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, P) and (n_boot, N) study indices: each resample draws the abnormal and the normal studies apart
    (so every resample has both classes and the same class sizes)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    return pos[rng.integers(0, pos.size, (n_boot, pos.size))], neg[rng.integers(0, neg.size, (n_boot, neg.size))]


def _boot_aurocs(y, s, n_boot: int, seed: int) -> np.ndarray:
    ip, ineg = _class_resamples(np.asarray(y), n_boot, seed)
    s = np.asarray(s, np.float64)
    return _pairwise_auroc(s[ip], s[ineg])


def auroc_interval(y, s, *, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of the AUROC of scores ``s`` for labels ``y``."""
    y = np.asarray(y)
    if not 0 < y.sum() < len(y):
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(_boot_aurocs(y, s, n_boot, seed), [2.5, 97.5])]


def auroc_difference(y, s_a, s_b, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """AUROC(b) - AUROC(a) on the same studies with a paired 95 % bootstrap interval (the same resamples for
    both scores)."""
    y = np.asarray(y)
    if not 0 < y.sum() < len(y):
        return {"diff": float("nan"), "ci95": [float("nan"), float("nan")]}
    roc_auc_score = _roc_auc()
    boots = _boot_aurocs(y, s_b, n_boot, seed) - _boot_aurocs(y, s_a, n_boot, seed)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": float(roc_auc_score(y, s_b) - roc_auc_score(y, s_a)), "ci95": [float(lo), float(hi)]}


#: the lesion volumes (ml) that split the lesion-level figures: under 1 ml, 1-5 ml, 5 ml or more (the studies'
#: lesions are about 0.01-14 ml; fixed before the first measurement with them, docs/batch.md)
LESION_ML_EDGES = (1.0, 5.0)


def lesion_bin_labels(edges: tuple[float, ...] = LESION_ML_EDGES) -> list[str]:
    """The bins' names: "under 1 ml", "1-5 ml", "5 ml or more" for the default edges."""
    if not edges:
        return ["every volume"]
    mid = [f"{a:g}-{b:g} ml" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [f"under {edges[0]:g} ml", *mid, f"{edges[-1]:g} ml or more"]


#: how a mode is named in the tables: screen is the base map with the card's screening detection (reported above a cut)
MODE_LABELS = {"base": "base", "mg": "+MG", "screen": "base"}

#: the false findings per normal study at which the lesion-level FROC is read (as LUNA16 reads its curve, up to 8)
FROC_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)


def rate_floor(normal_desc: np.ndarray, rate: float, n_normal: int) -> float:
    """The confidence a finding must exceed so that at most ``rate`` false findings per normal study are kept:
    the (allowed + 1)-th highest of the normal studies' finding confidences ``normal_desc`` (sorted, highest
    first), allowed = floor(rate x n_normal); -inf when there are no more than that."""
    allowed = int(np.floor(rate * n_normal + 1e-9))
    return float(normal_desc[allowed]) if allowed < len(normal_desc) else -np.inf


def _finding_confidence(result: dict, n: int) -> np.ndarray:
    """Each finding's confidence for the FROC, indexed by its label (0: no finding, -inf): its highest D, from
    result.json's findings, which list them in label order (largest first, :func:`app.core.findings.label_findings`);
    findings beyond the listed ones (more than 200) rank lowest."""
    conf = np.full(n + 1, -np.inf)
    listed = [float(f.get("max_d") or 0.0) for f in (result.get("findings") or [])][:n]
    conf[1 : len(listed) + 1] = listed
    conf[len(listed) + 1 :] = -1e300  # kept only when every finding is
    return conf


def lesion_findings(labels: np.ndarray, n: int, ids: np.ndarray) -> np.ndarray:
    """Which findings (``labels`` 1..n of a detection) may find a lesion (``ids`` > 0): those that lie at least
    :data:`~app.core.metrics.FOUND_FRACTION` in lesions, indexed by label (index 0, no finding, False). A finding
    mostly outside the lesions is a false one that happens to touch a lesion: a detection that flags the whole brain
    touches every lesion and finds none."""
    from app.core.metrics import FOUND_FRACTION

    size = np.bincount(labels.ravel(), minlength=n + 1)
    in_lesion = np.bincount(labels.ravel(), weights=(ids > 0).ravel().astype(np.float64), minlength=n + 1)
    hits = in_lesion >= FOUND_FRACTION * size
    hits[0] = False
    return hits


def lesion_cuts(
    labels: np.ndarray, n: int, conf: np.ndarray, ids: np.ndarray, vox_ml: float
) -> list[tuple[str, float]]:  # fmt: skip
    """For each lesion of a study (``ids`` > 0, one number per inserted lesion) in number order: its volume bin
    (:func:`lesion_bin_labels`) and the highest confidence a kept finding may need for the lesion to be found --
    with the findings (``labels`` 1..n) whose confidence (``conf``, indexed by label) is at least that kept, those
    of :func:`lesion_findings` flag more than :data:`~app.core.metrics.FOUND_FRACTION` of its voxels; -inf when no
    cut finds it. So the lesion is found at a cut c (findings kept when their confidence exceeds c) when its value
    exceeds c."""
    from app.core.metrics import FOUND_FRACTION

    bins = lesion_bin_labels()
    covers = np.where(lesion_findings(labels, n, ids), conf, -np.inf)
    size = np.bincount(ids.ravel().astype(np.int64))
    out = []
    for k in np.flatnonzero(size[1:]) + 1:  # a lesion painted over entirely by a later one is gone
        b = bins[int(np.searchsorted(LESION_ML_EDGES, size[k] * vox_ml, side="right"))]
        need = int(np.floor(FOUND_FRACTION * size[k])) + 1  # voxels to flag for "more than a tenth"
        c = np.sort(covers[labels[ids == k]])[::-1]
        out.append((b, float(c[need - 1])))  # kept findings with confidence >= this one cover enough of it
    return out


def found_by_bin(lesions, cut: float = -np.inf) -> dict[str, list[int]]:
    """[found, of] per volume bin for lesions given as (bin, value) pairs of :func:`lesion_cuts`: found when the
    findings kept above ``cut`` find it (its value exceeds the cut; with the default, when any cut does)."""
    counts = {k: [0, 0] for k in lesion_bin_labels()}
    for b, need in lesions:
        counts[b][1] += 1
        counts[b][0] += int(need > cut)
    return counts


def found_difference(
    normal_a: list, lesions_a: list, normal_b: list, lesions_b: list, rate: float = 1.0, *, n_boot: int = N_BOOT,
    seed: int = 0, cuts: tuple[float, float] | None = None,
) -> dict:  # fmt: skip
    """Lesions found by detection b less those found by detection a on the same studies, each at its own cut that
    keeps at most ``rate`` false findings per normal study (:func:`rate_floor`), with a paired 95 % bootstrap
    interval: the studies are resampled (normal and abnormal apart; the same resamples for both detections) and each
    resample sets both cuts again on its own normal studies, so the interval holds the cut's own noise too. With
    ``cuts`` (a's, b's: cuts set before, on validation, as a test applies them) those are kept in every resample.

    ``normal_x``: per normal study, the confidences of its findings (every one a false finding); ``lesions_x``: per
    abnormal study, the values of its lesions (the second element of :func:`lesion_cuts`' pairs: a lesion is found
    at a cut below its value). Both detections' lists hold the same studies in the same order. Returns ``diff``
    (on all studies), ``ci95``, and ``found_a`` / ``found_b``. What a choice between two detections on a few dozen
    studies can tell apart: a difference whose interval holds 0 may not repeat on new studies."""
    if len(normal_a) != len(normal_b) or len(lesions_a) != len(lesions_b) or not normal_a or not lesions_a:
        raise ValueError("both detections need the same, non-empty sets of normal and abnormal studies")
    na = [np.asarray(v, np.float64).ravel() for v in normal_a]
    nb = [np.asarray(v, np.float64).ravel() for v in normal_b]
    la = [np.asarray(v, np.float64).ravel() for v in lesions_a]
    lb = [np.asarray(v, np.float64).ravel() for v in lesions_b]
    n_normal = len(na)

    def found(normal, lesions, i_n, i_p, cut=None) -> int:
        if cut is None:
            cut = rate_floor(np.sort(np.concatenate([normal[i] for i in i_n]))[::-1], rate, n_normal)
        return int(sum((lesions[i] > cut).sum() for i in i_p))

    cut_a, cut_b = cuts if cuts is not None else (None, None)
    every_n, every_p = np.arange(n_normal), np.arange(len(la))
    fa, fb = found(na, la, every_n, every_p, cut_a), found(nb, lb, every_n, every_p, cut_b)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for k in range(n_boot):
        i_n, i_p = rng.integers(0, n_normal, n_normal), rng.integers(0, len(la), len(la))
        boots[k] = found(nb, lb, i_n, i_p, cut_b) - found(na, la, i_n, i_p, cut_a)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": fb - fa, "ci95": [float(lo), float(hi)], "found_a": fa, "found_b": fb}


def lesions_found(where: Path, studies: Path, results: list[dict], truth: list[dict]) -> dict:
    """Lesion-level figures of a run (the detection a reader sees, not the order): for the lesions of the abnormal
    studies (each numbered in the study's lesion numbers, :data:`LESION_IDS`, as it was inserted: one lesion however
    many pieces its mask has) by volume (:data:`LESION_ML_EDGES`), how many the detection found -- more than
    :data:`~app.core.metrics.FOUND_FRACTION` of its voxels flagged by findings that lie at least that fraction in
    lesions (a finding mostly outside them is a false one that happens to touch a lesion) -- and the mean number of
    findings per normal
    study (every one of them a false finding). And the lesion-level FROC: with the findings ranked by their highest
    D and only those above a cut kept, how many lesions are found when the kept false findings are at most
    :data:`FROC_RATES` per normal study. Reads each study's lesion numbers from ``studies`` and its detection mask
    from ``where/<id>/``; studies that failed count nowhere. ``_per_study`` (not for JSON: it holds -inf) keeps, by
    study id, each normal study's finding confidences and each abnormal study's lesion values, for a paired
    comparison of two runs on the same studies (:func:`found_difference`)."""
    import nibabel as nib

    from app.core.findings import label_findings, voxel_volume_mm3

    lab = {r["id"]: int(r["abnormal"]) for r in truth}
    ok = [r for r in results if r.get("status") == "ok" and r["id"] in lab]
    lesions: list[tuple[str, float]] = []  # per lesion: its bin, the highest cut at which it is found (-inf: never)
    per_study: dict[str, dict] = {"normal": {}, "lesions": {}}
    for r in ok:
        pred = np.asanyarray(nib.load(where / r["id"] / r["outputs"]["mask"]).dataobj) > 0
        fl, n = label_findings(pred)
        conf = _finding_confidence(r, n)
        if not lab[r["id"]]:
            per_study["normal"][r["id"]] = conf[1:]
            continue
        ids_img = nib.load(studies / f"{r['id']}{LESION_IDS}")
        ids = np.asanyarray(ids_img.dataobj).astype(np.int64)
        if pred.shape != ids.shape:
            raise ValueError(f"{r['id']}: detection {pred.shape} and lesions {ids.shape} differ in shape")
        mine = lesion_cuts(fl, n, conf, ids, voxel_volume_mm3(ids_img.affine) / 1000.0)
        per_study["lesions"][r["id"]] = np.array([v for _, v in mine])
        lesions += mine
    n_normal = len(per_study["normal"])
    normal_conf = np.concatenate([np.zeros(0), *per_study["normal"].values()])
    normal_sorted = np.sort(normal_conf)[::-1]
    counts = found_by_bin(lesions)
    cuts = np.array([c for _, c in lesions])
    froc = {}
    for rate in FROC_RATES:
        froc[f"{rate:g}"] = int((cuts > rate_floor(normal_sorted, rate, n_normal)).sum())
    return {
        "lesions_found": {k: {"found": f, "of": n} for k, (f, n) in counts.items()},
        "findings_per_normal_study": float(len(normal_conf) / n_normal) if n_normal else float("nan"),
        "froc_lesions_found": froc,
        "froc_lesions": len(lesions),
        "_per_study": per_study,
    }


def mg_minus_base(per_study: dict) -> dict | None:
    """Lesions found by + MG less the base map at one false finding per normal study each, with its paired 95 %
    interval (:func:`found_difference`), over the studies both runs analysed; None without both modes. Issue 10's
    "+ MG > base with a paired interval", at the lesion level."""
    if "base" not in per_study or "mg" not in per_study:
        return None
    a, b = per_study["base"], per_study["mg"]
    normal = sorted(set(a["normal"]) & set(b["normal"]))
    abnormal = sorted(set(a["lesions"]) & set(b["lesions"]))
    if not normal or not abnormal:
        return None
    out = found_difference(
        [a["normal"][k] for k in normal], [a["lesions"][k] for k in abnormal],
        [b["normal"][k] for k in normal], [b["lesions"][k] for k in abnormal], 1.0,
    )  # fmt: skip
    return {**out, "rate": 1.0, "studies": len(normal) + len(abnormal)}


def evaluate(results: list[dict], truth: list[dict], *, n_boot: int = N_BOOT) -> dict:
    """AUROC of every candidate score (with a 95 % bootstrap interval, and each candidate's paired difference
    from the worklist's score), the worklist ranks of the abnormal studies, and the AUROC by lesion load."""
    roc_auc_score = _roc_auc()

    from app.viewer.worklist import rank

    lab = {r["id"]: int(r["abnormal"]) for r in truth}
    load = {r["id"]: int(r["lesions"]) for r in truth}
    ok = [r for r in results if r.get("status") == "ok" and r["id"] in lab]
    ranked, _ = rank(ok)
    y = np.array([lab[r["id"]] for r in ok])
    out: dict = {"studies": len(ok), "abnormal": int(y.sum()), "normal": int((1 - y).sum())}
    both = 0 < y.sum() < len(y)
    keys = [k for k in SCORES if k not in RELATIVE or all("d_q50" in r for r in ok)]
    keys += [FLOOR] if all(FLOOR in r for r in ok) else []  # results written before these were recorded lack them
    cols = {key: np.array([score_of(r, key) for r in ok]) for key in keys}
    out["candidates"] = keys
    for key, s in cols.items():
        out[f"auroc_{key}"] = float(roc_auc_score(y, s)) if both else float("nan")
        if n_boot:
            out[f"auroc_{key}_ci95"] = auroc_interval(y, s, n_boot=n_boot)
            if key != "score":
                out[f"auroc_{key}_minus_score"] = auroc_difference(y, cols["score"], s, n_boot=n_boot)
    ranks = [i + 1 for i, r in enumerate(ranked) if lab[r["id"]]]
    n_abn = int(y.sum())
    out["abnormal_ranks"] = ranks
    out["top_n_abnormal_fraction"] = float(sum(1 for rk in ranks if rk <= n_abn) / max(1, n_abn))
    out["worklist"] = [
        {"id": r["id"], "abnormal": lab[r["id"]], "lesions": load[r["id"]], "score": r["score"]} for r in ranked
    ]
    per_load = {}
    normals = [r for r in ok if not lab[r["id"]]]
    for k in sorted({v for v in load.values() if v}):
        sub = normals + [r for r in ok if load[r["id"]] == k]
        yy = np.array([lab[r["id"]] for r in sub])
        ss = np.array([float(r["score"]) for r in sub])
        per_load[str(k)] = float(roc_auc_score(yy, ss)) if 0 < yy.sum() < len(yy) else float("nan")
    out["auroc_score_by_load"] = per_load
    return out


def run_triage(
    models: list[str | None],
    out: Path,
    n_normal: int = 8,
    loads: tuple[int, ...] = (1, 3, 8),
    per_load: int = 2,
    workers: int = 2,
    seed: int = 0,
    max_steps: int | None = None,
    log=print,
    split: str = "all",
    modes: tuple[str, ...] = ("base", "mg"),
    maps: bool = False,
    record: bool = False,
    command: str = "",
) -> dict:
    """Build the studies, run each model and mode on them as ``batch`` does, and evaluate the scores. With
    ``record`` each card's ``triage`` list gets the worklist score's AUROC (:func:`record_triage`)."""
    from distributed import Client, LocalCluster

    from app.batch.inputs import expand_inputs
    from app.batch.runner import run_batch
    from app.batch.task import BatchSettings, ModelPreload
    from app.nets.card import card_batch_detection, card_choices, read_card
    from app.nets.zoo import resolve_model

    _roc_auc()  # before the studies are made and run, not after
    out = Path(out)
    studies = out / ("studies" if split == "all" else f"studies-{split}")
    truth = build_studies(studies, n_normal, list(loads), per_load, seed, log, split)
    refs = expand_inputs([str(studies / f"{r['id']}.nii.gz") for r in truth])
    report: dict = {
        "held_out_subject": "ITK KmeansTest T1 (insighttoolkit5-examples), augmented per study",
        "n_normal": n_normal,
        "loads": list(loads),
        "per_load": per_load,
        "seed": seed,
        "split": split,
        "models": {},
    }
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cl,
        Client(cl) as client,
    ):
        for name in models:
            stem = resolve_model(name).resolve()
            card = read_card(stem)
            entry = {}
            per_study = {}
            for mode, base_only in (m for m in (("base", True), ("mg", False), ("screen", True)) if m[0] in modes):
                ch = card_choices(card)
                eps, tau = (0.0, ch["tau_base"]) if base_only else (ch["eps"], ch["tau"])
                report_above = None
                if mode == "screen":  # what a plain `batch` runs: the card's screening detection of the base map
                    plain = card_batch_detection(card)
                    if not plain["base_only"]:
                        log(f"{stem.name}: no screening detection of the base map in its card; screen skipped")
                        continue
                    tau, report_above = plain["tau"], plain["report_above"]
                settings = BatchSettings.for_checkpoint(
                    stem,
                    eps,
                    tau,
                    base_only=base_only,
                    max_steps=max_steps,
                    device="cpu",
                    threads=1,
                    maps=maps,
                    report_above=report_above,
                )
                client.register_plugin(ModelPreload(settings))
                t = time.perf_counter()
                where = out / stem.name / (mode if split == "all" else f"{split}-{mode}")
                summary = run_batch(refs, settings, where, client, progress=True)
                ev = evaluate(summary.results, truth)
                ev.update(lesions_found(where, studies, summary.results, truth))
                per_study[mode] = ev.pop("_per_study")
                ev.update(eps=eps, tau=tau, wall_s=round(time.perf_counter() - t, 1), failed=summary.failed)
                if report_above is not None:
                    ev["report_above"] = report_above
                entry[mode] = ev
                if record:
                    ev["recorded"] = record_triage(stem, settings, ev, split, loads, seed, command, log)
                others = ", ".join(f"{LABELS[k]} {ev[f'auroc_{k}']:.3f}" for k in ev["candidates"] if k != "score")
                ranks = ev["abnormal_ranks"]
                log(f"{stem.name} {mode}: AUROC {ev['auroc_score']:.3f} ({others}); abnormal ranks {ranks}")
                log(f"{stem.name} {mode}: lesions found {_found_cell(ev)}; findings per normal study "
                    f"{ev['findings_per_normal_study']:.1f}; FROC {_froc_cell(ev)}")  # fmt: skip
            paired = mg_minus_base(per_study)
            if paired is not None:
                entry["mg_minus_base_found"] = paired
                log(f"{stem.name}: + MG less base, lesions found at 1 false finding per normal study each: "
                    f"{_paired_cell(paired)}")  # fmt: skip
            report["models"][stem.name] = entry
    name = "triage" if split == "all" else f"triage-{split}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    return report


def record_triage(stem: Path, settings, ev: dict, split: str, loads, seed: int, command: str, log) -> bool:
    """Write the worklist score's AUROC, measured with batch ``settings``, into the card at ``stem`` (``triage``
    list, replacing the same split and mode), for ``batch``, report.html and the viewer's worklist to show. Not when a
    study failed or the score has no interval (the measurement would be of fewer studies than it says)."""
    from app.core.triage_evidence import Operator, record_measurement, triage_measurement
    from app.nets.card import validate_card
    from app.nets.checkpoint import write_card

    op = Operator.of(settings)
    mode = op.mode if op.report_above is None else f"{op.mode} (findings above D {op.report_above:g})"
    if ev.get("failed") or not ev.get("auroc_score_ci95") or not np.isfinite(ev.get("auroc_score", float("nan"))):
        log(f"{stem.name} {mode}: not recorded in the card ({ev.get('failed', 0)} studies failed or no AUROC)")
        return False
    path = stem.with_suffix(".json")
    card = json.loads(json.dumps(validate_card(json.loads(path.read_text()), str(path)), default=str))
    m = triage_measurement(
        card,
        settings.weights_sha256,
        op,
        split=split,
        auroc=ev["auroc_score"],
        ci95=ev["auroc_score_ci95"],
        n_normal=ev["normal"],
        n_abnormal=ev["abnormal"],
        loads=list(loads),
        seed=seed,
        measured=time.strftime("%Y-%m-%d", time.gmtime()),
        command=command,
        by_load=ev.get("auroc_score_by_load"),
        lesions_found=ev.get("lesions_found"),
        findings_per_normal_study=ev.get("findings_per_normal_study"),
    )
    write_card(stem, record_measurement(card, m))
    log(f"{stem.name} {mode}: AUROC {m['auroc']:.3f} recorded in {path} (split {split})")
    return True


def markdown(rep: dict) -> str:
    """The worklist's score per model and mode, then every candidate's AUROC (with its 95 % interval)."""
    n_abn = len(rep["loads"]) * rep["per_load"]
    lines = [
        f"{rep['n_normal']} normal and {n_abn} abnormal studies ({rep['per_load']} each with "
        f"{', '.join(map(str, rep['loads']))} lesions), seed {rep['seed']}, slices: {rep.get('split', 'all')}",
        "",
        f"| model | mode | eps | tau | AUROC score [95 %] | abnormal in top {n_abn} | ranks of the abnormal studies "
        f"| AUROC score by lesion load | lesions found, {' / '.join(lesion_bin_labels())} "
        f"| findings per normal study | lesions found at <= {' / '.join(f'{r:g}' for r in FROC_RATES)} false "
        "findings per normal study (FROC) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        (name, mode, entry[mode])
        for name, entry in rep["models"].items()
        for mode in ("base", "mg", "screen")
        if mode in entry
    ]
    for name, mode, e in rows:  # a run interrupted before a mode has no entry for it
        by = ", ".join(f"{k}: {v:.2f}" for k, v in e["auroc_score_by_load"].items())
        lines.append(
            f"| {name} | {_mode_cell(mode, e)} | {e['eps']:g} | {e['tau']:g} | "
            f"{_auroc_cell(e, 'score')} | {e['top_n_abnormal_fraction']:.0%} | "
            f"{', '.join(map(str, e['abnormal_ranks']))} | {by} | {_found_cell(e)} | "
            f"{e.get('findings_per_normal_study', float('nan')):.1f} | {_froc_cell(e)} |"
        )
    paired = [(name, entry["mg_minus_base_found"]) for name, entry in rep["models"].items()
              if entry.get("mg_minus_base_found")]  # fmt: skip
    if paired:
        cells = "; ".join(f"{n} {_paired_cell(p)}" for n, p in paired)
        lines += ["", "Lesions found by + MG less the base map, at one false finding per normal study each [paired "
                  f"95 % bootstrap interval over the studies]: {cells}"]  # fmt: skip
    keys = [k for k in (*SCORES, FLOOR) if k != "score" and any(f"auroc_{k}" in e for _n, _m, e in rows)]
    lines += [
        "",
        "AUROC of each candidate study-level score [95 % bootstrap interval]:",
        "",
        "| model | mode | " + " | ".join(LABELS[k] for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name, mode, e in rows:
        cells = " | ".join(_auroc_cell(e, k) for k in keys)
        lines.append(f"| {name} | {_mode_cell(mode, e)} | {cells} |")
    return "\n".join(lines) + "\n"


def _mode_cell(mode: str, e: dict) -> str:
    """The mode as the tables name it; the screening detection with its reporting cut."""
    cut = e.get("report_above")
    return f"{MODE_LABELS[mode]}, findings above D {cut:.4g}" if cut is not None else MODE_LABELS[mode]


def _auroc_cell(e: dict, key: str) -> str:
    if f"auroc_{key}" not in e:
        return "n/a"
    ci = e.get(f"auroc_{key}_ci95")
    return f"{e[f'auroc_{key}']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _found_cell(e: dict) -> str:
    """The lesions found by volume bin ("0 of 53 / 17 of 30 / 11 of 13"), or "n/a" for a run made before them."""
    found = e.get("lesions_found")
    if not found:
        return "n/a"
    return " / ".join(f"{v['found']} of {v['of']}" for v in found.values())


def _paired_cell(p: dict) -> str:
    return f"{p['diff']:+d} [{p['ci95'][0]:+.0f}, {p['ci95'][1]:+.0f}] ({p['found_b']} against {p['found_a']})"


def _froc_cell(e: dict) -> str:
    """The lesions found at each FROC rate ("17 / 21 / 21 / 22 / 25 of 96"), or "n/a" for a run made before it."""
    froc = e.get("froc_lesions_found")
    if not froc:
        return "n/a"
    return f"{' / '.join(str(v) for v in froc.values())} of {e.get('froc_lesions', '?')}"
