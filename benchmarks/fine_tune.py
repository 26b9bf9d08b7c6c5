"""Fine-tuning a shipped preset on one Fashion-MNIST class against training it from scratch.

    python benchmarks/fine_tune.py [--preset dcgan_fashion_mnist] [--class-index 7] \\
        [--scratch-minutes 15] [--max-fine-tune-minutes 15] [--slice-seconds 30] [--num 1000] \\
        --workdir /tmp/fine_tune [--json docs/fine_tune.json] [--plot docs/images/fine_tune.png]

Writes the class's 6,000 training images and 1,000 test images as `npz:` data
sets, then trains two models of the preset's architecture on the training
images, as `train.py --data npz:...` would (`zoo.training.build_model`, seed
0, batch 128): one from a random initialisation for `--scratch-minutes` of
training, one from the shipped weights (`--init-from PRESET`: fresh
optimizers). Training runs in slices of `--slice-seconds`; after each, FD of
`--num` samples (fixed latents) against the class's test images is measured
with the project classifier (`zoo.metrics.evaluate`, evaluation time not
counted). The target is the FD the scratch run reached at the end; the
answer is the training minutes the fine-tuned model needed to reach it.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np


def class_arrays(split, class_index):
    from zoo import data

    images, labels = data.load_arrays(f"fashion_mnist:{split}")
    keep = labels == class_index
    return images[keep], labels[keep]


def train_and_watch(model, dataset, minutes, slice_seconds, real, num, target=None):
    """Trains with one `fit` (one pass through the data stream), evaluating FD every `slice_seconds`
    of training; stops after `minutes` of training or once the FD is at most `target`.

    Returns:
        `[(training minutes, fd), ...]`, starting with the untrained point.
    """
    import keras

    from zoo.metrics import evaluate

    def fd():
        return evaluate(model, ("fd",), num=num, real=real, seed=0)["fd"]

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.trained, self.last = 0.0, 0.0
            self.points = [(0.0, fd())]
            print(f"  0.00 min  FD {self.points[0][1]:.2f}", file=sys.stderr, flush=True)
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.trained += time.monotonic() - self.start  # evaluation below is not counted
            if self.trained - self.last >= slice_seconds:
                self.last = self.trained
                self.points.append((self.trained / 60, fd()))
                print(f"  {self.trained / 60:.2f} min  FD {self.points[-1][1]:.2f}", file=sys.stderr, flush=True)
                done = self.trained >= minutes * 60 or (target is not None and self.points[-1][1] <= target)
                self.model.stop_training = done
            self.start = time.monotonic()

    watch = Watch()
    model.fit(dataset, steps_per_epoch=25, epochs=1_000_000, verbose=0, callbacks=[watch])
    return watch.points


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="dcgan_fashion_mnist")
    p.add_argument("--class-index", type=int, default=7, help="Fashion-MNIST label (7 = sneaker)")
    p.add_argument("--scratch-minutes", type=float, default=15.0)
    p.add_argument("--max-fine-tune-minutes", type=float, default=15.0)
    p.add_argument("--slice-seconds", type=float, default=30.0)
    p.add_argument("--num", type=int, default=1000, help="generated images per FD (the class has 1,000 test images)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workdir", type=pathlib.Path, required=True)
    p.add_argument("--json", type=pathlib.Path)
    p.add_argument("--plot", type=pathlib.Path)
    args = p.parse_args(argv)
    if not 0 <= args.class_index <= 9:
        p.error(f"--class-index must be in 0..9, got {args.class_index}")

    import keras
    import tensorflow as tf

    from zoo import data, device, presets, training

    args.workdir.mkdir(parents=True, exist_ok=True)
    train_npz = args.workdir / f"class{args.class_index}_train.npz"
    test_npz = args.workdir / f"class{args.class_index}_test.npz"
    for split, path in (("train", train_npz), ("test", test_npz)):
        images, labels = class_arrays(split, args.class_index)
        np.savez(path, images=images, labels=labels)
    real = f"npz:{test_npz}"
    results = {}
    target = None
    for name, init_from in (("scratch", ""), ("fine_tune", args.preset)):
        print(f"{name}:", file=sys.stderr, flush=True)
        keras.utils.set_random_seed(0)
        config = training.TrainConfig(
            model=presets.family_name(args.preset), preset=args.preset, data=f"npz:{train_npz}",
            batch_size=args.batch_size, init_from=init_from,
        ).resolved()
        training.validate(config)
        model = training.build_model(config, tf.distribute.get_strategy())
        arrays = data.load_arrays(config.data)
        dataset = data.make_dataset(config.data, model.image_size, model.channels, config.batch_size,
                                    repeat=True, arrays=arrays)
        minutes = args.scratch_minutes if name == "scratch" else args.max_fine_tune_minutes
        points = train_and_watch(model, dataset, minutes, args.slice_seconds, real, args.num, target)
        reached = next((m for m, fd in points if target is not None and fd <= target), None)
        results[name] = {"init_from": init_from or None, "points": points, "final_fd": points[-1][1],
                         "minutes": points[-1][0], "minutes_to_target": reached}
        if name == "scratch":
            target = points[-1][1]
    report = {
        "preset": args.preset, "class_index": args.class_index,
        "train_images": int(len(class_arrays("train", args.class_index)[0])),
        "target_fd": target, "options": {k: str(v) for k, v in vars(args).items()},
        "environment": {"tensorflow": tf.__version__, "keras": keras.__version__, "cpus": os.cpu_count(),
                        "machine": device.machine(),
                        "loadavg_end": list(os.getloadavg())},
        "results": results,
    }
    summary = (f"scratch: FD {target:.2f} after {results['scratch']['minutes']:.1f} training minutes; "
               f"fine-tuned from {args.preset}: FD {results['fine_tune']['final_fd']:.2f}, target reached after "
               f"{results['fine_tune']['minutes_to_target']} minutes")
    print(summary)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, result in results.items():
            m, fd = zip(*result["points"])
            ax.plot(m, fd, marker="o", label=name.replace("_", "-"))
        ax.axhline(target, color="gray", linestyle="--", label="scratch's final FD")
        ax.set_xlabel("training minutes")
        ax.set_ylabel(f"FD vs class {args.class_index} test images")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{args.preset} on one Fashion-MNIST class")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
