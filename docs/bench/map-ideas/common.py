"""Shared by the map-idea scripts: the cached member maps of the default ensemble on a split's volumes, and the
two figures every idea is judged by here (pooled pixel AP over the eroded foreground; the mean whole-volume Dice at
the best single tau, after the ensemble card's post-processing and z window)."""
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.core.maps import postprocess  # noqa: E402
from app.core.metrics import dice_table  # noqa: E402
from app.core.protocol import across_volumes  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

TAUS = np.round(np.arange(0.02, 20, 0.02), 3)


def ensemble():
    """The ensemble these ideas were looked at with: ``dae+ae-l1`` (the default until 2026-12-06)."""
    det, _, card = load_detector(resolve_model("dae+ae-l1"), "cpu", batch_size=16)
    return det


def split_args():
    """``DATA SPLIT OUT [skip] [n]`` from the command line: the ensemble, the split's volumes, the realisations
    to run (a slice) and the output path."""
    import torch

    from app.data.splits import load_volumes

    torch.set_num_threads(2)
    data, split, out = sys.argv[1:4]
    skip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    n = int(sys.argv[5]) if len(sys.argv) > 5 else None
    return ensemble(), load_volumes(data, split), slice(skip, None if n is None else skip + n), out


class Cache:
    """cache.py's output, optionally cut to its first ``n`` slices (whole realisations)."""

    def __init__(self, path, n=None):
        c = np.load(path)
        self.c = c
        self.z = int(c["z"])
        n = n or len(c["x"])
        self.n, self.r = n, n // self.z
        self.x, self.masks, self.fg = c["x"][:n], c["masks"][:n], c["fg"][:n]
        self.vols = types.SimpleNamespace(slice_mm=float(c["slice_mm"]), z=c["zidx"])

    def member(self, name, mode):
        """A member's raw map divided by the ensemble card's scale for it (as the ensemble combines them)."""
        return self.c[f"d_{name}_{mode}"][: self.n] / self.c[f"scale_{name}_{mode}"]


def evaluator(cache, post):
    inner = postprocess(np.ones(cache.x.shape, np.float32), cache.fg, 0, post.erode_px) > 0
    normal = inner & ~cache.masks
    r, z = cache.r, cache.z
    vmasks = cache.masks.reshape(r, z, *cache.masks.shape[1:])

    def evaluate(label, dmap):
        dmap = dmap / np.median(dmap[normal])
        ap = average_precision_score(cache.masks[inner], dmap[inner])
        pp = post.apply(dmap.astype(np.float32), cache.fg)
        v = across_volumes(post, pp.reshape(r, z, *pp.shape[1:]), cache.fg.reshape(r, z, *cache.fg.shape[1:]),
                           cache.vols)
        tab = np.asarray(dice_table(list(v), list(vmasks), TAUS, min_component_px=post.min_component_px,
                                    abnormal_only=False))
        i = int(np.argmax(tab))
        per = [float(dice_table([vv], [mm], TAUS[[i]], min_component_px=post.min_component_px,
                                abnormal_only=False)[0]) for vv, mm in zip(v, vmasks)]
        print(f"| {label} | {100 * ap:.1f} | {100 * tab[i]:.1f} (tau {TAUS[i]:g}) | "
              f"{' '.join(f'{100 * p:.0f}' for p in per)} |", flush=True)

    evaluate.normal = normal
    return evaluate
