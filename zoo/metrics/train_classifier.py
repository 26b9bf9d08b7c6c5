"""Trains the Fashion-MNIST classifier the metrics use and writes its weights.

    python -m zoo.metrics.train_classifier [--epochs 10] [--seed 0] [--output PATH]

Trains `zoo.metrics.classifier.build_classifier()` on the 60,000 training
images (Adam, cosine-decayed learning rate, batch 128, no augmentation: the
features should notice a flipped or shifted garment), then prints one JSON
line with the test accuracy, wall and CPU seconds. The defaults write the
committed `zoo/metrics/weights/fashion_mnist_classifier.weights.h5`.
The test split is used for the final accuracy only.
"""

import argparse
import json
import pathlib
import sys
import time

import keras

from zoo import data
from zoo.metrics.classifier import WEIGHTS, build_classifier, pad_to_32


def parse_args(argv=None):
    """Parses and checks the options."""
    p = argparse.ArgumentParser(prog="python -m zoo.metrics.train_classifier",
                                description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=2e-3, help="initial; cosine decay to 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=pathlib.Path, default=WEIGHTS)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0:
        p.error("--epochs, --batch-size and --learning-rate must be positive")
    if not args.output.name.endswith(".weights.h5"):
        p.error(f"--output must end in .weights.h5, got {args.output}")
    return args


def load_split(split):
    """`(images [N, 32, 32, 1] float32 in [0, 1], labels [N])` of a Fashion-MNIST split."""
    images, labels = data.load_arrays(f"fashion_mnist:{split}")
    return keras.ops.convert_to_numpy(pad_to_32(images / 255.0)), labels


def main(argv=None):
    """Trains, writes the weights, prints the JSON line; returns the exit code.

    Example:

    ```python
    main(["--epochs", "1", "--output", "/tmp/classifier.weights.h5"])  # a quick, weaker copy
    ```
    """
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    (x, y), (test_x, test_y) = load_split("train"), load_split("test")
    model = build_classifier()
    steps = args.epochs * -(-len(x) // args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # XLA was 4x slower than the TF kernels for this model on the CPU
    )
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    accuracy = float(model.evaluate(test_x, test_y, batch_size=1000, verbose=0, return_dict=True)["accuracy"])
    # A compiled model's weights file also holds Adam's two moments (3x the size): save a clean copy.
    clean = build_classifier()
    clean.set_weights(model.get_weights())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    clean.save_weights(args.output)
    print(json.dumps({
        "test_accuracy": accuracy, "epochs": args.epochs, "seed": args.seed,
        "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
        "weights": str(args.output), "bytes": args.output.stat().st_size,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
