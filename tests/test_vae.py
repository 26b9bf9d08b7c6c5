"""VAE family: model, hand-derived losses, 2-replica golden step, IWAE, exports, latent tools."""

import math
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from helpers import last_json_line, run_python
from zoo import base, data
from zoo.vae import explore, vae_losses
from zoo.vae.vae_networks import Sampling


@pytest.fixture(scope="module")
def arrays(fashion_test_arrays):
    """512 real Fashion-MNIST test images (uint8) and labels."""
    images, labels = fashion_test_arrays
    return images[:512], labels[:512]


@pytest.fixture(scope="module")
def batch(arrays):
    """16 images in [-1, 1] at 32x32 from the real pipeline."""
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 16, shuffle=False, arrays=arrays)
    return next(iter(ds)).numpy()


def _trained(arrays, **overrides):
    keras.utils.set_random_seed(0)
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False, **overrides)
    model.compile(jit_compile=False)
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 32, repeat=True, arrays=arrays)
    model.fit(ds, steps_per_epoch=40, epochs=1, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def trained(arrays):
    """`vae_tiny` after 40 Adam steps on real images."""
    return _trained(arrays)


@pytest.fixture(scope="module")
def trained_flow(arrays):
    """`vae_tiny` with a flow prior and a residual decoder after 40 steps: sampling is noise -> prior -> decoder."""
    return _trained(arrays, prior="flow", decoder_blocks=1)


# ---- model ------------------------------------------------------------------


def test_presets_registered():
    presets = zoo.list_presets()["vae"]
    assert list(presets)[0] == "vae_fashion_mnist" == zoo.default_preset("vae")
    assert {"vae_fashion_mnist_2d", "vae_64_rgb", "vae_tiny"} <= set(presets)
    assert all(presets.values())
    assert zoo.get_model("vae", "vae_fashion_mnist_2d").latent_shape == (2,)
    with pytest.raises(ValueError, match="unknown VAE preset"):
        zoo.VAE.from_preset("nope")
    with pytest.raises(ValueError, match="likelihood"):
        zoo.VAE(likelihood="poisson")


def test_build_and_call(batch):
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False)
    assert (model.image_size, model.channels, model.latent_shape) == (32, 1, (8,))
    assert model.encoder.inputs[0].name == "images"
    assert model.decoder.inputs[0].name == "z"
    stats = model.encoder(batch)
    assert set(stats) == {"z_mean", "z_log_var"} and stats["z_mean"].shape == (16, 8)
    recon = model(batch)
    assert recon.shape == batch.shape and float(tf.reduce_min(recon)) >= -1 and float(tf.reduce_max(recon)) <= 1
    images = model.generate(model.sample_latents(4))
    assert images.dtype == tf.float32 and images.shape == (4, 32, 32, 1)
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1
    np.testing.assert_allclose(model.reconstruct((batch + 1) / 2), (recon + 1) / 2, atol=1e-6)


def test_fit_one_step_logs_own_loss(arrays):
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False)
    model.compile(jit_compile=True)
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 16, arrays=arrays)
    logs = {k: v[-1] for k, v in model.fit(ds, steps_per_epoch=1, verbose=0, shuffle=False).history.items()}
    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss", "neg_elbo"}
    # Our tracker, not a compile()-made one that would log 0 (KERAS_PITFALLS 8b).
    assert logs["loss"] > 100
    np.testing.assert_allclose(logs["loss"], logs["reconstruction_loss"] + logs["kl_loss"], rtol=1e-5)
    assert int(model.train_steps) == 1
    assert isinstance(model.vae_optimizer, keras.optimizers.Adam)
    assert model.vae_optimizer.learning_rate.numpy() == pytest.approx(1e-3)


def test_get_config_round_trip():
    model = zoo.VAE.from_preset(
        "vae_tiny", load_weights=False, beta=4.0, likelihood="gaussian", gaussian_sigma=0.2, kl_warmup_steps=10,
        seed=3,
    )
    config = model.get_config()
    clone = zoo.VAE.from_config(config)
    assert clone.get_config() == config
    assert config["likelihood"] == "gaussian" and config["beta"] == 4.0 and config["seed"] == 3


