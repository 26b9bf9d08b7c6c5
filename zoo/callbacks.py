"""Callbacks for monitoring and guarding `fit`.

The backup callback, `BackupAndRestore`, lives with the rest of resuming in
`zoo.training.resume`; `zoo.callbacks.BackupAndRestore` still names it.
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """A logged loss term became NaN or Inf."""


def image_grid(images, cols=None):
    """`[N, H, W, C]` floats in [0, 1] -> one uint8 `[rows*H, cols*W, C]` grid."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h : (r + 1) * h, q * w : (q + 1) * w] = img
    return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)


def save_png(grid, path):
    """Writes a uint8 `[H, W, 1|3]` array as PNG."""
    from PIL import Image

    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


class SampleGrid(keras.callbacks.Callback):
    """Writes a grid of samples from a fixed latent batch after every epoch.

    The grid goes to `<directory>/samples-<epoch>.png` and, when
    `log_dir` is given, to TensorBoard as an image summary. A model with a
    `sample_truncation_psi` (StyleGAN2) also gets `samples-psi<ψ>-<epoch>.png`
    from the same latents with truncation.

    Args:
        directory: where PNGs go, local or remote (`gs://...`).
        num: number of samples (a square number makes a square grid).
        seed: seed of the fixed latents.
        log_dir: TensorBoard directory, or None.
    """

    def __init__(self, directory, num=64, seed=0, log_dir=None):
        super().__init__()
        self.directory = str(directory)
        self.num = num
        self.seed = seed
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        tf.io.gfile.makedirs(self.directory)
        self._latents = self.model.sample_latents(self.num, self.seed)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(tf.io.gfile.join(self.log_dir, "samples"))

    def on_epoch_end(self, epoch, logs=None):
        grids = {"samples": image_grid(self.model.generate(self._latents).numpy())}
        psi = getattr(self.model, "sample_truncation_psi", None)
        if psi is not None:  # StyleGAN2: also a truncated grid, same latents
            grids[f"samples-psi{psi}"] = image_grid(self.model.generate(self._latents, psi).numpy())
        for name, grid in grids.items():
            # tf.io rather than PIL: it writes to any TensorFlow file system.
            path = tf.io.gfile.join(self.directory, f"{name}-{epoch + 1:04d}.png")
            tf.io.write_file(path, tf.io.encode_png(grid))
        if self._writer is not None:
            with self._writer.as_default():
                for name, grid in grids.items():
                    tf.summary.image(name, grid[None], step=epoch + 1)
            self._writer.flush()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training on the first NaN/Inf in any logged value or saved weight.

    Unlike `keras.callbacks.TerminateOnNaN` (which reads only `loss` and ends
    training normally, making `BackupAndRestore` delete its backup), this
    raises `NonFiniteLossError`, so the backup of the last good state stays.
    Weights are checked too: an update that turns them NaN shows in the
    losses only one step later, after a backup could have saved them. Every
    floating-point weight a backup or export saves is checked, not only the
    trainable ones: batch-norm moving statistics, the EMA generator and the
    w average never reach a loss but are what the exports compute with. Put
    it before `BackupAndRestore` so a bad state is never backed up.
    """

    def on_train_begin(self, logs=None):
        self._owned = saved_weights(self.model)
        variables = [v for _, v in self._owned]

        @tf.function
        def all_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

        self._all_finite = all_finite

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            value = float(np.asarray(value))
            if not math.isfinite(value):
                step = self.model.train_steps
                raise NonFiniteLossError(
                    f"non-finite {key}={value} at step {step}; "
                    "training stopped, the last backup is kept"
                )
        if not bool(self._all_finite()):
            bad = list(dict.fromkeys(
                owner for owner, v in self._owned if not np.isfinite(keras.ops.convert_to_numpy(v)).all()
            ))
            raise NonFiniteLossError(
                f"non-finite weights in {', '.join(bad)} after step {self.model.train_steps}; "
                "training stopped, the last backup is kept"
            )


def saved_weights(model):
    """`[(owner, variable)]` of every floating-point weight of `model` (what `model.weights` saves).

    The owner is the top-level sub-network holding the weight (`generator`,
    `generator_ema`, ...) or, for the model's own state, the weight's path.
    """
    owners = {}
    for layer in model.layers:
        owners.update((id(v), layer.name) for v in layer.weights)
    return [
        (owners.get(id(v), v.path), v) for v in model.weights if keras.backend.is_float_dtype(v.dtype)
    ]


class TimeBudget(keras.callbacks.Callback):
    """Stops training cleanly once `minutes` of wall time have passed."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = minutes * 60.0

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._start >= self.seconds:
            self.model.stop_training = True


