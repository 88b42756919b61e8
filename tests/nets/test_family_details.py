"""What is particular to each family: the erased square, the VAE's mean, the ELBO gradient map, the DAE's
latent and coarse noise, GANomaly's three losses, DDGAN's fixed-noise chain."""

import pytest
import torch
from scipy import ndimage

from app.nets import ModelConfig, create_model
from app.nets.context_ae import erase_random_squares
from app.nets.dae import PATCH_GAIN, blob_gate, coarse_noise, paste_patches


def tiny(family, **extra):
    torch.manual_seed(0)
    return create_model(ModelConfig(family, image_size=32, latent_dim=8, width=4, extra=extra))


def test_erased_square_has_the_asked_size_and_keeps_the_rest():
    x = torch.rand(5, 1, 32, 32) + 0.1
    erased, mask = erase_random_squares(x, 0.25, torch.Generator().manual_seed(0))
    assert (mask.flatten(1).sum(1) == 8 * 8).all()
    assert (erased[mask.bool()] == 0).all()
    assert torch.equal(erased[~mask.bool()], x[~mask.bool()])


def test_vae_encode_is_the_mean_and_training_samples():
    m = tiny("vae").freeze()
    x = torch.rand(2, 1, 32, 32)
    mu, _ = m.posterior(x)
    assert torch.equal(m.encode(x), mu)
    with torch.no_grad():
        a = m.training_loss(x, torch.Generator().manual_seed(0))
        b = m.training_loss(x, torch.Generator().manual_seed(1))
        c = m.training_loss(x, torch.Generator().manual_seed(0))
    assert a != b and a == c  # a sampled z, reproducible from the generator
    assert float(m.kl(torch.zeros(1, 8), torch.zeros(1, 8))) == 0.0


def test_vae_grad_map_is_reconstruction_error_times_smoothed_elbo_gradient():
    m = tiny("vae-grad", grad_sigma=0.0).freeze()
    x = torch.rand(2, 1, 32, 32)
    # the ELBO gradient against finite differences at one pixel
    g = m.elbo_gradient(x)

    def loss(xx):
        mu, logvar = m.posterior(xx)
        rec = (m.decode(mu) - xx).pow(2).flatten(1).sum(1)
        return float((rec + m.kl_weight * m.kl(mu, logvar))[0])

    h = 1e-3
    xp, xm = x.clone(), x.clone()
    xp[0, 0, 10, 12] += h
    xm[0, 0, 10, 12] -= h
    fd = abs(loss(xp) - loss(xm)) / (2 * h)
    assert g[0, 0, 10, 12].item() == pytest.approx(fd, rel=0.05, abs=1e-3)
    # with MatchGen's s*: only the |x - s| factor changes
    s = torch.rand(2, 1, 32, 32)
    expect = ((x - s).abs() * m.gradient_factor(x)).clamp(0, 1)
    torch.testing.assert_close(m.anomaly_map(x, s), expect)
    assert float(m.anomaly_map(x, x).abs().max()) == 0.0


def test_vae_grad_scale_makes_the_gradient_factor_one_on_normal_tissue():
    m = tiny("vae-grad").freeze()
    x = torch.rand(4, 1, 32, 32) * 0.8 + 0.1
    m.after_training(x)
    assert m.config.extra["grad_scale"] > 0
    assert float(m.gradient_factor(x).mean()) == pytest.approx(1.0, rel=1e-4)


def test_dae_latent_is_bottleneck_plus_every_skip():
    m = tiny("dae").freeze()
    x = torch.rand(2, 1, 32, 32)
    z = m.encode(x)
    feats = m.unet.down(x)
    assert z.shape == (2, sum(f[0].numel() for f in feats)) == (2, m.latent_size)
    assert torch.equal(z, torch.cat([f.flatten(1) for f in feats], 1))
    # MatchGen can move the full-resolution skip (the copy path) and the bottleneck, and both change s
    s = m.decode(z)
    for lo, hi in ((0, m.sizes[0]), (m.latent_size - m.sizes[-1], m.latent_size)):
        dz = torch.zeros_like(z)
        dz[:, lo:hi] = 0.5
        assert float((m.decode(z + dz) - s).abs().max()) > 1e-3


