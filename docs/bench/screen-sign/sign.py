"""Bright and dark residuals thresholded apart for the screening, on the whole-head validation studies only (the
rule: rule.md beside this file). Run from the repository root: python docs/bench/screen-sign/sign.py CACHE.pkl
[THRESHOLDS.json] (CACHE from cache.py beside this file). Without THRESHOLDS.json (validation) each map's threshold
and cut are set here and written to thresholds.json beside the cache; with it (a test run) they are fixed."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-members"))
from members import outlined, paired, score_outlined  # noqa: E402  (screen-members/members.py: outline, cut, lesions found, AUROC)

from app.core.maps import z_mean, z_window_slices  # noqa: E402
from app.data.pipeline import to_study_grid  # noqa: E402

TAU_BASE = 0.10724489033222198 / 0.7  # the card's screening outline is 0.7 x tau_base


def study_grid(s, m):
    dm = z_mean(m, z_window_slices(18, s["geom"].spacing[2]), s["fg"], "nearest")
    dv = to_study_grid(dm, s["geom"], "map")
    brain = s["brain"] if s["brain"] is not None else np.ones(dv.shape, bool)
    return np.where(brain, dv, 0).astype(np.float32), brain


def main():
    data = pickle.load(open(sys.argv[1], "rb"))
    fixed = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    vols = {}
    for sid, s in data.items():
        for part in ("d", "dp", "dm"):
            vols[sid, part], s["brain_v"] = study_grid(s, s[part])
    normals = [k for k, s in data.items() if s["ids"] is None]

    def normal_voxels(f):
        return np.concatenate([f(k)[data[k]["brain_v"]] for k in normals])

    th = dict(fixed["thresholds"]) if fixed else {}
    if not fixed:
        p = float((normal_voxels(lambda k: vols[k, "d"]) > TAU_BASE).mean())  # the shipped map's exceedance
        th["d"] = TAU_BASE
        for part in ("dp", "dm"):
            th[part] = float(np.quantile(normal_voxels(lambda k, part=part: vols[k, part]), 1 - p))
        th["sum"] = float(
            np.quantile(normal_voxels(lambda k: vols[k, "dp"] / th["dp"] + vols[k, "dm"] / th["dm"]), 1 - p)
        )
        print(f"exceedance of the shipped map over tau_base on normal brain voxels: {p:.2e}")
    print("thresholds:", ", ".join(f"{k} {v:.4f}" for k, v in th.items()))
    maps = {
        "shipped (D+ + D-)": lambda k: vols[k, "d"] / th["d"],
        "D+ alone (diagnostic)": lambda k: vols[k, "dp"] / th["dp"],
        "D- alone (diagnostic)": lambda k: vols[k, "dm"] / th["dm"],
        "sign-max": lambda k: np.maximum(vols[k, "dp"] / th["dp"], vols[k, "dm"] / th["dm"]),
        "sign-sum": lambda k: (vols[k, "dp"] / th["dp"] + vols[k, "dm"] / th["dm"]) / th["sum"],
    }
    cuts = dict(fixed["cuts"]) if fixed else {}
    print(f"{len(data)} studies ({len(normals)} normal)")
    print("| map | cut | found <1 / 1-5 / >=5 ml | total | false findings per normal study at the cut | AUROC [95 %] "
          "| lesions found against the shipped map [paired 95 %] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    shipped = next(iter(maps))
    per = {}
    for name, f in maps.items():  # each map already in units of its threshold
        studies = [(f(k), s["geom"], s["ids"], s["vox_ml"]) for k, s in data.items()]
        per[name] = outlined(studies, 1.0)
        cuts[name], cells = score_outlined(per[name], cuts.get(name), interval=True)
        fixed_cuts = (cuts[shipped], cuts[name]) if fixed else None
        vs = "" if name == shipped else paired(per[shipped], per[name], fixed_cuts)
        print(f"| {name} | {cells} | {vs} |", flush=True)
    if not fixed:
        out = Path(sys.argv[1]).with_name("thresholds.json")
        out.write_text(json.dumps({"thresholds": th, "cuts": cuts}, indent=1))


if __name__ == "__main__":
    main()