class Cooldown(keras.callbacks.Callback):
    """Anneals every optimizer's learning rate to zero over the last part of a time budget.

    The time-budget form of the decay phase of warmup-stable-decay schedules:
    a run that stops at a wall-clock limit (`TimeBudget`) cannot know its last
    step in advance, so the decay follows the clock. Until `(1 - fraction) *
    minutes` of training the rates are the optimizers' own; from there they fall
    linearly to 0 at `minutes`. Time counts over every `fit` this instance is
    passed to (a budget split into slices). The base rates are read once, when
    the callback first meets the compiled model (`set_model`: before a resumed
    run restores a backup, whose optimizers may hold decayed rates), set again
    at each `fit`'s first batch, and put back when a `fit` ends, so a saved
    model holds the recipe's rates.
    Every optimizer the model holds (`optimizer_targets()`, else
    `model.optimizer`) is annealed; each needs a float learning rate, not a
    `LearningRateSchedule`.

    Args:
        minutes: the training time the decay ends at (the `TimeBudget`'s).
        fraction: the part of `minutes` the decay spans, in (0, 1].

    Example:

    ```python
    model.fit(ds, epochs=1000, callbacks=[
        zoo.callbacks.TimeBudget(5), zoo.callbacks.Cooldown(5, fraction=0.2)])
    ```
    """

    def __init__(self, minutes, fraction=0.2):
        super().__init__()
        if minutes <= 0 or not 0 < fraction <= 1:
            raise ValueError(f"Cooldown needs minutes > 0 and 0 < fraction <= 1, got {minutes} and {fraction}")
        self.minutes, self.fraction = float(minutes), float(fraction)
        self.seconds_before = 0.0  # trained in earlier fits
        self.base_rates = None  # {optimizer name: rate}, read at the first fit

    def _optimizers(self):
        if hasattr(self.model, "optimizer_targets"):
            return {name: getattr(self.model, name, None) for name in self.model.optimizer_targets()}
        return {"optimizer": self.model.optimizer}

    def factor(self, seconds):
        """The multiplier of the base rates after `seconds` of training."""
        left = self.minutes * 60.0 - seconds
        return min(1.0, max(0.0, left / (self.fraction * self.minutes * 60.0)))

    def _set_rates(self, factor):
        for name, optimizer in self._optimizers().items():
            optimizer.learning_rate = self.base_rates[name] * factor

    def _read_base_rates(self):
        optimizers = self._optimizers()
        if any(optimizer is None for optimizer in optimizers.values()):
            return  # not compiled yet: read at `on_train_begin`
        rates = {}
        for name, optimizer in optimizers.items():
            # A float rate is a Variable; a schedule's is a tensor computed per step and cannot be set.
            if not isinstance(optimizer.learning_rate, keras.Variable):
                raise ValueError(f"Cooldown sets learning rates: {name} needs a float learning rate, "
                                 f"not {type(optimizer.learning_rate).__name__}")
            rates[name] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        self.base_rates = rates

    def set_model(self, model):
        super().set_model(model)
        if self.base_rates is None:
            self._read_base_rates()

    def on_train_begin(self, logs=None):
        self._start, self._first_batch = time.monotonic(), True
        if self.base_rates is None:
            self._read_base_rates()

    def on_train_batch_begin(self, batch, logs=None):
        factor = self.factor(self.seconds_before + time.monotonic() - self._start)
        if factor < 1.0 or self._first_batch:
            self._set_rates(factor)
            self._first_batch = False

    def on_train_end(self, logs=None):
        self.seconds_before += time.monotonic() - self._start
        self._set_rates(1.0)


class PlateauStop(keras.callbacks.Callback):
    """Stops training once a metric improved by less than a fraction over the last minutes.

    The zoo's stopping rule for shipped presets: train until the FD improves
    by less than 5 % over 10 more minutes. At each epoch whose `logs` hold
    `metric` (put it after `zoo.metrics.MetricsCallback`), it compares the
    value with the one of the latest evaluation at least `minutes` of wall
    time earlier and stops if `(earlier - now) / earlier < min_improvement`.
    The evaluations of a resumed run's earlier fits are not seen.

    Args:
        metric: log key, lower is better (`fd`).
        minutes: how far back the comparison looks.
        min_improvement: the relative improvement that keeps training going.

    Example:

    ```python
    model.fit(ds, epochs=100, callbacks=[
        zoo.metrics.MetricsCallback(num=5000, metrics=("fd",)),
        zoo.callbacks.PlateauStop("fd", minutes=10, min_improvement=0.05),
    ])
    ```
    """

    def __init__(self, metric="fd", minutes=10.0, min_improvement=0.05):
        super().__init__()
        if minutes <= 0 or not 0 <= min_improvement < 1:
            raise ValueError(f"PlateauStop needs minutes > 0 and 0 <= min_improvement < 1, "
                             f"got {minutes} and {min_improvement}")
        self.metric, self.minutes, self.min_improvement = metric, float(minutes), float(min_improvement)
        self.evaluations = []  # (minutes since train begin, value)

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()
        self.evaluations = []

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.metric not in logs:
            return
        now, value = (time.monotonic() - self._start) / 60.0, float(logs[self.metric])
        earlier = [v for t, v in self.evaluations if t <= now - self.minutes]
        self.evaluations.append((now, value))
        if earlier and (earlier[-1] - value) < self.min_improvement * earlier[-1]:
            print(f"{self.metric} {value:.4g} is less than {self.min_improvement:.0%} below "
                  f"{earlier[-1]:.4g} of {self.minutes:g} minutes earlier: stopping", flush=True)
            self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_sec` of the epoch to the epoch logs.

    Args:
        global_batch_size: images per training step, over all replicas.
    """

    def __init__(self, global_batch_size):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = time.monotonic(), 0

    def on_train_batch_end(self, batch, logs=None):
        # Keras calls this once per `steps_per_execution` steps.
        self._batches += self.model.steps_per_execution

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds = max(time.monotonic() - self._start, 1e-9)
            logs["images_per_sec"] = self._batches * self.global_batch_size / seconds


# Resuming's names, where they were before `zoo.training.resume` gathered them (imported on
# first use: `zoo.training` imports this module).
_RESUME_NAMES = ("BackupAndRestore", "BackupError", "Position")


def __getattr__(name):
    if name in _RESUME_NAMES:
        from zoo.training import resume

        return getattr(resume, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
