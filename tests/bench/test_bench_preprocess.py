"""``bench speed``'s preprocessing section: N4 and brain extraction timed apart on a skull-on head, with the
extraction's Dice against the skull-stripped reference (no timing is checked here: speed lives in the bench)."""

import numpy as np

from app.bench.speed import preprocess_markdown, preprocess_speed
from app.data import sources


def test_preprocess_section_times_each_stage_and_checks_the_brain():
    from app.io import load_study

    head = load_study(sources.path_of("mricron-data", "usr/share/mricron/templates/ch2.nii.gz", log=lambda *a: None))
    bet = load_study(sources.path_of("mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz", log=lambda *a: None))
    vol, ref = head.data[::3, ::3, ::3], bet.data[::3, ::3, ::3] > 0
    aff = head.affine @ np.diag([3.0, 3.0, 3.0, 1.0])
    pre = preprocess_speed(repeats=1, threads=1, volume=vol, affine=aff, reference=ref, log=lambda *a: None)
    assert pre["volume_shape"] == list(vol.shape) and pre["voxel_mm"] == [3.0, 3.0, 3.0]
    assert pre["itk_threads"] == 1 and pre["repeats"] == 1
    assert pre["n4_s"] > 0 and pre["extraction_s"] > 0
    assert pre["total_s"] == round(pre["n4_s"] + pre["extraction_s"], 3)
    assert pre["extraction_status"] == "atlas" and pre["dice_vs_reference"][0] > 0.9
    md = preprocess_markdown(pre)
    assert f"N4 {pre['n4_s']:.2f} s" in md and f"brain extraction {pre['extraction_s']:.2f} s" in md
