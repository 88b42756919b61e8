"""The MatchGen solver (Algorithm 1 of the paper): test-time search for the latent code whose decoded
pseudo-normal image best matches the input, inside an eps-ball around the encoder's code.

    z* = argmin_z ||x - g(z)||_1   s.t.   ||z - z0||_2 <= eps

Public API (stable; the GUI, ``detect``, the benchmarks and external checks use it)::

    result = optimize(decode, x, z0, eps, **options)
    result.z, result.s, result.loss, result.feasible, result.steps

Decisions the paper leaves open, and the defaults chosen here (see :class:`SolverOptions`):

* ``||x - g(z)||_1`` is the *mean* absolute difference per pixel (over C, H, W). The constrained optimum is the
  same as with the plain sum, but this way ``lambda = 1`` weighs the penalty against the image term the same for
  a 128x128 slice as for a 512x512 one, and the loss reads in intensity units like tau.
* The batch objective is the sum of per-image objectives, each image has its own lambda, its own Adam state,
  its own step count and its own stopping rule, and an image that has stopped is no longer decoded. Optimising a
  batch therefore gives every image the answer it gets alone (up to float rounding of the decoder), which is
  what lets whole volumes be solved as batches.
* Stopping: an image stops when its constraint holds (within ``feas_tol``) and its best loss has not improved by
  a relative ``rtol`` for ``patience`` steps, or at ``max_steps``.
* Feasibility is guaranteed, not hoped for: the solver remembers the best iterate that lies inside the ball and,
  at the end, also evaluates the last iterate projected radially onto the ball; it returns whichever has the
  lower loss. The returned ``z`` satisfies ``||z - z0|| <= eps`` up to float rounding: relative 1e-6, plus the
  rounding of storing z itself (machine epsilon times ||z0||, which matters when eps is tiny next to ||z0||:
  a code of norm 400 is stored to about 5e-5, so a ball of radius 0.3 cannot be checked to 1e-6 of it). Because
  ``z0`` itself is feasible, the result is never worse than the base model on the objective.
* ``loss_cap = c`` (off by default) minimises the mean of min(|x - g(z)|, c) instead: a pixel already further
  than c from the pseudo-normal has no gradient, so the search spends its eps-ball on the tissue it can match
  rather than on reproducing a lesion the base model did not copy. ``loss`` is then that capped mean.
* ``eps == 0`` returns ``z0`` itself, so ``s`` is exactly the base model's pseudo-normal image.
* A decoder that returns NaN or inf: if it does so at ``z0`` itself (the base model's own output), there is no
  sensible answer and :class:`~app.errors.SolverError` is raised (the CLI prints it as one line, the viewer as a
  dialog). If it only does so away from ``z0`` (e.g. a bfloat16 overflow far out in the ball), the image stops
  searching, keeps its best finite feasible iterate (at worst ``z0``, the base model) and a ``RuntimeWarning``
  names it. ``s`` is never uninitialised memory: every returned image is checked finite.
* ``precision="bf16"`` works with every method and with a progress callback; the callback always receives
  float32 images.

Two methods:

* ``"penalty"`` (default, the paper's): Adam on ``L1 + lambda * max(||z - z0|| - eps, 0)``, lambda per image
  starting at ``lambda0 = 1`` and multiplied by ``lambda_growth`` on every step that image violates the
  constraint. Constant learning rate, as in the paper.
* ``"projected"``: an Adam-like step, then radial projection onto the ball; always feasible. A Euclidean
  projection after a true Adam step does not converge to the constrained optimum: Adam rescales each coordinate,
  so its fixed point is where the *rescaled* gradient points along the radius, not the gradient itself (the
  linear-decoder test caught this, about 10% worse loss). This method therefore keeps Adam's momentum but uses
  one scalar second moment per image (an isotropic step size), whose projected fixed point is the KKT point, and
  halves the learning rate each time the loss stalls so that the iterates settle instead of oscillating.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch

from app.errors import Cancelled, OptionError, SolverError
from app.solver_options import FAST, METHODS, PRECISIONS, SolverOptions

__all__ = [
    "FAST",
    "METHODS",
    "PRECISIONS",
    "MatchGenResult",
    "Progress",
    "SolverOptions",
    "optimize",
    "project_to_ball",
]

Decode = Callable[[torch.Tensor], torch.Tensor]

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_FEAS_REL = 1e-6  # the tolerance the *returned* z satisfies: ||z - z0|| <= eps * (1 + 1e-6) + rounding (_radius)


@dataclass
class Progress:
    """What the progress callback receives: the current state of every image in the batch."""

    step: int
    s: torch.Tensor  # (B, C, H, W) the latest pseudo-normal image of each image
    loss: torch.Tensor  # (B,) best feasible loss so far
    done: torch.Tensor  # (B,) bool


@dataclass
class MatchGenResult:
    z: torch.Tensor  # (B, ...) detached
    s: torch.Tensor  # (B, C, H, W) detached, = decode(z)
    loss: torch.Tensor  # (B,) the objective at the returned z: mean |x - s| (capped per pixel with loss_cap)
    feasible: torch.Tensor  # (B,) bool, ||z - z0|| <= eps (1 + 1e-6)
    steps: torch.Tensor  # (B,) int64, solver steps each image took
    distance: torch.Tensor  # (B,) ||z - z0||
    lam: torch.Tensor  # (B,) final penalty weight (penalty method)

    @property
    def max_steps_taken(self) -> int:
        return int(self.steps.max().item()) if self.steps.numel() else 0


def _flat_norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project_to_ball(z: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Radial projection of each z onto the ball ||z - z0|| <= eps (per image)."""
    d = z - z0
    dist = _flat_norm(d)
    scale = torch.where(dist > eps, eps / dist.clamp_min(torch.finfo(dist.dtype).tiny), torch.ones_like(dist))
    out = z0 + d * _bcast(scale, d)
    zero = eps == 0
    return torch.where(_bcast(zero, d), z0, out) if bool(zero.any()) else out


