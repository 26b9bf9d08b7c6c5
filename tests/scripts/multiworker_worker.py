"""One process of the multi-worker golden test: `fit` from given initial weights.

Usage: python tests/scripts/multiworker_worker.py FAMILY PRESET STEPS GLOBAL_BATCH INIT_NPZ OUT

With `TF_CONFIG` set it is one worker of a `MultiWorkerMirroredStrategy`
cluster; without it, the one-device reference. Either way it trains STEPS
steps of `fit` on the same deterministic global batches and writes
`OUT.npz` (model weights `w0..`, optimizer variables `o0..`) and `OUT.json`
(epoch logs, replica count, optimizer iterations, task, and `seen`: the rows
of the data this process's replica got at each step).
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import zoo


def main(family, preset, steps, batch, init_path, out):
    multiworker = "TF_CONFIG" in os.environ
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multiworker else tf.distribute.get_strategy()
    with strategy.scope():
        model = zoo.get_model(family, preset)
        with np.load(init_path) as init:
            model.set_weights([init[f"w{i}"] for i in range(len(init.files))])
        # SGD: its update is linear in the gradient, so summation-order noise
        # stays at float rounding; Adam divides by sqrt(v) and blows up the
        # rounding of near-zero gradients to a visible fraction of its step.
        model.compile(**{name: keras.optimizers.SGD(0.05) for name in model.optimizer_targets()})
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (steps * batch, *model.image_shape)).astype("float32")
    # (image, row index) pairs: a structured batch, like most users' data,
    # is what upstream's eager reduce of the first batch cannot take; the
    # index shows which rows a replica got.
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(len(images)))).batch(
        batch, drop_remainder=True
    )
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
    with open(out + ".json", "w") as f:
        json.dump({
            "logs": {k: float(v[-1]) for k, v in history.items()},
            "replicas": strategy.num_replicas_in_sync,
            "seen": seen,
            "iterations": [int(getattr(model, name).iterations.numpy()) for name in model.optimizer_targets()],
            "task": [resolver.task_type, resolver.task_id] if resolver else None,
        }, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
