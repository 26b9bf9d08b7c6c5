"""Learned VAE priors (issue 14, first part): exact densities, hand-derived losses, fitting, LiteRT builtins."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.vae import vae_priors


def _randomize(layer, scale=0.3, seed=0):
    rng = np.random.RandomState(seed)
    for w in layer.weights:
        w.assign(np.asarray(rng.randn(*w.shape) * scale, np.float32))


def test_build_prior_kinds():
    assert vae_priors.build_prior("normal", 8) is None
    assert isinstance(vae_priors.build_prior("flow", 8), vae_priors.FlowPrior)
    assert isinstance(vae_priors.build_prior("two_stage", 8), vae_priors.TwoStagePrior)
    with pytest.raises(ValueError, match="prior must be one of"):
        vae_priors.build_prior("vamp", 8)
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        vae_priors.build_prior("flow", 1)


def test_untrained_flow_is_standard_normal():
    prior = vae_priors.build_prior("flow", 6)
    noise = np.random.RandomState(1).randn(5, 6).astype(np.float32)
    np.testing.assert_array_equal(prior(noise), noise)
    expected = -0.5 * (noise.astype(np.float64) ** 2).sum(1) - 3 * math.log(2 * math.pi)
    np.testing.assert_allclose(prior.log_prob(noise), expected, rtol=1e-6)


@pytest.mark.parametrize("latent_dim", [2, 5, 8])
def test_flow_log_prob_is_change_of_variables(latent_dim):
    """log p(g(n)) = log N(n) - log|det dg/dn|, with the Jacobian from autodiff (odd sizes too)."""
    prior = vae_priors.build_prior("flow", latent_dim)
    # Weights of 0.1 * N(0, 1) make a clearly non-linear flow whose Jacobian stays well
    # conditioned: at 0.3 its entries reach ~1e3 and a float32 Jacobian's log-det loses digits.
    _randomize(prior, scale=0.1)
    noise = tf.constant(np.random.RandomState(2).randn(7, latent_dim).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(noise)
        z = prior(noise)
    jacobian = tape.batch_jacobian(z, noise).numpy().astype(np.float64)  # [N, L, L]
    n = noise.numpy().astype(np.float64)
    expected = (-0.5 * (n**2).sum(1) - 0.5 * latent_dim * math.log(2 * math.pi)
                - np.linalg.slogdet(jacobian)[1])
    np.testing.assert_allclose(prior.log_prob(z), expected, rtol=1e-5, atol=1e-4)


def test_flow_inverse_recovers_noise():
    prior = vae_priors.build_prior("flow", 8)
    _randomize(prior, scale=0.1)  # well conditioned, see above
    noise = np.random.RandomState(3).randn(4, 8).astype(np.float32)
    z = prior(noise).numpy()
    # Walk the inverse as log_prob does and compare with the noise it came from.
    x = (z - prior.shift.numpy()) * np.exp(-prior.log_scale.numpy())
    rest = 8 - prior.split
    for stack in reversed(prior.couplings):
        b, a = x[:, :rest], x[:, rest:]
        s, t = np.split(stack(a).numpy(), 2, axis=-1)
        x = np.concatenate([a, (b - t) * np.exp(-np.tanh(s))], axis=-1)
    np.testing.assert_allclose(x, noise, atol=1e-5)


def test_two_stage_loss_is_hand_derived_elbo():
    latent = 4
    prior = vae_priors.build_prior("two_stage", latent)
    _randomize(prior, scale=0.1)
    prior.log_gamma.assign(-1.3)
    rng = np.random.RandomState(4)
    z = rng.randn(3, latent).astype(np.float32)
    eps = rng.randn(3, latent).astype(np.float32)
    stats = prior.encoder(z).numpy().astype(np.float64)
    mean, log_var = stats[:, :latent], stats[:, latent:]
    u = mean + eps * np.exp(0.5 * log_var)
    recon = prior.decoder(u.astype(np.float32)).numpy().astype(np.float64)
    gamma = math.exp(-1.3)
    nll = 0.5 * (((z - recon) ** 2) / gamma + math.log(2 * math.pi * gamma)).sum(1)
    kl = 0.5 * (mean**2 + np.exp(log_var) - 1.0 - log_var).sum(1)
    np.testing.assert_allclose(prior.loss(z, eps), nll + kl, rtol=1e-5)
    np.testing.assert_allclose(prior(u.astype(np.float32)), recon, rtol=1e-6)


@pytest.mark.parametrize("kind", [
    "flow",
    # Found: in 600 steps gamma is still ~the codes' own variance, the second stage explains the
    # codes as its observation noise and u carries ~nothing (one coordinate's sample spread ~0
    # against 0.6). Dai & Wipf train it long enough for gamma -> 0; strict, so a fix shows up.
    pytest.param("two_stage", marks=pytest.mark.xfail(strict=True, reason="gamma still large: posterior collapse")),
])
def test_prior_fits_a_shifted_skewed_cloud(kind):
    """Fitted to codes far from N(0, I), the prior's samples match their mean and spread."""
    rng = np.random.RandomState(5)
    base_noise = rng.randn(4096, 2).astype(np.float32)
    codes = np.stack([base_noise[:, 0] * 0.3 + 2.0, np.exp(base_noise[:, 1] * 0.5) - 1.0], 1)
    keras.utils.set_random_seed(0)
    prior = vae_priors.build_prior(kind, 2)
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(z, eps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(prior.loss(z, eps))
        optimizer.apply(tape.gradient(loss, prior.trainable_variables), prior.trainable_variables)
        return loss

    for i in range(600):
        batch = codes[rng.randint(0, len(codes), 256)]
        step(batch, rng.randn(256, 2).astype(np.float32))
    samples = prior(rng.randn(4096, 2).astype(np.float32)).numpy()
    np.testing.assert_allclose(samples.mean(0), codes.mean(0), atol=0.1)
    np.testing.assert_allclose(samples.std(0), codes.std(0), rtol=0.25)


@pytest.mark.parametrize("kind", ["flow", "two_stage"])
def test_prior_converts_to_builtin_litert_ops(kind, tmp_path):
    """noise -> codes runs on LiteRT's builtin kernels and matches Keras."""
    from ai_edge_litert.interpreter import Interpreter

    import export

    prior = vae_priors.build_prior(kind, 8)
    _randomize(prior, scale=0.1)
    archive = keras.export.ExportArchive()
    archive.track(prior)
    archive.add_endpoint("serving_default", lambda noise: {"z": prior(noise)},
                         input_signature=[tf.TensorSpec([None, 8], tf.float32, name="noise")])
    archive.write_out(str(tmp_path / "prior"), verbose=False)
    flatbuffer = export.convert(str(tmp_path / "prior"))
    assert not export.custom_ops(flatbuffer)
    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    noise = np.random.RandomState(6).randn(1, 8).astype(np.float32)
    out = runner(noise=noise)
    np.testing.assert_allclose(out["z"], prior(noise), atol=1e-5)


@pytest.mark.parametrize("kind", ["flow", "two_stage"])
def test_prior_config_and_weights_round_trip(kind, tmp_path):
    prior = vae_priors.build_prior(kind, 6)
    _randomize(prior)
    clone = type(prior).from_config(prior.get_config())
    clone.build((None, 6))
    clone.set_weights(prior.get_weights())
    noise = np.random.RandomState(7).randn(3, 6).astype(np.float32)
    np.testing.assert_array_equal(clone(noise), prior(noise))


# ---- wired into the VAE ---------------------------------------------------------


@pytest.fixture(scope="module")
def batch(fashion_test_arrays):
    """16 real test images in [-1, 1] at 32x32."""
    from zoo import data

    images, labels = fashion_test_arrays
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 16, shuffle=False, arrays=(images[:16], labels[:16]))
    return next(iter(ds)).numpy()


