"""Golden tests: N replicas compute what one device computes."""

import pathlib

import numpy as np
import pytest

from helpers import last_json_line, run_python

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "golden_step.py"


def golden(family, preset, steps=2, batch=16):
    code = f"import runpy, sys; sys.argv = ['x', {family!r}, {preset!r}, '{steps}', '{batch}']; " \
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return last_json_line(run_python(code).stdout)


@pytest.mark.parametrize("family, preset", [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny")])
def test_mirrored_two_replicas_equal_one_device(family, preset):
    result = golden(family, preset)
    assert result["replicas"] == 2
    assert all(s == 2 for s in result["steps"])  # every held optimizer took both steps
    assert result["weight_change"] > 1e-4  # the steps did move the weights
    # Same global batch, same noise, global-batch losses and synced batch norm:
    # only float summation order differs.
    assert result["max_weight_diff"] < 1e-5, result
    for key, value in result["one"].items():
        np.testing.assert_allclose(result["two"][key], value, rtol=1e-5, err_msg=key)


def _arithmetic_normal(shape, seed):
    """Noise from plain arithmetic: the same with and without XLA (TF's stateless RNG is not)."""
    import tensorflow as tf

    index = tf.cast(tf.range(tf.reduce_prod(shape)), tf.float32)
    phase = tf.cast(seed[1], tf.float32) * 78.233
    return tf.reshape(tf.sin(index * 12.9898 + phase) * 1.7, shape)


@pytest.mark.parametrize("family, preset", [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny")])
def test_xla_step_matches_the_plain_step(family, preset, monkeypatch):
    """The step compiles with XLA (static shapes, no Python branching) and computes the same."""
    import keras

    import zoo
    from helpers import dataset_of, images_like
    from zoo import base

    monkeypatch.setattr(base, "stateless_normal", _arithmetic_normal)

    keras.utils.set_random_seed(0)
    plain = zoo.get_model(family, preset)
    xla = zoo.get_model(family, preset)
    xla.set_weights(plain.get_weights())
    images = images_like(plain, 32)
    logs = {}
    for name, model, jit in (("plain", plain, False), ("xla", xla, True)):
        model.compile(jit_compile=jit)
        logs[name] = model.fit(dataset_of(images, 16), verbose=0).history
    assert xla.jit_compile is True
    for a, b in zip(plain.get_weights(), xla.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for key, value in logs["plain"].items():
        np.testing.assert_allclose(logs["xla"][key], value, rtol=1e-4, err_msg=key)
