"""The machine a model trains on: CPU model and flags, accelerators, and the kind that picks defaults.

Defaults that depend on the hardware (whether XLA pays, whether bfloat16
can) are looked up by `device_kind()`, so the choice made by measurement on
one machine type is applied only there. docs/results.md ("XLA by device")
says what was measured where.
"""

import os
import platform

import tensorflow as tf

# The kinds `device_kind` returns; a family's `xla_by_device` has one entry per kind.
DEVICE_KINDS = ("gpu", "cpu-amx", "cpu")


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """`(model name, flags)` of the CPU, read from Linux' `cpuinfo`.

    Another OS or architecture (an unreadable file, no `flags` lines) gives
    `("", frozenset())`.
    """
    name, flags = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags":
                    flags.update(value.split())
    except OSError:
        pass
    return name, frozenset(flags)


def device_kind(cpuinfo="/proc/cpuinfo"):
    """`"gpu"` when TensorFlow sees a GPU; else `"cpu-amx"` on x86 CPUs with AMX tiles, else `"cpu"`.

    AMX CPUs are a kind of their own because oneDNN's non-XLA kernels use its
    tiles and XLA's CPU backend does not, so XLA's trade-off can differ there
    (measured so far: a loss on both CPU kinds).
    """
    if tf.config.list_physical_devices("GPU"):
        return "gpu"
    return "cpu-amx" if "amx_tile" in cpu_info(cpuinfo)[1] else "cpu"


def machine():
    """What a training machine is: CPU model, cores, device kind, accelerators, OS (for metadata)."""
    return {
        "cpu": cpu_info()[0] or platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "kind": device_kind(), "system": platform.platform(),
        "accelerators": [d.name for d in tf.config.list_physical_devices() if d.device_type != "CPU"],
    }
