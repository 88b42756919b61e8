"""The screening's member subsets (rule.md, written first): each of the seven non-empty subsets of the default's
members (dae, dae-cover, ae-l1), the mean of their scaled base maps with the card's post-processing, its 18 mm z
window, on the study grid inside the brain (as `batch` makes the shipped map), scored as docs/bench/z-scales/scales.py
scores a map: divided by its own threshold (matched exceedance on normal brain voxels), outlined at 0.7 of it with
30 px, findings reported above the cut that leaves one false finding per normal study; lesions found as `bench
triage` counts them, the AUROC of each study's highest finding peak.

Validation (sets and writes each subset's threshold and cut to CHOICES.json):
    python docs/bench/screen-members/members.py val STUDIES_DIR CHOICES.json
Test (applies them):
    python docs/bench/screen-members/members.py test STUDIES_DIR CHOICES.json
"""

import csv
import itertools
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from sklearn.metrics import roc_auc_score  # noqa: E402

from app.bench.triage import (  # noqa: E402
    LESION_IDS,
    auroc_interval,
    found_by_bin,
    found_difference,
    lesion_cuts,
    rate_floor,
)
from app.core.ensemble import load_detector, normal_median  # noqa: E402
from app.core.findings import label_findings, voxel_volume_mm3  # noqa: E402
from app.core.maps import study_detection_mask  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study, restrict_map_to_brain, to_study_grid  # noqa: E402
from app.io import load_study  # noqa: E402

OUTLINE, MIN_PX, RATE = 0.7, 30, 1.0


def study_maps(det, model, card, path: Path) -> tuple[dict, np.ndarray, float]:
    """{subset: (study-grid map inside the brain, geometry)} for one study, its brain mask on the study grid and its
    voxel volume in ml."""
    cfg = model.config
    st = load_study(path)
    prep = prepare_study(st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                         domain=domain_from_card(card))  # fmt: skip
    runs = det.raw_runs(prep.x, 0.0, base_only=True)
    fg = runs[0].foreground
    names = [m.name for m in det.members]
    unit = det.members[0].scale_base
    out = {}
    for k in range(1, len(names) + 1):
        for sub in itertools.combinations(range(len(names)), k):
            mean = sum(runs[i].d / det.members[i].scale_base for i in sub) / len(sub)
            d = det.post.apply((mean * unit).astype(np.float32), fg)
            d = det.post.across_slices(d, fg, prep.geometry.spacing[2])
            dv = restrict_map_to_brain(to_study_grid(d, prep.geometry, "map"), prep)
            out["+".join(names[i] for i in sub)] = (dv.astype(np.float32), prep.geometry)
    brain = prep.brain if prep.brain is not None else np.ones(st.shape, bool)
    return out, brain, voxel_volume_mm3(st.affine) / 1e3


SHIPPED = "shipped (dae + dae-cover + ae-l1)"


def base_scale(detector, vols, erode) -> float:
    """A detector's base map's median over normal tissue of validation volumes ``vols`` (app.data.splits), as
    scripts/ensemble_card.py scales a member."""
    images, masks = np.asarray(vols.images), np.asarray(vols.masks, bool)
    r, z = masks.shape[:2]
    flat, flat_masks = images.reshape(r * z, *images.shape[2:]), masks.reshape(r * z, *masks.shape[2:])
    run = detector.run(flat, 0.0, base_only=True, raw=True)
    return normal_median(run.d, run.foreground, flat_masks, erode)


