"""Golden check: `fit` on 2 logical CPUs under MirroredStrategy vs one device.

Usage: python tests/scripts/golden_step.py FAMILY PRESET STEPS GLOBAL_BATCH
Prints one JSON line: max weight difference, both runs' logs, replica count.
Logical devices must be configured before TensorFlow runs any op, hence a script.
"""

import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402


def main(family, preset, steps, batch):
    keras.utils.set_random_seed(0)
    probe = zoo.get_model(family, preset)
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (steps * batch, *probe.image_shape)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True)
    initial = probe.get_weights()

    def train(strategy):
        with strategy.scope():
            model = zoo.get_model(family, preset)
            model.set_weights(initial)
            model.compile()
        history = model.fit(dataset, epochs=1, verbose=0).history
        return model, {k: float(v[0]) for k, v in history.items()}, strategy.num_replicas_in_sync

    one, one_logs, _ = train(tf.distribute.get_strategy())
    two, two_logs, replicas = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())]
    changed = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, one.get_weights()))
    print(json.dumps({
        "max_weight_diff": max(diffs), "weight_change": changed, "replicas": replicas,
        "one": one_logs, "two": two_logs,
        "steps": [int(keras.ops.convert_to_numpy(getattr(m, n).iterations))
                  for m in (one, two) for n in m.optimizer_targets()],
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
