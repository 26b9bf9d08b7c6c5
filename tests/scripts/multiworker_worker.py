"""One process of the multi-worker golden test: `fit` from given initial weights.

Usage: python tests/scripts/multiworker_worker.py FAMILY PRESET STEPS GLOBAL_BATCH INIT_NPZ OUT
           [--precision POLICY] [--time-steps T]

With `TF_CONFIG` set it is one worker of a `MultiWorkerMirroredStrategy`
cluster; without it, the one-device reference. Either way it trains STEPS
steps of `fit` on the same deterministic global batches and writes
`OUT.npz` (model weights `w0..`, optimizer variables `o0..`) and `OUT.json`
(epoch logs, replica count, each held optimizer's iterations with the
optimizers' names, the model's `train_steps`, task, and `seen`: the rows
of the data this process's replica got at each step). `--precision` sets the
Keras mixed-precision policy; `--time-steps T` then trains T more steps and
adds their median wall time, `step_seconds`, to `OUT.json` (the weights
written are those after the STEPS golden steps).
"""

import argparse
import json
import os
import statistics

import keras
import numpy as np
import tensorflow as tf

import zoo
from golden_common import StepTimer, golden_optimizers


def images_dataset(model, steps, batch, seed):
    """`(image, row index)` batches of uniform noise images, the same in every process."""
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, (steps * batch, *model.image_shape)).astype("float32")
    # A structured batch, like most users' data, is what upstream's eager
    # reduce of the first batch cannot take; the index shows which rows a
    # replica got.
    return tf.data.Dataset.from_tensor_slices((images, np.arange(len(images)))).batch(
        batch, drop_remainder=True
    )


def main(family, preset, steps, batch, init_path, out, precision="float32", time_steps=0):
    keras.mixed_precision.set_global_policy(precision)
    multiworker = "TF_CONFIG" in os.environ
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multiworker else tf.distribute.get_strategy()
    with strategy.scope():
        model = zoo.get_model(family, preset)
        with np.load(init_path) as init:
            model.set_weights([init[f"w{i}"] for i in range(len(init.files))])
        model.compile(**golden_optimizers(model, family))
    dataset = images_dataset(model, steps, batch, seed=0)
    # Through the same `experimental_distribute_dataset` call `fit` makes.
    seen = [
        strategy.experimental_local_results(rows)[0].numpy().tolist()
        for _, rows in strategy.experimental_distribute_dataset(dataset)
    ]
    history = model.fit(dataset, epochs=1, verbose=0).history

    optimizer_vars = [v.numpy() for name in model.optimizer_targets() for v in getattr(model, name).variables]
    np.savez(
        out + ".npz",
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
        **{f"o{i}": v for i, v in enumerate(optimizer_vars)},
    )
    resolver = getattr(strategy, "cluster_resolver", None)
    info = {
        "logs": {k: float(v[-1]) for k, v in history.items()},
        "replicas": strategy.num_replicas_in_sync,
        "seen": seen,
        "iterations": [int(getattr(model, name).iterations.numpy()) for name in model.optimizer_targets()],
        "optimizers": list(model.optimizer_targets()),  # the names of `iterations`, in order
        "train_steps": model.train_steps,
        "task": [resolver.task_type, resolver.task_id] if resolver else None,
    }
    if time_steps:
        timer = StepTimer()
        model.fit(images_dataset(model, time_steps, batch, seed=1), epochs=1, verbose=0, callbacks=[timer])
        info["step_seconds"] = statistics.median(timer.seconds)
    with open(out + ".json", "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name, kind in (("family", str), ("preset", str), ("steps", int), ("batch", int),
                       ("init_path", str), ("out", str)):
        parser.add_argument(name, type=kind)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--time-steps", type=int, default=0)
    main(**vars(parser.parse_args()))
