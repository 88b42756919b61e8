"""The shared blocks under the fast solver's bfloat16 autocast."""

import torch
from torch.overrides import TorchFunctionMode

from app.nets.blocks import UNet


class _CatDtypes(TorchFunctionMode):
    """Records the dtypes of the tensors each torch.cat joins."""

    def __init__(self):
        super().__init__()
        self.seen: list[set[torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.cat:
            self.seen.append({t.dtype for t in args[0]})
        return func(*args, **(kwargs or {}))


def test_unet_skips_join_the_up_path_in_its_dtype_under_bf16_autocast():
    """A float32 skip beside a bfloat16 up-path makes cat promote to float32 and the merge convolution cast back:
    two copies of every skip per decode. Joined in the up-path's dtype the copies go, and the output and the
    gradient to the (float32) skips are the same bit for bit, since the convolution reads bfloat16 either way."""
    torch.manual_seed(0)
    net = UNet(1, 32, 4, 2).eval()
    feats = [torch.randn(2, *s, requires_grad=True) for s in net.shapes]
    mode = _CatDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), mode:
        out = net.up(feats)
    assert len(mode.seen) == net.depth and all(len(d) == 1 for d in mode.seen), mode.seen
    assert mode.seen[0] == {torch.bfloat16}
    grads = torch.autograd.grad(out.float().sum(), feats)
    assert all(g.dtype == torch.float32 for g in grads)

    # the same values as the reference: the skips cast to bfloat16 by hand and joined without autocast's promotion
    def reference(fs):
        h = fs[-1]
        for i in reversed(range(net.depth)):
            u = net.ups[i](h)
            h = net.merges[i](torch.cat([u, fs[i].to(torch.bfloat16).to(u.dtype)], dim=1))
        return net.out(h)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = reference(feats)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # and without autocast nothing changes: float32 throughout
    with torch.no_grad():
        assert net.up([f.detach() for f in feats]).dtype == torch.float32
