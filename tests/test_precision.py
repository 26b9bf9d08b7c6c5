"""Mixed precision: held optimizers scale losses, overflow skips a step, exports stay float32."""

import keras
import numpy as np
import pytest

import zoo
from export import custom_ops, export_model
from helpers import dataset_of, images_like, max_abs_diff, weights_of


@pytest.fixture
def policy(request):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(previous)


FAMILIES = [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny"), ("stylegan2", "stylegan2_tiny")]


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("family, preset", [
    # StyleGAN2 under float16 on one device also runs in the fast
    # test_distribute.py::test_mirrored_float16_equals_one_device.
    *FAMILIES[:2], pytest.param(*FAMILIES[2], marks=pytest.mark.slow)])
def test_float16_wraps_held_optimizers_and_trains(policy, family, preset):
    model = zoo.get_model(family, preset)
    model.compile()
    for name in model.optimizer_targets():
        assert isinstance(getattr(model, name), keras.optimizers.LossScaleOptimizer), name
    # 4 steps: the dynamic scale starts at 2**15 and halves on each step whose
    # scaled gradients overflow float16, which skips it; the VAE's summed
    # per-image loss (~700 nats) overflows twice before its first update.
    images = images_like(model, 32)
    if hasattr(model, "discriminator"):  # logits leave D in float32 whatever the policy
        assert model.discriminator(images[:2]).dtype == "float32"
    before = weights_of(model)
    logs = model.fit(dataset_of(images, 8), verbose=0).history
    assert all(np.isfinite(v[0]) for v in logs.values()), logs
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert max_abs_diff(before, weights_of(model)) > 0


# D-optimizer updates in a GAN's first step: StyleGAN2 adds its lazy R1 step at step 0.
D_UPDATES_AT_STEP_0 = {"dcgan": 1, "stylegan2": 2}


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("family, preset", [
    ("dcgan", "dcgan_tiny"), pytest.param("stylegan2", "stylegan2_tiny", marks=pytest.mark.slow)])
def test_float16_overflow_skips_the_step_with_finite_weights(policy, family, preset):
    model = zoo.get_model(family, preset)
    huge = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(), initial_scale=1e38)
    model.compile(d_optimizer=huge)
    d_before = [v.numpy() for v in model.discriminator.trainable_variables]
    g_before = [v.numpy() for v in model.generator.trainable_variables]
    model.fit(dataset_of(images_like(model, 8), 8), verbose=0)
    # float16 gradients of a loss scaled by 1e38 overflow: each of D's updates
    # is skipped and halves the scale, while G (normal scale) still trains.
    assert max_abs_diff(d_before, [v.numpy() for v in model.discriminator.trainable_variables]) == 0
    assert float(model.d_optimizer.dynamic_scale) == pytest.approx(
        1e38 * 0.5 ** D_UPDATES_AT_STEP_0[family], rel=1e-6)
    assert max_abs_diff(g_before, [v.numpy() for v in model.generator.trainable_variables]) > 0
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_exports_are_float32_whatever_the_policy(policy, tmp_path):
    import tensorflow as tf

    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    model.fit(dataset_of(images_like(model, 16), 8), verbose=0)
    paths = export_model(model, tmp_path, "m")
    signature = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"]
    assert signature.structured_input_signature[1]["z"].dtype == tf.float32
    z = model.sample_latents(3).numpy()
    out = signature(z=tf.constant(z))["images"]
    assert out.dtype == tf.float32
    # Same weights computed in float32 vs the low-precision training graph.
    np.testing.assert_allclose(out.numpy(), model.generate(z).numpy(), atol=3e-2)
    assert custom_ops(paths["tflite"].read_bytes()) == []


def test_bfloat16_bias_gradients_are_wrong_on_cpu():
    """Why `train.py` refuses mixed_bfloat16 without a GPU or TPU (a TF fix makes this fail)."""
    import tensorflow as tf

    x, bias = tf.ones([1, 2048, 1, 4], tf.bfloat16), tf.zeros([4], tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(bias)
        y = tf.nn.bias_add(x, bias)  # what Keras' ops.add(x, bias) becomes on TensorFlow
    # The true gradient is 2048 per channel; summed in bfloat16 it stops at
    # 256, where adding 1 no longer changes a bfloat16 (8 significant bits).
    np.testing.assert_array_equal(tape.gradient(y, bias).numpy().astype("float32"), [256.0] * 4)
