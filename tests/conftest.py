import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# The tests run tiny models, which are fastest on one thread (above all on a loaded 2-core CI machine).
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_ae():
    """A small untrained AE-l1 (32x32, 8 latents) in eval mode, seeded."""
    from app.nets import ModelConfig, create_model

    torch.manual_seed(0)
    return create_model(ModelConfig("ae-l1", image_size=32, latent_dim=8, width=4)).freeze()