def test_keras_save_load(tmp_path, batch):
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False, likelihood="gaussian")
    model.compile(jit_compile=False)
    model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(8), epochs=1, verbose=0)
    model.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    assert isinstance(loaded, zoo.VAE) and loaded.likelihood == "gaussian"
    np.testing.assert_array_equal(model(batch), loaded(batch))
    z = model.sample_latents(4)
    np.testing.assert_array_equal(model.generate(z), loaded.generate(z))
    assert int(loaded.train_steps) == 2  # the optimizer state came back too


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_exports_float32(policy, batch, tmp_path):
    from export import custom_ops, export_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = zoo.VAE.from_preset("vae_tiny", load_weights=False)
        model.compile(jit_compile=False)
        logs = model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(8), verbose=0).history
        assert all(np.isfinite(v[-1]) for v in logs.values())
        assert model.encoder.get_layer("z_log_var").compute_dtype == "float32"
        assert model.sampling.compute_dtype == "float32"
        z = model.sample_latents(3)
        assert model.generate(z).dtype == tf.float32
        paths = export_model(model, tmp_path, "vae")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    signatures = tf.saved_model.load(str(paths["saved_model"])).signatures
    out = signatures["encode"](images=tf.constant((batch[:3] + 1) / 2))
    assert out["z_mean"].dtype == tf.float32
    assert signatures["serving_default"](z=z)["images"].dtype == tf.float32
    assert custom_ops(paths["tflite"].read_bytes()) == []


# ---- losses -----------------------------------------------------------------


def _np_bce_with_logits(x, logits):
    return np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))


def test_loss_functions_match_formulas():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 4, 4, 1)).astype(np.float32)
    logits = rng.normal(0, 3, x.shape).astype(np.float32)
    np.testing.assert_allclose(
        vae_losses.bernoulli_nll(x, logits), _np_bce_with_logits(x, logits).sum(axis=(1, 2, 3)), rtol=1e-5
    )
    mean = rng.uniform(0, 1, x.shape).astype(np.float32)
    expected = (0.5 * ((x - mean) / 0.3) ** 2 + np.log(0.3 * np.sqrt(2 * np.pi))).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(vae_losses.gaussian_nll(x, mean, 0.3), expected, rtol=1e-5)
    mu, log_var = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(
        vae_losses.gaussian_kl(mu, log_var), -0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(1), rtol=1e-5
    )
    z = rng.normal(size=(3, 5)).astype(np.float32)
    expected = (-0.5 * (np.log(2 * np.pi) + log_var + (z - mu) ** 2 / np.exp(log_var))).sum(1)
    np.testing.assert_allclose(vae_losses.log_normal(z, mu, log_var), expected, rtol=1e-5)
    # KL = E_q[log q - log p], checked by Monte Carlo with the same functions.
    eps = rng.normal(size=(200_000, 5)).astype(np.float32)
    zs = mu[0] + eps * np.exp(0.5 * log_var[0])
    mc = np.mean(vae_losses.log_normal(zs, mu[0], log_var[0]) - vae_losses.log_normal(zs))
    assert mc == pytest.approx(float(vae_losses.gaussian_kl(mu[:1], log_var[:1])[0]), abs=0.03)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_logged_losses_match_hand_derived_elbo(batch, likelihood):
    beta, sigma = 2.5, 0.2
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False, beta=beta, likelihood=likelihood, gaussian_sigma=sigma)
    model.compile(jit_compile=False)
    x01 = (batch.astype(np.float64) + 1) / 2
    # The noise train_step draws at step 0 on one replica.
    eps = base.stateless_normal([len(batch), 8], seed=model.noise_seed(0, 0)).numpy()
    stats = model.encoder(x01.astype(np.float32))
    mu, log_var = (stats[k].numpy().astype(np.float64) for k in ("z_mean", "z_log_var"))
    z = mu + eps * np.exp(0.5 * log_var)
    out = model.decoder(z.astype(np.float32)).numpy().astype(np.float64)
    if likelihood == "bernoulli":
        recon = _np_bce_with_logits(x01, out).sum(axis=(1, 2, 3))
    else:
        recon = (0.5 * ((x01 - out) / sigma) ** 2 + np.log(sigma * np.sqrt(2 * np.pi))).sum(axis=(1, 2, 3))
    kl = -0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(axis=1)

    logs = model.train_on_batch(batch, return_dict=True)  # logs the pre-update values
    np.testing.assert_allclose(logs["reconstruction_loss"], recon.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["kl_loss"], kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], (recon + beta * kl).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["neg_elbo"], (recon + kl).mean(), rtol=1e-5)


def test_kl_warmup(batch):
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False, beta=2.0, kl_warmup_steps=4)
    assert [float(model.kl_weight(s)) for s in (0, 2, 4, 100)] == [0.0, 1.0, 2.0, 2.0]
    model.compile(jit_compile=False)
    logs = model.train_on_batch(batch, return_dict=True)  # step 0: weight 0
    np.testing.assert_allclose(logs["loss"], logs["reconstruction_loss"], rtol=1e-6)
    assert logs["kl_loss"] > 0


