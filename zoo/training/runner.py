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
        export/saved_model/<preset>/<version>/, export/tflite/<preset>.tflite
"""

import dataclasses
import json
import pathlib
import re

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config

import zoo
from zoo import callbacks as zoo_callbacks
from zoo import data as zoo_data
from zoo.training.config import RESUMABLE_OVERRIDES, ConfigError, TrainConfig, validate
from zoo.training.resume import BackupAndRestore, DataStream, RunCallbacks, plan_fits
from zoo.training.strategy import ClusterError, collective_failure, is_chief, make_strategy, xla_supported


def new_run_dir(outdir, config):
    """Creates `<outdir>/<NNNNN>-<family>-<preset>` with the next free number."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    number = max(numbers, default=-1) + 1
    run_dir = outdir / f"{number:05d}-{config.model}-{config.preset}"
    run_dir.mkdir()
    return run_dir


def load_run_config(run_dir, overrides=None):
    """Reads `<run_dir>/config.json`, applying the resumable `overrides`."""
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    try:
        saved = json.loads(path.read_text())
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
    """The compiled family model of `config`, created in `strategy`'s scope."""
    with strategy.scope():
        model = zoo.get_model(config.model, config.preset, seed=config.seed)
        jit = type(model).xla_by_default if config.jit is None else config.jit
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
    if run_dir is not None:
        result.append(BackupAndRestore(
            str(run_dir / "backup"), save_freq=config.backup_every or "epoch", write=write,
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
        result.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
        if config.samples:
            result.append(zoo_callbacks.SampleGrid(
                run_dir / "samples", config.samples, seed=config.seed,
                log_dir=run_dir / "tensorboard",
            ))
    if config.minutes:
        result.append(zoo_callbacks.TimeBudget(config.minutes))
    return result


@dataclasses.dataclass
class RunResult:
    run_dir: pathlib.Path | None  # None on a worker other than the chief: it writes nothing
    history: dict
    exports: dict


def run(config, resume_dir=None, verbose="auto"):
    """Trains (or resumes) a run and exports it.

    Args:
        config: a `TrainConfig` (ignored fields are filled by `resolved()`).
        resume_dir: an existing run directory to continue; `config` must then
            come from `load_run_config`.
        verbose: passed to `fit`.

    Returns:
        `RunResult` with the run directory, the history and the export paths.

    Raises:
        ConfigError: an invalid option, or `resume_dir` is a finished run.
        ClusterError: a multi-worker run lost a worker.
    """
    config = config.resolved()
    validate(config)
    if resume_dir is not None:
        resume_dir = pathlib.Path(resume_dir)
        if (resume_dir / "model.keras").exists() and not (resume_dir / "backup").exists():
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
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")

        arrays = zoo_data.load_arrays(config.data, config.data_dir or None)
        model = build_model(config, strategy)
        stream = DataStream(config, model, arrays)
        callbacks = RunCallbacks(
            make_callbacks(config, run_dir if chief else resume_dir, write=chief),
            stream, model, verbose, config.epochs,
        )
        backup = next((c for c in callbacks.callbacks if isinstance(c, BackupAndRestore)), None)
        position = backup.restore() if backup is not None else None
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
            model.save(run_dir / "model.keras")
            (run_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
            if config.export:
                from export import export_model

                exports = export_model(model, run_dir / "export", config.preset, quantize=config.quantize,
                                       serving_base_path=config.serving_base_path)
        return RunResult(run_dir, history, exports)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if config.deterministic and not previous_determinism:
            # A process-wide switch: restore it, as the policy (TF has no public disable).
            tf_framework_config.disable_op_determinism()
