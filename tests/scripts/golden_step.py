"""Golden check: `fit` on 2 logical CPUs under MirroredStrategy vs one device.

Usage: python tests/scripts/golden_step.py FAMILY PRESET STEPS GLOBAL_BATCH
           [--precision POLICY] [--sgd] [--save OUT.npz] [--time-steps T]

Prints one JSON line: max weight difference, both runs' logs, replica count.
`--precision` sets the Keras mixed-precision policy of both runs; `--sgd`
trains with `golden_common.golden_optimizers` (SGD, as `multiworker_worker.py`)
instead of the family's default optimizers; `--save` writes the initial weights and both
runs' weights after the STEPS steps (`init<i>`, `one<i>`, `two<i>`);
`--time-steps T` then trains each model T more steps and adds the median
step wall times, `step_seconds: {"one": s, "two": s}`.
Logical devices must be configured before TensorFlow runs any op, hence a script.
"""

import argparse
import json
import pathlib
import statistics
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # also when run by `runpy.run_path`
from golden_common import StepTimer, golden_optimizers  # noqa: E402


def main(family, preset, steps, batch, precision="float32", sgd=False, save=None, time_steps=0):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    probe = zoo.get_model(family, preset)
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, ((steps + time_steps) * batch, *probe.image_shape)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(images[: steps * batch]).batch(batch, drop_remainder=True)
    timing = tf.data.Dataset.from_tensor_slices(images[steps * batch :]).batch(batch, drop_remainder=True)
    initial = probe.get_weights()

    def train(strategy):
        with strategy.scope():
            model = zoo.get_model(family, preset)
            model.set_weights(initial)
            model.compile(**(golden_optimizers(model, family) if sgd else {}))
        history = model.fit(dataset, epochs=1, verbose=0).history
        return model, {k: float(v[0]) for k, v in history.items()}, strategy.num_replicas_in_sync

    one, one_logs, _ = train(tf.distribute.get_strategy())
    two, two_logs, replicas = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())]
    # Float weights only: StyleGAN2's integer step counter moves by itself.
    changed = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, one.get_weights()) if a.dtype.kind == "f")
    result = {
        "max_weight_diff": max(diffs), "weight_change": changed, "replicas": replicas,
        "one": one_logs, "two": two_logs,
        "steps": [int(keras.ops.convert_to_numpy(getattr(m, n).iterations))
                  for m in (one, two) for n in m.optimizer_targets()],
    }
    if save:
        np.savez(save, **{f"{name}{i}": w for name, weights in
                          (("init", initial), ("one", one.get_weights()), ("two", two.get_weights()))
                          for i, w in enumerate(weights)})
    if time_steps:
        result["step_seconds"] = {}
        for name, model in (("one", one), ("two", two)):
            timer = StepTimer()
            model.fit(timing, epochs=1, verbose=0, callbacks=[timer])
            result["step_seconds"][name] = statistics.median(timer.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name, kind in (("family", str), ("preset", str), ("steps", int), ("batch", int)):
        parser.add_argument(name, type=kind)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--sgd", action="store_true")
    parser.add_argument("--save")
    parser.add_argument("--time-steps", type=int, default=0)
    main(**vars(parser.parse_args()))
