"""A training run's options: `TrainConfig` (what `config.json` holds) and `validate`."""

import dataclasses
import json
import os
import pathlib

import tensorflow as tf

import zoo
from zoo import data as zoo_data
from zoo import precision

STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
# Global batch of a preset that names none (a preset entry's "batch_size" is its recipe's).
DEFAULT_BATCH_SIZE = 128
# Options that may change when a run is resumed; the rest define the run.
RESUMABLE_OVERRIDES = (
    "epochs", "steps", "minutes", "strategy", "cpu_replicas", "jit", "export", "quantize", "collective_timeout",
    "serving_base_path", "plateau_minutes", "plateau_improvement", "strict_data", "cooldown",
)


class ConfigError(ValueError):
    """An invalid training option."""


def init_preset_identity(init_from):
    """`(family name, preset name)` of an `--init-from` preset name or directory."""
    from zoo import presets

    try:
        directory, family = presets.resolve(init_from)
        if directory is not None:
            model_class = presets.model_class(directory)
            metadata = presets.read_metadata(directory)
            family = model_class
            # The run directory's and exports' name: the preset it was trained as, else the folder's.
            name = metadata.get("preset") or pathlib.Path(directory).resolve().name
        else:
            name = str(init_from)
        family_name = next(k for k, cls in zoo.FAMILIES.items() if issubclass(family, cls))
    except (presets.PresetError, StopIteration) as e:
        raise ConfigError(f"--init-from {init_from}: {e or 'not a zoo family model'}") from None
    return family_name, name


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (written to `config.json`)."""

    model: str = "dcgan"
    preset: str = ""  # "" = the family's default preset
    data: str = "fashion_mnist"
    data_dir: str = ""  # tfds data directory ("" = tfds default)
    shuffle_buffer: int = 10_000  # streamed records (or cached images) shuffled within a pass
    cache: str = ""  # streamed data: "" none, "memory", or a file path prefix for the decoded images
    strict_data: bool = False  # an undecodable file stops training instead of being skipped
    epochs: int = 1
    steps: int = 0  # steps per epoch; 0 = one pass over the data
    batch_size: int | None = None  # GLOBAL batch, split across replicas; None = the preset's
    strategy: str = "auto"
    cpu_replicas: int = 0  # >1 splits the CPU into that many mirrored devices
    precision: str = "float32"
    jit: bool | None = None  # XLA; None = the family's `xla_by_default`
    seed: int = 0
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism() (bit-exact on GPUs too)
    outdir: str = "runs"
    minutes: float = 0.0  # wall-time budget; 0 = none
    cooldown: float = 0.0  # the last fraction of `minutes` over which every learning rate falls to 0; 0 = none
    collective_timeout: float = 0.0  # multi-worker: seconds a collective op may wait; 0 = no limit
    backup_every: int = 0  # steps between backups; 0 = every epoch
    samples: int = 64  # sample grid size
    eval_every: int = 0  # epochs between sample-quality evaluations (zoo.metrics); 0 = none
    eval_num: int = 2000  # generated images per evaluation
    eval_metrics: str = "fd,kid"
    plateau_minutes: float = 0.0  # stop when the FD improved < plateau_improvement over this; 0 = never
    plateau_improvement: float = 0.05
    init_from: str = ""  # preset name or directory to fine-tune from; it fixes model and preset
    export: bool = True
    quantize: str = "none"
    serving_base_path: str = "/models"  # where TF Serving sees export/saved_model (models.config)

    def resolved(self):
        """A copy with defaults filled in (the preset)."""
        config = dataclasses.replace(self)
        if config.init_from:
            config.model, config.preset = init_preset_identity(config.init_from)
        if config.model in zoo.FAMILIES and not config.preset:
            config.preset = zoo.default_preset(config.model)
        if config.model in zoo.FAMILIES and config.batch_size is None:
            entry = zoo.FAMILIES[config.model].presets.get(config.preset, {})
            config.batch_size = entry.get("batch_size", DEFAULT_BATCH_SIZE)
        if config.model in zoo.FAMILIES and config.jit is None:
            config.jit = zoo.FAMILIES[config.model].xla_by_default()
        return config


def validate(config):
    """Raises `ConfigError` naming the first invalid option; checks data paths too."""
    def fail(message):
        raise ConfigError(message)

    if config.model not in zoo.FAMILIES:
        fail(f"--model {config.model!r} is unknown; choose from {sorted(zoo.FAMILIES)}")
    presets = zoo.FAMILIES[config.model].presets
    if not config.init_from and config.preset not in presets:  # --init-from: the preset's config.json
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
        if config.plateau_minutes and "fd" not in names:
            fail("--plateau-minutes watches the FD: add fd to --eval-metrics")
        if "nll" in names and config.model != "vae":
            fail(f"--eval-metrics nll is the VAE's likelihood; {config.model} has none")
    if not 0 <= config.cooldown <= 1:
        fail(f"--cooldown is a fraction of --minutes in (0, 1], got {config.cooldown}")
    if config.cooldown and not config.minutes:
        fail("--cooldown needs --minutes (the rates reach 0 when the time is up)")
    if config.plateau_minutes < 0 or not 0 <= config.plateau_improvement < 1:
        fail(f"--plateau-minutes must be >= 0 and --plateau-improvement in [0, 1), got "
             f"{config.plateau_minutes} and {config.plateau_improvement}")
    if config.plateau_minutes and not config.eval_every:
        fail("--plateau-minutes needs --eval-every (it watches the evaluated FD)")
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
        parsed = zoo_data.check_spec(config.data, config.data_dir or None)
    except zoo_data.DataError as e:
        fail(str(e))
    if not isinstance(config.shuffle_buffer, int) or config.shuffle_buffer < 1:
        fail(f"--shuffle-buffer must be a positive integer, got {config.shuffle_buffer!r}")
    if config.cache and not parsed.streamed:
        fail(f"--cache goes with streamed data (folder:, tfds:, tfrecord:); {config.data} is in memory")
    if not isinstance(config.strict_data, bool):
        fail(f"--strict-data is a flag (true or false), got {config.strict_data!r}")
