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
import functools
import json
import os
import pathlib
import re
import sys
import typing

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config

import zoo
from zoo import callbacks as zoo_callbacks
from zoo import data as zoo_data
from zoo import precision

STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
# Options that may change when a run is resumed; the rest define the run.
RESUMABLE_OVERRIDES = (
    "epochs", "steps", "minutes", "strategy", "cpu_replicas", "jit", "export", "quantize", "collective_timeout",
    "serving_base_path",
)


class ConfigError(ValueError):
    """An invalid training option."""


class ClusterError(RuntimeError):
    """A worker of a multi-worker run failed or became unreachable."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (written to `config.json`)."""

    model: str = "dcgan"
    preset: str = ""  # "" = the family's default preset
    data: str = "fashion_mnist"
    data_dir: str = ""  # tfds data directory ("" = tfds default)
    epochs: int = 1
    steps: int = 0  # steps per epoch; 0 = one pass over the data
    batch_size: int = 128  # GLOBAL batch, split across replicas
    strategy: str = "auto"
    cpu_replicas: int = 0  # >1 splits the CPU into that many mirrored devices
    precision: str = "float32"
    jit: bool | None = None  # XLA; None = the family's `xla_by_default`
    seed: int = 0
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism() (bit-exact on GPUs too)
    outdir: str = "runs"
    minutes: float = 0.0  # wall-time budget; 0 = none
    collective_timeout: float = 0.0  # multi-worker: seconds a collective op may wait; 0 = no limit
    backup_every: int = 0  # steps between backups; 0 = every epoch
    samples: int = 64  # sample grid size
    eval_every: int = 0  # epochs between sample-quality evaluations (zoo.metrics); 0 = none
    eval_num: int = 2000  # generated images per evaluation
    eval_metrics: str = "fd,kid"
    export: bool = True
    quantize: str = "none"
    serving_base_path: str = "/models"  # where TF Serving sees export/saved_model (models.config)

    def resolved(self):
        """A copy with defaults filled in (the preset)."""
        config = dataclasses.replace(self)
        if config.model in zoo.FAMILIES and not config.preset:
            config.preset = zoo.default_preset(config.model)
        if config.model in zoo.FAMILIES and config.jit is None:
            config.jit = zoo.FAMILIES[config.model].xla_by_default
        return config


