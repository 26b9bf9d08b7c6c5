"""One training run: config -> strategy -> data -> model.fit -> run directory -> exports.

`run(config)` is what `train.py` calls. A run directory holds everything a
run writes:

    <outdir>/<NNNNN>-<family>-<preset>/
        config.json        the resolved configuration
        backup/            BackupAndRestore state (deleted when the run ends well)
        samples/           sample grid PNG per epoch (fixed latents)
        tensorboard/       scalars and sample images
        model.keras        the trained model
        history.json       per-epoch logs
        data_index.json    a streamed spec's files (folder:, tfrecord:), read again on --resume
        preset/            the trained model as a preset directory (zoo.from_preset reads it)
        export/saved_model/<preset>/<version>/, export/tflite/<preset>.tflite
"""

import dataclasses
import json
import pathlib
import re
import time

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config

import zoo
from zoo import callbacks as zoo_callbacks
from zoo import data as zoo_data
from zoo import device
from zoo.data import streams as data_streams
from zoo.training.config import RESUMABLE_OVERRIDES, ConfigError, TrainConfig, validate
from zoo.training.resume import BackupAndRestore, DataStream, RunCallbacks, plan_fits
from zoo.training.strategy import ClusterError, collective_failure, is_chief, make_strategy, xla_supported


def _storage_path(path):
    """`path` as a `pathlib.Path`, or a str if it is a URL (pathlib turns `gs://b/x` into `gs:/b/x`)."""
    path = str(path)
    return path if "://" in path else pathlib.Path(path)


def _write_text(path, text):
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def new_run_dir(outdir, config):
    """Creates `<outdir>/<NNNNN>-<family>-<preset>` with the next free number.

    `outdir` may be remote (`gs://bucket/runs`): the run directory is then
    a str, else a `pathlib.Path`.
    """
    outdir = str(outdir)
    tf.io.gfile.makedirs(outdir)
    # GCS lists folders as "<name>/": the pattern matches a prefix.
    numbers = [int(m.group(1)) for name in tf.io.gfile.listdir(outdir) if (m := re.match(r"^(\d{5})-", name))]
    number = max(numbers, default=-1) + 1
    run_dir = _storage_path(tf.io.gfile.join(outdir, f"{number:05d}-{config.model}-{config.preset}"))
    if isinstance(run_dir, pathlib.Path):
        run_dir.mkdir()  # fails if a concurrent run took the number
    else:
        tf.io.gfile.mkdir(run_dir)  # object stores have no exclusive create
    return run_dir


def load_run_config(run_dir, overrides=None):
    """Reads `<run_dir>/config.json` (`run_dir` local or remote), applying the resumable `overrides`."""
    path = tf.io.gfile.join(run_dir, "config.json")
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise ConfigError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    try:
        with tf.io.gfile.GFile(path) as f:
            saved = json.load(f)
        config = TrainConfig(**saved)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--resume {run_dir}: unreadable config.json ({e})") from None
    for key, value in (overrides or {}).items():
        if key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"--{key.replace('_', '-')} cannot change on --resume; the run's config.json fixes it"
            )
        setattr(config, key, value)
    return config


def build_model(config, strategy):
    """The compiled family model of `config`, created in `strategy`'s scope.

    With `config.init_from` it is the preset's model with its trained weights
    and fresh optimizers (fine-tuning); step-driven schedules restart.
    """
    with strategy.scope():
        if config.init_from:
            model = zoo.from_preset(config.init_from, seed=config.seed)
            model.reset_training_progress()
        else:
            model = zoo.get_model(config.model, config.preset, seed=config.seed)
        jit = type(model).xla_by_default() if config.jit is None else config.jit
        model.compile(jit_compile=jit and xla_supported(strategy))
    return model


def make_callbacks(config, run_dir, write):
    """The run's callbacks: NaN guard first (a bad step is never backed up), then backup, then monitors.

    Args:
        config: the `TrainConfig`.
        run_dir: the run directory (the chief's), or None for a worker of a
            new multi-worker run other than the chief.
        write: this process writes the run directory (the chief).
    """
    result = [zoo_callbacks.NonFiniteGuard()]
    if config.cooldown:
        # It reads the base rates when `RunCallbacks` hands it the model, which `run` does before
        # `backup.restore()` loads optimizers that may hold a backup's decayed rates.
        result.append(zoo_callbacks.Cooldown(config.minutes, config.cooldown))
    if run_dir is not None:
        result.append(BackupAndRestore(
            tf.io.gfile.join(run_dir, "backup"), save_freq=config.backup_every or "epoch", write=write,
        ))
    result.append(zoo_callbacks.Throughput(config.batch_size))
    if write:
        if config.eval_every:
            from zoo import metrics

            # Before TensorBoard, which then logs the values (one `logs` dict goes down the list).
            result.append(metrics.MetricsCallback(
                real="fashion_mnist:test", every_n_epochs=config.eval_every, num=config.eval_num,
                metrics=config.eval_metrics, seed=config.seed,
            ))
            if config.plateau_minutes:
                result.append(zoo_callbacks.PlateauStop(
                    "fd", minutes=config.plateau_minutes, min_improvement=config.plateau_improvement,
                ))
        result.append(keras.callbacks.TensorBoard(tf.io.gfile.join(run_dir, "tensorboard")))
        if config.samples:
            result.append(zoo_callbacks.SampleGrid(
                tf.io.gfile.join(run_dir, "samples"), config.samples, seed=config.seed,
                log_dir=tf.io.gfile.join(run_dir, "tensorboard"),
            ))
    if config.minutes:
        result.append(zoo_callbacks.TimeBudget(config.minutes))
    return result


