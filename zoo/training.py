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
import os
import pathlib
import re
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

import zoo
from zoo import callbacks as zoo_callbacks
from zoo import data as zoo_data

STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
# Options that may change when a run is resumed; the rest define the run.
RESUMABLE_OVERRIDES = ("epochs", "steps", "minutes", "strategy", "cpu_replicas", "jit", "export", "quantize")


class ConfigError(ValueError):
    """An invalid training option."""


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
    jit: bool = True  # XLA: 1.27x faster for the default preset on this CPU
    seed: int = 0
    outdir: str = "runs"
    minutes: float = 0.0  # wall-time budget; 0 = none
    backup_every: int = 0  # steps between backups; 0 = every epoch
    samples: int = 64  # sample grid size
    export: bool = True
    quantize: str = "none"

    def resolved(self):
        """A copy with defaults filled in (the preset)."""
        config = dataclasses.replace(self)
        if config.model in zoo.FAMILIES and not config.preset:
            config.preset = zoo.default_preset(config.model)
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
    for name in ("steps", "backup_every", "cpu_replicas", "samples"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 0:
            fail(f"--{name.replace('_', '-')} must be a non-negative integer, got {getattr(config, name)!r}")
    if config.minutes < 0:
        fail(f"--minutes must be >= 0, got {config.minutes}")
    if config.strategy not in STRATEGIES:
        fail(f"--strategy {config.strategy!r} is unknown; choose from {STRATEGIES}")
    if config.precision not in PRECISIONS:
        fail(f"--precision {config.precision!r} is unknown; choose from {PRECISIONS}")
    if config.quantize not in QUANTIZE_MODES:
        fail(f"--quantize {config.quantize!r} is unknown; choose from {QUANTIZE_MODES}")
    if config.cpu_replicas == 1 or (config.cpu_replicas > 1 and config.strategy != "mirrored"):
        fail("--cpu-replicas N (N >= 2) goes with --strategy mirrored")
    if config.strategy == "multiworker" and "TF_CONFIG" not in os.environ:
        fail("--strategy multiworker needs the TF_CONFIG environment variable (see README)")
    replicas = config.cpu_replicas or 1
    if config.strategy in ("multiworker", "auto") and "TF_CONFIG" in os.environ:
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
        return tf.distribute.MultiWorkerMirroredStrategy()
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
    """True on the worker that writes checkpoints and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


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
        model.compile(jit_compile=config.jit and xla_supported(strategy))
    return model


def make_callbacks(config, run_dir, write):
    """NaN guard first (a bad step is never backed up), then backup, then monitors."""
    result = [zoo_callbacks.NonFiniteGuard()]
    result.append(zoo_callbacks.BackupAndRestore(
        str(run_dir / "backup"), save_freq=config.backup_every or "epoch"
    ))
    result.append(zoo_callbacks.Throughput(config.batch_size))
    if write:
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
    run_dir: pathlib.Path
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
    """
    config = config.resolved()
    validate(config)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    worker_dir = None
    try:
        keras.utils.set_random_seed(config.seed)
        strategy = make_strategy(config)
        chief = is_chief(strategy)
        if not chief:
            # Other workers write to a temporary folder removed at the end
            # (also on failure), never to the chief's run directory; resuming,
            # they start from a copy of its backup so that every worker
            # restores the same state.
            run_dir = worker_dir = pathlib.Path(tempfile.mkdtemp(prefix="zoo-worker-"))
            if resume_dir is not None and (pathlib.Path(resume_dir) / "backup").is_dir():
                shutil.copytree(pathlib.Path(resume_dir) / "backup", run_dir / "backup")
        elif resume_dir is not None:
            run_dir = pathlib.Path(resume_dir)
        else:
            run_dir = new_run_dir(config.outdir, config)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")

        arrays = zoo_data.load_arrays(config.data, config.data_dir or None)
        model = build_model(config, strategy)
        dataset = zoo_data.make_dataset(
            config.data, model.image_size, model.channels, config.batch_size,
            repeat=bool(config.steps), seed=config.seed, arrays=arrays,
        )
        history = model.fit(
            dataset,
            epochs=config.epochs,
            steps_per_epoch=config.steps or None,
            callbacks=make_callbacks(config, run_dir, write=chief),
            shuffle=False,  # the dataset shuffles itself
            verbose=verbose,
        )
        exports = {}
        if chief:
            model.save(run_dir / "model.keras")
            (run_dir / "history.json").write_text(json.dumps(history.history, indent=2) + "\n")
            if config.export:
                from export import export_model

                exports = export_model(model, run_dir / "export", config.preset, quantize=config.quantize)
        return RunResult(run_dir, history.history, exports)
    finally:
        if worker_dir is not None:
            shutil.rmtree(worker_dir, ignore_errors=True)
        keras.mixed_precision.set_global_policy(previous_policy)
