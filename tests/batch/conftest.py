import pytest
import torch
from batch_helpers import write_phantom


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny saved AE (16x16) with a card naming eps, tau and a post-processing (erosion, a component rule), so
    that batch's detection equal to detect's means the card's whole post-processing is applied."""
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("batch-models")
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    return save_checkpoint(
        m,
        d / "tiny",
        {
            "chosen": {"eps": 0.05, "tau": 0.2, "tau_base": 0.25},
            "postprocess": {"median_size": 0, "erode_px": 1, "min_component_px": 6},
        },
    )


@pytest.fixture
def studies(tmp_path):
    """Three small good studies (one with a big bright blob) and one corrupt file, in one folder."""
    d = tmp_path / "studies"
    d.mkdir()
    write_phantom(d / "a.nii.gz", 1)
    write_phantom(d / "b.nii.gz", 2, lesion=True)
    write_phantom(d / "c.nii.gz", 3)
    raw = (d / "a.nii.gz").read_bytes()
    (d / "corrupt.nii.gz").write_bytes(raw[: len(raw) // 2])
    return d
