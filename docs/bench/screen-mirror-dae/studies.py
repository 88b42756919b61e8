"""The 96 whole-head validation studies the screening's candidates are judged on since 2026-12-07: `bench triage
--split head-val` study sets of seeds 11 and 23 (24 normal studies and 8 each with 1, 3 and 8 lesions per seed),
drawn as `bench triage` draws them (app.bench.triage.build_studies; studies already there are reused), then linked
into one folder with the ids prefixed (s11-, s23-) and one truth.csv. No model is run (a few minutes).

    python docs/bench/screen-mirror-dae/studies.py OUT_DIR [SETS_DIR] [--seeds 11,23]

SETS_DIR (default OUT_DIR's parent) holds the sets (head-val-s11/, head-val-s23/); --seeds draws other seeds' sets
(27,29: docs/bench/screen-cover-contrast/rule-fourth-2.md). Then kinds.py writes OUT_DIR/kinds.json and
docs/bench/screen-fine/fine.py scores a candidate on OUT_DIR."""

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from app.bench.triage import build_studies  # noqa: E402

SEEDS = (11, 23)


def main():
    args = sys.argv[1:]
    seeds = SEEDS
    if "--seeds" in args:
        i = args.index("--seeds")
        seeds = tuple(int(v) for v in args[i + 1].split(","))
        del args[i : i + 2]
    out = Path(args[0])
    sets = Path(args[1]) if len(args) > 1 else out.parent
    out.mkdir(parents=True, exist_ok=True)
    rows_all = []
    for seed in seeds:
        folder, prefix = sets / f"head-val-s{seed}", f"s{seed}-"
        rows = build_studies(folder, 24, [1, 3, 8], 8, seed=seed, log=lambda *a: None, split="head-val")
        for f in folder.iterdir():
            link = out / (prefix + f.name)
            if f.name != "truth.csv" and not link.exists():
                os.symlink(f.resolve(), link)
        rows_all += [{**r, "id": prefix + r["id"]} for r in rows]
    with (out / "truth.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "abnormal", "lesions", "lesion_ml"])
        w.writeheader()
        w.writerows(rows_all)
    print(f"{len(rows_all)} studies in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
