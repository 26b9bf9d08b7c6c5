"""Resuming a run where it stopped, mid-epoch included.

A backup (`BackupAndRestore`) records the model's weights, its held
optimizers and the `Position` the run had reached. `plan_fits` turns a
restored `Position` into the `fit` calls that finish the run (the rest of
the interrupted epoch first), `DataStream` continues the training batches
at `Position.step`, and `RunCallbacks` makes those calls look like one
training run to the callbacks. `zoo.training.run` puts them together.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import typing

import keras
import tensorflow as tf

from zoo import data as zoo_data
from zoo.data import streams


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


def _remove(path):
    """Deletes `path` if it is there: `ram://` (TF 2.21) appends to a file written again."""
    try:
        tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up the training state every epoch or every N batches; restores it mid-epoch too.

    A backup is the model's weights (its held optimizers included) and a
    metadata JSON: the `Position` (`epoch` keeps Keras' meaning) and the
    SHA-256 of the weights file it belongs to. Two copies are kept. The
    metadata is written last, so a copy whose metadata is missing,
    unreadable or names other weights was cut short (a crash mid-save) and
    the previous copy is used. Restoring only reads; when no copy is
    usable it raises `BackupError` naming the folder.

    The folder may be remote (`gs://...`): files go through `tf.io.gfile`,
    weights are saved and hashed locally, then uploaded, and downloaded once
    to restore. The guarantee above holds on an object store too, as it
    needs no rename: a copy is complete when its metadata exists and names
    its weights' SHA-256, however far an interrupted upload got.

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
        if not any(tf.io.gfile.exists(metadata) for _, metadata in copies):
            return None  # never saved, or the first save was cut short
        problems = []
        for weights, metadata in copies:
            try:
                with tf.io.gfile.GFile(metadata) as f:
                    saved = json.load(f)
                position = Position(saved["epoch"], saved["batches_done"], saved["step"])
                self._load_weights(weights, saved["weights_sha256"])
            except (OSError, tf.errors.OpError, ValueError, KeyError, TypeError) as e:
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

    def _load_weights(self, path, sha256):
        # A local copy (one download), checked and loaded: Keras loads only files named
        # `*.weights.h5`, and restoring must not write the backup folder.
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "backup.weights.h5")
            tf.io.gfile.copy(path, copy)
            if _sha256(copy) != sha256:
                raise ValueError("the weights do not match the metadata")
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
        tf.io.gfile.makedirs(self.backup_dir)
        if self._latest_complete:
            for source, target in ((self._weights_path, self._prev_weights_path),
                                   (self._training_metadata_path, self._prev_training_metadata_path)):
                _remove(target)
                tf.io.gfile.copy(source, target)
        with tempfile.TemporaryDirectory() as tmp:
            # Saved and hashed locally, then uploaded: hashing needs no download.
            weights = os.path.join(tmp, "latest.weights.h5")
            self.model.save_weights(weights)
            sha256 = _sha256(weights)
            _remove(self._weights_path)
            # Not `tf.io.gfile.copy`: on ram:// it fails onto a name that begins another's (`.bkp`).
            with open(weights, "rb") as f, tf.io.gfile.GFile(self._weights_path, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        metadata = {
            "epoch": self._epoch, "batches_done": self._done, "step": self._step, "weights_sha256": sha256,
        }
        _remove(self._training_metadata_path)
        with tf.io.gfile.GFile(self._training_metadata_path, "w") as f:
            json.dump(metadata, f)
        self._latest_complete = True

    def on_train_end(self, logs=None):
        if self.write:
            super().on_train_end(logs)


class DataStream:
    """The run's training batches as one endless, deterministic stream.

    Epoch `e` is batches `[e * steps_per_epoch, (e + 1) * steps_per_epoch)`
    of it: with `--steps`, of the shuffled data repeated; without, one pass
    (the remainder of a pass dropped), reshuffled every pass. A resumed run
    continues at the batch its backup names.

    In-memory data (`npz:`, Fashion-MNIST) goes to `fit` as one dataset that
    the strategy splits. Streamed data (`folder:`, `tfds:`, `tfrecord:`)
    is a `zoo.data.streams.Stream` per worker (through
    `distribute_datasets_from_function` under a strategy of several
    replicas): each worker shards by file when there are at least as many
    files as workers, else by data, with the same steps per epoch on every
    worker; seeking skips undecoded paths or records.

    `dataset()` starts where `seek()` last pointed when an iterator is
    created, not when it is built. That matters under a strategy: Keras'
    `fit` first reads one batch from an iterator of its own to build the
    model, and every iterator of a reshuffling `tf.data` pipeline advances
    one shared shuffle seed per pass it enters. A build pass that skipped to
    batch `step` would enter more passes than in the uninterrupted run and
    change every later shuffle; seeking only after it keeps them equal.

    Args:
        config: the `TrainConfig`.
        model: the family model (its image size, channels and strategy).
        data: `zoo.data.training_data`: in-memory `(images, labels)`, or a
            streamed `zoo.data.streams.Source`.
    """

    def __init__(self, config, model, data):
        self._repeat_passes = not config.steps
        self._start = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._strategy = model.distribute_strategy
        self._batch_size = config.batch_size
        if isinstance(data, streams.Source):
            self._make = None
            # Input pipelines: one per worker (a worker's replicas share its pipeline).
            replicas = self._strategy.num_replicas_in_sync
            workers = replicas // len(self._strategy.extended.worker_devices) if replicas > 1 else 1
            self._stream = functools.partial(
                streams.Stream, data, model.image_size, model.channels, config.batch_size,
                seed=config.seed, passes_are_epochs=not config.steps, workers=workers,
                shuffle_buffer=config.shuffle_buffer, cache=config.cache, strict=config.strict_data,
            )
            stream = self._stream()  # raises DataError unless every worker has a step's worth
            self.steps_per_epoch = config.steps or stream.steps_per_pass
            if workers > 1:
                print(f"data: {stream.sharding()}", file=sys.stderr)
            return
        self._make = functools.partial(
            zoo_data.make_dataset, config.data, model.image_size, model.channels,
            config.batch_size, repeat=bool(config.steps), seed=config.seed, arrays=data,
        )
        self.steps_per_epoch = config.steps or int(self._make().cardinality())

    def seek(self, step):
        """Iterators created from now on start at batch `step`."""
        self._start.assign(step)

    def dataset(self):
        """A new pipeline: its shuffle seeds restart as in a new run."""
        if self._make is None:
            return self._streamed()
        batches = self._make()
        if self._repeat_passes:
            batches = batches.repeat()
        return tf.data.Dataset.range(1).flat_map(lambda _: batches.skip(self._start.read_value()))


    def _streamed(self):
        def batches(context=None):
            stream = self._stream(
                worker=context.input_pipeline_id if context else 0,
                replica_batch=context.get_per_replica_batch_size(self._batch_size) if context else None,
            )
            return tf.data.Dataset.range(1).flat_map(
                lambda _: stream.dataset(self._start.read_value(), self.steps_per_epoch))

        if self._strategy.num_replicas_in_sync == 1:
            return batches()
        return self._strategy.distribute_datasets_from_function(batches)


class Fit(typing.NamedTuple):
    """One `model.fit` call of a run: epochs `[initial_epoch, epochs)` from batch `start` of the stream."""

    initial_epoch: int
    epochs: int
    steps_per_epoch: int
    start: int


def plan_fits(position, steps_per_epoch, epochs):
    """The `fit` calls that run (or continue) a run.

    Args:
        position: the restored `Position`, or None.
        steps_per_epoch: batches per epoch.
        epochs: the run's total epochs.

    Returns:
        A list of `Fit`: the rest of an interrupted epoch first (`fit` runs
        the same number of batches every epoch), then the remaining epochs.
    """
    if position is None:
        return [Fit(0, epochs, steps_per_epoch, 0)]
    epoch, done, step = position.epoch, position.batches_done, position.step
    fits = []
    if done >= steps_per_epoch:  # saved after the epoch's last batch
        epoch += 1
    elif done and epoch < epochs:
        fits.append(Fit(epoch, epoch + 1, steps_per_epoch - done, step))
        epoch, step = epoch + 1, step + steps_per_epoch - done
    return fits + [Fit(epoch, epochs, steps_per_epoch, step)]


class RunCallbacks(keras.callbacks.CallbackList):
    """The callbacks of a run that may take several `fit` calls (see `plan_fits`).

    They see one training run: `on_train_begin` reaches them at the first
    `fit` only and `on_train_end` at `end()`, so History, TensorBoard and a
    time budget span every call.

    Args:
        callbacks: from `make_callbacks`.
        stream: the run's `DataStream`.
        model: the model.
        verbose: as for `fit`.
        epochs: the run's total epochs.
    """

    def __init__(self, callbacks, stream, model, verbose, epochs):
        super().__init__(
            callbacks, add_history=True, add_progbar=verbose != 0, model=model,
            verbose=verbose, epochs=epochs, steps=stream.steps_per_epoch,
        )
        self.stream = stream
        self._fit = None
        self._began = False
        self._end_logs = None

    def before_fit(self, fit):
        """Prepares the callbacks and the data stream for `fit`."""
        self._fit = fit
        self.set_params({**self.params, "steps": fit.steps_per_epoch})
        self.stream.seek(0)  # Keras' build pass reads here, as in an uninterrupted run

    def on_train_begin(self, logs=None):
        # Every `fit` calls this after its build pass and before it creates
        # the iterator it trains from.
        self.stream.seek(self._fit.start)
        if not self._began:
            self._began = True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        self._end_logs = logs

    def end(self):
        """Ends the run for the callbacks (a finished backup is deleted)."""
        super().on_train_end(self._end_logs)