def test_evaluate_reports_neg_elbo(trained, arrays):
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 64, shuffle=False, arrays=arrays)
    first = trained.evaluate(ds, verbose=0, return_dict=True)
    again = trained.evaluate(ds, verbose=0, return_dict=True)
    assert first == again  # fixed evaluation noise
    np.testing.assert_allclose(first["neg_elbo"], first["reconstruction_loss"] + first["kl_loss"], rtol=1e-5)
    assert 0 < first["neg_elbo"] < 1024 * math.log(2)  # better than a coin per pixel


def test_reparameterization_gradients():
    mu = tf.constant([[0.5, -1.0]])
    log_var = tf.constant([[0.2, -0.4]])
    eps = tf.constant([[1.5, -0.7]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([mu, log_var])
        z = Sampling()([mu, log_var, eps])
        total = tf.reduce_sum(z)
    np.testing.assert_allclose(z, mu + eps * tf.exp(0.5 * log_var), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, mu), [[1.0, 1.0]])
    np.testing.assert_allclose(tape.gradient(total, log_var), 0.5 * eps * tf.exp(0.5 * log_var), rtol=1e-6)


def test_reconstruction_gradient_reaches_both_encoder_heads(batch):
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False)
    x01 = (batch + 1) / 2
    eps = tf.random.stateless_normal([len(batch), 8], seed=[1, 2])
    with tf.GradientTape() as tape:
        stats = model.encoder(x01)
        z = model.sampling([stats["z_mean"], stats["z_log_var"], eps])
        recon = tf.reduce_mean(vae_losses.bernoulli_nll(x01, model.decoder(z)))  # no KL term
    heads = [model.encoder.get_layer(n).kernel for n in ("z_mean", "z_log_var")]
    for grad in tape.gradient(recon, heads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


GOLDEN = """
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, zoo
    from zoo import data
    arrays = data.load_arrays("fashion_mnist:test")
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 16, shuffle=False, arrays=arrays)
    def run(strategy, weights=None):
        with strategy.scope():
            model = zoo.VAE.from_preset("vae_tiny", load_weights=False, beta=2.0, kl_warmup_steps=2, prior=PRIOR)
            if weights is not None:
                model.set_weights(weights)
            # SGD: Adam's update hides a gradient scale error (KERAS_PITFALLS 5) but for its epsilon.
            optimizers = {"vae_optimizer": keras.optimizers.SGD(1e-4)}
            if PRIOR != "normal":
                optimizers["prior_optimizer"] = keras.optimizers.SGD(1e-3)
            model.compile(jit_compile=False, **optimizers)
        start = model.get_weights()
        history = model.fit(ds, steps_per_epoch=1, epochs=2, verbose=0, shuffle=False).history
        return start, model.get_weights(), history
    start, one, logs_one = run(tf.distribute.get_strategy())
    _, two, logs_two = run(tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]), start)
    print(json.dumps({
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
        "weight_step": max(float(np.abs(a - b).max()) for a, b in zip(one, start)),
        "logs_one": logs_one, "logs_two": logs_two,
    }))
"""


@pytest.mark.parametrize("prior", ["normal", "two_stage"])  # two-stage: per-replica prior noise too
def test_golden_one_device_equals_two_replicas(prior):
    result = last_json_line(run_python(textwrap.dedent(GOLDEN).replace("PRIOR", repr(prior))).stdout)
    assert result["weight_step"] > 1e-3  # the steps did move the weights
    # Float summation order differs; a 2x gradient or shared noise gives >1e-3 relative.
    assert result["weight_diff"] < 1e-5 * result["weight_step"] + 1e-7
    for key, values in result["logs_one"].items():
        np.testing.assert_allclose(values, result["logs_two"][key], rtol=1e-5, err_msg=key)
    assert result["logs_one"]["kl_loss"][1] > 0  # step 2 had a KL weight, so it was tested


# ---- IWAE -------------------------------------------------------------------


def test_iwae_bounds_elbo_and_tightens_with_k(trained, arrays):
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 128, shuffle=False, arrays=arrays)
    images = next(iter(ds))
    neg_elbo = trained.evaluate(tf.data.Dataset.from_tensors(images), verbose=0, return_dict=True)["neg_elbo"]
    nll = {k: float(tf.reduce_mean(trained.iwae_nll(images, k=k, seed=1))) for k in (1, 8, 64, 256)}
    assert nll[64] <= neg_elbo
    assert nll[256] <= nll[64] <= nll[8] <= nll[1]
    assert nll[64] - nll[256] < nll[1] - nll[8]  # converging
    # k=1 is an unbiased one-sample estimate of the negative ELBO.
    assert nll[1] == pytest.approx(neg_elbo, rel=0.01)
    per_image = trained.iwae_nll(images[:4], k=10)
    assert per_image.shape == (4,) and np.all(np.isfinite(per_image))


