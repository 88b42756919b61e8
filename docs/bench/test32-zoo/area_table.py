"""Two tables from saved `bench quality` reports; no model is run.

1. Per brain-area bin: each model's per-image test Dice, base and +MG, and their paired difference with a 95 %
   bootstrap interval -- the table `bench quality` now writes itself (`by_area`), computed here for reports written
   before it did, from their saved per-image Dice (abnormal test slices, in slice order) and the test slices' brain
   area (the maps' own foreground).
2. Whole volumes: each model's + MG volume Dice minus its base's, paired over the realisations, with a 95 %
   bootstrap interval, per lesion style.

    python docs/bench/test32-zoo/area_table.py /work/cache/brain-proxy-t32z REPORT.json [REPORT.json ...]
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.bench.quality import AREA_EDGES, _val_area_counts, area_markdown  # noqa: E402
from app.core.detector import foreground_area  # noqa: E402
from app.core.metrics import paired_by_bins, paired_difference  # noqa: E402
from app.data import load_split  # noqa: E402
from app.foreground import FOREGROUND_THRESHOLD  # noqa: E402


def main(data: str, reports: list[str]) -> None:
    test = load_split(data, "test")
    masks = np.asarray(test.masks)
    abnormal = masks.reshape(len(masks), -1).any(axis=1)
    area = foreground_area(np.asarray(test.images, np.float32)[abnormal])
    val_slices = _val_area_counts(load_split(data, "val"), FOREGROUND_THRESHOLD)
    rows = []
    for path in reports:
        for m in json.load(open(path))["models"]:
            base, mg = m["base"]["dice_per_image"], m["mg"]["dice_per_image"]
            if len(base) != len(area):
                raise SystemExit(f"{path}: {len(base)} per-image Dice for {len(area)} abnormal test slices")
            by_area = {"dice": paired_by_bins(base, mg, area, AREA_EDGES), "val_slices": val_slices}
            rows.append({"model": m["model"], "by_area": by_area})
    print(area_markdown({"models": rows}))
    print("| model | style | volumes | base | + MG | + MG - base [95 %] | + MG better / worse |")
    print("|---|---|---|---|---|---|---|")
    for path in reports:
        for m in json.load(open(path))["models"]:
            for style, v in (m.get("volumes") or {}).items():
                b, g = v["base"]["volume_dice"], v["mg"]["volume_dice"]
                p = paired_difference(b, g)
                lo, hi = p["ci95"]
                print(
                    f"| {m['model']} | {style} | {p['n']} | {100 * np.mean(b):.1f} | {100 * np.mean(g):.1f} | "
                    f"{100 * p['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {p['wins']} / {p['losses']} |"
                )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