def _radius(eps: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """The distance up to which a point counts as inside the ball: eps (1 + 1e-6) plus what storing z in its
    dtype can change ||z - z0|| by (machine epsilon times ||z0||)."""
    return eps * (1 + _FEAS_REL) + torch.finfo(z0.dtype).eps * _flat_norm(z0)


def _l1(s: torch.Tensor, x: torch.Tensor, cap: float | None = None) -> torch.Tensor:
    """Mean |x - s| per image; with ``cap`` each pixel's term is min(|x - s|, cap) (``SolverOptions.loss_cap``)."""
    r = (s - x).abs()
    if cap is not None:
        r = r.clamp(max=cap)
    return r.flatten(1).mean(dim=1)


def _as_eps(eps: float | Sequence[float] | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if e.dim() == 0:
        e = e.expand(batch).clone()
    if e.shape != (batch,):
        raise OptionError(f"eps must be a number or have one value per image ({batch}), got shape {tuple(e.shape)}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise OptionError("eps must be finite and >= 0")
    return e


def _decode_z0(
    decode: Decode, x: torch.Tensor, z0: torch.Tensor, opts: SolverOptions, index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """g(z_o) without gradients and its L1 loss against ``x``; a :class:`SolverError` where either is not finite
    (``index``: these images' positions in the batch, for the message; default 0..n-1)."""
    with torch.no_grad():
        s0 = decode(z0).detach()
    loss = _l1(s0, x, opts.loss_cap)
    broken = ~torch.isfinite(loss) | ~torch.isfinite(s0).flatten(1).all(dim=1)
    if bool(broken.any()):
        pos = broken.nonzero(as_tuple=True)[0]
        which = ", ".join(str(int(i)) for i in (pos if index is None else index[pos])[:8])
        raise SolverError(
            f"the model's decoder returns NaN or infinite values at z_o (the base model's own output) for "
            f"image(s) {which} of the batch: the model cannot be applied to this input (a damaged checkpoint, "
            "or an input far outside what it was trained on)"
        )
    return s0, loss


def _base_result(decode: Decode, x: torch.Tensor, z0: torch.Tensor, opts: SolverOptions) -> MatchGenResult:
    """:func:`optimize`'s answer when every eps is 0: z_o and g(z_o) in float32, no step taken -- what the search
    returns for such images, without its z-sized buffers (half a million numbers per image for the dae)."""
    s0, loss = _decode_z0(decode, x, z0, opts)
    B = x.shape[0]
    return MatchGenResult(
        z=z0,
        s=s0.to(x.dtype),
        loss=loss.to(x.dtype),
        feasible=torch.ones(B, dtype=torch.bool, device=z0.device),
        steps=torch.zeros(B, dtype=torch.long, device=z0.device),
        distance=torch.zeros(B, dtype=z0.dtype, device=z0.device),
        lam=torch.full((B,), opts.lambda0, dtype=z0.dtype, device=z0.device),
    )


def _search_decode(decode: Decode, precision: str, device: torch.device) -> Decode:
    """The decoder the search steps use: as given, or under bfloat16 autocast."""
    if precision == "fp32":
        return decode

    def bf16_decode(z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return decode(z)

    return bf16_decode


def _vdot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Per-image inner product <a, b>. On the CPU one BLAS ``dot`` per image: it reads both vectors once and
    writes nothing (16 x 499,712 values: 2.7 ms against 14.7 for the products into ``scratch`` and their sum,
    9.4 for ``vecdot``, which allocates them; ``bmm`` is 15x slower). Elsewhere the products go into
    ``scratch`` and are summed (one kernel each, however many images)."""
    if a.device.type == "cpu":
        fa, fb = a.flatten(1), b.flatten(1)
        return torch.stack([torch.dot(fa[i], fb[i]) for i in range(fa.shape[0])])
    return torch.mul(a, b, out=scratch).flatten(1).sum(dim=1)


def _spare(pool: list[torch.Tensor], n: int, *busy: torch.Tensor) -> torch.Tensor:
    """The first ``n`` rows of a scratch buffer that shares no memory with ``busy`` (allocating a fresh
    half-million-value tensor costs about as much again as the pass that fills it: page faults)."""
    used = {b.untyped_storage().data_ptr() for b in busy}
    for buf in pool:
        if buf.untyped_storage().data_ptr() not in used:
            return buf[:n]
    raise AssertionError("no free scratch buffer")  # the pool holds one more buffer than can be busy


def _spg_loop(
    search, x, z0, eps_t, radius, z, t, done, best_loss, best_z, best_s, opts, callback, should_stop, s_buf, nonfinite
):
    """Spectral projected gradient (Birgin, Martinez & Raydan 2000) per image, on the ball: the step length is
    the Barzilai-Borwein ratio <s,s>/<s,y> of the last two accepted points, the direction P(z - alpha g) - z,
    and a non-monotone Armijo line search (against the worst of the last ``spg_memory`` accepted losses) with
    safeguarded quadratic backtracking. Every iterate is feasible (a convex combination of two points of the
    ball). One decoder forward+backward per step; a rejected trial costs one step. Being scale-free (no
    learning rate), it needs no tuning per model and typically far fewer steps than Adam at lr 1e-3.
    Stops when the best loss has not improved by ``rtol`` for ``patience`` steps, when the projected gradient
    vanishes, or at ``max_steps``. Mutates ``t``, ``done`` and the ``best_*`` buffers; returns the last point.

    The bookkeeping works on z-sized vectors (half a million numbers per image for the dae), so each pass over
    them costs about as much as a small convolution, and the loop is written to make few of them:

    * while every image is still searching, the full buffers are used as they are (no gather and scatter), and
      the selections that the usual case makes trivial (every trial accepted, every image started) are skipped;
    * the trial step s = z_t - z_c is ls * d, so <s,s> = ls^2 ||d||^2 and <s,y> = ls (<d,g> - <d,g_c>) come from
      scalars kept per image and one inner product (``_vdot``: a BLAS dot per image on the CPU), not from
      difference vectors -- so the accepted point's gradient g_c itself is never kept, only <g_c, d>;
    * a rejected trial's image keeps its point and direction by a row copy into the new buffers;
    * the projected direction is formed from nu = z0 - z_t (needed for the distance anyway) in one fused pass;
    * ``best_z`` is written lazily: while an image's best point is its current accepted point (the usual case,
      every accepted step improving), nothing is copied; the point is saved only when it is about to be left
      behind, and at the end.
    """
    B = x.shape[0]
    dev, dt = z.device, z.dtype
    zc = z  # a copy of z0 that is ours: every image starts there (a cold start)
    fc = torch.full((B,), math.inf, dtype=dt, device=dev)
    hist = torch.full((B, opts.spg_memory), -math.inf, dtype=dt, device=dev)
    d = torch.zeros_like(z)  # zero until an image has started, so its first trial point is zc itself
    ls = torch.ones(B, dtype=dt, device=dev)  # line-search fraction of d
    gd_c = torch.zeros(B, dtype=dt, device=dev)  # <g_c, d>
    dd_c = torch.zeros(B, dtype=dt, device=dev)  # ||d||^2
    dist_c = torch.zeros(B, dtype=dt, device=dev)  # ||z_c - z0||
    best_at_c = torch.zeros(B, dtype=torch.bool, device=dev)  # best_z of this image is (lazily) its z_c
    started = torch.zeros(B, dtype=torch.bool, device=dev)
    ref = torch.full((B,), math.inf, dtype=dt, device=dev)
    stall = torch.zeros(B, dtype=torch.long, device=dev)
    a_min, a_max = 1e-10, 1e10
    pool = [torch.empty_like(z) for _ in range(5)]  # for the trial point, nu and w; zc and d may hold two
    prod = torch.empty_like(z)  # the products of the inner products off the CPU (never touched on it: no cost)
    step = 0
    while not bool(done.all()):
        if should_stop is not None and should_stop():
            raise Cancelled("optimisation cancelled")
        idx = (~done).nonzero(as_tuple=True)[0]
        n = idx.numel()
        full = n == B  # every image still searching: work on the buffers themselves
        sel = slice(None) if full else idx  # a slice gives views, an index gives copies
        zci, di, z0i = zc[sel], d[sel], z0[sel]
        e, st_i, lsi, fci = eps_t[idx], started[idx], ls[idx], fc[idx]
        gd, dd, bac = gd_c[idx], dd_c[idx], best_at_c[idx]
        all_started = bool(st_i.all())
        zt = torch.addcmul(zci, _bcast(lsi, di), di, out=_spare(pool, n, zc, d)).requires_grad_(True)
        with torch.enable_grad():
            sa = search(zt)
            f = _l1(sa, x[idx], opts.loss_cap)
            (g,) = torch.autograd.grad(f.sum(), zt)
        zt, f, g, sa = zt.detach(), f.detach().to(dt), g.to(dt), sa.detach()
        t[idx] += 1
        # <d, g> is NaN or inf whenever g holds a NaN or inf (also where d is 0: 0 * inf is NaN), so it doubles
        # as the finiteness check of g at no extra pass (an elementwise isfinite costs ~6 passes here)
        dg = _vdot(di, g, prod[:n])
        bad = ~torch.isfinite(f) | ~torch.isfinite(dg)
        nonfinite[idx] |= bad
        if s_buf is not None:
            s_buf[idx] = sa.to(s_buf.dtype)

        nu = torch.sub(z0i, zt, out=_spare(pool, n, zc, d, zt))  # z0 - z_t
        dist_t = _flat_norm(nu)
        inside = dist_t <= radius[idx]
        better = inside & (f < best_loss[idx])
        improved = torch.where(better, f, best_loss[idx]) < ref[idx] * (1 - opts.rtol)

        accept = ~st_i | (f <= hist[idx].max(dim=1).values + opts.spg_armijo * lsi * gd)
        # spectral step length from the accepted pair (first evaluation: 1 / ||P(z - g) - z||_inf)
        sy = lsi * (dg - gd)
        a_bb = torch.where(sy > 0, lsi * lsi * dd / sy.clamp_min(1e-300), torch.full_like(sy, a_max))
        if all_started:
            alpha = a_bb.clamp(a_min, a_max)
        else:
            # an image's first evaluation is at z0 itself, where P(z0 - g) - z0 = -g min(1, e / ||g||)
            gf = g.flatten(1)
            g_inf, g_2 = torch.linalg.vector_norm(gf, math.inf, dim=1), torch.linalg.vector_norm(gf, dim=1)
            pg_inf = g_inf * torch.clamp(e / g_2.clamp_min(1e-30), max=1.0)
            a_first = 1.0 / pg_inf.clamp_min(1e-30)
            alpha = torch.where(st_i, a_bb, a_first).clamp(a_min, a_max)
        # d_new = P(z_t - alpha g) - z_t = nu - scale w with w = z0 - (z_t - alpha g) = nu + alpha g and the
        # radial scale onto the ball (e > 0 here: images with eps 0 never search): one fused pass, into w's buffer
        w = torch.addcmul(nu, _bcast(alpha, g), g, out=_spare(pool, n, zc, d, zt, nu))
        nw = _flat_norm(w)
        scale = torch.where(nw > e, e / nw.clamp_min(torch.finfo(nw.dtype).tiny), torch.ones_like(nw))
        d_new = torch.addcmul(nu, _bcast(-scale, w), w, out=w)
        gd_new, dd_new = _vdot(g, d_new, prod[:n]), _flat_norm(d_new).square()  # a norm reads once, writes nothing
        # rejected: safeguarded quadratic interpolation of the step along d
        denom = f - fci - lsi * gd
        ls_q = -0.5 * lsi * lsi * gd / denom.clamp_min(1e-300)
        ls_r = torch.where((ls_q >= 0.1 * lsi) & (ls_q <= 0.9 * lsi), ls_q, 0.5 * lsi)

        # the best point: a kept old z_c that is being left is saved now; a better trial point that is not
        # accepted is saved now; a better accepted one is z_c itself from now on (saved when left, or at the end)
        leave = bac & accept & ~better
        if bool(leave.any()):
            best_z[idx[leave]] = zci[leave]
        keep_trial = better & ~accept
        if bool(keep_trial.any()):
            best_z[idx[keep_trial]] = zt[keep_trial]
        best_at_c[idx] = torch.where(better, accept, bac & ~accept)
        if bool(better.all()) and full:
            best_loss.copy_(f)
            best_s.copy_(sa)
        elif bool(better.any()):
            bi = idx[better]
            best_loss[bi] = f[better]
            best_s[bi] = sa[better].to(best_s.dtype)
        ref[idx] = torch.where(improved, best_loss[idx], ref[idx])
        st = torch.where(improved, torch.zeros_like(stall[idx]), stall[idx] + 1)
        stall[idx] = st

        if bool(accept.all()):
            zc_new, d_next = zt, d_new
            gd_next, dd_next, distc_next = gd_new, dd_new, dist_t
        else:
            # the rejected images keep their point and direction: copied row by row into the new buffers (each
            # distinct from the old ones), not z-sized torch.where over the whole batch
            rej = (~accept).nonzero(as_tuple=True)[0]
            zt[rej], d_new[rej] = zci[rej], di[rej]
            zc_new, d_next = zt, d_new
            gd_next = torch.where(accept, gd_new, gd)
            dd_next = torch.where(accept, dd_new, dd)
            distc_next = torch.where(accept, dist_t, dist_c[idx])
        if full:
            zc, d = zc_new, d_next
        else:
            zc[idx], d[idx] = zc_new, d_next
        gd_c[idx], dd_c[idx], dist_c[idx] = gd_next, dd_next, distc_next
        fc[idx] = torch.where(accept, f, fci)
        pushed = torch.cat([hist[idx][:, 1:], f[:, None]], dim=1)
        hist[idx] = torch.where(accept[:, None], pushed, hist[idx])
        ls_new = torch.where(accept, torch.ones_like(lsi), ls_r)
        ls[idx] = ls_new
        started[idx] = True

        step_len = ls_new * dd_next.clamp_min(0).sqrt()
        vanished = step_len <= 1e-9 * (1 + distc_next)
        done[idx] = (st >= opts.patience) | vanished | (t[idx] >= opts.max_steps) | bad
        step += 1
        if callback is not None and (step % opts.callback_every == 0 or bool(done.all())):
            callback(Progress(step=step, s=s_buf, loss=best_loss.clone(), done=done.clone()))
    if bool(best_at_c.any()):
        bi = best_at_c.nonzero(as_tuple=True)[0]
        best_z[bi] = zc[bi]
    return zc


def optimize(
    decode: Decode,
    x: torch.Tensor,
    z0: torch.Tensor,
    eps: float | Sequence[float] | torch.Tensor,
    *,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    options: SolverOptions | None = None,
    **overrides,
) -> MatchGenResult:
    """Solve MatchGen for a batch of images.

    ``decode`` maps z (B, ...) to images (B, C, H, W) and must treat batch elements independently (eval mode).
    ``x`` is (B, C, H, W); ``z0 = phi(x)`` is (B, ...); ``eps`` is a float or one value per image. The
    search starts at ``z0`` (a cold start, the way every caller applies an eps chosen on validation).
    ``callback(Progress)`` fires every ``callback_every`` steps; ``should_stop()`` is checked before every step
    and raises :class:`~app.errors.Cancelled` when it returns True. Keyword ``overrides`` set fields of
    :class:`SolverOptions` (``lr``, ``max_steps``, ``method``, ...).
    """
    try:
        opts = replace(options or SolverOptions(), **overrides).validate()
    except TypeError as exc:
        known = ", ".join(f.name for f in fields(SolverOptions))
        raise OptionError(f"unknown solver option ({exc}); known: {known}") from None
    if x.dim() != 4:
        raise OptionError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if z0.shape[0] != x.shape[0]:
        raise OptionError(f"z0 has {z0.shape[0]} images but x has {x.shape[0]}")
    B = x.shape[0]
    x = x.detach()
    z0 = z0.detach()
    eps_t = _as_eps(eps, B, z0)
    radius = _radius(eps_t, z0)
    if bool((eps_t == 0).all()):  # the base model on every image: g(z_o), nothing to search or to keep
        return _base_result(decode, x, z0, opts)

    z = z0.clone()
    # Adam's moments (the spg method needs none: half a million values each for the dae, two passes saved)
    m = torch.zeros_like(z) if opts.method != "spg" else None
    v = torch.zeros_like(z) if opts.method != "spg" else None
    t = torch.zeros(B, dtype=torch.long, device=z.device)  # per-image Adam step count
    lr = torch.full((B,), opts.lr, dtype=z.dtype, device=z.device)
    lam = torch.full((B,), opts.lambda0, dtype=z.dtype, device=z.device)
    best_loss = torch.full((B,), math.inf, dtype=x.dtype, device=x.device)
    ref_loss = best_loss.clone()  # best loss at the last "improvement"
    best_z = z.clone()
    best_s: torch.Tensor | None = None
    stall = torch.zeros(B, dtype=torch.long, device=z.device)
    done = (eps_t == 0) | (opts.max_steps == 0)
    nonfinite = torch.zeros(B, dtype=torch.bool, device=z.device)  # the decoder gave NaN/inf on this image
    s_buf: torch.Tensor | None = None
    if callback is not None:
        with torch.no_grad():
            s_buf = decode(z).detach().clone()

    search = _search_decode(decode, opts.precision, x.device)
    if opts.method == "spg":
        best_s = torch.full_like(x, math.nan)  # never returned unfilled: checked at the end
        z = _spg_loop(
            search, x, z0, eps_t, radius, z, t, done, best_loss, best_z, best_s,
            opts, callback, should_stop, s_buf, nonfinite,
        )

    step = 0
    while not bool(done.all()):
        if should_stop is not None and should_stop():
            raise Cancelled("optimisation cancelled")
        idx = (~done).nonzero(as_tuple=True)[0]
        za = z[idx].detach().requires_grad_(True)
        with torch.enable_grad():
            sa = search(za)
            l1 = _l1(sa, x[idx], opts.loss_cap)
            (grad,) = torch.autograd.grad(l1.sum(), za)
        sa = sa.detach()
        l1 = l1.detach()
        bad = ~torch.isfinite(l1) | ~torch.isfinite(grad).flatten(1).all(dim=1)
        nonfinite[idx] |= bad
        if best_s is None:
            best_s = torch.full((B, *sa.shape[1:]), math.nan, dtype=x.dtype, device=sa.device)
        if s_buf is not None:
            s_buf[idx] = sa.to(s_buf.dtype)  # the search may run in bfloat16; the callback sees float32

        d = za.detach() - z0[idx]
        dist = _flat_norm(d)
        e = eps_t[idx]
        inside = dist <= radius[idx]
        holds = dist <= e + opts.feas_tol

        # remember the best iterate that lies inside the ball
        better = inside & (l1 < best_loss[idx])
        if bool(better.any()):
            bi = idx[better]
            best_loss[bi] = l1[better]
            best_z[bi] = za.detach()[better]
            best_s[bi] = sa[better].to(best_s.dtype)
        improved = best_loss[idx] < ref_loss[idx] * (1 - opts.rtol)
        ref_loss[idx] = torch.where(improved, best_loss[idx], ref_loss[idx])
        st = torch.where(improved, torch.zeros_like(stall[idx]), stall[idx] + 1)

        if opts.method == "penalty":
            outside = dist > e
            pen = _bcast(torch.where(outside, lam[idx] / dist.clamp_min(1e-30), torch.zeros_like(dist)), d) * d
            grad = grad + pen
        # Adam (torch.optim.Adam's update, per image so batch and single runs agree)
        t[idx] += 1
        ta = t[idx].to(z.dtype)
        m[idx] = _BETA1 * m[idx] + (1 - _BETA1) * grad
        if opts.method == "projected":
            # isotropic second moment (one scalar per image): the step is then a scaled gradient step, and its
            # projected fixed point is the constrained optimum (KKT), which per-coordinate scaling breaks
            g2 = grad.flatten(1).pow(2).mean(dim=1)
            v[idx] = _BETA2 * v[idx] + (1 - _BETA2) * _bcast(g2, grad).expand_as(grad)
        else:
            v[idx] = _BETA2 * v[idx] + (1 - _BETA2) * grad * grad
        mhat = m[idx] / _bcast(1 - _BETA1**ta, grad)
        vhat = v[idx] / _bcast(1 - _BETA2**ta, grad)
        znew = za.detach() - _bcast(lr[idx], grad) * mhat / (vhat.sqrt() + _ADAM_EPS)

        finished = torch.zeros_like(holds)
        if opts.method == "penalty":
            znew_d = _flat_norm(znew - z0[idx])
            lam[idx] = torch.where(
                znew_d > e + opts.feas_tol, (lam[idx] * opts.lambda_growth).clamp(max=opts.lambda_max), lam[idx]
            )
            finished = holds & (st >= opts.patience)
        else:
            znew = project_to_ball(znew, z0[idx], e)
            stalled = st >= opts.patience
            lr_a = torch.where(stalled, lr[idx] * opts.lr_decay, lr[idx])
            st = torch.where(stalled, torch.zeros_like(st), st)
            finished = lr_a < opts.lr * opts.min_lr_ratio
            lr[idx] = lr_a
        stall[idx] = st
        # an image that stops keeps the iterate it was evaluated at, not the untested next one
        z[idx] = torch.where(_bcast(finished, znew), za.detach(), znew)
        # an image whose decoder output went non-finite stops: it keeps its best finite feasible iterate
        finished = finished | (t[idx] >= opts.max_steps) | bad
        done[idx] = finished
        step += 1
        if callback is not None and (step % opts.callback_every == 0 or bool(done.all())):
            callback(Progress(step=step, s=s_buf, loss=best_loss.clone(), done=done.clone()))

    if opts.precision != "fp32":
        # the search ran in reduced precision: re-evaluate the kept iterates in float32 (exact loss and s)
        ev = torch.isfinite(best_loss).nonzero(as_tuple=True)[0]
        if ev.numel():
            with torch.no_grad():
                sb = decode(best_z[ev]).detach()
            best_s[ev] = sb.to(best_s.dtype)
            best_loss[ev] = _l1(sb, x[ev], opts.loss_cap).to(best_loss.dtype)
    # Final candidates: the last iterate projected onto the ball, for images whose best is not known to be it.
    need = (eps_t == 0) | ~torch.isfinite(best_loss) | (_flat_norm(z - z0) > radius)
    if best_s is None:
        best_s = torch.full_like(x, math.nan)
    z_out, s_out, loss_out = best_z.clone(), best_s, best_loss.clone()
    if bool(need.any()):
        ni = need.nonzero(as_tuple=True)[0]
        z_last = project_to_ball(z[ni], z0[ni], eps_t[ni])
        with torch.no_grad():
            sl = decode(z_last).detach()
        ll = _l1(sl, x[ni], opts.loss_cap)
        take = ll < loss_out[ni]
        if bool(take.any()):
            ti = ni[take]
            z_out[ti] = z_last[take]
            s_out[ti] = sl[take].to(s_out.dtype)
            loss_out[ti] = ll[take]
    zero = eps_t == 0
    if bool(zero.any()):
        z_out[zero] = z0[zero]
    lost = ~torch.isfinite(loss_out)  # no finite candidate at all (every decoded iterate was NaN/inf)
    if bool(lost.any()):
        li = lost.nonzero(as_tuple=True)[0]
        s0, l0 = _decode_z0(decode, x[li], z0[li], opts, li)
        z_out[li], s_out[li], loss_out[li] = z0[li], s0.to(s_out.dtype), l0.to(loss_out.dtype)
    if bool(nonfinite.any()):
        which = nonfinite.nonzero(as_tuple=True)[0]
        warnings.warn(
            f"MatchGen: the decoder returned NaN or infinite values during the search for {which.numel()} of {B} "
            f"image(s) (batch positions {', '.join(str(int(i)) for i in which[:8])}); each keeps its best finite "
            "feasible iterate, at worst the base model's g(z_o)",
            RuntimeWarning,
            stacklevel=2,
        )
    dist_out = _flat_norm(z_out - z0)
    return MatchGenResult(
        z=z_out.detach(),
        s=s_out.detach(),
        loss=loss_out.detach(),
        feasible=dist_out <= radius,
        steps=t.clone(),
        distance=dist_out,
        lam=lam,
    )