# ---- export -----------------------------------------------------------------

SAVED_MODEL_RUN = """
    import sys, numpy as np, tensorflow as tf
    path, inputs, outputs = sys.argv[1:]
    sigs = tf.saved_model.load(path).signatures
    feed = dict(np.load(inputs))
    result = {}
    for name, keys in {"serving_default": ["z"], "decode": ["z"], "encode": ["images"],
                       "reconstruct": ["images"]}.items():
        for out_name, value in sigs[name](**{k: tf.constant(feed[k]) for k in keys}).items():
            result[f"{name}/{out_name}"] = value.numpy()
    for out_name, value in sigs["sample"](num=tf.constant(3, tf.int32), seed=tf.constant(7, tf.int64)).items():
        result[f"sample/{out_name}"] = value.numpy()
    np.savez(outputs, **result)
"""


@pytest.mark.parametrize("fixture", ["trained", "trained_flow"])
def test_export_parity_keras_savedmodel_tflite(fixture, batch, tmp_path, request):
    from ai_edge_litert.interpreter import Interpreter

    from export import custom_ops, export_model

    trained = request.getfixturevalue(fixture)
    written = export_model(trained, tmp_path / "export", "vae_tiny")
    z = trained.sample_latents(5, seed=3).numpy()
    images = ((batch[:5] + 1) / 2).astype(np.float32)
    np.savez(tmp_path / "in.npz", z=z, images=images)
    run_python(
        textwrap.dedent(SAVED_MODEL_RUN),
        args=(str(written["saved_model"]), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")),
    )
    saved = dict(np.load(tmp_path / "out.npz"))
    stats = trained.encoder(images)
    expected = {
        "serving_default/images": trained.generate(z),
        "decode/images": trained.decode(z),
        "encode/z_mean": stats["z_mean"],
        "encode/z_log_var": stats["z_log_var"],
        "reconstruct/images": trained.reconstruct(images),
        "sample/images": trained.generate(base.stateless_normal([3, 8], seed=[7, 0])),
    }
    assert set(saved) == set(expected)
    for key, value in expected.items():
        assert saved[key].dtype == np.float32, key
        np.testing.assert_allclose(saved[key], value, atol=1e-5, err_msg=key)

    flatbuffer = written["tflite"].read_bytes()
    assert custom_ops(flatbuffer) == []
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(z=z)["images"], saved["serving_default/images"], atol=1e-4)
    if trained.prior is not None:  # sampling and decoding differ, so the parity checks tell them apart
        assert np.abs(saved["serving_default/images"] - saved["decode/images"]).max() > 1e-3

    # The decoder of codes is its own LiteRT file: encode -> decode on device.
    assert written["tflite_decode"].name == "vae_tiny.decode.tflite"
    decode = Interpreter(model_content=written["tflite_decode"].read_bytes()).get_signature_runner("decode")
    np.testing.assert_allclose(decode(z=z)["images"], saved["decode/images"], atol=1e-4)

    # The encoder is a second LiteRT file, for on-device encoding.
    assert written["tflite_encode"].name == "vae_tiny.encode.tflite"
    encoder_flatbuffer = written["tflite_encode"].read_bytes()
    assert custom_ops(encoder_flatbuffer) == []
    encode = Interpreter(model_content=encoder_flatbuffer).get_signature_runner("encode")
    lite = encode(images=images)
    np.testing.assert_allclose(lite["z_mean"], saved["encode/z_mean"], atol=1e-4)
    np.testing.assert_allclose(lite["z_log_var"], saved["encode/z_log_var"], atol=1e-4)

    from test_export import assert_requests_are_checked

    assert_requests_are_checked(written["saved_model"])  # serving_default and decode take z


# ---- latent tools -----------------------------------------------------------


def test_interpolations():
    z0, z1 = np.array([3.0, 0.0]), np.array([0.0, 2.0])
    t = np.linspace(0, 1, 5)
    path = explore.slerp(z0, z1, t)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)
    # Unit vectors stay on the unit circle.
    unit = explore.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), t)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(explore.lerp(z0, z1, [0.5]), [[1.5, 1.0]])
    np.testing.assert_allclose(explore.slerp(z0, 2 * z0, [0.5]), [1.5 * z0])  # parallel: lerp


