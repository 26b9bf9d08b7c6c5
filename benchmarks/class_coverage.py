"""Which Fashion-MNIST classes a trained generator draws, as seen by a small judge CNN.

    python benchmarks/class_coverage.py runs/00000-dcgan-dcgan_fashion_mnist --num 2000

Trains a small classifier on the Fashion-MNIST training split (a few epochs,
its test accuracy printed), generates `--num` images from the run's model
(`model.keras`, latents from `--seed`), and prints the share of each
predicted class and the mean confidence. A stand-in until the project's
sample-quality metrics exist (issue 3): it shows mode coverage, not fidelity.
"""

import argparse
import json
import pathlib
import sys

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def train_judge(epochs, seed):
    """A small CNN on 32x32 Fashion-MNIST in [0, 1]; returns (model, test accuracy)."""
    import keras

    from zoo import data

    keras.utils.set_random_seed(seed)

    def load(split):
        images, labels = data.load_arrays(f"fashion_mnist:{split}")
        ds = data.make_dataset(f"fashion_mnist:{split}", 32, 1, len(images), shuffle=False,
                               arrays=(images, labels))
        return (next(iter(ds)).numpy() + 1) / 2, labels  # [N, 32, 32, 1] in [0, 1]

    (x, y), (tx, ty) = load("train"), load("test")
    judge = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    judge.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    judge.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return judge, float(judge.evaluate(tx, ty, verbose=0)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run directory (model.keras) or a .keras file")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--judge-epochs", type=int, default=3)
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    source = pathlib.Path(args.run)
    keras_path = source / "model.keras" if source.is_dir() else source
    if not keras_path.is_file():
        print(f"error: no model at {keras_path}", file=sys.stderr)
        return 2

    import keras
    import numpy as np

    import zoo  # noqa: F401  registers the model classes

    model = keras.saving.load_model(keras_path)
    if model.image_shape != (32, 32, 1):
        print(f"error: the judge takes 32x32x1 images, the model makes {model.image_shape}",
              file=sys.stderr)
        return 2
    judge, accuracy = train_judge(args.judge_epochs, args.seed)
    images = np.concatenate([
        model.generate(model.sample_latents(min(500, args.num - i), seed=args.seed + i)).numpy()
        for i in range(0, args.num, 500)
    ])
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(judge.predict(images, verbose=0)))
    counts = np.bincount(probs.argmax(axis=1), minlength=10)
    result = {
        "model": str(keras_path), "num": args.num, "judge_test_accuracy": accuracy,
        "share": {c: float(n) / args.num for c, n in zip(CLASSES, counts)},
        "mean_confidence": float(probs.max(axis=1).mean()),
        "classes_seen": int((counts > 0).sum()),
    }
    print(f"judge test accuracy {accuracy:.3f}; {args.num} samples from {keras_path}")
    print("| class | share |\n|---|--:|")
    for c, share in result["share"].items():
        print(f"| {c} | {share:.1%} |")
    print(f"mean judge confidence {result['mean_confidence']:.3f}; "
          f"classes seen {result['classes_seen']}/10 (uniform would be 10% each)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    sys.exit(main())
