"""``batch``: detection over many studies on a Dask cluster, a ranked triage worklist and an HTML report.

See ``app/batch/`` and docs/batch.md. Exit code 0 when every study was analysed, 1 when some failed (they are
listed in the worklist with their errors), 2 for a bad command line, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import batch_pacs
from app.solver_options import SOLVE_BATCH

HELP = "detect over many studies on Dask (local or a scheduler); ranked worklist.csv/json and report.html"
DESCRIPTION = (
    "Run a model (+MatchGen) over every study named by INPUTS (files, folders searched recursively for NIfTI and "
    "DICOM series, globs, or .txt/.csv lists) on a local Dask cluster or an existing scheduler. Per study: "
    "DIR/<study-id>/mask.nii.gz and result.json; DIR/worklist.csv, worklist.json and report.html rank the studies "
    "by their study-level score; for DICOM series also DIR/<study-id>/mask.seg.dcm (DICOM SEG). --server with "
    "--query batches the series a PACS query finds (retrieved into the cache; --send sends the SEGs back). A rerun "
    "skips studies already done with the same model, eps and tau."
)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="*", metavar="INPUTS", help="study files, folders, globs or .txt/.csv lists (or --server)"
    )
    p.add_argument("--model", default=None, help="model name in models/ or a checkpoint path (default model if none)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reused on a rerun)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="existing Dask scheduler, tcp://host:8786")
    p.add_argument("--workers", type=_positive, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--eps", type=float, default=None, help="MatchGen radius (default: the model card's choice)")
    p.add_argument("--tau", type=float, default=None, help="threshold on the difference map (default: the card's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--base-only", action="store_true", help="the base model alone (eps = 0), with its own tau")
    mode.add_argument(
        "--mg",
        action="store_true",
        help="MatchGen, for a model whose card has batch run its base map by default (its screening choice)",
    )
    p.add_argument(
        "--no-skull-strip", action="store_true", help="skull-on brain MRI: skip N4 + atlas brain extraction (as detect)"
    )
    p.add_argument("--maps", action="store_true", help="also write difference.nii.gz and pseudo_normal.nii.gz")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default), on each worker")
    p.add_argument(
        "--batch-size", type=_positive, default=SOLVE_BATCH, help=f"slices per solver batch (default {SOLVE_BATCH})"
    )
    p.add_argument("--solver", choices=("card", "paper", "fast"), default="card", help="as in detect (default card)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on solver steps per slice")
    p.add_argument("--window", type=_positive, default=None, help="tasks in flight (default: 2 x worker threads)")
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the Dask dashboard (local cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / per-study lines")
    p.add_argument(
        "--local-threads",
        action="store_true",
        help="local workers as threads of this process instead of processes (debugging; no isolation)",
    )
    batch_pacs.configure(p)  # --server/--query/--send (app/cli/batch_pacs.py)


def screening_choice(card: dict, args) -> tuple[bool, dict | None]:
    """(base_only, screening): whether the run is the base model alone -- ``--base-only`` or ``--mg`` when given,
    ``--eps`` asks for MatchGen, else the card's screening mode (:func:`app.nets.card.card_screening`) -- and, when
    the run is the card's own screening detection, that detection (``tau``, ``report_above``; None otherwise). Said
    in a note when it is the base map, so that nobody takes the run for a MatchGen one."""
    from app.nets.card import card_screening, card_screening_outline

    if args.base_only or args.mg or args.eps is not None:
        return bool(args.base_only), None
    sc = card_screening(card)
    if sc["mode"] != "base":
        return False, None
    raw = card.get("screening") or {}
    why = f" ({raw['chosen_on']})" if isinstance(raw.get("chosen_on"), str) else ""
    cut = ""
    if args.tau is None and (sc["tau"] is not None or sc["report_above"] is not None):
        cut = f"; findings outlined at D > {card_screening_outline(card):.4g}"
        if sc["report_above"] is not None:
            cut += f" and reported when their peak D exceeds {sc['report_above']:.4g}"
        cut += " (--tau: that tau, every finding)"
    print(
        f"note: batch runs this model's base map by default: it screens whole studies better than MatchGen{why}"
        f"{cut}; --mg for MatchGen",
        file=sys.stderr,
    )
    return True, (sc if args.tau is None else None)


def make_settings(args):
    """The run's BatchSettings from the options and the model card (eps/tau as ``detect`` chooses them)."""
    from app.batch.task import BatchSettings
    from app.cli.detect import choose_parameters
    from app.core.ensemble import is_ensemble
    from app.errors import OptionError
    from app.nets.card import card_batch_detection, read_card, solver_for
    from app.nets.zoo import resolve_model

    if args.max_steps is not None and args.max_steps < 0:
        raise OptionError("--max-steps must be >= 0")
    stem = resolve_model(args.model).resolve()
    card = read_card(stem)  # an ensemble card (app.core.ensemble) has no weights: its members' loading checks them
    if not is_ensemble(card) and not stem.with_suffix(".safetensors").is_file():
        from app.errors import CheckpointError

        raise CheckpointError(f"weights {stem.with_suffix('.safetensors')} not found")
    base_only, screening = screening_choice(card, args)
    eps, tau, note = choose_parameters(card, args.eps, args.tau, base_only)
    if note:
        print(f"note: {note}", file=sys.stderr)
    report_above = None
    if screening is not None:  # the card's screening detection: its outline and reporting cut
        plain = card_batch_detection(card)
        tau, report_above = plain["tau"], plain["report_above"]
    _solver, warning = solver_for(card, args.solver, args.max_steps)
    if warning and not base_only:
        print(f"warning: {warning}", file=sys.stderr)
    return BatchSettings.for_checkpoint(
        stem,
        eps,
        tau,
        base_only=base_only,
        solver=args.solver,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        maps=bool(args.maps),
        skull_strip=not args.no_skull_strip,
        report_above=report_above,
    )


