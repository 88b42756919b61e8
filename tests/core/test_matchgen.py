"""The solver on a linear decoder, where the problem is convex and answers can be checked."""

import math

import pytest
import torch

from app.core.matchgen import SolverOptions, optimize, project_to_ball
from app.errors import Cancelled, OptionError

METHODS = ["penalty", "projected", "spg"]


class LinearDecoder(torch.nn.Module):
    """g(z) = W z + b as a (1, 6, 6) image: convex L1 objective."""

    def __init__(self, latent=4, side=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(latent, side * side)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(side * side, latent, generator=g) * 0.5)
            self.lin.bias.copy_(torch.rand(side * side, generator=g))
        self.side = side

    def forward(self, z):
        return self.lin(z).view(-1, 1, self.side, self.side)


def l1(dec, z, x):
    with torch.no_grad():
        return (dec(z) - x).abs().flatten(1).mean(1)


def problem(batch=3, dist_factor=3.0, eps=0.3, seed=1):
    """Targets x = g(z_true) with z_true at dist_factor * eps from z0 (outside the ball when > 1)."""
    dec = LinearDecoder()
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(batch, 4, generator=g)
    direction = torch.randn(batch, 4, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    z_true = z0 + dist_factor * eps * direction
    with torch.no_grad():
        x = dec(z_true) + 0.01 * torch.randn(batch, 1, 6, 6, generator=g)
    return dec, x, z0, z_true


@pytest.mark.parametrize("method", METHODS)
def test_eps_zero_returns_z0_exactly(method):
    dec, x, z0, _ = problem()
    calls = []

    def counting_decode(z):
        calls.append(z.shape[0])
        return dec(z)

    r = optimize(counting_decode, x, z0, 0.0, method=method)
    assert torch.equal(r.z, z0)
    assert torch.equal(r.s, dec(z0).detach())
    assert r.feasible.all()
    assert (r.steps == 0).all() and (r.distance == 0).all()
    assert torch.allclose(r.loss, l1(dec, z0, x))
    assert calls == [3]  # the base model: one decode of the batch, no search


@pytest.mark.parametrize("method", METHODS)
def test_reachable_target_is_matched(method):
    eps = 0.5
    dec, _, z0, z_true = problem(dist_factor=0.5, eps=eps)
    with torch.no_grad():
        x = dec(z_true)
    r = optimize(dec, x, z0, eps, method=method, max_steps=3000)
    assert r.feasible.all()
    base = l1(dec, z0, x)
    # the optimum is 0 (x is exactly g(z_true), inside the ball); we get within 1% of the base loss
    assert (r.loss < 0.01 * base).all(), (r.loss, base)
    assert torch.allclose(r.z, z_true, atol=0.02)


@pytest.mark.parametrize("method", METHODS)
def test_outside_target_feasible_and_no_worse_than_known_feasible_point(method):
    eps = 0.3
    dec, x, z0, z_true = problem(dist_factor=3.0, eps=eps)
    r = optimize(dec, x, z0, eps, method=method, max_steps=3000)
    dist = (r.z - z0).norm(dim=1)
    assert (dist <= eps * (1 + 1e-6)).all()
    assert r.feasible.all()
    # the radial projection of z_true is feasible; the constrained optimum is at least as good
    z_proj = project_to_ball(z_true, z0, torch.full((3,), eps))
    ref = l1(dec, z_proj, x)
    assert (r.loss <= ref + 1e-3).all(), (r.loss, ref)
    assert (r.loss < l1(dec, z0, x)).all()
    # the returned loss is the loss of the returned z, and s = g(z)
    assert torch.allclose(r.loss, l1(dec, r.z, x), atol=1e-6)
    assert torch.allclose(r.s, dec(r.z).detach(), atol=1e-6)
    # the L1 optimum pulls towards the target, so it sits on the boundary
    assert (dist > 0.95 * eps).all()


def test_penalty_and_projected_agree_on_the_convex_case():
    dec, x, z0, _ = problem(dist_factor=2.0, eps=0.4)
    a = optimize(dec, x, z0, 0.4, method="penalty", max_steps=4000)
    b = optimize(dec, x, z0, 0.4, method="projected", max_steps=4000)
    assert torch.allclose(a.loss, b.loss, atol=2e-3)


@pytest.mark.parametrize("method", METHODS)
# with an eps of 0 one image is done from the start (the solver works on the searching images only); without,
# every image searches at first and they stop one by one (spg: the full buffers, then a selection)
@pytest.mark.parametrize("eps_values", [[0.3, 0.1, 0.0, 0.5], [0.3, 0.1, 0.02, 0.5]])
def test_batched_equals_single(method, eps_values):
    dec, x, z0, _ = problem(batch=4, dist_factor=2.0, eps=0.3)
    eps = torch.tensor(eps_values)
    batch = optimize(dec, x, z0, eps, method=method)
    for i in range(4):
        one = optimize(dec, x[i : i + 1], z0[i : i + 1], float(eps[i]), method=method)
        assert torch.allclose(one.z, batch.z[i : i + 1], atol=1e-5), i
        assert torch.allclose(one.loss, batch.loss[i : i + 1], atol=1e-6), i
        assert int(one.steps[0]) == int(batch.steps[i]), i


def test_cancel_stops_within_one_step():
    dec, x, z0, _ = problem()
    calls = {"decode": 0, "check": 0}

    def counting_decode(z):
        calls["decode"] += 1
        return dec(z)

    def stop():
        calls["check"] += 1
        return calls["check"] > 5

    with pytest.raises(Cancelled):
        optimize(counting_decode, x, z0, 0.3, should_stop=stop)
    assert calls["decode"] == 5  # five steps ran, the sixth was refused before decoding


def test_callback_fires_with_current_pseudo_normal():
    dec, x, z0, _ = problem()
    seen = []
    r = optimize(dec, x, z0, 0.3, callback=lambda p: seen.append((p.step, p.s.clone())), callback_every=5)
    assert len(seen) >= 2
    assert all(s.shape == x.shape for _, s in seen)
    assert seen[0][0] == 5
    steps = [st for st, _ in seen]
    assert steps == sorted(steps)
    assert seen[-1][0] == r.max_steps_taken


def test_no_gradient_reaches_the_model_and_results_reproduce():
    dec, x, z0, _ = problem()
    assert dec.lin.weight.requires_grad
    r1 = optimize(dec, x, z0, 0.3)
    r2 = optimize(dec, x, z0, 0.3)
    assert dec.lin.weight.grad is None and dec.lin.bias.grad is None
    assert torch.equal(r1.z, r2.z)
    assert not r1.z.requires_grad and not r1.s.requires_grad


def test_works_under_no_grad_and_with_any_latent_shape():
    dec = LinearDecoder(latent=8)
    z0 = torch.randn(2, 2, 2, 2)  # trailing shape (2, 2, 2): the norm runs over all of it
    decode = lambda z: dec(z.flatten(1))
    with torch.no_grad():
        x = decode(z0 + 0.5)
        r = optimize(decode, x, z0, 0.2)
    assert ((r.z - z0).flatten(1).norm(dim=1) <= 0.2 * (1 + 1e-6)).all()
    assert r.z.shape == z0.shape


def test_penalty_lambda_grows_only_when_violated():
    dec, x, z0, _ = problem(dist_factor=5.0, eps=0.05)
    r = optimize(dec, x, z0, 0.05, method="penalty")
    assert (r.lam > 1.0).all()  # the target pulls z out of the small ball, so lambda had to rise
    dec, x, z0, z_true = problem(dist_factor=0.2, eps=1.0)
    with torch.no_grad():
        x = dec(z_true)
    r = optimize(dec, x, z0, 1.0, method="penalty")
    assert (r.lam == 1.0).all()  # target inside the ball: the constraint never binds


def test_a_larger_ball_never_does_worse():
    dec, x, z0, _ = problem(dist_factor=3.0, eps=0.3)
    path = [optimize(dec, x, z0, e, method="projected") for e in (0.0, 0.1, 0.2)]
    losses = torch.stack([r.loss for r in path])
    assert torch.equal(path[0].z, z0)
    assert (losses[1:] < losses[:-1]).all()  # the target lies outside every ball: each larger one gets closer
    for r, e in zip(path, [0.0, 0.1, 0.2], strict=True):
        assert ((r.z - z0).norm(dim=1) <= e * (1 + 1e-6)).all()


def test_max_steps_is_respected():
    dec, x, z0, _ = problem()
    r = optimize(dec, x, z0, 0.3, max_steps=7)
    assert r.max_steps_taken == 7
    assert r.feasible.all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "newton"},
        {"lr": -1.0},
        {"lr": math.nan},
        {"patience": 0},
        {"bogus_option": 1},
        {"loss_cap": 0.0},
        {"loss_cap": -1.0},
        {"loss_cap": math.inf},
    ],
)
def test_bad_options_are_clear_errors(kwargs):
    dec, x, z0, _ = problem()
    with pytest.raises(OptionError):
        optimize(dec, x, z0, 0.3, **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_a_capped_loss_leaves_pixels_beyond_the_cap_alone(method):
    """g(z) = z as a 2x2 image from z0 = 0, eps 1; x has a small difference (0.5) and an outlier (10). The plain L1
    spends the ball on both; with loss_cap 2 the outlier is flat in the objective, so the search matches the small
    difference exactly and leaves the outlier's pixel at the base model's value."""

    def dec(z):
        return z.view(-1, 1, 2, 2)

    x = torch.tensor([[[[0.5, 0.0], [0.0, 10.0]]]])
    z0 = torch.zeros(1, 4)
    capped = optimize(dec, x, z0, 1.0, method=method, max_steps=3000, loss_cap=2.0)
    assert torch.allclose(capped.z, torch.tensor([[0.5, 0.0, 0.0, 0.0]]), atol=0.02), capped.z
    assert math.isclose(float(capped.loss), 2.0 / 4, rel_tol=0.02)  # the outlier's capped term only
    plain = optimize(dec, x, z0, 1.0, method=method, max_steps=3000)
    assert float(plain.s[0, 0, 1, 1]) > 0.3, plain.z  # the plain objective pulls the pseudo-normal to the outlier
    assert float(plain.distance) == pytest.approx(1.0, rel=0.01)


def test_bad_eps_and_shapes():
    dec, x, z0, _ = problem()
    with pytest.raises(OptionError):
        optimize(dec, x, z0, -0.1)
    with pytest.raises(OptionError):
        optimize(dec, x, z0, torch.tensor([0.1, 0.2]))
    with pytest.raises(OptionError):
        optimize(dec, x[0], z0, 0.1)


def test_options_object_and_overrides_combine():
    dec, x, z0, _ = problem()
    r = optimize(dec, x, z0, 0.3, options=SolverOptions(max_steps=4), method="projected")
    assert r.max_steps_taken == 4


def test_spg_matches_the_penalty_optimum_in_far_fewer_steps():
    dec, x, z0, z_true = problem(dist_factor=2.0, eps=0.4)
    ref = optimize(dec, x, z0, 0.4, method="penalty", max_steps=4000)
    spg = optimize(dec, x, z0, 0.4, method="spg", max_steps=4000)
    assert spg.feasible.all()
    assert (spg.loss <= ref.loss + 2e-4).all(), (spg.loss, ref.loss)  # at least as good as the paper's method
    z_proj = project_to_ball(z_true, z0, torch.full((3,), 0.4))
    assert (spg.loss <= l1(dec, z_proj, x) + 1e-3).all()  # and than the known feasible point
    assert spg.max_steps_taken * 5 < int(ref.steps.min()), (spg.steps, ref.steps)


def test_spg_iterates_stay_feasible_and_the_best_loss_never_rises():
    dec, x, z0, _ = problem(dist_factor=3.0, eps=0.3)
    seen = []
    optimize(dec, x, z0, 0.3, method="spg", callback=lambda p: seen.append(p.loss.clone()), callback_every=1)
    # the best loss is tracked over feasible iterates only and never rises
    losses = torch.stack(seen)
    assert (losses[1:] <= losses[:-1]).all()


@pytest.mark.parametrize("method", ["projected", "spg"])
def test_bf16_search_returns_exact_float32_loss_and_image(method):
    dec, x, z0, _ = problem(dist_factor=2.0, eps=0.4)
    r = optimize(dec, x, z0, 0.4, method=method, precision="bf16", max_steps=3000)
    assert r.s.dtype == torch.float32 and r.feasible.all()
    assert torch.allclose(r.loss, l1(dec, r.z, x), atol=1e-6)
    assert torch.allclose(r.s, dec(r.z).detach(), atol=1e-6)
    ref = optimize(dec, x, z0, 0.4, method="penalty", max_steps=4000)
    # bfloat16 gradients on 36 pixels are coarse; the loss still lands within 1% of the float32 optimum
    assert (r.loss <= ref.loss * 1.01 + 1e-4).all(), (r.loss, ref.loss)


def test_bad_precision_is_a_clear_error():
    dec, x, z0, _ = problem()
    with pytest.raises(OptionError, match="precision"):
        optimize(dec, x, z0, 0.3, precision="fp8")


@pytest.mark.parametrize("with_callback", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_precision_and_callback_combination(method, precision, with_callback):
    """The viewer always passes a callback, and a card may name any method and precision: every combination
    runs, reports float32 images to the callback, and lands near the known constrained optimum."""
    dec, x, z0, z_true = problem(dist_factor=2.0, eps=0.4)
    seen = []
    cb = (lambda p: seen.append((p.s.dtype, p.s.shape, p.step))) if with_callback else None
    r = optimize(dec, x, z0, 0.4, method=method, precision=precision, callback=cb, callback_every=5, max_steps=3000)
    assert r.s.dtype == torch.float32 and r.feasible.all()
    assert torch.allclose(r.s, dec(r.z).detach(), atol=1e-6)  # s is g(z), exactly, in float32
    if with_callback:
        assert seen and all(dt == torch.float32 and shape == x.shape for dt, shape, _ in seen)
    # the known answer: no worse than the projection of the true latent onto the ball (a feasible point);
    # bfloat16 search steps on 36 pixels are coarse (Adam's per-coordinate steps most), hence slack there
    bound = l1(dec, project_to_ball(z_true, z0, torch.full((3,), 0.4)), x)
    slack = {"fp32": 1.0, "bf16": 1.03 if method == "penalty" else 1.01}[precision]
    assert (r.loss <= bound * slack + 2e-3).all(), (r.loss, bound)


class NonFiniteDecoder(torch.nn.Module):
    """A linear decoder that returns NaN (or inf) where ``bad(z)`` holds, per image."""

    def __init__(self, bad, value=math.nan):
        super().__init__()
        self.lin = LinearDecoder()
        self.bad, self.value = bad, value

    def forward(self, z):
        s = self.lin(z)
        mask = self.bad(z).view(-1, 1, 1, 1)
        return torch.where(mask, torch.full_like(s, self.value), s)


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("method", METHODS)
def test_decoder_nonfinite_at_z0_fails_loudly(method, value):
    from app.errors import SolverError

    _, x, z0, _ = problem()
    assert ((z0 - z0[1]).norm(dim=1)[[0, 2]] > 0.8).all()
    dec = NonFiniteDecoder(lambda z: (z - z0[1]).norm(dim=1) < 0.45, value)  # image 1's whole ball is non-finite
    for eps in (0.0, 0.3):
        with pytest.raises(SolverError, match="NaN or infinite"):
            optimize(dec, x, z0, eps, method=method, max_steps=20)


@pytest.mark.parametrize("method", METHODS)
def test_decoder_nonfinite_away_from_z0_falls_back_to_the_best_finite_iterate(method):
    """NaN only far from z_o (as a bfloat16 overflow would give): the result is the best finite feasible iterate,
    at worst the base model g(z_o), never uninitialised memory, and a warning says so."""
    dec_ok, x, z0, _ = problem(dist_factor=3.0, eps=0.3)
    dec = NonFiniteDecoder(lambda z: (z - z0[: z.shape[0]]).norm(dim=1) > 0.0)  # everything but z0 itself is NaN
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        r = optimize(dec, x, z0, 0.3, method=method, max_steps=20)
    assert torch.isfinite(r.s).all() and torch.isfinite(r.loss).all()
    assert torch.equal(r.z, z0) and torch.equal(r.s, dec_ok(z0).detach())  # the base model's answer
    assert torch.allclose(r.loss, l1(dec_ok, z0, x))


@pytest.mark.parametrize("method", METHODS)
def test_a_tiny_ball_around_a_large_code_still_moves_and_counts_as_feasible(method):
    """||z0|| ~ 200 is stored to ~2e-5 in float32, so a ball of radius 2e-3 cannot be checked to 1e-6 of eps:
    the rounding of z itself belongs to the tolerance, or every iterate looks outside and the base is returned."""
    dec, x, z0, _ = problem(dist_factor=3.0, eps=0.002)
    shift = 100.0
    decode = lambda z: dec(z - shift)  # the same problem, its codes 100 away from the origin
    eps = 0.002
    r = optimize(decode, x, z0 + shift, eps, method=method, max_steps=200)
    base = l1(decode, z0 + shift, x)
    assert r.feasible.all()
    assert (r.distance <= eps * (1 + 1e-6) + torch.finfo(torch.float32).eps * (z0 + shift).norm(dim=1)).all()
    assert (r.distance > 0.5 * eps).all()  # it moved: the target is outside the ball, so the optimum is on it
    assert (r.loss < base).all()


class _NaNGradient(torch.autograd.Function):
    """Identity forward; the backward puts NaN into one coordinate of the gradient."""

    @staticmethod
    def forward(ctx, z):
        return z.clone()

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[:, 1] = math.nan
        return g


@pytest.mark.parametrize("method", METHODS)
def test_a_nonfinite_gradient_with_a_finite_output_stops_the_search_and_warns(method):
    """The decoder's output is finite but its gradient is not (one coordinate): nothing NaN may leak into z."""
    dec_ok, x, z0, _ = problem(dist_factor=3.0, eps=0.3)
    decode = lambda z: dec_ok(_NaNGradient.apply(z))
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        r = optimize(decode, x, z0, 0.3, method=method, max_steps=20)
    assert torch.isfinite(r.z).all() and torch.isfinite(r.s).all()
    assert (r.steps == 1).all()  # stopped at its first evaluation, not one NaN step later
    assert torch.equal(r.z, z0)  # the base model's answer
