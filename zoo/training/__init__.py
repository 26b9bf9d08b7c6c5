"""Training runs: what `train.py` does, one topic per module.

    config.py    TrainConfig (what config.json holds), validate, ConfigError
    strategy.py  the tf.distribute strategy, the chief, XLA under it, failed collectives
    resume.py    backups and mid-epoch resume: BackupAndRestore, Position, DataStream, plan_fits
    runner.py    the run directory, the callbacks and `run`: config -> strategy -> data ->
                 model.fit -> run directory -> exports

The names below are the package's API (`from zoo import training; training.run(...)`).
"""

from zoo.training.config import (
    DEFAULT_BATCH_SIZE, PRECISIONS, QUANTIZE_MODES, RESUMABLE_OVERRIDES, STRATEGIES, ConfigError, TrainConfig,
    validate,
)
from zoo.training.resume import (
    BackupAndRestore, BackupError, DataStream, Fit, Position, RunCallbacks, plan_fits,
)
from zoo.training.runner import RunResult, build_model, load_run_config, make_callbacks, new_run_dir, run
from zoo.training.strategy import (
    ClusterError, collective_failure, is_chief, make_strategy, xla_supported,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "PRECISIONS", "QUANTIZE_MODES", "RESUMABLE_OVERRIDES", "STRATEGIES", "BackupAndRestore",
    "BackupError", "ClusterError", "ConfigError", "DataStream", "Fit", "Position", "RunCallbacks", "RunResult",
    "TrainConfig", "build_model", "collective_failure", "is_chief", "load_run_config", "make_callbacks",
    "make_strategy", "new_run_dir", "plan_fits", "run", "validate", "xla_supported",
]
