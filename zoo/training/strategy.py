"""The `tf.distribute` side of a run: which strategy, which process writes, and what a failed
collective op says happened."""

import os
import re
import sys

import tensorflow as tf

from zoo.training.config import ConfigError


class ClusterError(RuntimeError):
    """A worker of a multi-worker run failed or became unreachable."""


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
