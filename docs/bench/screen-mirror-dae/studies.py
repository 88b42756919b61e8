"""The 96 whole-head validation studies the screening's candidates are judged on since 2026-12-07: `bench triage
--split head-val` study sets of seeds 11 and 23 (24 normal studies and 8 each with 1, 3 and 8 lesions per seed),
drawn as `bench triage` draws them (app.bench.triage.build_studies; studies already there are reused), then linked
into one folder with the ids prefixed (s11-, s23-) and one truth.csv. No model is run (a few minutes).

    python docs/bench/screen-mirror-dae/studies.py OUT_DIR [SETS_DIR]

SETS_DIR (default OUT_DIR's parent) holds the two sets (head-val-s11/, head-val-s23/). Then kinds.py writes
OUT_DIR/kinds.json and docs/bench/screen-fine/fine.py scores a candidate on OUT_DIR."""

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from app.bench.triage import build_studies  # noqa: E402

SEEDS = (11, 23)


def main():
    out = Path(sys.argv[1])
    sets = Path(sys.argv[2]) if len(sys.argv) > 2 else out.parent
    out.mkdir(parents=True, exist_ok=True)
    rows_all = []
    for seed in SEEDS:
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
