"""Time to quality: FD against training minutes, the zoo's models vs the TF DCGAN tutorial.

    python benchmarks/time_to_quality.py [--models reference,dcgan] [--reference-epochs 10]
        [--slice-seconds 30] [--num-samples 2000] [--max-ratio 1.0] [--max-minutes 600]
        [--preset FAMILY=PRESET] [--json ttq.json] [--plot docs/images/fd_vs_minutes.png]

One run trains the reference (`reference_dcgan.Reference`, the tutorial's loop)
and each zoo family named in `--models` (its default preset, built, compiled and
batched as `train.py` does: `zoo.training.TrainConfig`, trained with `model.fit`
on `zoo.data.make_dataset`), all on the Fashion-MNIST train split, and reports
how many training minutes each needs to reach the reference's quality.

Method:

* The models train in turns, `--slice-seconds` each, in one process, so load
  from other processes on a shared machine hits all of them alike. After each
  slice the model's FD (`zoo.metrics`, Fashion-MNIST test statistics, features
  of the project's Fashion-MNIST classifier) is measured on `--num-samples`
  images from fixed latents. A model's training clock counts its own slices
  only: evaluation and the other models' turns are excluded.
* The target is the reference's FD after `--reference-epochs` epochs (its last
  slice is cut to end exactly there). A model's time to quality is its training
  minutes at the first evaluation with FD <= target; the ratio is its time over
  the reference's (the issue's goal for the project: <= 0.5).
* A zoo model's clock never runs ahead of `--max-ratio` times the reference's:
  its slice is shortened (or skipped) to stay within it. The run ends when the
  reference has its epochs and every other model has reached the target or
  trained `--max-ratio` times the reference's minutes (then it is reported as
  not reached: ratio > max-ratio). Training thus totals at most
  `1 + max_ratio x (models - 1)` times the reference's minutes; `--max-ratio
  0.5` is enough to decide the issue's goal and costs less. `--max-minutes`
  bounds the wall time of the whole run; if it ends first, the target is the
  reference's last FD and the result is marked incomplete.
* Training minutes include everything a fresh run pays: tracing, XLA
  compilation (in each model's first slice) and `fit`'s per-call setup (a
  new iterator fills the 60,000-image shuffle buffer, under a second).
* Times are known to within one slice; a single lucky evaluation below the
  target counts (GAN FD is noisy from slice to slice).

`--json` writes every (model, minutes, epochs, FD) point; `--plot` draws FD
against training minutes (log scale) with the target, using matplotlib.
Progress goes to stderr, the summary table to stdout.
"""

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable

if __name__ == "__main__" and not __package__:
    # `python benchmarks/time_to_quality.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# The sibling script reference_dcgan.py, however this file is loaded (benchmarks/ is no package).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
import reference_dcgan  # noqa: E402
from zoo import callbacks as zoo_callbacks  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo import device  # noqa: E402
from zoo import training  # noqa: E402

REFERENCE = "reference"
TRAIN_DATA = "fashion_mnist:train"
REAL_DATA = "fashion_mnist:test"
EXTRACTOR = "fashion_classifier"
# `fit` runs one epoch per slice and stops on TimeBudget long before this many steps.
SLICE_STEP_CAP = 10**9
# Shorter slices are skipped: `fit`'s per-call setup would dominate them.
MIN_SLICE_SECONDS = 1.0


def parse_args(argv=None):
    """Parses command-line options; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=f"{REFERENCE},dcgan",
                   help=f"comma-separated: {REFERENCE} and zoo families "
                        f"({', '.join(zoo.FAMILIES)})")
    p.add_argument("--preset", action="append", default=[], metavar="FAMILY=PRESET",
                   help="use another preset than the family's default (repeatable)")
    p.add_argument("--reference-epochs", type=float, default=10.0,
                   help="the target is the reference's FD after this many epochs")
    p.add_argument("--slice-seconds", type=float, default=30.0, help="training time per turn")
    p.add_argument("--num-samples", type=int, default=2000, help="generated images per FD")
    p.add_argument("--max-ratio", type=float, default=1.0,
                   help="a zoo model trains at most this many times the reference's minutes")
    p.add_argument("--max-minutes", type=float, default=600.0,
                   help="wall-time budget of the whole run, evaluations included")
    p.add_argument("--seed", type=int, default=0, help="weights, noise, shuffle and FD latents")
    p.add_argument("--json", type=pathlib.Path, help="write every point and the summary here")
    p.add_argument("--plot", type=pathlib.Path, help="write the FD-vs-minutes PNG here")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m != REFERENCE and m not in zoo.FAMILIES]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {[REFERENCE, *zoo.FAMILIES]}")
    if REFERENCE not in args.models:
        p.error(f"--models must include {REFERENCE}: its FD is the target")
    if len(set(args.models)) != len(args.models):
        p.error(f"--models lists a model twice: {args.models}")
    # The reference trains first in every round, so the others' caps use its updated clock.
    args.models = [REFERENCE] + [m for m in args.models if m != REFERENCE]
    args.presets = {}
    for item in args.preset:
        family, _, preset = item.partition("=")
        if family not in args.models[1:] or preset not in zoo.FAMILIES[family].presets:
            p.error(f"--preset {item!r}: expected FAMILY=PRESET for a family in --models")
        args.presets[family] = preset
    for name in ("reference_epochs", "slice_seconds", "num_samples", "max_ratio", "max_minutes"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    return args


@dataclasses.dataclass
class Contender:
    """A model in the race: its training slices, its generator and its record.

    Args:
        name: `reference` or a zoo family.
        preset: the preset trained (`tutorial` for the reference).
        batch_size: images per training step.
        train_slice: `seconds -> images trained`, blocking until the work is done.
        generator: what `zoo.metrics.evaluate` takes (`generate`, `sample_latents`).
        num_train_images: images in one epoch.
        finished: `() -> bool`, the reference's stopping rule; None for the others.
    """

    name: str
    preset: str
    batch_size: int
    train_slice: Callable[[float], int]
    generator: object
    num_train_images: int
    finished: Callable[[], bool] | None = None
    seconds: float = 0.0
    images: int = 0
    points: list = dataclasses.field(default_factory=list)

    @property
    def minutes(self):
        return self.seconds / 60.0

    @property
    def epochs(self):
        return self.images / self.num_train_images

    def train(self, seconds):
        """Trains one slice on this contender's clock."""
        start = time.perf_counter()
        self.images += self.train_slice(seconds)
        self.seconds += time.perf_counter() - start

    def first_at(self, target):
        """The first point with FD <= `target`, else None."""
        return next((p for p in self.points if p["fd"] <= target), None)


