"""DC-GAN: build, one fit step against a hand-derived step, config and .keras round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from helpers import dataset_of, images_like, max_abs_diff, weights_of
from zoo import base


@pytest.fixture
def model():
    keras.utils.set_random_seed(1)
    return zoo.get_model("dcgan", "dcgan_tiny")


def test_networks_have_named_io_and_shapes(model):
    assert model.generator.input.name == "z"
    assert model.generator.output_names == ["images"] or model.generator.outputs[0].name == "images"
    assert model.discriminator.input.name == "images"
    z = model.sample_latents(3)
    assert model(z).shape == (3, 32, 32, 1)
    assert model.discriminator(model(z)).shape == (3, 1)
    out = model.generate(z).numpy()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("preset", sorted(zoo.DCGAN.presets))
def test_every_preset_builds(preset):
    model = zoo.get_model("dcgan", preset)
    spec = zoo.DCGAN.presets[preset]["config"]
    assert model.image_shape == (spec["image_size"],) * 2 + (spec["channels"],)
    assert model(model.sample_latents(2)).shape == (2, *model.image_shape)


def test_fit_step_matches_hand_derived_step(model):
    """One `fit` step equals D-then-G SGD updates computed here with a plain tape.

    The loss is written out from its definition (-log D(x) - log(1 - D(G(z))),
    then -log D(G(z')) with z' fresh and D already updated), not with
    `zoo.losses`, so a wrong formula, order or reduction shows.
    """
    lr = 0.05
    images = images_like(model, 8)
    reference = zoo.get_model("dcgan", "dcgan_tiny")
    reference.set_weights(model.get_weights())
    model.compile(d_optimizer=keras.optimizers.SGD(lr), g_optimizer=keras.optimizers.SGD(lr))
    logs = model.fit(dataset_of(images, 8), epochs=1, verbose=0).history

    g, d = reference.generator, reference.discriminator
    z1 = base.replica_normal(8, (16,), reference.noise_seed(0, 0))
    z2 = base.replica_normal(8, (16,), reference.noise_seed(0, 1))
    with tf.GradientTape() as tape:
        p_real = tf.sigmoid(d(images, training=True))
        p_fake = tf.sigmoid(d(g(z1, training=True), training=True))
        d_loss = tf.reduce_mean(-tf.math.log(p_real) - tf.math.log(1 - p_fake))
    for v, grad in zip(d.trainable_variables, tape.gradient(d_loss, d.trainable_variables)):
        v.assign_sub(lr * grad)
    with tf.GradientTape() as tape:
        g_loss = tf.reduce_mean(-tf.math.log(tf.sigmoid(d(g(z2, training=True), training=True))))
    for v, grad in zip(g.trainable_variables, tape.gradient(g_loss, g.trainable_variables)):
        v.assign_sub(lr * grad)

    np.testing.assert_allclose(logs["d_loss"][0], d_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["g_loss"][0], g_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["d_real"][0], tf.reduce_mean(p_real).numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["d_fake"][0], tf.reduce_mean(p_fake).numpy(), rtol=1e-5)
    assert max_abs_diff(weights_of(model), weights_of(reference)) < 1e-6
    assert int(model.d_optimizer.iterations) == int(model.g_optimizer.iterations) == 1


def test_fit_changes_both_networks_and_logs_finite_metrics(model):
    model.compile()
    g0, d0 = weights_of(model.generator), weights_of(model.discriminator)
    history = model.fit(dataset_of(images_like(model, 16), 8), epochs=1, verbose=0).history
    assert set(history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v[0]) for v in history.values())
    assert max_abs_diff(g0, weights_of(model.generator)) > 0
    assert max_abs_diff(d0, weights_of(model.discriminator)) > 0
    assert model.optimizer is None  # no unused default optimizer (KERAS_PITFALLS 3)


def test_get_config_round_trip(model):
    config = model.get_config()
    clone = zoo.DCGAN.from_config(config)
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def test_keras_file_round_trip_keeps_weights_and_optimizers(model, tmp_path):
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(3e-4))
    model.fit(dataset_of(images_like(model, 16), 8), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    z = model.sample_latents(4)
    np.testing.assert_allclose(loaded.generate(z), model.generate(z), atol=1e-6)
    np.testing.assert_allclose(
        loaded.discriminator(model(z)), model.discriminator(model(z)), atol=1e-6
    )
    assert int(loaded.d_optimizer.iterations) == 2 and int(loaded.g_optimizer.iterations) == 2
    assert float(loaded.g_optimizer.learning_rate) == pytest.approx(3e-4)
    assert max_abs_diff(
        [v.numpy() for v in loaded.d_optimizer.variables],
        [v.numpy() for v in model.d_optimizer.variables],
    ) == 0


def test_compile_rejects_unknown_optimizer_names(model):
    with pytest.raises(ValueError, match=r"unknown optimizer argument\(s\) \['optimizer'\]"):
        model.compile(optimizer="adam")


def test_unknown_preset(model):
    with pytest.raises(ValueError, match="unknown DCGAN preset 'nope'"):
        zoo.get_model("dcgan", "nope")
