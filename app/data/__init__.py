"""Data: intensity normalisation, volume <-> model slices, synthetic lesions, slice data sets on disk, the
offline brain benchmark and readers of the paper's public dataset layouts. No Qt."""

from app.data.normalize import CT_WINDOWS, default_method, normalize_study
from app.data.pipeline import PreparedStudy, prepare_study, study_mask_to_model, to_study_grid
from app.data.slices import SliceGeometry, axial_image, from_model_slices, make_geometry, to_model_slices
from app.data.splits import (
    KIND_NAMES,
    LESION_SPLITS,
    SPLITS,
    SliceSet,
    VolumeSet,
    data_layout,
    load_split,
    load_volumes,
    save_split,
)

__all__ = [
    "CT_WINDOWS",
    "KIND_NAMES",
    "LESION_SPLITS",
    "SPLITS",
    "PreparedStudy",
    "SliceGeometry",
    "SliceSet",
    "VolumeSet",
    "axial_image",
    "data_layout",
    "default_method",
    "from_model_slices",
    "load_split",
    "load_volumes",
    "make_geometry",
    "normalize_study",
    "prepare_study",
    "save_split",
    "study_mask_to_model",
    "to_model_slices",
    "to_study_grid",
]