def third_member_maps(
    det, prep, runs: list, third: np.ndarray, third_scale: float, label: str, add: bool = False
) -> dict:
    """{name: (study-grid map inside the brain, geometry)} of the shipped screening map (the default's members' base
    ``runs``, as `batch` makes it) and of the same with ``third`` (a raw model-grid map, divided by ``third_scale``)
    in place of dae-cover's base map (with ``add``: as a fourth member beside it), named ``label``: the candidates
    of screen-fine/fine.py and screen-restore/restore.py."""
    fg = runs[0].foreground
    ms = det.members
    unit = ms[0].scale_base
    shipped = [r.d / m.scale_base for m, r in zip(ms, runs, strict=True)]
    maps = {SHIPPED: shipped, label: [*shipped[: 1 + add], third / third_scale, shipped[2]]}
    out = {}
    for name, parts in maps.items():
        d = det.post.apply((sum(parts) / len(parts) * unit).astype(np.float32), fg)
        d = det.post.across_slices(d, fg, prep.geometry.spacing[2])
        out[name] = (restrict_map_to_brain(to_study_grid(d, prep.geometry, "map"), prep).astype(np.float32),
                     prep.geometry)  # fmt: skip
    return out


def outlined(studies: list, thr: float) -> list:
    """Each study of ``studies`` ((map on the study grid, its geometry, lesion numbers or None for a normal study,
    voxel volume in ml)) outlined: the map divided by ``thr``, D > :data:`OUTLINE` with :data:`MIN_PX`; per study
    (lesion numbers, labels, number of findings, each finding's peak indexed by label, voxel ml, its lesions' (bin,
    value) pairs of ``lesion_cuts``, None for a normal study)."""
    per = []
    for d, geom, ids, vox_ml in studies:
        m = d / thr
        lab, n = label_findings(study_detection_mask(m, OUTLINE, geom, MIN_PX))
        peak = np.full(n + 1, -np.inf)
        if n:
            peak[1:] = ndimage.maximum(m, lab, index=np.arange(1, n + 1))
        lesions = None if ids is None else lesion_cuts(lab, n, peak, ids, vox_ml)
        per.append((ids, lab, n, peak, vox_ml, lesions))
    return per


def found_parts(per: list) -> tuple[list, list]:
    """(per normal study its findings' peaks, per abnormal study its lesions' values) of :func:`outlined` studies,
    as ``app.bench.triage.found_difference`` takes them."""
    normal = [pk[1:] for ids, _, _, pk, _, _ in per if ids is None]
    lesions = [[v for _, v in lc] for ids, *_, lc in per if ids is not None]
    return normal, lesions


def paired(per_a: list, per_b: list, cuts: tuple[float, float] | None = None) -> str:
    """Lesions found by b less a at one false finding per normal study each (or at ``cuts`` fixed before), with the
    paired 95 % bootstrap interval (``app.bench.triage.found_difference``), as a table cell."""
    out = found_difference(*found_parts(per_a), *found_parts(per_b), RATE, cuts=cuts)
    lo, hi = out["ci95"]
    if 0 < abs(lo) < 1:  # a bound between 0 and 1 would print as 0: whether the interval holds 0 must show
        return f"{out['diff']:+d} [{lo:+.2f}, {hi:+.0f}]"
    return f"{out['diff']:+d} [{lo:+.0f}, {hi:+.0f}]"


def score_outlined(per: list, cut: float | None = None, interval: bool = False) -> tuple[float, str]:
    """One screening map over a set of :func:`outlined` studies: findings reported above ``cut`` (None: the cut that
    leaves :data:`RATE` false findings per normal study). Returns (the cut, the table cells: cut | found by volume |
    total | false findings per normal study | AUROC, with its 95 % bootstrap interval when ``interval``)."""
    n_normal = sum(ids is None for ids, *_ in per)
    normal_peaks = np.sort(np.concatenate([pk[1:] for ids, _, _, pk, _, _ in per if ids is None]))[::-1]
    if cut is None:
        cut = rate_floor(normal_peaks, RATE, n_normal)
    y = np.array([ids is not None for ids, *_ in per], int)
    sc = np.array([float(pk[1:].max()) if n else 0.0 for _, _, n, pk, _, _ in per])
    lesions = [pair for ids, *_, lc in per if ids is not None for pair in lc]
    found = found_by_bin(lesions, cut)
    fp = float((normal_peaks > cut).sum()) / n_normal
    cells = " / ".join(f"{x} of {k}" for x, k in found.values())
    total = sum(x for x, _ in found.values())
    auc = f"{roc_auc_score(y, sc):.3f}"
    if interval:
        lo, hi = auroc_interval(y, sc)
        auc += f" [{lo:.2f}, {hi:.2f}]"
    return cut, f"{cut:.3f} | {cells} | {total} | {fp:.2f} | {auc}"


