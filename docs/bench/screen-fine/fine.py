"""A trained dae as the screening's third member in place of dae-cover, beside the shipped screening map, on a `bench
triage` study set: the blob-noise dae with finer noise in smaller blobs (dae-cover-fine; the rule: rule.md beside this
file), and since 2026-12-07 dae-cover without its finest skip (docs/bench/screen-noskip/rule.md) and later ones. The
candidate is named by its run folder (a kept candidate by its file name). Scored as
docs/bench/screen-members/members.py scores a map (its `table`).

    python docs/bench/screen-fine/fine.py val|test STUDIES_DIR CHOICES.json CANDIDATE_STEM [VAL_DATA_DIR] [--fourth]

With --fourth the candidate is a fourth member beside dae-cover instead of taking its place
(docs/bench/screen-cover-contrast/rule-fourth.md).

CANDIDATE_STEM: the trained checkpoint (no suffix). Its base map is scaled by its median over normal tissue of the
first 16 validation realisations of VAL_DATA_DIR (default /work/cache/brain-proxy-v3-val144), as
scripts/ensemble_card.py scales a member; the shipped dae-cover's scale is computed the same way first and printed
beside its card's, to show the volumes are the ones the card's scales came from."""

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "bench" / "screen-members"))
from members import SHIPPED, base_scale, run_split, third_member_maps  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.io import load_study  # noqa: E402

FOURTH = "--fourth" in sys.argv
ARGS = [a for a in sys.argv if a != "--fourth"]
CANDIDATE = Path(ARGS[4])
# a training run's folder names its candidate (/work/runs/dae-cover-fine/dae), a kept one its file name
NAME = CANDIDATE.parent.name if CANDIDATE.name == "dae" else CANDIDATE.name
LABEL = f"dae + {'dae-cover + ' if FOURTH else ''}{NAME} + ae-l1"
VAL_DATA = ARGS[5] if len(ARGS) > 5 else "/work/cache/brain-proxy-v3-val144"
torch.set_num_threads(2)
cand, _cand_model, _cand_card = load_detector(CANDIDATE, torch.device("cpu"))


ERODE = None
SCALE = None


def per_study(det, model, card, path: Path):
    global ERODE, SCALE
    if SCALE is None:
        ERODE = det.post.erode_px
        vols = load_volumes(VAL_DATA, "val").head(16)
        cover = det.members[1]
        check = base_scale(cover.detector, vols, ERODE)
        SCALE = base_scale(cand, vols, ERODE)
        print(f"dae-cover's base scale here {check:.6g} (its card: {cover.scale_base:.6g}); "
              f"{NAME}'s {SCALE:.6g}", file=sys.stderr, flush=True)  # fmt: skip
    cfg = model.config
    st = load_study(path)
    prep = prepare_study(st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                         domain=domain_from_card(card))  # fmt: skip
    runs = det.raw_runs(prep.x, 0.0, base_only=True)
    fine = cand.run(prep.x, 0.0, base_only=True, raw=True)
    out = third_member_maps(det, prep, runs, fine.d, SCALE, LABEL, add=FOURTH)
    brain = prep.brain if prep.brain is not None else np.ones(st.shape, bool)
    return out, brain, voxel_volume_mm3(st.affine) / 1e3, ""


if __name__ == "__main__":
    sys.argv = ARGS[:4]
    run_split(per_study, "screening map", shipped=SHIPPED)
