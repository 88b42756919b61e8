"""The shipped screening map with and without N4 bias correction of the skull-stripped input (rule.md, written
first), scored as docs/bench/screen-members/members.py scores a map.

    python docs/bench/screen-n4/n4.py val STUDIES_DIR CHOICES.json    # sets and writes thresholds and cuts
    python docs/bench/screen-n4/n4.py test STUDIES_DIR CHOICES.json   # applies them
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "bench" / "screen-members"))
from members import run_split  # noqa: E402  (the scoring and table of screen-members)

from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.brain import n4_correct  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study, restrict_map_to_brain, to_study_grid  # noqa: E402
from app.io import load_study  # noqa: E402


def n4_stripped(study):
    """The study with N4 applied inside its non-zero part (the background set back to zero), and N4's facts."""
    data = np.asarray(study.data, np.float32)
    inside = data > float(data.min())
    out, facts = n4_correct(data, study.affine, mask=inside)
    out = np.where(inside, np.maximum(out, 0.0), 0.0).astype(np.float32)
    return dataclasses.replace(study, data=out), facts


def screening_map(det, model, card, study) -> tuple[np.ndarray, object, np.ndarray | None]:
    """(the shipped screening map on the study grid inside the brain, its geometry, the brain mask)."""
    cfg = model.config
    prep = prepare_study(study, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                         domain=domain_from_card(card))  # fmt: skip
    out = det.run(prep.x, 0.0, base_only=True)
    d = det.post.across_slices(out.d, out.foreground, prep.geometry.spacing[2])
    dv = restrict_map_to_brain(to_study_grid(d, prep.geometry, "map"), prep)
    return dv.astype(np.float32), prep.geometry, prep.brain


def per_study(det, model, card, path: Path):
    """The shipped screening map of one study without and with N4 first (members.run_split's per-study step)."""
    st = load_study(path)
    dv, geom, brain = screening_map(det, model, card, st)
    st4, facts = n4_stripped(st)
    dv4, geom4, _ = screening_map(det, model, card, st4)
    brain = brain if brain is not None else np.ones(st.shape, bool)
    maps = {"shipped": (dv, geom), "n4": (dv4, geom4)}
    return maps, brain, voxel_volume_mm3(st.affine) / 1e3, f"N4 field {facts['field_range']}"


def main():
    run_split(per_study, "screening map", shipped="shipped")


if __name__ == "__main__":
    main()
