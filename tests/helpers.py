"""Test helpers shared by the families: build, fit one step, save/reload, subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf


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
    """Runs `code` in a fresh interpreter of this environment, importing the installed package.

    `-P`: the working directory is not put on `sys.path`, so a checkout cannot shadow it.

    Returns:
        The `CompletedProcess` (text mode); raises if it exits non-zero.
    """
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code, *args], env=full_env,
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

    def fit(seed):
        keras.utils.set_random_seed(seed)
        model = zoo.get_model("dcgan", "dcgan_tiny")
        model.compile(d_optimizer=keras.optimizers.Adam(1e-3, 0.5),
                      g_optimizer=keras.optimizers.Adam(1e-3, 0.5))
        model.fit(data.make_dataset("fashion_mnist:test", 32, 1, 32, arrays=arrays),
                  steps_per_epoch=steps, epochs=1, verbose=0)
        return model

    return first_varied(fit)


def first_varied(fit, seeds=(0, 1, 2, 3), min_std=0.05):
    """The first of `fit(seed)` whose generator's images vary from latent to latent.

    A GAN's first hundred steps are chaotic: the CPU's rounding (oneDNN picks
    kernels per instruction set) decides whether seed 0 collapses (it does on
    an AMD EPYC: per-pixel std 0.033 across latents). Parity checks need
    varied images, not one particular seed.
    """
    stds = []
    for seed in seeds:
        model = fit(seed)
        stds.append(float(model.generate(model.sample_latents(16)).numpy().std(axis=0).mean()))
        if stds[-1] > min_std:
            return model
    raise AssertionError(f"every seed {seeds} gave near-constant images (per-pixel std {stds} <= {min_std})")


def lazy_steps(steps, interval):
    """How many of the train steps `0 .. steps - 1` run a lazy phase of `interval`.

    `zoo.base.run_every(step, interval, ...)` runs at `step % interval == 0`
    (NVIDIA's `batch_idx % phase.interval == 0`), so step 0 always does.
    """
    return sum(1 for s in range(steps) if s % interval == 0)


def expected_optimizer_iterations(model, steps):
    """`{optimizer name: iterations}` after `steps` train steps from a fresh start (step 0).

    Derived from the model's configuration, not read from its counters:
    every held optimizer takes one step per train step; StyleGAN2's lazy
    regularizers (path length on G, R1 on D) each take one more on the
    train steps where they run, as NVIDIA's separate Greg/Dreg phases do.
    """
    import zoo

    intervals = {}
    if isinstance(model, zoo.StyleGAN2):
        intervals = {"g_optimizer": model.pl_interval if model.pl_weight else 0,
                     "d_optimizer": model.r1_interval if model.r1_gamma else 0}
    elif not isinstance(model, (zoo.DCGAN, zoo.VAE)):  # a new family: say how it steps its optimizers
        raise NotImplementedError(f"optimizer steps per train step of {type(model).__name__}")
    return {name: steps + (lazy_steps(steps, intervals[name]) if intervals.get(name) else 0)
            for name in model.optimizer_targets()}
