"""Test helpers shared by the families: build, fit one step, save/reload, subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from conftest import REPO


def images_like(model, n, seed=0):
    """Deterministic images in [-1, 1] of the model's shape."""
    rng = np.random.RandomState(seed)
    return rng.uniform(-1, 1, (n, *model.image_shape)).astype("float32")


def dataset_of(images, batch_size):
    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size, drop_remainder=True)


def weights_of(model):
    return [v.numpy().copy() for v in model.weights]


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def run_python(code, env=None, timeout=600, args=()):
    """Runs `code` in a fresh interpreter with the repo importable.

    Returns:
        The `CompletedProcess` (text mode); raises if it exits non-zero.
    """
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=full_env, cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def last_json_line(text):
    """The last line of `text` that parses as JSON."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON line in output:\n{text[-2000:]}")


def trained_tiny_dcgan(arrays, steps=100):
    """`dcgan_tiny` after `steps` Adam(1e-3) steps on Fashion-MNIST test arrays.

    Parity checks mean something only if the images vary from latent to
    latent; a few steps with Keras' defaults leave them nearly constant.
    """
    import keras

    import zoo
    from zoo import data

    keras.utils.set_random_seed(0)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3, 0.5), g_optimizer=keras.optimizers.Adam(1e-3, 0.5))
    model.fit(data.make_dataset("fashion_mnist:test", 32, 1, 32, arrays=arrays),
              steps_per_epoch=steps, epochs=1, verbose=0)
    assert model.generate(model.sample_latents(16)).numpy().std(axis=0).mean() > 0.05
    return model