def matched_choices(names: list, normal_voxels, tau_base: float) -> dict:
    """The choices of mirror.py and blob.py on validation: the share of normal studies' brain voxels at which the
    shipped map exceeds ``tau_base`` (``normal_voxels(name)``: those voxels' values of a map), and each other map's
    threshold exceeded there as often; the cuts are set later (:func:`candidate_rows`)."""
    p = float((normal_voxels("shipped") > tau_base).mean())
    thr = {n: float(np.quantile(normal_voxels(n), 1 - p)) for n in names if n != "shipped"}
    return {"exceedance": p, "threshold": {"shipped": tau_base, **thr}, "cut": {}}


def candidate_rows(names: list, studies_of, thr: dict, choices: dict, fixed: bool, fmt: str = ".4f") -> None:
    """Print the table of screening maps ``names`` (the first row "shipped") that mirror.py and blob.py print: for each,
    its :func:`outlined` studies (``studies_of(name)``: (map, geometry, lesion numbers or None, voxel ml) per study)
    at threshold ``thr[name]``, scored with the AUROC's interval, and against the shipped map the paired difference in
    lesions found. Unless ``fixed``, each cut is set here and written into ``choices["cut"]``; with it the cuts there
    are applied."""
    print("| map | threshold | cut (x threshold) | found <1 / 1-5 / >=5 ml | total | false findings per normal study "
          "at the cut | AUROC [95 %] | lesions found against the shipped map [paired 95 %] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    per = {}
    for n in names:
        per[n] = outlined(studies_of(n), thr[n])
        cut, cells = score_outlined(per[n], choices["cut"].get(n) if fixed else None, interval=True)
        choices["cut"][n] = cut
        cuts = (choices["cut"]["shipped"], cut) if fixed else None
        vs = "" if n == "shipped" else paired(per["shipped"], per[n], cuts)
        print(f"| {n} | {thr[n]:{fmt}} | {cells} | {vs} |", flush=True)


def found_by_kind(per: list, kinds: list, cut: float) -> dict[str, list[int]]:
    """[found, of] per lesion kind for :func:`outlined` studies at ``cut``; ``kinds``: per study its lesions' kinds in
    lesion-number order (None for a normal study). A lesion painted over by a later one has no voxels and is left
    out, as ``lesion_cuts`` leaves it out."""
    counts: dict[str, list[int]] = {}
    for (ids, *_, lc), ks in zip(per, kinds, strict=True):
        if ids is None:
            continue
        present = np.flatnonzero(np.bincount(ids.ravel().astype(np.int64))[1:]) + 1
        for k, (_, value) in zip(present, lc, strict=True):
            c = counts.setdefault(ks[k - 1], [0, 0])
            c[0] += int(value > cut)
            c[1] += 1
    return dict(sorted(counts.items()))


def table(split: str, data: list, candidates: list, shipped: str, tau_base: float, choices_path: Path, what: str,
          kinds: list | None = None):  # fmt: skip
    """Print the table of ``candidates`` over ``data`` ([({candidate: (map, geometry)}, brain mask, lesion numbers or
    None, voxel ml)] per study). On validation each candidate's threshold is the value its normal studies' brain
    voxels exceed as often as the ``shipped`` map exceeds ``tau_base``, its cut the one that leaves one false finding
    per normal study, both written to ``choices_path``; on test they are read from it. With ``kinds`` (per study its
    lesions' kinds, None for a normal study) a second table gives the lesions found by kind at each cut."""
    normals = [d for d in data if d[2] is None]
    if split == "val":
        nb = np.concatenate([m[shipped][0][b] for m, b, _, _ in normals])
        p = float((nb > tau_base).mean())
        thr = {c: float(np.quantile(np.concatenate([m[c][0][b] for m, b, _, _ in normals]), 1 - p)) for c in candidates}
        choices = {"exceedance": p, "threshold": thr, "cut": {}}
    else:
        choices = json.loads(choices_path.read_text())
        thr = choices["threshold"]
    print(f"{split}: {len(data)} studies ({len(normals)} normal); the shipped map's exceedance of tau_base on normal "
          f"brain voxels on validation {choices['exceedance']:.2e}")  # fmt: skip
    print(f"| {what} | threshold | cut (x threshold) | found <1 / 1-5 / >=5 ml | total | false findings per normal "
          "study at the cut | AUROC | lesions found against the shipped map [paired 95 %] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    per = {c: outlined([(m[c][0], m[c][1], ids, vml) for m, _, ids, vml in data], thr[c]) for c in candidates}
    for c in candidates:
        given = None if split == "val" else choices["cut"][c]
        choices["cut"][c], cells = score_outlined(per[c], given)
        fixed = (choices["cut"][shipped], given) if split != "val" else None  # on test: the cuts from validation
        vs = "" if c == shipped else paired(per[shipped], per[c], fixed)
        label = c if c == "shipped" or c != shipped else f"{c} (shipped)"
        print(f"| {label} | {thr[c]:.4f} | {cells} | {vs} |", flush=True)
    if kinds is not None:
        by = {c: found_by_kind(per[c], kinds, choices["cut"][c]) for c in candidates}
        names = sorted({k for b in by.values() for k in b})
        print(f"\nLesions found by kind at each map's cut\n\n| {what} | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for c in candidates:
            print(f"| {c} | " + " | ".join("{} of {}".format(*by[c].get(k, [0, 0])) for k in names) + " |")
    if split == "val":
        choices_path.write_text(json.dumps(choices, indent=1) + "\n")


def run_split(per_study, what: str, shipped: str | None = None) -> None:
    """The command line (``val|test STUDIES_DIR CHOICES.json``): every study of ``STUDIES_DIR/truth.csv`` through
    ``per_study(det, model, card, path)`` -> ({candidate: (map, geometry)}, brain mask, voxel ml, a note for the
    log), then :func:`table` (``shipped``: the shipped map's candidate, default the last), by kind too where
    ``STUDIES_DIR/kinds.json`` (docs/bench/screen-mirror-dae/kinds.py) is there."""
    split, studies, choices_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(2)
    det, model, card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    rows = list(csv.DictReader((studies / "truth.csv").open()))
    data = []
    for i, r in enumerate(rows):
        t = time.time()
        maps, brain, vox_ml, note = per_study(det, model, card, studies / f"{r['id']}.nii.gz")
        ab = bool(int(r["abnormal"]))
        ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16) if ab else None
        data.append((maps, brain, ids, vox_ml))
        print(i, r["id"], f"{time.time() - t:.1f}s", note, file=sys.stderr, flush=True)
    candidates = list(data[0][0])
    tau_base = card["chosen_volume"]["tau_base"]
    kinds = None
    if (studies / "kinds.json").is_file():
        by_id = json.loads((studies / "kinds.json").read_text())
        kinds = [by_id[r["id"]] if int(r["abnormal"]) else None for r in rows]
    table(split, data, candidates, shipped or candidates[-1], tau_base, choices_path, what, kinds)


def main():
    run_split(lambda det, model, card, path: (*study_maps(det, model, card, path), ""), "members' base maps")


if __name__ == "__main__":
    main()
