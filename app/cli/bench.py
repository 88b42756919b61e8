"""``bench``: the two questions users ask -- does MatchGen help (``bench quality``) and is it fast enough to use
interactively (``bench speed``)."""

from __future__ import annotations

import argparse

HELP = (
    "benchmarks: 'quality' (Table 2 protocol), 'speed' (latency), 'batch' (batch throughput), 'triage' (study-level "
    "score AUROC), 'retrieve' (concurrent PACS retrieval against a local Orthanc), 'widths' (a family's "
    "quality-vs-speed table by width)"
)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def configure(p: argparse.ArgumentParser) -> None:
    from app.bench.triage import SPLITS as TRIAGE_SPLITS

    sub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    q = sub.add_parser(
        "quality",
        help="per model: base and +MG, tau/eps chosen on validation, Dice and AP on test; markdown, JSON, plot",
    )
    q.add_argument(
        "--data",
        required=True,
        help="benchmark directory (val/ and test/ with masks), e.g. from 'python main.py data brain-proxy'",
    )
    q.add_argument("--models", required=True, help="comma-separated model names or checkpoint paths")
    q.add_argument("--out", default="bench-quality", help="output directory (default: bench-quality)")
    q.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    q.add_argument(
        "--val-subset",
        type=_positive,
        default=64,
        help="abnormal validation slices used for the choice (default 64; evenly spaced)",
    )
    q.add_argument("--test-subset", type=_positive, default=None, help="test slices (default: all)")
    q.add_argument("--max-steps", type=_positive, default=None, help="cap on solver steps per eps")
    q.add_argument(
        "--solver",
        choices=("fast", "paper"),
        default="fast",
        help="fast: spg + bfloat16, float32 without bfloat16 hardware (default); paper: penalty, Adam lr 1e-3, float32",
    )
    q.add_argument(
        "--choice",
        choices=("val", "card"),
        default="val",
        help="val: choose tau/eps on validation here (default); card: use the validation choice in the model card",
    )
    q.add_argument("--recalibrate", action="store_true", help="calibrate the eps range even if the card has one")
    q.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("speed", help="latency figures measured in one run: speed.json and speed.md")
    s.add_argument("--out", default="bench-speed", help="output directory (default: bench-speed)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    s.add_argument("--model", default=None, help="model (default: the default model)")
    s.add_argument(
        "--data", default=None, help="benchmark directory whose test slices are timed (default: synthetic phantoms)"
    )
    s.add_argument("--volume-slices", type=_positive, default=128, help="slices in the volume run (default 128)")
    s.add_argument(
        "--reference-slices", type=_positive, default=3, help="slices for the reference comparison (default 3)"
    )
    s.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")
    s.add_argument("--no-gui", action="store_true", help="skip the GUI figures")
    s.add_argument("--no-rss", action="store_true", help="skip the detect memory figure")
    s.add_argument("--no-preprocess", action="store_true", help="skip N4 + brain extraction timing")
    s.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the paper-solver comparisons (speedup_vs_reference, before/after): its run to convergence takes "
        "tens of minutes per slice on a U-Net decoder on a CPU",
    )
    s.add_argument(
        "--preprocess-only",
        action="store_true",
        help="only time N4 and brain extraction on the skull-on Colin27 head (speed-preprocess.json/.md)",
    )
    s.add_argument(
        "--compile",
        action="store_true",
        help="also time the volume with torch.compile(decode) (needs a C++ compiler; compiling takes a minute)",
    )

    b = sub.add_parser(
        "batch",
        help="batch throughput: studies/min with 1 and 2 local workers and on a separately started dask scheduler",
    )
    b.add_argument("--out", default="bench-batch", help="output directory (default: bench-batch)")
    b.add_argument("--model", default=None, help="model (default: the default model)")
    b.add_argument(
        "--studies",
        type=_positive,
        default=24,
        help="phantom studies per configuration (default 24: a clock of 15 s "
        "or more on 16-slice studies; with fewer, each worker's first study weighs more)",
    )
    b.add_argument("--slices", type=_positive, default=16, help="axial slices per study (default 16)")
    b.add_argument("--max-steps", type=_positive, default=None, help="cap on solver steps per slice")
    b.add_argument(
        "--mg",
        action="store_true",
        help="time what batch --mg runs (MatchGen) instead of what a plain batch runs (the card's screening detection)",
    )

    r = sub.add_parser(
        "retrieve",
        help="batch --server's retrieval with --retrieve-workers 1, 2, 4, 8 over DICOMweb and DIMSE from a local "
        "Orthanc it starts (apt-get install orthanc orthanc-dicomweb): seconds, series/s, MB/s, speed-up",
    )
    r.add_argument("--out", default="bench-retrieve", help="output directory (default: bench-retrieve)")
    r.add_argument("--series", type=_positive, default=16, help="series on the server, one per study (default 16)")
    r.add_argument("--slices", type=_positive, default=60, help="slices (instances) per series (default 60)")
    r.add_argument("--size", type=_positive, default=256, help="rows and columns of each slice (default 256)")
    r.add_argument("--workers", default="1,2,4,8", help="--retrieve-workers values, with 1 (default 1,2,4,8)")
    r.add_argument("--protocols", default="dicomweb,dimse", help="dicomweb and/or dimse (default dicomweb,dimse)")
    r.add_argument("--repeats", type=_positive, default=2, help="runs per configuration, the best counts (default 2)")

    t = sub.add_parser(
        "triage",
        help="AUROC and ranks of the study-level score, lesion vs normal studies of the held-out subject",
    )
    t.add_argument("--out", default="bench-triage", help="output directory (studies, batch outputs, triage.md)")
    t.add_argument("--models", default=None, help="comma-separated models (default: the default model)")
    t.add_argument("--normal", type=_positive, default=8, help="normal studies (default 8)")
    t.add_argument("--loads", default="1,3,8", help="lesion counts of the abnormal studies (default 1,3,8)")
    t.add_argument("--per-load", type=_positive, default=2, help="abnormal studies per lesion count (default 2)")
    t.add_argument("--workers", type=_positive, default=2, help="local Dask worker processes (default 2)")
    t.add_argument("--seed", type=int, default=0, help="seed of the augmentations and lesions (default 0)")
    t.add_argument("--max-steps", type=_positive, default=None, help="cap on solver steps per slice")
    t.add_argument(
        "--split",
        choices=TRIAGE_SPLITS,
        default="all",
        help="cut the studies from all slices of the held-out subject (default), or only from the benchmark's "
        "validation block or test blocks (choose a score on val, report it on test); head-val and head-test: "
        "whole-head studies in the roles of val and test (give them different seeds)",
    )
    t.add_argument(
        "--modes",
        default="base,mg",
        help="base model, +MG and/or screen (the card's screening detection, what a plain batch runs) "
        "(default base,mg; +MG costs the solver's steps)",
    )
    t.add_argument(
        "--maps", action="store_true", help="keep each study's difference map and pseudo-normal (as batch --maps)"
    )
    t.add_argument(
        "--record",
        action="store_true",
        help="write the worklist score's AUROC into each model card, for batch, report.html and the viewer's "
        "worklist to show beside the order (not with --max-steps: another operator than the card's)",
    )

    w = sub.add_parser(
        "widths",
        help="a family's cost by network width (training step, detection per slice with the reference card's "
        "solver) beside the validation figures of trained checkpoints: the table a width is chosen from",
    )
    w.add_argument("--out", default="bench-widths", help="output directory (default: bench-widths)")
    w.add_argument("--model", default=None, help="reference model: family, options, solver (default: the default)")
    w.add_argument("--widths", default="8,12,16,24,32", help="comma-separated widths (default 8,12,16,24,32)")
    w.add_argument("--data", default=None, help="benchmark directory (test slices to detect on; default: phantoms)")
    w.add_argument("--trained", nargs="*", default=[], metavar="CHECKPOINT", help="trained checkpoints to tabulate")
    w.add_argument("--slices", type=_positive, default=32, help="test slices to detect on (default 32)")
    w.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (for the reports)."""
    import shlex

    parts = ["python", "main.py", "bench", args.bench]
    for key, val in sorted(vars(args).items()):
        if key in ("bench", "command", "_run") or val in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(val, list):
            parts += [flag, *map(str, val)] if val else []
        else:
            parts += [flag] if val is True else [flag, str(val)]
    return " ".join(shlex.quote(p) for p in parts)


def run_retrieve(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from app.atomic import atomic_write_text
    from app.bench.retrieve_speed import PROTOCOLS, markdown, run_retrieve_bench
    from app.cli.batch_pacs import retrieve
    from app.errors import OptionError

    try:
        workers = tuple(int(v) for v in args.workers.split(",") if v.strip())
    except ValueError:
        raise OptionError(f"--workers {args.workers!r}: comma-separated integers, e.g. 1,2,4,8") from None
    if 1 not in workers or min(workers) < 1:
        raise OptionError(f"--workers {args.workers!r}: counts >= 1, with 1 (the speed-ups are relative to it)")
    protocols = tuple(p.strip().lower() for p in args.protocols.split(",") if p.strip())
    if not protocols or set(protocols) - set(PROTOCOLS):
        raise OptionError(f"--protocols {args.protocols!r}: dicomweb, dimse or dicomweb,dimse")
    res = run_retrieve_bench(
        retrieve,
        n_series=args.series,
        slices=args.slices,
        size=args.size,
        workers=workers,
        protocols=tuple(dict.fromkeys(protocols)),
        repeats=args.repeats,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    res["command"] = command_line(args)
    out = Path(args.out)
    md = f"`{res['command']}`\n\n" + markdown(res)
    atomic_write_text(out / "retrieve.json", json.dumps(res, indent=1) + "\n")
    atomic_write_text(out / "retrieve.md", md)
    print(md)
    print(f"wrote {out / 'retrieve.json'} and {out / 'retrieve.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    if args.bench == "retrieve":  # no torch: the retrieval alone
        return run_retrieve(args)

    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.bench == "batch":
        import json

        from app.atomic import atomic_write_text
        from app.bench.batch_speed import markdown, run_batch_bench

        res = run_batch_bench(
            args.model, args.studies, args.slices, args.max_steps, mg=args.mg,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
        res["command"] = command_line(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "batch.json", json.dumps(res, indent=1) + "\n")
        md = f"`{res['command']}`\n\n" + markdown(res)
        atomic_write_text(out / "batch.md", md)
        print(md)
        print(f"wrote {out / 'batch.json'} and {out / 'batch.md'}")
        return 0
    if args.bench == "widths":
        import json

        from app.atomic import atomic_write_text
        from app.bench.widths import markdown as widths_markdown
        from app.bench.widths import run_widths
        from app.errors import OptionError

        try:
            widths = [int(v) for v in args.widths.split(",") if v.strip()]
        except ValueError:
            raise OptionError(f"--widths {args.widths!r}: comma-separated integers") from None
        if not widths or min(widths) < 1:
            raise OptionError("--widths: at least one width, each >= 1")
        res = run_widths(
            args.model, widths, args.data, args.trained, args.threads, args.slices,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
        res["command"] = command_line(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        md = widths_markdown(res, res["command"])
        atomic_write_text(out / "widths.json", json.dumps(res, indent=1) + "\n")
        atomic_write_text(out / "widths.md", md)
        print(md)
        print(f"wrote {out / 'widths.json'} and {out / 'widths.md'}")
        return 0
    if args.bench == "triage":
        from app.bench.triage import run_triage
        from app.errors import OptionError

        try:
            loads = tuple(int(v) for v in args.loads.split(",") if v.strip())
        except ValueError:
            raise OptionError(f"--loads {args.loads!r}: comma-separated integers") from None
        if not loads or min(loads) < 1:
            raise OptionError("--loads: at least one lesion count, each >= 1")
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else [None]
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        if not modes or set(modes) - {"base", "mg", "screen"}:
            raise OptionError(f"--modes {args.modes!r}: a comma-separated list of base, mg and screen")
        if args.record and args.max_steps is not None:
            raise OptionError("--record: not with --max-steps (the card's own step budget is what batch applies)")
        rep = run_triage(
            models,
            Path(args.out),
            n_normal=args.normal,
            loads=loads,
            per_load=args.per_load,
            workers=args.workers,
            seed=args.seed,
            max_steps=args.max_steps,
            log=lambda m: print(m, file=sys.stderr, flush=True),
            split=args.split,
            modes=modes,
            maps=args.maps,
            record=args.record,
            command=command_line(args),
        )
        from app.bench.triage import markdown

        md = f"`{command_line(args)}`\n\n" + markdown(rep)
        (Path(args.out) / ("triage.md" if args.split == "all" else f"triage-{args.split}.md")).write_text(md)
        print(md)
        return 0
    if args.bench == "speed" and args.preprocess_only:
        import json

        from app.atomic import atomic_write_text
        from app.bench.speed import preprocess_markdown, preprocess_speed

        pre = preprocess_speed(log=lambda m: print(m, file=sys.stderr, flush=True))
        pre["command"] = command_line(args)
        md = f"`{pre['command']}`\n\n" + preprocess_markdown(pre) + "\n"
        out = Path(args.out)
        atomic_write_text(out / "speed-preprocess.json", json.dumps(pre, indent=1) + "\n")
        atomic_write_text(out / "speed-preprocess.md", md)
        print(md)
        return 0
    if args.bench == "speed":
        from app.bench.speed import run_speed, summary_markdown, write_outputs

        if args.volume_slices < 100:
            print(f"note: {args.volume_slices} volume slices (the issue asks for >= 100)", file=sys.stderr)
        res = run_speed(
            args.model,
            args.device,
            args.data,
            n_volume=args.volume_slices,
            n_reference=args.reference_slices,
            gui=not args.no_gui,
            rss=not args.no_rss,
            compile_decoder=args.compile,
            preprocess=not args.no_preprocess,
            reference=not args.no_reference,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        res["command"] = command_line(args)
        js, md = write_outputs(res, Path(args.out))
        print(summary_markdown(res))
        print(f"wrote {js} and {md}")
        return 0

    from app.bench.quality import QualitySettings, run_quality, table_markdown, write_outputs
    from app.core.matchgen import FAST, SolverOptions

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = QualitySettings(
        val_subset=args.val_subset,
        test_subset=args.test_subset,
        max_steps=args.max_steps,
        solver=FAST if args.solver == "fast" else SolverOptions(),
        channels_last=args.solver == "fast",
        recalibrate=args.recalibrate,
        choice=args.choice,
    )
    report = run_quality(args.data, models, settings, args.device, progress_bar=not args.no_progress)
    command = command_line(args)
    paths = write_outputs(report, Path(args.out), command)
    print(table_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
