"""Callbacks for monitoring and guarding `fit`."""

import math
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """A logged loss term became NaN or Inf."""


class BackupError(RuntimeError):
    """No backup copy could be restored."""


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with two copies and a clear failure.

    Keras falls back to the previous copy when the latest is unreadable;
    when both are, this raises `BackupError` naming the folder instead of
    h5py's traceback, and leaves the files as they are.
    """

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as e:
            raise BackupError(
                f"cannot restore the backup in {self.backup_dir}: no readable copy "
                f"({str(e).splitlines()[0]})"
            ) from None


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
    `log_dir` is given, to TensorBoard as an image summary.

    Args:
        directory: where PNGs go.
        num: number of samples (a square number makes a square grid).
        seed: seed of the fixed latents.
        log_dir: TensorBoard directory, or None.
    """

    def __init__(self, directory, num=64, seed=0, log_dir=None):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.num = num
        self.seed = seed
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._latents = self.model.sample_latents(self.num, self.seed)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(pathlib.Path(self.log_dir) / "samples"))

    def on_epoch_end(self, epoch, logs=None):
        grid = image_grid(self.model.generate(self._latents).numpy())
        save_png(grid, self.directory / f"samples-{epoch + 1:04d}.png")
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.image("samples", grid[None], step=epoch + 1)
            self._writer.flush()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training on the first NaN/Inf in any logged value or weight.

    Unlike `keras.callbacks.TerminateOnNaN` (which reads only `loss` and ends
    training normally, making `BackupAndRestore` delete its backup), this
    raises `NonFiniteLossError`, so the backup of the last good state stays.
    Weights are checked too: an update that turns them NaN shows in the
    losses only one step later, after a backup could have saved them. Put it
    before `BackupAndRestore` so a bad state is never backed up.
    """

    def on_train_begin(self, logs=None):
        variables = self.model.trainable_variables

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
            bad = [net.name for net in self.model.optimizer_targets().values()
                   if not all(np.isfinite(v.numpy()).all() for v in net.trainable_variables)]
            raise NonFiniteLossError(
                f"non-finite weights in {', '.join(bad)} after step {self.model.train_steps}; "
                "training stopped, the last backup is kept"
            )


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


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_sec` of the epoch to the epoch logs."""

    def __init__(self, global_batch_size):
        super().__init__()
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = time.monotonic(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            seconds = max(time.monotonic() - self._start, 1e-9)
            logs["images_per_sec"] = self._batches * self.global_batch_size / seconds
