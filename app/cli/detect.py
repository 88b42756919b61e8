"""``detect``: run a model (+MatchGen) over every axial slice of a study and write the binary mask on the study's
own grid and affine (optionally the pseudo-normal and difference maps too).

The study goes through the same path as the viewer and the benchmarks: ``app.io.load_study`` ->
``app.data.prepare_study`` (normalisation named by the model card, crop to the foreground, model-sized slices)
-> ``app.core.detector.Detector`` (the card's solver and post-processing) -> maps back with
``app.data.to_study_grid``, D kept inside the brain; the mask is D > tau without components below the card's
``min_component_px`` on the study grid (as the viewer thresholds it). That path is
:func:`app.batch.task.detect_volume`, which ``batch`` runs per study, so both give the same mask.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import detect_dicom
from app.solver_options import SOLVE_BATCH

HELP = "detect anomalies in a study and write the mask (NIfTI on the study's grid)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "study", metavar="STUDY", nargs="?", help="NIfTI/MGZ file, DICOM file or folder, or PNG/JPEG/TIFF picture"
    )
    p.add_argument(
        "--model", default=None, help="model name in models/ or a checkpoint path (default: the default model)"
    )
    p.add_argument(
        "--out", metavar="MASK.nii.gz|SEG.dcm", help="where to write the binary mask (.dcm: DICOM SEG, DICOM studies)"
    )
    p.add_argument(
        "--eps",
        type=float,
        default=None,
        help="MatchGen radius (default: the model card's choice; for an ensemble card, a factor of each member's "
        "chosen eps)",
    )
    p.add_argument("--tau", type=float, default=None, help="threshold on the difference map (default: the card's)")
    p.add_argument("--base-only", action="store_true", help="the base model alone (eps = 0), with its own tau")
    p.add_argument("--maps", metavar="DIR", default=None, help="also write pseudo_normal.nii.gz and difference.nii.gz")
    p.add_argument("--mask", metavar="GT", default=None, help="ground-truth mask on the study's grid: print the Dice")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument(
        "--batch-size", type=int, default=SOLVE_BATCH, help=f"slices per solver batch (default {SOLVE_BATCH})"
    )
    p.add_argument(
        "--solver",
        choices=("card", "paper", "fast"),
        default="card",
        help="card: the solver the card's eps/tau were chosen with (default); paper: penalty method, Adam lr 1e-3; "
        "fast: spectral projected gradient with bfloat16 search steps (float32 on a device without bfloat16)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="solver steps per slice (default: the card's budget); another budget than the card's warns",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice, all cores)"
    )
    p.add_argument(
        "--median",
        type=int,
        default=None,
        metavar="PX",
        help="median filter of the difference map, PX x PX in-plane (default: the card's postprocess, else none)",
    )
    p.add_argument("--no-skull-strip", action="store_true", help="skull-on brain MRI: skip N4 + atlas brain extraction")
    p.add_argument("--brain-mask", metavar="BRAIN.nii.gz|.nrrd", default=None, help="also write the brain mask used")
    detect_dicom.configure(p)  # --seg, --server/--study-uid/--series-uid/--send (app/cli/detect_dicom.py)


def _check_out(path) -> None:
    from pathlib import Path

    from app.errors import OptionError

    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz", ".nrrd")):
        raise OptionError(f"--out {p}: the mask is written as NIfTI or NRRD; use a .nii, .nii.gz or .nrrd name")
    if not p.parent.is_dir():
        raise OptionError(f"--out {p}: folder {p.parent} does not exist")


def choose_parameters(card: dict, eps: float | None, tau: float | None, base_only: bool) -> tuple[float, float, str]:
    """(eps, tau, note) from the options, else the card's validation choice, else the documented fallbacks
    (:func:`app.nets.card.card_choices`; the note names any fallback used)."""
    from app.errors import OptionError
    from app.nets.card import card_choices, choice_sources

    ch, src = card_choices(card), choice_sources(card)
    notes = []
    if eps is None:
        eps = 0.0 if base_only else ch["eps"]
        if not base_only and src["eps"] != "card":
            notes.append(src["eps"])
    if tau is None:
        key = "tau_base" if base_only else "tau"
        tau = ch[key]
        if src["tau"] != "card":
            notes.append(src["tau"])
    if base_only:
        eps = 0.0
    if not (eps >= 0 and eps == eps and eps != float("inf")):
        raise OptionError(f"--eps must be a finite number >= 0, got {eps}")
    if not (0.0 <= tau <= 1.0):
        raise OptionError(f"--tau must be in [0, 1], got {tau}")
    return float(eps), float(tau), "; ".join(notes)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from app.core.device import resolve_device
    from app.core.ensemble import family_of, load_detector
    from app.errors import OptionError
    from app.io import load_study, save_mask, save_on_study_grid
    from app.nets.zoo import resolve_model

    detect_dicom.check(args)
    from app.viewer.worklist import is_batch_output

    if not getattr(args, "server", None) and args.study and is_batch_output(args.study):
        raise OptionError(
            f"{args.study}: a batch output folder (its masks are results, not a study): open it with "
            f"`python main.py view {args.study}`, or name one of the studies it came from"
        )
    if args.batch_size < 1:
        raise OptionError("--batch-size must be >= 1")
    if args.max_steps is not None and args.max_steps < 0:
        raise OptionError("--max-steps must be >= 0")
    if args.median is not None and args.median < 0:
        raise OptionError("--median must be >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise OptionError("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    stem = resolve_model(args.model)
    # a model, or an ensemble card (app.core.ensemble: zoo models' maps averaged; its eps a factor of each member's)
    detector, model, card = load_detector(
        stem, device, batch_size=args.batch_size, median_size=args.median, solver=args.solver, max_steps=args.max_steps
    )
    eps, tau, note = choose_parameters(card, args.eps, args.tau, args.base_only)
    if note:
        print(f"note: {note}", file=sys.stderr)
    study = load_study(detect_dicom.input_path(args))
    detect_dicom.require_dicom_input(args, study)
    for w in study.warnings:
        print(f"warning: {w}", file=sys.stderr)
    gt = None
    if args.mask:
        from app.io import load_mask

        gt = load_mask(args.mask, study)
    from app.batch.task import detect_volume

    if detector.solver_warning and not args.base_only:
        print(f"warning: {detector.solver_warning}", file=sys.stderr)
    if detector.precision_note and not args.base_only:
        print(f"note: {detector.precision_note}", file=sys.stderr)
    mode = "base model" if args.base_only else f"MatchGen eps={eps:g}"
    bar = None

    def progress(done, total):  # the bar opens at the first batch, when preprocessing has said how many slices
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="slice", desc=mode, disable=not sys.stderr.isatty())
        bar.update(done - bar.n)

    try:  # the one detection detect and batch share
        vol = detect_volume(
            study, detector, model, card, eps, tau, args.base_only, skull_strip=not args.no_skull_strip,
            progress=progress,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    prep, d_vol, mask = vol.prep, vol.d, vol.mask
    for w in prep.warnings:  # outside the model's domain (app/data/domain.py): never silent
        print(f"warning: {w}", file=sys.stderr)
    if args.brain_mask and prep.brain is not None:
        save_mask(study, prep.brain, args.brain_mask)
    maps_dir = Path(args.maps) if args.maps else None
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
    if args.out and not detect_dicom.is_dcm(args.out):
        save_mask(study, mask, args.out)
    algo = detect_dicom.algorithm(stem, family_of(card, model), eps, tau, args.base_only)
    detect_dicom.write_outputs(args, study, mask, d_vol, algo)
    if args.out:  # the brain mask and the preprocessing record beside the mask (the viewer and batch do the same)
        from app.io.seg import card_sha256
        from app.viewer.study_run import preprocessing_record, write_beside

        info = {"name": stem.name, "card_sha256": card_sha256(stem.with_suffix(".json"))}
        timings = {"preprocess_s": round(vol.prepare_s, 3), "solve_s": round(vol.solve_s, 3)}
        record = preprocessing_record(study, prep, info, eps, tau, base_only=bool(args.base_only), timings=timings)
        brain_out, rec_out = write_beside(study, prep, args.out, record)
        print(f"wrote {rec_out}" + (f" and the brain mask {brain_out}" if brain_out else " (no brain mask)"))
    if maps_dir is not None:
        save_on_study_grid(study, vol.s, maps_dir / "pseudo_normal.nii.gz")  # empty slices: 0
        save_on_study_grid(study, d_vol, maps_dir / "difference.nii.gz")
    if gt is not None:
        from app.core.maps import confusion_counts
        from app.core.metrics import dice

        c = confusion_counts(mask, gt)
        print(
            f"Dice vs {Path(args.mask).name}: {dice(mask, gt):.4f} "
            f"(voxels: {c['tp']} true positive, {c['fp']} false positive, {c['fn']} false negative)"
        )
    flagged = int(mask.sum())
    print(
        f"wrote {args.out or 'the mask'}: {flagged} voxels flagged in {int(mask.any(axis=(0, 1)).sum())} of "
        f"{mask.shape[2]} axial slices (model {stem.name}, eps={eps:g}, tau={tau:g}, "
        f"{vol.slices_analysed} slices analysed)"
    )
    from app.core.findings import find_findings, findings_summary

    print(findings_summary(find_findings(mask, d_vol, study.affine)))
    return 0
