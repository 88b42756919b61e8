"""A third-party family registered through the ``matchgen.models`` entry point: the example package in
docs/examples/plugin, made visible to importlib.metadata without installing it (a dist-info folder with its
entry_points.txt on sys.path, generated from the example's pyproject.toml)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.detector import Detector
from app.nets import ModelConfig, available_families, create_model, registry
from app.nets.checkpoint import load_checkpoint, save_checkpoint
from app.train.steps import PlainStep, make_step

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "plugin"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"][registry.ENTRY_POINT_GROUP]
    dist = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"[{registry.ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    # a fresh registry for this test only (restored afterwards), holding the built-in families
    available_families()
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_loaded", False)
    for name in list(eps):
        registry._FAMILIES.pop(name, None)
    return list(eps)


def test_entry_point_family_works_like_a_builtin(plugin, tmp_path):
    assert plugin == ["example-mlp-ae"]
    assert "example-mlp-ae" in available_families() and "dae" in available_families()
    torch.manual_seed(0)
    model = create_model(ModelConfig("example-mlp-ae", image_size=16, latent_dim=4, extra={"hidden": 16}))
    assert type(model).__name__ == "MLPAutoencoder" and model.family == "example-mlp-ae"
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    step = make_step(model, lr=1e-2)
    assert isinstance(step, PlainStep)
    gen = torch.Generator().manual_seed(0)
    first = step(x, gen)["loss"]
    for _ in range(20):
        last = step(x, gen)["loss"]
    assert last < first
    model.freeze()
    stem = save_checkpoint(model, tmp_path / "plug")
    loaded, card = load_checkpoint(stem)
    assert card["family"] == "example-mlp-ae"
    assert torch.equal(loaded.pseudo_normal(x), model.pseudo_normal(x))
    det = Detector(loaded, "cpu")
    base = det.run(x.numpy(), 0.3, base_only=True)
    np.testing.assert_array_equal(det.run(x.numpy(), 0.0).s, base.s)
    mg = det.run(x.numpy(), 0.3, max_steps=20)
    xn = x.numpy()
    np.testing.assert_allclose(mg.loss, np.abs(xn - mg.s).reshape(len(xn), -1).mean(1), rtol=1e-4, atol=1e-6)
    assert (mg.distance <= 0.3 * (1 + 1e-3)).all() and not np.allclose(mg.s, base.s, atol=1e-5)


def test_a_broken_plugin_warns_and_the_builtins_still_load(plugin, tmp_path):
    dist = next(tmp_path.glob("*.dist-info"))
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nbroken = no_such_module_xyz:Model\n")
    with pytest.warns(UserWarning, match="broken"):
        fams = available_families()
    assert "ae-l1" in fams and "broken" not in fams
