"""python docs/bench/speed-default/ab_cat.py THREADS (from the repository root, with brain-proxy-v2z built). A/B: dae decoder forward+backward under bf16 autocast, with the skip cast to the up-path's dtype or not."""
import time, sys, torch, numpy as np
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
from app.nets.checkpoint import load_checkpoint
from app.nets.fuse import fold_batchnorm
import app.nets.blocks as B
model, card = load_checkpoint("models/dae", "cpu"); model.freeze(); fold_batchnorm(model)
from app.bench.speed import load_slices
x, _, _ = load_slices("/work/cache/brain-proxy-v2z", 16, 128)
x = torch.as_tensor(np.asarray(x, np.float32))
if x.dim() == 3: x = x[:, None]
with torch.no_grad(): z0 = model.encode(x)
def up_promote(self, feats, cond=None):  # before 2026-12-05: a float32 skip beside a bfloat16 up-path
    h = feats[-1]
    for i in reversed(range(self.depth)):
        h = self.merges[i](torch.cat([self.ups[i](h), feats[i]], dim=1))
    return self.out(h)
def up_cast(self, feats, cond=None):
    h = feats[-1]
    for i in reversed(range(self.depth)):
        u = self.ups[i](h)
        h = self.merges[i](torch.cat([u, feats[i].to(u.dtype)], dim=1))
    return self.out(h)
def step():
    z = z0.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = model.decode(z)
    f = (s.float() - x).abs().mean()
    (g,) = torch.autograd.grad(f, z)
    return s.detach().float(), g
res = {}
for rep in range(6):
    for name, fn in (("stock", up_promote), ("cast", up_cast)):
        B.UNet.up = fn
        step()
        t = time.perf_counter()
        for _ in range(5): s, g = step()
        res.setdefault(name, []).append((time.perf_counter() - t) / 5)
        res[name + "_out"] = (s, g)
print({k: [round(v, 4) for v in res[k]] for k in ("stock", "cast")})
print("median stock %.4f cast %.4f" % (np.median(res["stock"]), np.median(res["cast"])))
print("max |ds|", (res["stock_out"][0] - res["cast_out"][0]).abs().max().item(), "max |dg|", (res["stock_out"][1] - res["cast_out"][1]).abs().max().item())
