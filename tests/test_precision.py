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


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_float16_wraps_held_optimizers_and_trains(policy):
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.discriminator.get_layer("logits").compute_dtype == "float32"
    before = weights_of(model)
    logs = model.fit(dataset_of(images_like(model, 16), 8), verbose=0).history
    assert all(np.isfinite(v[0]) for v in logs.values())
    assert max_abs_diff(before, weights_of(model)) > 0


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_float16_overflow_skips_the_step_with_finite_weights(policy):
    model = zoo.get_model("dcgan", "dcgan_tiny")
    huge = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(), initial_scale=1e38)
    model.compile(d_optimizer=huge)
    trainable = model.discriminator.trainable_variables
    d_before = [v.numpy() for v in trainable]
    model.fit(dataset_of(images_like(model, 8), 8), verbose=0)
    # float16 gradients of a loss scaled by 1e38 overflow: D's update is skipped
    # and the scale halves, while G (normal scale) still trains.
    assert max_abs_diff(d_before, [v.numpy() for v in trainable]) == 0
    assert float(model.d_optimizer.dynamic_scale) == pytest.approx(0.5e38, rel=1e-6)
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