def test_dae_without_its_finest_skips_leaves_them_out_of_z_and_the_decoder():
    """``skips_from``: the decoder no longer reads the finest levels' feature maps, so they are not part of z; a
    change of the input's fine detail then reaches the output only through coarser features."""
    full, cut = tiny("dae"), tiny("dae", skips_from=1)
    assert cut.latent_size == full.latent_size - full.sizes[0] and cut.sizes == full.sizes[1:]
    cut.freeze()
    x = torch.rand(2, 1, 32, 32)
    z = cut.encode(x)
    feats = cut.unet.down(x)
    assert z.shape == (2, cut.latent_size) and torch.equal(z, torch.cat([f.flatten(1) for f in feats[1:]], 1))
    assert torch.allclose(cut.decode(z), torch.sigmoid(cut.unet(x)), atol=1e-6)
    # the first merge reads only the upsampled path: a change of the full-resolution features changes nothing
    feats[0] = feats[0] + 1.0
    assert torch.equal(cut.unet.up(feats), cut.unet.up([None, *feats[1:]]))
    assert cut.unet.merges[0][0].in_channels == full.unet.merges[0][0].in_channels // 2
    with pytest.raises(ValueError, match="skips_from"):
        tiny("dae", skips_from=9)


def test_dae_with_its_mirror_image_reads_the_other_side_at_full_resolution():
    """``mirror``: the encoder reads the slice and its left-right mirror image, so the full-resolution features at a
    pixel see the pixel across the midline, which the plain U-Net's first block (a few pixels wide) cannot; z, the
    decoder and the output keep their sizes."""
    plain, mir = tiny("dae").freeze(), tiny("dae", mirror=1).freeze()
    assert mir.latent_size == plain.latent_size and mir.unet.inc[0].in_channels == 2
    x = torch.rand(1, 1, 32, 32)
    z = mir.encode(x)
    assert torch.equal(z, torch.cat([f.flatten(1) for f in mir.unet.down(torch.cat([x, x.flip(-1)], 1))], 1))
    assert mir.decode(z).shape == x.shape
    y = x.clone()
    y[..., 10, 3] += 1.0  # a change on the left edge
    for m, reaches in ((plain, False), (mir, True)):
        fine = (m.split(m.encode(y))[0] - m.split(m.encode(x))[0]).abs().amax(1)[0]  # full-resolution features
        # at the mirrored pixel (column 28) as much as at the changed one; without the mirror only through the
        # GroupNorm's statistics (under a twentieth)
        assert (float(fine[10, 28] / fine[10, 3]) > 0.3) is reaches
    with pytest.raises(ValueError, match="mirror"):
        tiny("dae", mirror=2)


def test_coarse_noise_is_low_resolution_and_only_on_the_foreground():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 0.5
    n = coarse_noise(x, 0.2, 4, torch.Generator().manual_seed(0))
    assert (n[..., :8, :] == 0).all() and (n[..., :, :8] == 0).all()
    inner = n[0, 0, 8:24, 8:24]
    assert inner.abs().mean() > 0.01
    # smooth: neighbouring pixels differ far less than the noise level (white noise would differ by ~0.28)
    assert (inner[:, 1:] - inner[:, :-1]).abs().mean() < 0.05