def _vae(**overrides):
    import zoo

    keras.utils.set_random_seed(0)
    return zoo.VAE.from_preset("vae_tiny", load_weights=False, **overrides)


def test_plain_vae_has_no_prior_weights_and_the_old_layout():
    plain = _vae()
    assert plain.prior is None and plain.get_config()["prior"] == "normal"
    assert [m.name for m in plain.metrics] == ["loss", "reconstruction_loss", "kl_loss", "neg_elbo"]
    assert set(plain.optimizer_targets()) == {"vae_optimizer"}
    flow = _vae(prior="flow")
    # The prior adds weights after the first stage's; the first stage's are the plain model's.
    plain_shapes = [tuple(w.shape) for w in plain.weights]
    assert [tuple(w.shape) for w in flow.weights][: len(plain_shapes)] == plain_shapes
    assert len(flow.weights) > len(plain_shapes)
    assert set(flow.optimizer_targets()) == {"vae_optimizer", "prior_optimizer"}
    with pytest.raises(ValueError, match="prior must be one of"):
        _vae(prior="vamp")
    with pytest.raises(ValueError, match="decoder_blocks"):
        _vae(decoder_blocks=-1)
    with pytest.raises(ValueError, match="decoder_head_filters"):
        _vae(decoder_head_filters=-1)


