"""The default's base residuals of a `bench triage` study set split by sign (D+ where the input is brighter than a
member's pseudo-normal, D- where darker), each combined over the members and post-processed as the card combines
the whole, in-plane (no z window), on the model grid, pickled for sign.py with what is needed to put them on the
study grid (a scratch file of this machine, never loaded by the application).
Run from the repository root: python docs/bench/screen-sign/cache.py STUDIES_DIR OUT.pkl"""

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "z-scales"))
from cache import write_cache  # noqa: E402  (docs/bench/z-scales/cache.py)


def signed_maps(det, prep) -> dict:
    """The whole base map (``d``) and its two sides (``dp``, ``dm``), each combined and post-processed as the card
    combines the whole."""
    runs = det.raw_runs(prep.x, 0.0, base_only=True)
    x = np.asarray(prep.x, np.float32)
    out = {"d": det.combine(runs, True)[0].astype(np.float32), "fg": runs[0].foreground}
    for name, side in (("dp", 1.0), ("dm", -1.0)):
        split = []
        for run in runs:
            diff = (x - run.s).mean(axis=1)  # (N, S, S), the signed residual (one channel)
            split.append(dataclasses.replace(run, d=np.where(side * diff > 0, run.d, 0.0).astype(np.float32)))
        out[name] = det.combine(split, True)[0].astype(np.float32)
    return out


if __name__ == "__main__":
    write_cache(Path(sys.argv[1]), Path(sys.argv[2]), signed_maps)