def test_dae_noise_at_several_resolutions_one_per_image():
    x = torch.full((48, 1, 32, 32), 0.5)
    one = tiny("dae", noise_res=4)
    assert one.noise_resolutions() == [4]
    mixed = tiny("dae", noise_res="2,32")  # as --set noise_res=2,32 stores it
    assert mixed.noise_resolutions() == [2, 32] and tiny("dae", noise_res=[8, 16]).noise_resolutions() == [8, 16]
    n = mixed.training_noise(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(n, mixed.training_noise(x, torch.Generator().manual_seed(0)))  # seeded
    # roughness per image: neighbouring pixels of 2x2-cell noise barely differ, of 32x32-cell noise a lot
    rough = ((n[..., 1:] - n[..., :-1]).abs().mean(dim=(1, 2, 3)) / n.abs().mean(dim=(1, 2, 3))).tolist()
    smooth, coarse = [r for r in rough if r < 0.2], [r for r in rough if r > 0.4]
    assert len(smooth) + len(coarse) == len(rough) and len(smooth) >= 12 and len(coarse) >= 12
    with pytest.raises(ValueError, match="noise_res"):
        tiny("dae", noise_res="0").noise_resolutions()


def test_dae_noise_std_drawn_per_image_from_a_range():
    x = torch.full((64, 1, 32, 32), 0.5)
    fixed = tiny("dae", noise_res=4, noise_std=0.2)
    assert fixed.noise_std_range() == (0.2, 0.2)
    # a fixed std keeps the paper's random stream: exactly coarse_noise with the same generator
    torch.testing.assert_close(
        fixed.training_noise(x, torch.Generator().manual_seed(3)),
        coarse_noise(x, 0.2, 4, torch.Generator().manual_seed(3)),
    )
    ranged = tiny("dae", noise_res=4, noise_std="0,0.4")  # as --set noise_std=0,0.4 stores it
    assert ranged.noise_std_range() == (0.0, 0.4)
    n = ranged.training_noise(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(n, ranged.training_noise(x, torch.Generator().manual_seed(0)))  # seeded
    per_image = n.flatten(1).std(dim=1)
    # stds spread over the range: some images almost clean, some noisier than the fixed 0.2 ever is
    assert float(per_image.min()) < 0.05 and float(per_image.max()) > 0.25
    for bad in ("0.3,0.1", "-0.1", "0.1,0.2,0.3"):
        with pytest.raises(ValueError, match="noise_std"):
            tiny("dae", noise_std=bad).noise_std_range()


def test_dae_noise_cover_puts_the_noise_in_blobs_over_that_fraction_of_the_foreground():
    x = torch.zeros(16, 1, 64, 64)
    x[..., 8:56, 12:52] = 0.5  # the foreground: 48 x 40 pixels
    fg = x > 0.01
    gate = blob_gate(x, 0.2, 8, torch.Generator().manual_seed(0))
    assert gate.min() >= 0 and gate.max() <= 1 and (gate[~fg] == 0).all()
    covered = ((gate > 0.5) & fg).flatten(1).sum(1).float() / fg.flatten(1).sum(1)
    assert torch.allclose(covered, torch.full_like(covered, 0.2), atol=0.03)  # the quantile threshold, per image
    # blobs, not speckle: boundary pixel pairs per covered pixel (about 4 x 0.8 = 3.2 for white noise at 20 %)
    on = gate > 0.5
    edge = (on[..., 1:, :] != on[..., :-1, :]).sum() + (on[..., :, 1:] != on[..., :, :-1]).sum()
    assert float(edge) / float(on.sum()) < 1.0
    full = tiny("dae", noise_res=4, noise_std=0.2)
    assert full.noise_cover() == 1.0
    # the default keeps the paper's random stream; a cover gates that same noise with blobs drawn after it
    torch.testing.assert_close(full.training_noise(x, torch.Generator().manual_seed(3)),
                               coarse_noise(x, 0.2, 4, torch.Generator().manual_seed(3)))  # fmt: skip
    part = tiny("dae", noise_res=4, noise_std=0.2, noise_cover="0.2", noise_cover_res=8)  # as --set stores it
    n = part.training_noise(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(n, coarse_noise(x, 0.2, 4, g) * blob_gate(x, 0.2, 8, g))
    untouched = (n.abs() < 1e-3) & fg
    assert untouched.sum() > 0.6 * fg.sum()  # most of the tissue stays clean: the U-Net must learn to keep it
    for bad in (0, 1.5, -0.2):
        with pytest.raises(ValueError, match="noise_cover"):
            tiny("dae", noise_cover=bad).noise_cover()


def test_dae_noise_cover_blob_size_drawn_per_image():
    x = torch.zeros(32, 1, 64, 64)
    x[..., 4:60, 4:60] = 0.5
    one = tiny("dae", noise_res=4, noise_cover=0.2)
    assert one.cover_resolutions() == [8]  # the default blob field
    # noise_res 1: one offset per image, so the noise shows its blob gate (times that offset)
    mixed = tiny("dae", noise_res=1, noise_std=0.2, noise_cover="0.2", noise_cover_res="2,16")  # as --set stores it
    assert mixed.cover_resolutions() == [2, 16]
    n = mixed.training_noise(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(n, mixed.training_noise(x, torch.Generator().manual_seed(0)))  # seeded
    on = n.abs() > 0.5 * n.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
    # blobs per image: a 2x2 field gives one or two large regions, a 16x16 field many small ones
    counts = [ndimage.label(img[0].numpy())[1] for img in on]
    few, many = [c for c in counts if c <= 3], [c for c in counts if c >= 6]
    assert len(few) + len(many) == len(counts) and len(few) >= 6 and len(many) >= 6, counts
    # about the same fraction covered whatever the blob size (exactly 20 % at gate 0.5, test above; here at half
    # each image's peak, which takes in a little of a large blob's soft edge)
    covered = on.flatten(1).float().sum(1) / (56 * 56)
    assert float(covered.min()) > 0.15 and float(covered.max()) < 0.4, covered
    with pytest.raises(ValueError, match="noise_cover_res"):
        tiny("dae", noise_cover_res="4,0").cover_resolutions()


def test_dae_patches_paste_tissue_from_another_image_inside_the_foreground_only():
    x = torch.zeros(8, 1, 64, 64)
    x[..., 8:56, 8:56] = 0.4
    x[1::2, :, 8:56, 8:56] = 0.8  # neighbours differ, so every paste shows
    fg = x > 0.01
    y = paste_patches(x, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, paste_patches(x, 1.0, torch.Generator().manual_seed(0)))  # seeded
    changed = (y - x).abs() > 1e-4
    assert not changed[~fg].any()  # never outside the image's own foreground
    assert y.min() >= 0 and y.max() <= 1
    # blobs over 2-15 % of the foreground where the gate passes a half (every paste here changes a pixel by at
    # least 0.16 there: the two levels 0.4 and 0.8 at a gain of 0.7-1.3); the soft edges reach a little further
    half = ((y - x).abs() > 0.08).flatten(1).float().sum(1) / fg.flatten(1).sum(1)
    assert float(half.min()) > 0.01 and float(half.max()) < 0.2, half
    assert (changed.flatten(1).sum(1) > ((y - x).abs() > 0.08).flatten(1).sum(1)).all()  # soft edges
    # what is pasted is the other image's tissue at a gain of 0.7-1.3, blended by a 0..1 gate
    src = torch.roll(x, 1, dims=0)
    lo, hi = PATCH_GAIN
    for i in range(8):
        s = float(src[i].max())
        inside = changed[i] & (x[i] > 0.01)
        d = s - float(x[i].max())
        between = (y[i][inside] - x[i][inside]) / d  # 0 = kept, gain * s = pasted; never background (0) pasted
        far = max((g * s - float(x[i].max())) / d for g in (lo, hi))  # the pasted value farthest from x
        assert float(between.min()) > -1e-4 and float(between.max()) < far + 1e-4
    # nothing to paste from (the other images are background): nothing changes
    empty = torch.zeros(2, 1, 64, 64)
    empty[0, :, 8:56, 8:56] = 0.5
    torch.testing.assert_close(paste_patches(empty, 1.0, torch.Generator().manual_seed(1))[0], empty[0])
    assert torch.equal(paste_patches(x, 0.0, torch.Generator().manual_seed(0)), x)
    assert lo < 1 < hi


def test_dae_patch_p_adds_patches_after_the_noise_and_defaults_to_none():
    x = torch.zeros(8, 1, 32, 32)
    x[..., 4:28, 4:28] = 0.5
    x[::2, :, 4:28, 4:28] = 0.9
    plain = tiny("dae", noise_res=4, noise_std=0.2)
    assert plain.patch_p() == 0.0
    # the default is the paper's input: the clean image plus the coarse noise, same random stream
    torch.testing.assert_close(plain.corrupt(x, torch.Generator().manual_seed(3)),
                               x + plain.training_noise(x, torch.Generator().manual_seed(3)))  # fmt: skip
    m = tiny("dae", noise_res=4, noise_std=0.2, patch_p="1")  # as --set stores it
    g = torch.Generator().manual_seed(3)
    noise = m.training_noise(x, g)
    torch.testing.assert_close(m.corrupt(x, torch.Generator().manual_seed(3)), paste_patches(x, 1.0, g) + noise)
    assert float(m.training_loss(x, torch.Generator().manual_seed(3)).detach()) > 0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="patch_p"):
            tiny("dae", patch_p=bad).patch_p()


def test_ganomaly_has_three_generator_losses_and_z_is_the_first_encoder():
    m = tiny("ganomaly").freeze()
    x = torch.rand(2, 1, 32, 32)
    losses = m.generator_losses(x)
    w_adv, w_con, w_enc = m.weights()
    assert (w_adv, w_con, w_enc) == (1.0, 50.0, 1.0)
    total = w_adv * losses["adv"] + w_con * losses["con"] + w_enc * losses["enc"]
    torch.testing.assert_close(losses["total"], total)
    assert torch.equal(m.encode(x), m.encoder(x))
    assert float(losses["enc"]) > 0  # encoder2 is a separate network
    assert float(m.discriminator_loss(x, losses["fake"])) > 0


def test_ddgan_chain_is_deterministic_and_its_noise_is_stored():
    m = tiny("ddgan", steps=4, t_start=2).freeze()
    x = torch.rand(2, 1, 32, 32)
    z = m.encode(x)
    ab = m.alpha_bar[2]
    torch.testing.assert_close(z, ab.sqrt() * (2 * x - 1) + (1 - ab).sqrt() * m.enc_noise)
    assert torch.equal(m.decode(z), m.decode(z))
    keys = set(m.state_dict())
    assert {"enc_noise", "post_noise", "w_noise"} <= keys
    # another noise seed gives another (fixed) chain
    other = create_model(ModelConfig("ddgan", image_size=32, latent_dim=8, width=4, extra={"noise_seed": 1}))
    assert not torch.equal(other.enc_noise, m.enc_noise)
    # the posterior at t = 1 is x_0 itself
    t1 = torch.ones(2, dtype=torch.long)
    torch.testing.assert_close(m.posterior(x, z, t1, torch.randn_like(x)), x)
    assert float(m.alpha_bar[0]) == 1.0 and all(m.alpha_bar[1:] < m.alpha_bar[:-1])


def test_ddgan_training_steps_stay_within_train_t_max():
    m = tiny("ddgan", steps=4, t_start=2, train_t_max=2)
    ts = torch.cat(
        [m.training_batch(torch.rand(8, 1, 32, 32), torch.Generator().manual_seed(i))["t"] for i in range(5)]
    )
    assert set(ts.tolist()) == {1, 2}
    full = tiny("ddgan", steps=4, t_start=2)
    ts = torch.cat(
        [full.training_batch(torch.rand(8, 1, 32, 32), torch.Generator().manual_seed(i))["t"] for i in range(5)]
    )
    assert set(ts.tolist()) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="train_t_max"):
        tiny("ddgan", steps=4, t_start=3, train_t_max=2)