@dataclasses.dataclass
class RunResult:
    # A str for a URL outdir (gs://...); None on a worker other than the chief: it writes nothing.
    run_dir: pathlib.Path | str | None
    history: dict
    exports: dict


def run_preset_metadata(config, model, history, minutes, resumed, command):
    """What a run's `<run>/preset/metadata.json` records about its training."""
    family = zoo.FAMILIES[config.model]
    evaluated = {k: v[-1] for k, v in history.items() if k in ("fd", "kid", "is", "precision", "recall")}
    metadata = {
        "preset": config.preset,
        "description": family.presets.get(config.preset, {}).get("description", ""),
        "data": config.data,
        "images_seen": model.train_steps * config.batch_size,
        "training": {
            "command": command, "minutes": round(minutes, 2), "resumed": resumed,
            "machine": device.machine(), "config": dataclasses.asdict(config),
        },
    }
    if evaluated:
        metadata["last_evaluation"] = {"metrics": evaluated, "num": config.eval_num, "seed": config.seed}
    return metadata


def run(config, resume_dir=None, verbose="auto", command=None):
    """Trains (or resumes) a run and exports it.

    Args:
        config: a `TrainConfig` (ignored fields are filled by `resolved()`).
        resume_dir: an existing run directory to continue; `config` must then
            come from `load_run_config`.
        verbose: passed to `fit`.
        command: the command line that started the run, for the preset's metadata.

    Returns:
        `RunResult` with the run directory, the history and the export paths.

    Raises:
        ConfigError: an invalid option, or `resume_dir` is a finished run.
        ClusterError: a multi-worker run lost a worker.
    """
    config = config.resolved()
    validate(config)
    if resume_dir is not None:
        resume_dir = _storage_path(resume_dir)
        if (tf.io.gfile.exists(tf.io.gfile.join(resume_dir, "model.keras"))
                and not tf.io.gfile.exists(tf.io.gfile.join(resume_dir, "backup"))):
            # Its backup was deleted when it ended: resuming would start over
            # and overwrite the trained model.
            raise ConfigError(f"--resume {resume_dir}: the run has finished; start a new run")
    previous_policy = keras.mixed_precision.global_policy()
    previous_determinism = tf_framework_config.is_op_determinism_enabled()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            # Before any op of the run: TF then picks deterministic kernels (GPU
            # convolutions, reductions, scatters) and raises for ops that have none.
            tf.config.experimental.enable_op_determinism()
        strategy = make_strategy(config)
        chief = is_chief(strategy)
        if not chief:
            # Other workers write nothing. Resuming, they read the chief's
            # backup, which nobody writes before they have: the first save
            # comes after a step that every worker takes.
            run_dir = None
        elif resume_dir is not None:
            run_dir = resume_dir
        else:
            run_dir = new_run_dir(config.outdir, config)
        if chief:
            config_text = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
            _write_text(tf.io.gfile.join(run_dir, "config.json"), config_text)

        # A streamed spec's file list is kept in the run directory, for resuming.
        data = zoo_data.training_data(config.data, config.data_dir or None,
                                      index_dir=run_dir if chief else resume_dir, write_index=chief)
        model = build_model(config, strategy)
        stream = DataStream(config, model, data)
        callbacks = RunCallbacks(
            make_callbacks(config, run_dir if chief else resume_dir, write=chief),
            stream, model, verbose, config.epochs,
        )
        backup = next((c for c in callbacks.callbacks if isinstance(c, BackupAndRestore)), None)
        position = backup.restore() if backup is not None else None
        start = time.monotonic()
        try:
            for fit in plan_fits(position, stream.steps_per_epoch, config.epochs):
                callbacks.before_fit(fit)
                model.fit(
                    stream.dataset(),
                    initial_epoch=fit.initial_epoch,
                    epochs=fit.epochs,
                    steps_per_epoch=fit.steps_per_epoch,
                    callbacks=callbacks,
                    shuffle=False,  # the dataset shuffles itself
                    verbose=verbose,
                )
                if model.stop_training:
                    break
        except tf.errors.InvalidArgumentError as e:
            failure = data_streams.stream_failure(e)
            if failure is None:
                raise
            raise failure from None
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
            if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise
            what = ("lost a worker" if isinstance(e, tf.errors.UnavailableError) else
                    f"a collective op waited more than --collective-timeout {config.collective_timeout:g} s")
            where = run_dir or resume_dir or "<the chief's run directory>"
            raise ClusterError(
                f"{what} ({collective_failure(e)}); the chief's last backup is kept: "
                f"restart every worker with --resume {where}"
            ) from None
        callbacks.end()
        history = model.history.history
        exports = {}
        if chief:
            model.save(tf.io.gfile.join(run_dir, "model.keras"))  # Keras uploads a remote path
            _write_text(tf.io.gfile.join(run_dir, "history.json"), json.dumps(history, indent=2) + "\n")
            minutes = (time.monotonic() - start) / 60.0
            model.save_to_preset(tf.io.gfile.join(run_dir, "preset"), metadata=run_preset_metadata(
                config, model, history, minutes, resume_dir is not None, command))
            if config.export:
                from export import export_model

                exports = export_model(model, tf.io.gfile.join(run_dir, "export"), config.preset,
                                       quantize=config.quantize, serving_base_path=config.serving_base_path)
        return RunResult(run_dir, history, exports)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if config.deterministic and not previous_determinism:
            # A process-wide switch: restore it, as the policy (TF has no public disable).
            tf_framework_config.disable_op_determinism()