def reference_contender(arrays, args):
    """The tutorial's loop; it stops on exactly `--reference-epochs` epochs."""
    ref = reference_dcgan.Reference(arrays[0], seed=args.seed)
    total_steps = max(1, round(args.reference_epochs * ref.steps_per_epoch))

    def train_slice(seconds):
        return ref.train(seconds=seconds, steps=total_steps - ref.steps)["images"]

    return Contender(REFERENCE, "tutorial", ref.batch_size, train_slice, ref, ref.num_images,
                     finished=lambda: ref.steps >= total_steps)


def family_contender(family, arrays, args):
    """A zoo family as `train.py` trains it: default config, `fit` in time slices."""
    config = training.TrainConfig(
        model=family, preset=args.presets.get(family, ""), seed=args.seed
    ).resolved()
    keras.utils.set_random_seed(config.seed)  # initial weights, as training.run seeds them
    model = training.build_model(config, tf.distribute.get_strategy())
    dataset = zoo_data.make_dataset(
        TRAIN_DATA, model.image_size, model.channels, config.batch_size,
        repeat=True, seed=config.seed, arrays=arrays,
    )

    def train_slice(seconds):
        before = model.train_steps
        model.fit(dataset, epochs=1, steps_per_epoch=SLICE_STEP_CAP, shuffle=False, verbose=0,
                  callbacks=[zoo_callbacks.TimeBudget(seconds / 60.0)])
        return (model.train_steps - before) * config.batch_size  # reading it waits for the step

    return Contender(family, config.preset, config.batch_size, train_slice, model, len(arrays[0]))


def frechet_distance(generator, args):
    """FD of `--num-samples` images from fixed latents against the real test statistics."""
    from zoo import metrics  # imported late: it loads the feature extractor

    result = metrics.evaluate(generator, metrics=("fd",), num=args.num_samples, real=REAL_DATA,
                              extractor=EXTRACTOR, seed=args.seed)
    return float(result["fd"])


def progress(message):
    """One line of progress on stderr (stdout carries the table)."""
    print(f"[time_to_quality] {message}", file=sys.stderr, flush=True)


def race(contenders, args):
    """Trains the contenders in turns until the reference has its epochs and the others caught up.

    Returns:
        `(target_fd, complete, eval_seconds)`: complete is False when
        `--max-minutes` ran out first.
    """
    reference = contenders[0]

    def allowance(c):
        # Seconds `c` may train now: a slice, within max_ratio x the reference's clock.
        if c is reference:
            return 0.0 if reference.finished() else args.slice_seconds
        if reference.finished() and c.first_at(reference.points[-1]["fd"]):
            return 0.0  # reached the target: nothing left to learn from it
        budget = min(args.slice_seconds, args.max_ratio * reference.seconds - c.seconds)
        return budget if budget >= MIN_SLICE_SECONDS else 0.0

    deadline = time.perf_counter() + args.max_minutes * 60
    eval_seconds = 0.0
    while any(allowance(c) for c in contenders):
        for c in contenders:
            budget = allowance(c)  # again: the reference's clock moved this round
            if not budget:
                continue
            if time.perf_counter() >= deadline:
                target = reference.points[-1]["fd"] if reference.points else math.nan
                return target, False, eval_seconds
            c.train(budget)
            start = time.perf_counter()
            fd = frechet_distance(c.generator, args)
            eval_seconds += time.perf_counter() - start
            c.points.append({"model": c.name, "minutes": c.minutes, "epochs": c.epochs,
                             "images": c.images, "fd": fd})
            progress(f"{c.name}: {c.minutes:.2f} min, {c.epochs:.3f} epochs, FD {fd:.3f}")
    return reference.points[-1]["fd"], True, eval_seconds


