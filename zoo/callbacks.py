"""Callbacks for monitoring and guarding `fit`."""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """A logged loss term became NaN or Inf."""


class BackupError(RuntimeError):
    """No backup copy could be restored."""


@dataclasses.dataclass(frozen=True)
class Position:
    """Where in a run a backup was taken.

    Attributes:
        epoch: epochs finished, i.e. the index of the epoch in progress.
        batches_done: batches of that epoch already trained.
        step: batches trained since the run began: where its data continues.
    """

    epoch: int
    batches_done: int
    step: int


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up the training state every epoch or every N batches; restores it mid-epoch too.

    A backup is the model's weights (its held optimizers included) and a
    metadata JSON: the `Position` (`epoch` keeps Keras' meaning) and the
    SHA-256 of the weights file it belongs to. Two copies are kept. The
    metadata is written last, so a copy whose metadata is missing,
    unreadable or names other weights was cut short (a crash mid-save) and
    the previous copy is used. Restoring only reads; when no copy is
    usable it raises `BackupError` naming the folder.

    Keras 3.15 resumes at the start of the interrupted epoch (pitfall 12).
    `zoo.training.run` calls `restore()` before `fit` and continues the
    data at `Position.step`. With a plain `model.fit`, this callback
    restores in `on_train_begin` and, like Keras, repeats the interrupted
    epoch from batch 0.

    Args:
        backup_dir: the backup folder; nothing else may write there.
        save_freq: `"epoch"`, or an int: save whenever the run's batch count
            reaches a multiple of it (the same steps however often the run
            is resumed).
        write: save, and delete the backup when training ends. False on the
            workers of a multi-worker run other than the chief: they only
            restore.
    """

    def __init__(self, backup_dir, save_freq="epoch", write=True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True)
        self.write = write
        self.position = None  # the restored `Position`, if any
        self._restored = False
        self._epoch = 0  # epoch in progress
        self._done = 0  # its batches trained
        self._first_done = 0  # ... before this `fit`, for a resumed epoch
        self._step = 0  # batches trained in the whole run
        self._latest_complete = False  # rotate it to the previous copy before overwriting

    def restore(self):
        """Loads the newest complete backup into the model.

        Returns:
            Its `Position`, or None when there is no backup (a new run).

        Raises:
            BackupError: backup files are there but no copy is usable.
        """
        self._restored = True
        copies = (
            (self._weights_path, self._training_metadata_path),
            (self._prev_weights_path, self._prev_training_metadata_path),
        )
        if not any(os.path.exists(metadata) for _, metadata in copies):
            return None  # never saved, or the first save was cut short
        problems = []
        for weights, metadata in copies:
            try:
                with open(metadata) as f:
                    saved = json.load(f)
                if _sha256(weights) != saved["weights_sha256"]:
                    raise ValueError("the weights do not match the metadata")
                position = Position(saved["epoch"], saved["batches_done"], saved["step"])
                self._load_weights(weights)
            except (OSError, ValueError, KeyError, TypeError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                problems.append(f"{os.path.basename(weights)}: {reason}")
                continue
            self._latest_complete = weights == self._weights_path
            self.position = position
            self._epoch, self._first_done, self._step = position.epoch, position.batches_done, position.step
            return position
        raise BackupError(
            f"cannot restore the backup in {self.backup_dir}: no readable copy ({'; '.join(problems)})"
        )

    def _load_weights(self, path):
        if path.endswith(".weights.h5"):
            self.model.load_weights(path)
            return
        # Keras loads only files named `*.weights.h5`; restoring must not write the folder.
        with tempfile.TemporaryDirectory() as tmp:
            copy = shutil.copyfile(path, os.path.join(tmp, "previous.weights.h5"))
            self.model.load_weights(copy)

    def on_train_begin(self, logs=None):
        if not self._restored and self.restore() is not None:
            # A plain `fit`: Keras restarts the interrupted epoch from batch 0.
            self.model._initial_epoch = self.position.epoch
            self._step -= self._first_done
            self._first_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._done = self._first_done if epoch == self._epoch else 0
        self._first_done = self._done
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self._first_done + batch + 1
        before, self._step = self._step, self._step + done - self._done
        self._done = done
        if self.save_freq != "epoch" and self._step // self.save_freq > before // self.save_freq:
            self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._done, self._first_done = epoch + 1, 0, 0
        if self.save_freq == "epoch":
            self._save_model()

    def _save_model(self):
        if not self.write:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        if self._latest_complete:
            shutil.copyfile(self._weights_path, self._prev_weights_path)
            shutil.copyfile(self._training_metadata_path, self._prev_training_metadata_path)
        self.model.save_weights(self._weights_path, overwrite=True)
        metadata = {
            "epoch": self._epoch, "batches_done": self._done, "step": self._step,
            "weights_sha256": _sha256(self._weights_path),
        }
        with open(self._training_metadata_path, "w") as f:
            json.dump(metadata, f)
        self._latest_complete = True

    def on_train_end(self, logs=None):
        if self.write:
            super().on_train_end(logs)


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
        grids = {"samples": image_grid(self.model.generate(self._latents).numpy())}
        psi = getattr(self.model, "sample_truncation_psi", None)
        if psi is not None:  # StyleGAN2: also a truncated grid, same latents
            grids[f"samples-psi{psi}"] = image_grid(self.model.generate(self._latents, psi).numpy())
        for name, grid in grids.items():
            save_png(grid, self.directory / f"{name}-{epoch + 1:04d}.png")
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