@pytest.mark.parametrize("kind", ["flow", "two_stage"])
def test_prior_training_never_touches_the_first_stage(kind, batch):
    """Encoder and decoder after 3 steps are the plain VAE's; the prior moved; its loss is the hand-computed one."""
    from zoo import base

    plain, learned = _vae(), _vae(prior=kind)
    learned.set_weights(plain.get_weights() + learned.get_weights()[len(plain.weights):])
    # Step 0's prior loss, by hand: the codes train_step samples (stream 0), the prior's own noise (stream 2).
    x01 = (batch + 1) / 2
    stats = learned.encoder(x01)
    z = stats["z_mean"] + base.stateless_normal([16, 8], seed=learned.noise_seed(0, 0)) * tf.exp(
        0.5 * stats["z_log_var"])
    expected = float(tf.reduce_mean(learned.prior.loss(z, base.stateless_normal([16, 8],
                                                                              seed=learned.noise_seed(0, 2)))))
    prior_before = [w.numpy() for w in learned.prior.weights]
    for model in (plain, learned):
        model.compile(jit_compile=False)
    first = learned.train_on_batch(batch, return_dict=True)
    assert first["prior_loss"] == pytest.approx(expected, rel=1e-5)
    for _ in range(2):
        plain.train_on_batch(batch)
        learned.train_on_batch(batch)
    plain.train_on_batch(batch)
    for a, b in zip(plain.get_weights(), learned.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    moved = max(float(np.abs(a - w.numpy()).max()) for a, w in zip(prior_before, learned.prior.weights))
    assert moved > 1e-4
    assert int(learned.prior_optimizer.iterations) == int(learned.vae_optimizer.iterations) == 3


def test_generate_decodes_prior_draws_and_decode_decodes_codes(batch):
    model = _vae(prior="flow")
    _randomize(model.prior, scale=0.1)
    noise = model.sample_latents(4, seed=1)
    np.testing.assert_allclose(model.generate(noise), model.decode(model.prior(noise)), atol=1e-6)
    assert float(tf.reduce_max(tf.abs(model.generate(noise) - model.decode(noise)))) > 1e-3
    x01 = (batch[:4] + 1) / 2
    np.testing.assert_allclose(model.reconstruct(x01), model.decode(model.encoder(x01)["z_mean"]), atol=1e-6)
    serving = model.serving_model()
    np.testing.assert_allclose(serving(noise)["images"], model.generate(noise), atol=1e-6)


def test_learned_iwae_of_an_identity_flow_is_the_normal_one(batch):
    """An untrained flow is N(0, I), so both estimators agree; a trained one differs; two-stage has no density."""
    model = _vae(prior="flow")
    normal = model.iwae_nll(batch[:4], k=16, seed=2)
    np.testing.assert_allclose(model.iwae_nll(batch[:4], k=16, seed=2, prior="learned"), normal, rtol=1e-6)
    _randomize(model.prior, scale=0.1)
    assert float(tf.reduce_max(tf.abs(model.iwae_nll(batch[:4], k=16, seed=2, prior="learned") - normal))) > 0.01
    with pytest.raises(ValueError, match="needs a prior with a density"):
        _vae(prior="two_stage").iwae_nll(batch[:4], k=2, prior="learned")
    with pytest.raises(ValueError, match="needs a prior with a density"):
        _vae().iwae_nll(batch[:4], k=2, prior="learned")


def test_residual_decoder_blocks_start_as_identity():
    """With zero-initialized second convolutions the residual decoder equals the plain one on shared weights."""
    plain, residual = _vae().decoder, _vae(decoder_blocks=2).decoder
    shared = [layer for layer in residual.layers if layer.weights and not layer.name.startswith("res")]
    assert len(shared) == len([layer for layer in plain.layers if layer.weights])
    for mine, theirs in zip(shared, [layer for layer in plain.layers if layer.weights]):
        mine.set_weights(theirs.get_weights())
    z = np.random.RandomState(3).randn(4, 8).astype(np.float32)
    np.testing.assert_allclose(residual(z), plain(z), atol=1e-5)
    # Resolutions 4, 8 and 16 (not the output 32) x 2 blocks x 2 convolutions x (kernel, bias).
    assert len(residual.weights) == len(plain.weights) + 3 * 2 * 2 * 2


def test_decoder_head_is_a_hidden_layer_at_full_resolution():
    import zoo

    plain, head = _vae().decoder, _vae(decoder_head_filters=4).decoder
    assert head.get_layer("head_upsample").output.shape == (None, 32, 32, 4)
    assert head.get_layer("head_conv").kernel.shape == (3, 3, 4, 1)
    assert head.output.shape == plain.output.shape == (None, 32, 32, 1)
    # The last transposed convolution's (kernel, bias) become the upsampling's and the 3x3 convolution's.
    assert len(head.weights) == len(plain.weights) + 2
    model = _vae(decoder_head_filters=4)
    assert zoo.VAE.from_config(model.get_config()).decoder_head_filters == 4


def test_vae_with_prior_config_save_and_explore(batch, tmp_path):
    import zoo
    from zoo.vae import explore

    model = _vae(prior="two_stage", decoder_blocks=1)
    model.compile(jit_compile=False)
    model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(8), epochs=1, verbose=0)
    assert zoo.VAE.from_config(model.get_config()).get_config() == model.get_config()
    model.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    noise = model.sample_latents(4)
    np.testing.assert_array_equal(loaded.generate(noise), model.generate(noise))
    assert int(loaded.prior_optimizer.iterations) == 2
    # The latent tools work on codes: decode, not generate.
    z = explore.encode(model.encoder, (batch + 1) / 2)
    grid = explore.interpolation_grid(model, z[:1], z[1:2], steps=2, method="lerp")
    np.testing.assert_array_equal(grid[:, :32], explore.image_grid(np.asarray(model.decode(z[:1]))))
