"""Helpers shared by the batch tests."""

import nibabel as nib
import numpy as np

from app.data.phantom import brain_phantom


def write_phantom(path, seed, shape=(20, 18, 6), lesion=False):
    vol, brain = brain_phantom(shape, seed=seed)
    if lesion:  # a bright blob the tiny model cannot reproduce
        vol[6:12, 6:12, 2:5] = 250.0
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol.astype(np.int16), aff), path)
    return path


def crash_once(ref, settings, out_dir, *, victim, marker):
    """A batch task that kills its worker process the first time it meets study ``victim`` (as an out-of-memory
    kill or a node failure would), then behaves like the real task."""
    import os

    from app.batch.task import process_study

    if ref.id == victim and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return process_study(ref, settings, out_dir)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
