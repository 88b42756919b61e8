"""A real Orthanc for the PACS tests (session-wide, free localhost ports, temporary storage), seeded by
:func:`pacs_helpers.seed`. Without the Orthanc binary the tests skip with the reason; in CI (``CI=true``) they
fail instead, so CI cannot pass without really running them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import orthanc as orthanc_mod  # noqa: E402
from pacs_helpers import Seeded, need_orthanc, seed  # noqa: E402


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Seeded:
    need_orthanc()
    folder = tmp_path_factory.mktemp("orthanc")
    server = orthanc_mod.Orthanc(folder / "server").start()
    try:
        yield seed(server, folder / "seed")
    finally:
        server.stop()


@pytest.fixture(params=["dicomweb", "dimse"])
def server(request, orthanc):
    """Each protocol against the same Orthanc: a ServerConfig with the read-write user for DICOMweb."""
    from app.pacs import parse_server

    if request.param == "dicomweb":
        return parse_server(orthanc.url, username=orthanc_mod.USER, password=orthanc_mod.PASSWORD, timeout=10)
    return parse_server(orthanc.dimse, timeout=10)


@pytest.fixture
def cache(tmp_path):
    from app.pacs.cache import RetrievalCache

    return RetrievalCache(tmp_path / "cache")


@pytest.fixture
def env(monkeypatch, tmp_path, settings_dir):
    """The PACS CLI's environment: the test Orthanc's password and a retrieval cache in tmp_path."""
    monkeypatch.setenv("MATCHGEN_PACS_PASSWORD", orthanc_mod.PASSWORD)
    monkeypatch.setenv("MATCHGEN_PACS_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def settings_dir(tmp_path, monkeypatch):
    """QSettings (the saved servers) in tmp_path, not in the user's home."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    return tmp_path / "settings"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import torch

    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    save_checkpoint(m, d / "tiny", {"chosen": {"eps": 0.05, "tau": 0.1, "tau_base": 0.15}})
    return d