def summarize(contenders, target):
    """Per model: time to target, its ratio to the reference's, training rate."""
    ref_point = contenders[0].first_at(target)
    summary = {}
    for c in contenders:
        point = c.first_at(target)
        summary[c.name] = {
            "preset": c.preset,
            "batch_size": c.batch_size,
            "reached_target": point is not None,
            "minutes_to_target": point["minutes"] if point else None,
            "epochs_to_target": point["epochs"] if point else None,
            "ratio_vs_reference": (point["minutes"] / ref_point["minutes"]
                                   if point and ref_point else None),
            "training_minutes": c.minutes,
            "epochs": c.epochs,
            "images_per_sec": c.images / c.seconds if c.seconds else None,
            "best_fd": min((p["fd"] for p in c.points), default=None),
            "evaluations": len(c.points),
        }
    return summary


def plot(results, path):
    """FD against training minutes per model (log-y), with the target and each crossing."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import, to leave importers' backend alone
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    target = results["target"]["fd"]
    for name, model in results["models"].items():
        points = [p for p in results["points"] if p["model"] == name]
        label = f"{name} ({model['preset']}, batch {model['batch_size']})"
        if model["reached_target"]:
            label += f": {model['minutes_to_target']:.1f} min"
            if name != REFERENCE:
                label += f", {model['ratio_vs_reference']:.2f}x"
        line, = ax.plot([p["minutes"] for p in points], [p["fd"] for p in points],
                        marker="o", markersize=3, label=label)
        if model["reached_target"]:
            ax.plot(model["minutes_to_target"], target, marker="*", markersize=12,
                    color=line.get_color())
    epochs = results["target"]["reference_epochs"]
    ax.axhline(target, color="gray", linestyle="--", linewidth=1,
               label=f"target: reference FD after {epochs:.3g} epochs")
    ax.set_yscale("log")
    ax.set_xlabel("training minutes (evaluation excluded)")
    ax.set_ylabel(f"FD ({results['config']['num_samples']} samples, lower is better)")
    ax.set_title("Fashion-MNIST: FD vs training time, interleaved on one machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def format_table(results):
    """The summary as a markdown table (with a heading line)."""
    t = results["target"]
    lines = [
        f"Target: FD {t['fd']:.3f}, the reference after {t['reference_epochs']:.3g} epochs"
        f"{'' if results['complete'] else ' (INCOMPLETE: --max-minutes ran out)'}; "
        f"{results['wall_time_s'] / 60:.1f} min wall, {results['eval_time_s'] / 60:.1f} of them "
        "evaluating.",
        "",
        "| model | preset | batch | img/s | minutes to target | epochs to target "
        "| ratio vs reference | best FD | trained min |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def fmt(value, spec):
        return "not reached" if value is None else format(value, spec)

    for name, m in results["models"].items():
        lines.append(
            f"| {name} | {m['preset']} | {m['batch_size']} | {fmt(m['images_per_sec'], ',.0f')} "
            f"| {fmt(m['minutes_to_target'], '.2f')} | {fmt(m['epochs_to_target'], '.2f')} "
            f"| {fmt(m['ratio_vs_reference'], '.2f')} | {fmt(m['best_fd'], '.3f')} "
            f"| {m['training_minutes']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Runs the race (or prints its config); returns the results (or the config)."""
    args = parse_args(argv)
    config = {
        "models": args.models,
        "presets": {m: args.presets.get(m) or zoo.default_preset(m) for m in args.models[1:]},
        "batch_size": training.TrainConfig().batch_size,
        "reference_batch_size": reference_dcgan.BATCH_SIZE,
        "reference_epochs": args.reference_epochs, "slice_seconds": args.slice_seconds,
        "num_samples": args.num_samples, "max_ratio": args.max_ratio,
        "max_minutes": args.max_minutes, "seed": args.seed, "real": REAL_DATA,
        "extractor": EXTRACTOR,
    }
    if args.dry_run:
        print(json.dumps(config, indent=2))
        return config
    wall_start = time.perf_counter()
    load_start = os.getloadavg()
    arrays = zoo_data.load_arrays(TRAIN_DATA)
    contenders = [reference_contender(arrays, args)]
    contenders += [family_contender(m, arrays, args) for m in args.models[1:]]
    target, complete, eval_seconds = race(contenders, args)
    results = {
        "config": config,
        "environment": {
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "machine": device.machine(),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        },
        "complete": complete,
        "target": {"fd": target, "reference_epochs": contenders[0].epochs},
        "models": summarize(contenders, target),
        "points": [p for c in contenders for p in c.points],
        "eval_time_s": eval_seconds,
        "wall_time_s": time.perf_counter() - wall_start,
    }
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    return results


if __name__ == "__main__":
    main()