def run(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from app.batch.cluster import close, open_client
    from app.batch.inputs import expand_inputs
    from app.batch.runner import INTERIM_S, run_batch
    from app.batch.task import ModelPreload
    from app.errors import OptionError

    batch_pacs.check(args)
    if args.inputs and args.server:
        raise OptionError("give either INPUTS or --server with --query, not both")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out}: exists and is not a folder")
    settings = make_settings(args)
    # a PACS query is answered and its series retrieved (into the cache) before anything is written into --out
    refs = batch_pacs.retrieve(args) if args.server else expand_inputs(args.inputs)
    print(
        f"{len(refs)} studies; model {settings.model_name}, eps={settings.eps:g}, tau={settings.tau:g}", file=sys.stderr
    )
    out.mkdir(parents=True, exist_ok=True)
    client, cluster, info = open_client(
        args.scheduler, args.workers, processes=not args.local_threads, dashboard=not args.no_dashboard
    )
    try:
        print(
            f"Dask {info.kind} at {info.address}: {info.workers} worker(s), {info.threads} thread(s)"
            + (f"; dashboard {info.dashboard}" if info.dashboard else ""),
            file=sys.stderr,
            flush=True,
        )
        client.register_plugin(ModelPreload(settings))
        print(
            f"{out / 'worklist.csv'} and report.html are written every {INTERIM_S:g} s while it runs, with the "
            "studies done so far",
            file=sys.stderr,
            flush=True,
        )
        command = " ".join(shlex.quote(a) for a in ["python", "main.py", *sys.argv[1:]]) if sys.argv else ""
        summary = run_batch(
            refs,
            settings,
            out,
            client,
            window=args.window,
            progress=not args.no_progress,
            meta={"command": command, "cluster": info.kind, "workers": info.workers},
        )
    finally:
        close(client, cluster)
    rate = f" ({summary.rate_per_min:.2f} studies/min)" if summary.done else ""
    print(
        f"{summary.done} analysed, {summary.skipped} skipped (already done), {summary.failed} failed in "
        f"{summary.wall_s:.1f} s{rate}"
    )
    if summary.worklist:
        print(f"wrote {summary.worklist[0]}, {summary.worklist[1]} and {summary.report}")
        if summary.triage.get("text"):
            print(summary.triage["text"])
    if args.send:
        batch_pacs.send(args, summary.results, out)
    return 1 if summary.failed else 0
