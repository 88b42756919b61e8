"""BatchNorm folding: the folded model computes what the model computes (values and gradients to z), on every
family, with non-trivial BatchNorm statistics; the Detector folds a copy and leaves the given model alone."""

import pytest
import torch
from torch import nn

from app.core.detector import Detector
from app.nets.fuse import fold_batchnorm
from tests.nets.test_families import FAMILIES, brains, tiny


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> int:
    g = torch.Generator().manual_seed(seed)
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
            n += 1
    return n


@pytest.mark.parametrize("family", FAMILIES)
def test_folded_model_matches_values_and_gradients(family):
    model = tiny(family, seed=1)
    n_bn = randomise_batchnorm(model)
    model.freeze()
    det = Detector(model, "cpu")  # folds a copy
    x = brains(4, seed=2)
    with torch.no_grad():
        z_ref, z_fold = model.encode(x), det.model.encode(x)
    torch.testing.assert_close(z_fold, z_ref, rtol=1e-4, atol=1e-4)
    za = z_ref.clone().requires_grad_(True)
    zb = z_ref.clone().requires_grad_(True)
    sa, sb = model.decode(za), det.model.decode(zb)
    torch.testing.assert_close(sb, sa, rtol=1e-4, atol=1e-5)
    (ga,) = torch.autograd.grad((sa - x).abs().mean(), za)
    (gb,) = torch.autograd.grad((sb - x).abs().mean(), zb)
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-6)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in det.model.modules())
    if n_bn:  # the vector-latent families have conv + BatchNorm stacks: all of them are folded
        assert left == 0
    # the given model is untouched (same modules, same state keys)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert not any(p.requires_grad for p in det.model.parameters())


def test_fold_needs_eval_mode_and_skips_unpaired_layers():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(seq)
    randomise_batchnorm(seq)
    seq.eval()
    x = torch.randn(2, 1, 9, 9)
    ref = seq(x)
    assert fold_batchnorm(seq) == 1  # the BatchNorm after ReLU has no convolution before it
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[3], nn.BatchNorm2d)
    torch.testing.assert_close(seq(x), ref, rtol=1e-5, atol=1e-5)


def test_detector_can_keep_the_stock_graph():
    model = tiny("ae-l1")
    randomise_batchnorm(model)
    det = Detector(model, "cpu", fold_batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in det.model.modules())
