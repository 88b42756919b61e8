"""Paired + MG whole-volume Dice differences between rows of val_select.py JSON files scored on the same
realisations (e.g. the shipped cards in one run, the recalibrated copies in another).

    python docs/bench/val-layout/paired.py A.json B.json [...]   # every row against the first file's first row
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from app.core.metrics import paired_difference  # noqa: E402


def main(paths: list[str]) -> int:
    docs = [json.loads(Path(p).read_text()) for p in paths]
    seeds = docs[0]["seeds"]
    if any(d["seeds"] != seeds or d["split"] != docs[0]["split"] for d in docs):
        print("paired: the files score different realisations", file=sys.stderr)
        return 2
    rows = [(label, r) for d in docs for label, r in d["rows"].items()]
    first_label, first = rows[0]
    print(f"{docs[0]['split']}, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} realisations); against {first_label}\n")
    print("| method | file | volume Dice | minus the first [95 %] | wins / losses | FP px per normal slice |")
    print("|---|---|---|---|---|---|")
    for (label, r), src in zip(rows, [p for p, d in zip(paths, docs, strict=True) for _ in d["rows"]], strict=True):
        pd = paired_difference(first["volume_dice"], r["volume_dice"])
        print(f"| {label} | {Path(src).name} | {100 * r['volume_dice_mean']:.1f} | {100 * pd['mean']:+.1f} "
              f"[{100 * pd['ci95'][0]:+.1f}, {100 * pd['ci95'][1]:+.1f}] | {pd['wins']} / {pd['losses']} | "
              f"{r['fp_pixels_per_normal_slice']:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
