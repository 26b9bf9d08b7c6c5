"""StyleGAN2 model: config, sampling with truncation, the training step's phases, EMA, losses."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from helpers import weights_of
from zoo.stylegan2 import stylegan2_losses as losses


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return zoo.get_model("stylegan2", "stylegan2_tiny")


def test_registered_with_presets():
    assert zoo.default_preset("stylegan2") == "stylegan2_fashion_mnist"
    assert set(zoo.list_presets()["stylegan2"]) >= {
        "stylegan2_fashion_mnist", "stylegan2_fashion_mnist_cifar", "stylegan2_fashion_mnist_paper",
        "stylegan2_64_rgb",
        "stylegan2_128_rgb", "stylegan2_256_rgb", "stylegan2_tiny",
    }


def test_config_round_trip(tiny):
    clone = zoo.StyleGAN2.from_config(tiny.get_config())
    assert clone.get_config() == tiny.get_config()
    clone.set_weights(tiny.get_weights())
    z = tiny.sample_latents(4, seed=3)
    np.testing.assert_allclose(clone.generate(z), tiny.generate(z), atol=1e-6)


def test_generate_shapes_range_and_truncation(tiny):
    z = tiny.sample_latents(6, seed=1)
    images = tiny.generate(z).numpy()
    assert images.shape == (6, 32, 32, 1)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # psi = 1 is no truncation; psi = 0 maps every z to the average w: one image.
    np.testing.assert_allclose(tiny.generate(z, truncation_psi=1.0), images, atol=1e-6)
    collapsed = tiny.generate(z, truncation_psi=0.0).numpy()
    np.testing.assert_allclose(collapsed, np.broadcast_to(collapsed[:1], collapsed.shape), atol=1e-6)
    assert np.abs(images - images[:1]).max() > 1e-4  # different z give different images
    # mapping + synthesis compose to generate.
    ws = tiny.mapping(z, 0.7)
    assert ws.shape == (6, tiny.num_ws, tiny.w_dim)
    np.testing.assert_allclose(tiny.synthesis(ws), tiny.generate(z, 0.7), atol=1e-6)


def test_ema_starts_as_a_copy_of_the_generator(tiny):
    for ema, var in zip(tiny.generator_ema.weights, tiny.generator.weights):
        np.testing.assert_array_equal(ema.numpy(), var.numpy())
    assert not tiny.generator_ema.trainable_weights


class _Snapshots(keras.callbacks.Callback):
    """Generator and EMA weights after every batch."""

    def __init__(self):
        super().__init__()
        self.generator, self.ema = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.generator.append([v.numpy() for v in self.model.generator.weights])
        self.ema.append([v.numpy() for v in self.model.generator_ema.weights])


@pytest.fixture(scope="module")
def trained(fashion_test_arrays):
    """8 steps of `stylegan2_tiny` on real Fashion-MNIST with every phase and ADA on.

    One fit shared by the tests below: tracing this step costs far more than
    running it. R1 every 4 steps (at 0, 4), path length every 2 (0, 2, 4, 6);
    ADA with target -1 (E[sign(D(real))] is above it whatever D does) every
    4 steps; EMA without ramp-up, half-life 100 images.
    """
    keras.utils.set_random_seed(0)
    model = zoo.get_model(
        "stylegan2", "stylegan2_tiny", r1_interval=4, pl_interval=2, ada_target=-1.0,
        ada_interval=4, ada_kimg=0.1, ema_kimg=0.1, ema_rampup=None,
    )
    model.compile()
    before = weights_of(model)
    images, labels = fashion_test_arrays
    batch, steps = 8, 8
    dataset = zoo.data.make_dataset(
        "fashion_mnist:test", 32, 1, batch, shuffle=False,
        arrays=(images[: batch * steps], labels[: batch * steps]),
    )
    snapshots = _Snapshots()
    history = model.fit(dataset, epochs=1, verbose=0, callbacks=[snapshots]).history
    return {"model": model, "before": before, "logs": history, "snapshots": snapshots}


def test_fit_runs_every_phase_on_real_data(trained):
    model, logs = trained["model"], trained["logs"]
    assert model.train_steps == 8
    # Lazy phases take their own optimizer steps.
    assert int(model.d_optimizer.iterations) == 8 + 2
    assert int(model.g_optimizer.iterations) == 8 + 4
    for key in ("g_loss", "d_loss", "r1", "pl", "kimg", "d_real", "d_fake"):
        assert math.isfinite(logs[key][-1]), key
    assert logs["kimg"][-1] == pytest.approx(8 * 8 / 1000)
    assert logs["r1"][-1] > 0 and logs["pl"][-1] > 0
    assert float(model.pl_mean.numpy()) > 0
    after = weights_of(model)
    changed = [np.abs(a - b).max() > 0 for a, b in zip(trained["before"], after)]
    assert sum(changed) > len(changed) // 2
    assert np.abs(model.generator.mapping.w_avg.numpy()).max() > 0  # w_avg tracks the mapping


def test_ema_follows_the_generator_with_its_half_life(trained):
    model, snap = trained["model"], trained["snapshots"]
    beta = 0.5 ** (8 / 100)  # batch 8, half-life 100 images
    trainable = {id(v) for v in model.generator.trainable_weights}
    checked = 0
    for i, var in enumerate(model.generator.weights):
        ema, generator, previous_ema = snap.ema[-1][i], snap.generator[-1][i], snap.ema[-2][i]
        if id(var) not in trainable:
            np.testing.assert_array_equal(ema, generator)  # buffers (w_avg, noise) copied
            continue
        np.testing.assert_allclose(ema, generator + beta * (previous_ema - generator), atol=1e-6)
        checked += 1
    assert checked > 0


def test_ada_moves_p_toward_the_target(trained):
    """p moves by batch * interval / (ada_kimg * 1000) = 0.32 per adjustment: twice in 8 steps."""
    assert float(trained["model"].ada_p.numpy()) == pytest.approx(0.64, abs=1e-6)
    assert trained["logs"]["ada_p"][-1] == pytest.approx(0.64, abs=1e-6)


def test_losses_by_hand():
    grads = tf.constant(np.arange(2 * 2 * 2 * 1, dtype="float32").reshape(2, 2, 2, 1))
    np.testing.assert_allclose(losses.r1_penalty(grads), [0 + 1 + 4 + 9, 16 + 25 + 36 + 49])
    ws_grads = tf.constant([[[3.0, 4.0], [0.0, 0.0]]])  # |g| = 5 on layer 0, 0 on layer 1
    np.testing.assert_allclose(losses.path_lengths(ws_grads), [math.sqrt(25 / 2)])
    np.testing.assert_allclose(losses.path_length_penalty(tf.constant([1.0, 3.0]), 2.0), [1.0, 1.0])
    assert losses.lazy_regularization_ratio(16) == 16 / 17
    # After one half-life of images the EMA weight of the old value is 1/2.
    beta = losses.ema_beta(32.0, ema_kimg=10.0)
    assert float(beta) ** (10_000 / 32) == pytest.approx(0.5, rel=1e-4)
    # The ramp-up shortens the half-life early in training.
    assert float(losses.ema_beta(32.0, 10.0, images_seen=320.0, rampup=0.05)) == pytest.approx(0.5 ** 2)


def test_r1_matches_an_analytic_discriminator():
    """For D(x) = sum(a * x) the gradient is `a`, so R1 = sum(a^2) per example."""
    a = tf.constant(np.random.RandomState(0).normal(size=(1, 4, 4, 1)).astype("float32"))
    x = tf.random.normal([3, 4, 4, 1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        summed = tf.reduce_sum(a * x)
    grads = tape.gradient(summed, x)
    np.testing.assert_allclose(losses.r1_penalty(grads), [float(tf.reduce_sum(a * a))] * 3, rtol=1e-5)


def test_default_optimizers_adjust_for_lazy_regularization(tiny):
    opts = tiny.default_optimizers()
    d, g = opts["d_optimizer"], opts["g_optimizer"]
    assert float(d.learning_rate) == pytest.approx(0.0025 * 16 / 17)
    assert float(g.learning_rate) == pytest.approx(0.0025 * 4 / 5)
    assert d.beta_2 == pytest.approx(0.99 ** (16 / 17))
    assert d.beta_1 == 0.0


def test_bad_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="power of two"):
        zoo.StyleGAN2(image_size=48)


def test_explore_writes_the_grids_it_names(tiny, tmp_path):
    from PIL import Image

    from zoo.stylegan2 import explore

    tiny.save(tmp_path / "model.keras")
    assert explore.main([str(tmp_path), "--out", str(tmp_path / "g"), "--seeds", "0", "1", "2", "3",
                         "--psis", "1", "0", "--samples", "4"]) == 0
    size = tiny.image_size
    expected = {"g_samples.png": (2 * size, 2 * size), "g_samples_psi0.7.png": (2 * size, 2 * size),
                "g_truncation.png": (4 * size, 2 * size), "g_mixing.png": (3 * size, 3 * size)}
    for name, (height, width) in expected.items():
        assert np.asarray(Image.open(tmp_path / name)).shape[:2] == (height, width), name
    # psi 0 is the average image: every seed's row ends in the same picture.
    truncation = np.asarray(Image.open(tmp_path / "g_truncation.png"), np.int32)
    ends = [truncation[i * size : (i + 1) * size, size:] for i in range(4)]
    assert all(np.abs(end - ends[0]).max() <= 1 for end in ends)
    assert explore.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
