"""Fixtures for the training tests: one thread (tiny models on a busy 2-core machine) and a tiny dataset."""

import json

import numpy as np
import pytest

from app.data.splits import save_split


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    disc = (xx**2 + yy**2 < 0.7).astype(np.float32)

    def imgs(n):
        return (disc * (0.5 + 0.1 * rng.random((n, 1, 32, 32)))).astype(np.float32)

    root = tmp_path / "data"
    save_split(root, "train", imgs(16), None, [f"t{i}" for i in range(16)])
    val = imgs(6)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:3, 10:16, 10:16] = 1
    val[:3, 0, 10:16, 10:16] = 1.0
    save_split(root, "val", val, masks, [f"v{i}" for i in range(6)])
    (root / "meta.json").write_text(json.dumps({"what": "test disc phantoms", "n": 22}))
    return root