def test_attribute_vector_and_grids(trained, batch):
    images = (batch + 1) / 2
    vector = explore.attribute_vector(trained.encoder, images[:8], images[8:])
    z = explore.encode(trained.encoder, images, batch_size=5)
    np.testing.assert_allclose(vector, z[:8].mean(0) - z[8:].mean(0), atol=1e-5)
    grid = explore.attribute_grid(trained, z[:3], vector, alphas=(0, 1))
    assert grid.shape == (3 * 32, 2 * 32, 1) and grid.dtype == np.uint8
    grid = explore.interpolation_grid(trained, z[:2], z[2:4], steps=4, method="lerp")
    assert grid.shape == (2 * 32, 4 * 32, 1)
    scatter = explore.latent_scatter(z, np.arange(16) % 10, size=200)
    assert scatter.shape == (200, 320, 3) and (scatter != 255).any()
    flat = zoo.VAE.from_preset("vae_tiny", load_weights=False, latent_dim=2)
    assert explore.manifold_grid(flat, n=3).shape == (96, 96, 1)
    with pytest.raises(ValueError, match="2-d latent"):
        explore.manifold_grid(trained)


def test_explore_cli_writes_pngs(trained, tmp_path):
    trained.save(tmp_path / "model.keras")
    code = explore.main([
        str(tmp_path), "--interpolate", "4", "--attribute", "shirt:coat", "--scatter",
        "--rows", "2", "--alphas", "0,1",
    ])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "explore").iterdir())
    assert names == ["attribute-shirt-to-coat.png", "interpolate-slerp.png", "scatter.png"]
    flat = zoo.VAE.from_preset("vae_tiny", load_weights=False, latent_dim=2)
    flat.save(tmp_path / "flat.keras")
    assert explore.main([str(tmp_path / "flat.keras"), "--manifold", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "manifold.png").is_file()
    assert explore.main([str(tmp_path / "missing"), "--manifold"]) == 2
    assert explore.main([str(tmp_path / "model.keras"), "--attribute", "shirt:cape"]) == 2
    assert explore.main([str(tmp_path / "model.keras"), "--attribute", "shirt:42"]) == 2


# ---- training run -----------------------------------------------------------


def test_train_run_with_vae(tmp_path):
    from zoo import training

    config = training.TrainConfig(
        model="vae", preset="vae_tiny", data="fashion_mnist:test", epochs=1, steps=2,
        batch_size=16, outdir=str(tmp_path), samples=4,
    )
    result = training.run(config, verbose=0)
    assert set(result.history) >= {"loss", "reconstruction_loss", "kl_loss", "neg_elbo", "images_per_sec"}
    assert (result.run_dir / "model.keras").is_file()
    assert (result.run_dir / "samples" / "samples-0001.png").is_file()
    assert set(result.exports) == {"saved_model", "tflite", "tflite_decode", "tflite_encode"}


@pytest.mark.slow
def test_attribute_vector_shifts_judged_class():
    """Adding the sneaker -> ankle-boot vector makes a judge classifier see ankle boots."""
    keras.utils.set_random_seed(0)
    model = zoo.VAE.from_preset("vae_fashion_mnist", load_weights=False)
    model.compile(jit_compile=True)
    train = data.load_arrays("fashion_mnist:train")
    model.fit(data.make_dataset("fashion_mnist", 32, 1, 128, repeat=True, arrays=train),
              steps_per_epoch=300, epochs=1, verbose=0, shuffle=False)
    # A small judge trained on real images, independent of the VAE.
    judge = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    judge.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    images, labels = explore.load_images("fashion_mnist", model)
    judge.fit(images, labels, batch_size=128, epochs=1, verbose=0)
    test_images, test_labels = explore.load_images("fashion_mnist:test", model)
    assert judge.evaluate(test_images, test_labels, verbose=0)[1] > 0.75

    sneaker, boot = 7, 9
    idx = np.random.default_rng(0).permutation(np.flatnonzero(test_labels == sneaker))
    shown, rest = idx[:200], idx[200:]
    vector = explore.attribute_vector(model.encoder, test_images[test_labels == boot], test_images[rest])
    z = explore.encode(model.encoder, test_images[shown])

    def judged_boot(alpha):
        logits = judge.predict(np.asarray(model.decode(z + alpha * vector)), verbose=0)
        return float(np.mean(np.argmax(logits, axis=1) == boot))

    before, after = judged_boot(0.0), judged_boot(1.0)
    assert after > 0.6 and after - before > 0.4, (before, after)