def validate(config):
    """Raises `ConfigError` naming the first invalid option; checks data paths too."""
    def fail(message):
        raise ConfigError(message)

    if config.model not in zoo.FAMILIES:
        fail(f"--model {config.model!r} is unknown; choose from {sorted(zoo.FAMILIES)}")
    presets = zoo.FAMILIES[config.model].presets
    if config.preset not in presets:
        fail(f"--preset {config.preset!r} is not a {config.model} preset; choose from {sorted(presets)}")
    for name in ("epochs", "batch_size"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(config, name)!r}")
    for name in ("steps", "backup_every", "cpu_replicas", "samples", "eval_every"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 0:
            fail(f"--{name.replace('_', '-')} must be a non-negative integer, got {getattr(config, name)!r}")
    for name in ("minutes", "collective_timeout"):
        if getattr(config, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    if config.eval_every:
        from zoo import metrics

        if config.data != "fashion_mnist":
            # The default feature extractor is the committed Fashion-MNIST classifier.
            fail("--eval-every needs --data fashion_mnist; for other data use "
                 "zoo.metrics.MetricsCallback with an extractor that fits it")
        if not isinstance(config.eval_num, int) or config.eval_num < 2:
            fail(f"--eval-num must be an integer >= 2, got {config.eval_num!r}")
        try:
            names = metrics.evaluation.check_metrics(config.eval_metrics)
        except ValueError as e:
            fail(f"--eval-metrics: {e}")
        if "nll" in names and config.model != "vae":
            fail(f"--eval-metrics nll is the VAE's likelihood; {config.model} has none")
    if config.strategy not in STRATEGIES:
        fail(f"--strategy {config.strategy!r} is unknown; choose from {STRATEGIES}")
    if config.precision not in PRECISIONS:
        fail(f"--precision {config.precision!r} is unknown; choose from {PRECISIONS}")
    if config.quantize not in QUANTIZE_MODES:
        fail(f"--quantize {config.quantize!r} is unknown; choose from {QUANTIZE_MODES}")
    if not isinstance(config.deterministic, bool):
        fail(f"--deterministic is a flag (true or false), got {config.deterministic!r}")
    if not isinstance(config.serving_base_path, str) or not config.serving_base_path:
        fail(f"--serving-base-path must be a non-empty path, got {config.serving_base_path!r}")
    if (config.precision == "mixed_bfloat16" and config.strategy != "tpu"
            and not tf.config.list_physical_devices("GPU") and not precision.cpu_has_native_bfloat16()):
        # The models sum their 16-bit gradients in float32 (zoo.precision;
        # TensorFlow's CPU BiasAddGrad sums bfloat16 in bfloat16), so bfloat16
        # trains correctly on CPU; without bfloat16 instructions the CPU can
        # only convert to and from float32, which cannot pay: refused.
        fail("--precision mixed_bfloat16 needs a GPU, a TPU or a CPU with bfloat16 instructions "
             f"({' or '.join(precision.NATIVE_BFLOAT16_FLAGS)} in /proc/cpuinfo), and this CPU has "
             "none; use float32 or mixed_float16")
    if config.cpu_replicas == 1 or (config.cpu_replicas > 1 and config.strategy != "mirrored"):
        fail("--cpu-replicas N (N >= 2) goes with --strategy mirrored")
    if config.strategy == "multiworker" and "TF_CONFIG" not in os.environ:
        fail("--strategy multiworker needs the TF_CONFIG environment variable (see README)")
    multiworker = config.strategy == "multiworker" or (config.strategy == "auto" and "TF_CONFIG" in os.environ)
    if config.collective_timeout and not multiworker:
        fail("--collective-timeout goes with --strategy multiworker")
    replicas = config.cpu_replicas or 1
    if multiworker and "TF_CONFIG" in os.environ:
        # The per-replica noise slices and global-batch losses assume equal
        # local batches; tf.data would split an uneven batch unevenly.
        try:
            cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
        except (ValueError, AttributeError):
            fail("TF_CONFIG is not a JSON object with a 'cluster' (see README)")
        replicas = len(cluster.get("chief", [])) + len(cluster.get("worker", [])) or 1
        if config.minutes:
            # Each worker would stop by its own clock, at different steps, and
            # the others would wait in a collective forever.
            fail("--minutes does not work with several workers; use --epochs/--steps")
    if config.batch_size % replicas:
        fail(f"--batch-size {config.batch_size} does not split evenly over {replicas} replicas")
    try:
        zoo_data.check_spec(config.data, config.data_dir or None)
    except zoo_data.DataError as e:
        fail(str(e))


def make_strategy(config):
    """The `tf.distribute` strategy a config asks for."""
    name = config.strategy
    if name == "auto":
        if "TF_CONFIG" in os.environ:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"
    if name == "one":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if config.cpu_replicas > 1:
            return tf.distribute.MirroredStrategy(_logical_cpus(config.cpu_replicas))
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # A per-op timeout starts a thread per collective op: seen 1.6x the
        # step time of dcgan_tiny on 2 workers, hence off by default.
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=config.collective_timeout or None
            )
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ConfigError(f"--strategy tpu: no TPU found ({str(e).splitlines()[0]})") from None
    return tf.distribute.TPUStrategy(resolver)


def _logical_cpus(n):
    """Splits the physical CPU into `n` logical devices (before TF starts)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is None or len(current) != n:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * n
            )
        except RuntimeError:
            raise ConfigError(
                f"--cpu-replicas {n}: TensorFlow's devices are already initialized in this "
                "process; set it before any TensorFlow op runs"
            ) from None
    return [f"/cpu:{i}" for i in range(n)]


def is_chief(strategy):
    """True on the one process that writes the run directory, backups and exports.

    TensorFlow's own answer (`extended.should_checkpoint`): in a cluster, the
    `chief` task when there is one, else `worker` 0; a single process is its
    own chief. Deciding from the task alone made `worker` 0 a second chief
    next to a `chief` task.
    """
    return bool(strategy.extended.should_checkpoint)


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


def xla_supported(strategy):
    """False for several replicas on CPU devices, where XLA cannot compile the step.

    Seen with 2 logical CPUs: "Trying to access resource ... located in device
    CPU:1 from device CPU:0". One device, GPUs and TPUs compile.
    """
    if strategy.num_replicas_in_sync == 1:
        return True
    if all("CPU" in d.upper() for d in strategy.extended.worker_devices):
        print("note: XLA is off: it cannot compile one step across several CPU devices",
              file=sys.stderr)
        return False
    return True


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
        result.append(zoo_callbacks.BackupAndRestore(
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


class DataStream:
    """The run's training batches as one endless, deterministic stream.

    Epoch `e` is batches `[e * steps_per_epoch, (e + 1) * steps_per_epoch)`
    of it: with `--steps`, of the shuffled data repeated; without, one pass
    (the remainder of a pass dropped), reshuffled every pass. A resumed run
    continues at the batch its backup names.

    `dataset()` starts where `seek()` last pointed when an iterator is
    created, not when it is built. That matters under a strategy: Keras'
    `fit` first reads one batch from an iterator of its own to build the
    model, and every iterator of a reshuffling `tf.data` pipeline advances
    one shared shuffle seed per pass it enters. A build pass that skipped to
    batch `step` would enter more passes than in the uninterrupted run and
    change every later shuffle; seeking only after it keeps them equal.

    Args:
        config: the `TrainConfig`.
        model: the family model (its image size and channels).
        arrays: `(images, labels)` from `zoo.data.load_arrays`.
    """

    def __init__(self, config, model, arrays):
        self._repeat_passes = not config.steps
        self._make = functools.partial(
            zoo_data.make_dataset, config.data, model.image_size, model.channels,
            config.batch_size, repeat=bool(config.steps), seed=config.seed, arrays=arrays,
        )
        self.steps_per_epoch = config.steps or int(self._make().cardinality())
        self._start = tf.Variable(0, dtype=tf.int64, trainable=False)

    def seek(self, step):
        """Iterators created from now on start at batch `step`."""
        self._start.assign(step)

    def dataset(self):
        """A new pipeline: its shuffle seeds restart as in a new run."""
        batches = self._make()
        if self._repeat_passes:
            batches = batches.repeat()
        return tf.data.Dataset.range(1).flat_map(lambda _: batches.skip(self._start.read_value()))


class Fit(typing.NamedTuple):
    """One `model.fit` call of a run: epochs `[initial_epoch, epochs)` from batch `start` of the stream."""

    initial_epoch: int
    epochs: int
    steps_per_epoch: int
    start: int


def plan_fits(position, steps_per_epoch, epochs):
    """The `fit` calls that run (or continue) a run.

    Args:
        position: the restored `zoo.callbacks.Position`, or None.
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


# Lines of a failed collective's message that do not say what happened.
_TRACE_LINES = ("Graph execution error", "Detected at node", "File ", "[[", "The error could be from",
                "Additional GRPC error", ":UNKNOWN:")


def collective_failure(error):
    """What a failed collective op's `tf.errors.OpError` says happened, in one line."""
    lines = [re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line.strip()) for line in error.message.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_TRACE_LINES)]
    if not lines:
        return type(error).__name__
    cause = lines[0].split("aborted by:", 1)[-1].strip()
    # "...tasks are unhealthy (stopped sending heartbeats):" names them on the next line.
    return f"{cause} {lines[1]}" if cause.endswith(":") and len(lines) > 1 else cause


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
        backup = next((c for c in callbacks.callbacks if isinstance(c, zoo_callbacks.BackupAndRestore)), None)
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
