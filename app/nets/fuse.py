"""Inference-only graph simplification: fold an eval-mode BatchNorm into the convolution before it.

In eval mode BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` is one convolution with rescaled
weights and a shifted bias. MatchGen runs the decoder forward *and backward* for every solver step, and on the
CPU the BatchNorm passes were about a quarter of a step (``python main.py bench speed`` measures the effect);
folding removes them. The result differs from the unfolded model by float rounding only (~1e-7).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``(Conv2d | ConvTranspose2d, BatchNorm2d)`` pair that follows each other in an ``nn.Sequential``
    of ``module`` (in place): the convolution is replaced by the folded one and the BatchNorm by ``Identity``, so
    the layer indices stay. Only eval-mode BatchNorms with running statistics are folded. Returns the count."""
    if module.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (training BatchNorm uses batch statistics)")
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            if not (isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or bn.training or conv.training or bn.num_features != conv.out_channels:
                continue
            fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
            for p in fused.parameters():
                p.requires_grad_(any(q.requires_grad for q in conv.parameters()))
            seq._modules[a], seq._modules[b] = fused, nn.Identity()
            folded += 1
    return folded
