"""Compare models on validation volumes at their cards' whole-volume choices (validation only: never test).

Each model is applied as ``detect`` applies it (the card's eps, tau, solver, layout, post-processing and component
rule), to the validation realisations from ``--skip`` on: with a data set built with more validation realisations
than the cards were calibrated on (``python main.py data brain-proxy --val-realisations 16``; its first four are
the usual four, the ones that chose every card's eps and tau), those are validation volumes that no choice saw,
for choosing between models. Per model: whole-volume Dice (all slices of a realisation pooled, normal ones
included), false-positive pixels per normal slice, per-lesion detection by lesion size (a lesion is a 3-D
connected component of a realisation's mask; "found" = more than 10 % of its voxels flagged) by lesion size and by
lesion kind (bright, dark, cavity, foreign, mirror: the kind most of its voxels carry), and the paired difference
in volume Dice from the first model (95 % bootstrap interval over the realisations).

    python scripts/val_select.py DATA_DIR MODEL [MODEL ...] [--skip N] [--base] [--intensity] [--json OUT]

``--split test`` (or ``test_b``) scores the test realisations from ``--skip`` on instead, for a report made once
after a choice (nothing may be chosen on them). ``--intensity`` then takes its tau from the validation volumes of
the same data set, their first ``--intensity-choose`` realisations (default 16: the cards' choosing volumes).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.atomic import atomic_write_text  # noqa: E402
from app.core.detector import Detector  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.metrics import (  # noqa: E402
    FOUND_FRACTION,
    dice,
    fp_per_normal_slice,
    lesion_hits,
    lesion_labels,
    paired_difference,
)
from app.core.protocol import across_volumes, choose_intensity_volume_tau, intensity_volume_maps  # noqa: E402
from app.data.lesions import KINDS  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.nets.card import card_choices  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

BINS = (0, 20, 60, 200, None)  # lesion size in voxels of the model grid (2 mm pixels, the block's slices)


def lesion_kinds(mask: np.ndarray, kinds: np.ndarray) -> list[str]:
    """The kind of each lesion of ``mask`` (``lesion_labels``, the labelling and order of ``lesion_hits``): the kind
    label (``kinds``: 0 none, i + 1 for ``KINDS[i]``) most of its voxels carry; "none" where none of them carries one
    (such a lesion counts by size, not by kind)."""
    labels, n = lesion_labels(mask)
    if n == 0:
        return []
    counts = np.zeros((n + 1, len(KINDS) + 1), dtype=np.int64)
    np.add.at(counts, (labels.ravel(), np.asarray(kinds).ravel().astype(np.int64)), 1)
    return [KINDS[int(np.argmax(c[1:]))] if c[1:].any() else "none" for c in counts[1:]]


def _found(fractions: list[float]) -> dict:
    return {"found": sum(f > FOUND_FRACTION for f in fractions), "of": len(fractions),
            "voxel_fraction": float(np.mean(fractions or [0]))}  # fmt: skip


def row(eps: float, tau: float, flagged_volumes, masks, kinds) -> dict:
    """One method's row over the realisations: per volume its Dice and false-positive pixels per normal slice, and
    per lesion (a 3-D component of the mask) the fraction flagged; then the means, lesions found by size and by
    kind, and the voxels flagged and missed over all realisations (precision and recall: where the Dice is lost,
    since nearly every slice of a realisation holds a lesion and few normal slices count false positives)."""
    dices, fps, hits, hit_kinds = [], [], [], []
    tp = fp = fn = 0
    for flagged, mask, kind in zip(flagged_volumes, masks, kinds, strict=True):
        dices.append(dice(flagged, mask))
        f, m = np.asarray(flagged, dtype=bool), np.asarray(mask, dtype=bool)
        tp, fp, fn = tp + int((f & m).sum()), fp + int((f & ~m).sum()), fn + int((~f & m).sum())
        fps.append(fp_per_normal_slice(flagged, mask))
        hits += lesion_hits(flagged, mask)
        hit_kinds += lesion_kinds(mask, kind)
    bins = [_found([f for s, f in hits if s >= BINS[i] and (BINS[i + 1] is None or s < BINS[i + 1])])
            for i in range(len(BINS) - 1)]  # fmt: skip
    by_kind = {k: _found([f for (_, f), kk in zip(hits, hit_kinds, strict=True) if kk == k]) for k in KINDS}
    return {"eps": eps, "tau": tau, "volume_dice": dices, "volume_dice_mean": float(np.mean(dices)),
            "fp_pixels_per_normal_slice": float(np.mean(fps)), "lesions_by_size": bins,
            "lesions_by_kind": by_kind, "voxels": {"tp": tp, "fp": fp, "fn": fn},
            "voxel_precision": tp / max(1, tp + fp), "voxel_recall": tp / max(1, tp + fn)}  # fmt: skip


def model_row(det: Detector, eps: float, tau: float, images, masks, kinds, base: bool, vols=None) -> dict:
    """The model applied as ``detect`` applies it (base: eps 0; D averaged over the card's z window of axial
    slices, within each run of consecutive slices of ``vols``), one realisation at a time."""

    def flagged_volumes():
        for v in images:
            o = det.run(v, eps, base_only=base)
            yield det.post.mask(across_volumes(det.post, o.d[None], o.foreground[None], vols)[0], tau)

    return row(0.0 if base else eps, tau, flagged_volumes(), masks, kinds)


def intensity_row(vols, skip: int, choosing=None) -> dict:
    """The floor: the image itself inside the foreground, thresholded at the tau with the best mean volume Dice on
    the choosing realisations (as ``bench quality`` chooses its whole-volume tau): the first ``skip`` of ``vols``
    (validation), or all of ``choosing`` (validation volumes, when ``vols`` is a test split: scored from ``skip``)."""
    maps = intensity_volume_maps(vols.images)
    if choosing is None:
        tau = choose_intensity_volume_tau(maps[:skip], vols.masks[:skip])
    else:
        tau = choose_intensity_volume_tau(intensity_volume_maps(choosing.images), choosing.masks)
    return row(0.0, tau, maps[skip:] > tau, vols.masks[skip:], vols.kinds[skip:])


def _bin_name(i: int) -> str:
    hi = BINS[i + 1]
    return f"{BINS[i]}+ vox" if hi is None else f"{BINS[i]}-{hi - 1} vox"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("data")
    p.add_argument("models", nargs="*")
    p.add_argument("--skip", type=int, default=4, help="leave out the first N realisations (the cards' own; 4)")
    p.add_argument("--base", action="store_true", help="also each base model (eps 0, the card's base tau)")
    p.add_argument(
        "--intensity",
        action="store_true",
        help="also the plain intensity threshold, its tau chosen on validation: the first --skip realisations' "
        "volumes (--split val), or the first --intensity-choose validation realisations (test splits)",
    )
    p.add_argument(
        "--intensity-choose",
        type=int,
        default=16,
        help="with a test split: validation realisations that choose the threshold's tau (default 16)",
    )
    p.add_argument(
        "--split",
        choices=("val", "test", "test_b"),
        default="val",
        help="the realisations scored (default val; test splits only to report a choice made before)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args(argv)
    if not a.models and not a.intensity:
        print("val_select: name at least one model, or --intensity", file=sys.stderr)
        return 2
    if a.intensity_choose < 1:
        print("val_select: --intensity-choose must be >= 1", file=sys.stderr)
        return 2
    where = [str(resolve_model(name)) for name in a.models]
    if len(set(where)) < len(where):
        print("val_select: a model is given twice", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    vols = load_volumes(a.data, a.split)
    images, masks, kinds = vols.images[a.skip :], vols.masks[a.skip :], vols.kinds[a.skip :]
    if images.shape[0] < 2:
        flag = "--val-realisations" if a.split == "val" else "--test-realisations"
        print(f"val_select: {a.data} has {vols.images.shape[0]} {a.split} realisations; need more than "
              f"--skip {a.skip} + 1 (build with {flag})", file=sys.stderr)  # fmt: skip
        return 2
    print(f"{a.split} volumes {a.skip + 1}..{vols.images.shape[0]} of {a.data} (seeds {vols.seeds[a.skip:]}): "
          f"{images.shape[0]} realisations x {images.shape[1]} slices")  # fmt: skip
    rows: dict[str, dict] = {}
    for path in where:
        det, _, card = load_detector(path, "cpu", batch_size=16)  # a model's, or an ensemble card's
        ch = card_choices(card)
        label = Path(path).name  # the stem: a zoo name, or a card given as NAME.json
        if f"{label} + MG" in rows:  # two cards of one name (a zoo name and a copy elsewhere): their full paths
            label = path
        rows[f"{label} + MG"] = model_row(det, ch["eps"], ch["tau"], images, masks, kinds, base=False, vols=vols)
        if a.base:
            rows[label] = model_row(det, 0.0, ch["tau_base"], images, masks, kinds, base=True, vols=vols)
    if a.intensity:
        choosing = None if a.split == "val" else load_volumes(a.data, "val").head(a.intensity_choose)
        rows["intensity threshold"] = intensity_row(vols, a.skip, choosing)
    first = next(iter(rows.values()))["volume_dice"]
    print("| method | eps | tau | volume Dice (mean) | minus the first [95 % CI] | FP px per normal slice | "
          + " | ".join(_bin_name(i) for i in range(len(BINS) - 1)) + " |")  # fmt: skip
    print("|---|---|---|---|---|---|" + "---|" * (len(BINS) - 1))
    for label, r in rows.items():
        pd = paired_difference(first, r["volume_dice"])
        r["paired_vs_first"] = pd
        cells = [f"{b['found']} of {b['of']} ({b['voxel_fraction']:.0%})" for b in r["lesions_by_size"]]
        print(f"| {label} | {r['eps']:.3g} | {r['tau']:.3g} | {100 * r['volume_dice_mean']:.1f} | "
              f"{100 * pd['mean']:+.1f} [{100 * pd['ci95'][0]:+.1f}, {100 * pd['ci95'][1]:+.1f}] | "
              f"{r['fp_pixels_per_normal_slice']:.1f} | " + " | ".join(cells) + " |")  # fmt: skip
    print("\nVoxels over all realisations: flagged inside lesions (TP), outside (FP), lesion voxels missed (FN):\n")
    print("| method | TP | FP | FN | precision | recall |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        v = r["voxels"]
        print(f"| {label} | {v['tp']} | {v['fp']} | {v['fn']} | {100 * r['voxel_precision']:.1f} | "
              f"{100 * r['voxel_recall']:.1f} |")  # fmt: skip
    print("\nLesions found (more than 10 % of their voxels flagged) by kind, and the mean fraction flagged:\n")
    print("| method | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for label, r in rows.items():
        cells = [f"{b['found']} of {b['of']} ({b['voxel_fraction']:.0%})" for b in r["lesions_by_kind"].values()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if a.json:
        doc = {"data": a.data, "split": a.split, "skip": a.skip, "seeds": vols.seeds[a.skip :], "rows": rows}
        atomic_write_text(a.json, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
