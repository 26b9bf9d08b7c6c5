"""FD and KID against images seen: zoo models trained in turns to the same kimg points.

    python benchmarks/kimg_race.py --contender stylegan2:stylegan2_fashion_mnist:64 \\
        --contender dcgan:dcgan_fashion_mnist [--eval-kimg 25] [--max-kimg 2000] \\
        [--max-minutes 90] [--max-wall-minutes 120] [--num-samples 5000] [--metrics fd,kid] \\
        --state runs/race [--resume] [--json docs/x.json] [--plot docs/images/x.png]

Each contender (`FAMILY:PRESET[:BATCH]`, by default the preset's batch as `train.py`)
is built and compiled as `train.py` builds it (`zoo.training.build_model`,
seed 0) and trained with `model.fit` on Fashion-MNIST's train split. One round
trains every contender, in turn, up to the next multiple of `--eval-kimg`
thousand images, then scores each with `zoo.metrics.evaluate` (`--num-samples`
images from fixed latents against the test split, the project classifier's
features). So every contender is evaluated at the same kimg points, and load
from other processes on a shared machine hits all of them alike.

* Training minutes are each contender's own `fit` time (tracing included,
  evaluation and the others' turns excluded).
* Each round draws a fresh shuffle of the training set (seed = round), so a
  round is a random sample of the data whatever its length, and a resumed
  race continues with the batches the uninterrupted one would have used.
* After every round the state is saved in `--state`: each model's weights
  with its optimizers (`save_weights`) and `race.json` (the points so far),
  each written to a temporary name and renamed, so an interruption loses at
  most the round in progress; `--resume` continues from there (the same
  contenders are required).
* The race ends before a round when the FIRST contender has trained
  `--max-minutes` or reached `--max-kimg`, or when the wall time would pass
  `--max-wall-minutes` by the last round's duration.

`--json` writes the points and a summary (per kimg point, each contender's FD
and the median of it and its two predecessors, for the "median of 3
consecutive evaluations" comparison); `--plot` draws FD against kimg and
against training minutes. Progress goes to stderr, the table to stdout.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import time

if __name__ == "__main__" and not __package__:
    # `python benchmarks/kimg_race.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo import device  # noqa: E402
from zoo import training  # noqa: E402

TRAIN_DATA = "fashion_mnist:train"
REAL_DATA = "fashion_mnist:test"
STATE_FILE = "race.json"


@dataclasses.dataclass
class Contender:
    """One model of the race and its record."""

    family: str
    preset: str
    batch_size: int
    model: object = None
    seconds: float = 0.0
    points: list = dataclasses.field(default_factory=list)

    @property
    def name(self):
        return f"{self.family}:{self.preset}:{self.batch_size}"

    @property
    def label(self):
        return f"{self.preset} (batch {self.batch_size})"

    @property
    def images(self):
        return self.model.train_steps * self.batch_size

    @property
    def weights_file(self):
        return f"{self.family}-{self.preset}-{self.batch_size}.weights.h5"


def parse_contender(text, parser):
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in zoo.FAMILIES:
        parser.error(f"--contender {text!r}: expected FAMILY:PRESET[:BATCH], FAMILY in {sorted(zoo.FAMILIES)}")
    family, preset = parts[:2]
    if preset not in zoo.FAMILIES[family].presets:
        parser.error(f"--contender {text!r}: {preset!r} is not a {family} preset")
    default = training.TrainConfig(model=family, preset=preset).resolved().batch_size
    try:
        batch = int(parts[2]) if len(parts) == 3 else default
    except ValueError:
        batch = 0
    if batch < 1:
        parser.error(f"--contender {text!r}: the batch size must be a positive integer")
    return Contender(family, preset, batch)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contender", action="append", default=[], metavar="FAMILY:PRESET[:BATCH]",
                   help="a model in the race (repeatable; the first one's clock ends the race)")
    p.add_argument("--eval-kimg", type=float, default=25.0, help="thousands of images between evaluations")
    p.add_argument("--max-kimg", type=float, default=1e9, help="end when the first contender has this many")
    p.add_argument("--max-minutes", type=float, default=90.0,
                   help="end when the first contender has trained this many minutes")
    p.add_argument("--max-wall-minutes", type=float, default=1e9,
                   help="end before a round that would pass this wall time (resumes count from 0)")
    p.add_argument("--num-samples", type=int, default=5000, help="generated images per evaluation")
    p.add_argument("--metrics", default="fd,kid", help="zoo.metrics names (fd first)")
    p.add_argument("--final-num", type=int, default=0,
                   help="at the end, score each model on this many images with every image metric "
                        "and save it as <state>/<contender>.keras (0: neither)")
    p.add_argument("--state", type=pathlib.Path, required=True, help="folder of the race's state")
    p.add_argument("--resume", action="store_true", help="continue the race saved in --state")
    p.add_argument("--json", type=pathlib.Path, help="write the points and the summary here")
    p.add_argument("--plot", type=pathlib.Path, help="write the FD-vs-kimg/minutes PNG here")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    args.contenders = [parse_contender(c, p) for c in args.contender]
    if not args.contenders:
        p.error("name at least one --contender")
    if len({c.name for c in args.contenders}) != len(args.contenders):
        p.error("a contender is named twice")
    for name in ("eval_kimg", "max_kimg", "max_minutes", "max_wall_minutes"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.num_samples < 2 or args.final_num < 0 or args.final_num == 1:
        p.error("--num-samples must be >= 2 and --final-num 0 or >= 2")
    from zoo.metrics.evaluation import check_metrics

    try:
        args.metrics = list(check_metrics(args.metrics))
    except ValueError as e:
        p.error(f"--metrics: {e}")
    if args.metrics[0] != "fd":
        p.error("--metrics must start with fd (the race's curve)")
    state = args.state / STATE_FILE
    if args.resume and not state.exists():
        p.error(f"--resume: no {STATE_FILE} in {args.state}")
    if not args.resume and state.exists():
        p.error(f"{args.state} holds a race already; pass --resume or another --state")
    return args


def progress(message):
    print(f"[kimg_race] {message}", file=sys.stderr, flush=True)


def build(contender):
    config = training.TrainConfig(model=contender.family, preset=contender.preset,
                                  batch_size=contender.batch_size).resolved()
    keras.utils.set_random_seed(config.seed)  # initial weights, as training.run seeds them
    contender.model = training.build_model(config, tf.distribute.get_strategy())


def train_to(contender, images, round_index, arrays):
    """Trains `contender` until it has seen at least `images` images."""
    steps = -(-(images - contender.images) // contender.batch_size)
    if steps <= 0:
        return
    model = contender.model
    dataset = zoo_data.make_dataset(TRAIN_DATA, model.image_size, model.channels, contender.batch_size,
                                    repeat=True, seed=round_index, arrays=arrays)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    contender.images  # reading the step counter waits for the last step
    contender.seconds += time.perf_counter() - start


def evaluate(contender, args):
    from zoo import metrics

    return metrics.evaluate(contender.model, metrics=args.metrics, num=args.num_samples,
                            real=REAL_DATA, seed=0)


def save_state(args, contenders, rounds, wall_seconds):
    args.state.mkdir(parents=True, exist_ok=True)
    for c in contenders:
        tmp = args.state / f"tmp-{c.weights_file}"
        c.model.save_weights(tmp)
        os.replace(tmp, args.state / c.weights_file)
    state = {"contenders": [c.name for c in contenders], "rounds": rounds,
             "wall_seconds": wall_seconds, "eval_kimg": args.eval_kimg,
             "num_samples": args.num_samples, "metrics": args.metrics,
             "seconds": {c.name: c.seconds for c in contenders},
             "points": [p for c in contenders for p in c.points]}
    tmp = args.state / f"tmp-{STATE_FILE}"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, args.state / STATE_FILE)


def load_state(args, contenders):
    state = json.loads((args.state / STATE_FILE).read_text())
    names = [c.name for c in contenders]
    if state["contenders"] != names:
        raise SystemExit(f"error: {args.state} raced {state['contenders']}, not {names}")
    if (state["eval_kimg"], state["num_samples"]) != (args.eval_kimg, args.num_samples):
        raise SystemExit("error: --eval-kimg and --num-samples must be those of the saved race")
    for c in contenders:
        c.model.load_weights(args.state / c.weights_file)
        c.seconds = state["seconds"][c.name]
        c.points = [p for p in state["points"] if p["contender"] == c.name]
    return state["rounds"], state["wall_seconds"]


def median3(values):
    """Median of each value and its (up to) two predecessors."""
    return [statistics.median(values[max(0, i - 2) : i + 1]) for i in range(len(values))]


def summarize(contenders):
    """Per round (the same kimg target for all, within one batch), each contender's FD and its median of 3."""
    rows = {}
    for c in contenders:
        for point, fd3 in zip(c.points, median3([p["fd"] for p in c.points])):
            row = rows.setdefault(point["round"], {"round": point["round"]})
            row.setdefault("kimg", point["kimg"])
            row[c.name] = {"kimg": point["kimg"], "fd": point["fd"], "fd_median3": fd3,
                           "minutes": point["minutes"]}
    rows = [rows[r] for r in sorted(rows)]
    return {
        "contenders": {c.name: {"family": c.family, "preset": c.preset, "batch_size": c.batch_size,
                                "training_minutes": c.seconds / 60, "kimg": c.images / 1000,
                                "images_per_sec": c.images / c.seconds if c.seconds else None,
                                "best_fd": min((p["fd"] for p in c.points), default=None)}
                       for c in contenders},
        "by_round": rows,
    }


def plot(results, path):
    """FD against kimg and against training minutes, one line per contender (log-y)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import, to leave importers' backend alone
    import matplotlib.pyplot as plt

    fig, (by_kimg, by_minutes) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for name, info in results["summary"]["contenders"].items():
        points = [p for p in results["points"] if p["contender"] == name]
        label = f"{info['preset']} (batch {info['batch_size']}, {info['images_per_sec']:.0f} img/s)"
        by_kimg.plot([p["kimg"] for p in points], [p["fd"] for p in points], marker="o", markersize=3,
                     label=label)
        by_minutes.plot([p["minutes"] for p in points], [p["fd"] for p in points], marker="o",
                        markersize=3, label=label)
    by_kimg.set_xlabel("thousands of training images seen (kimg)")
    by_minutes.set_xlabel("training minutes (evaluation excluded)")
    by_kimg.set_ylabel(f"FD ({results['config']['num_samples']} samples, lower is better)")
    for ax in (by_kimg, by_minutes):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    by_minutes.set_xscale("log")
    by_kimg.legend(fontsize=8)
    fig.suptitle("Fashion-MNIST: FD against images seen and training time, interleaved on one machine",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def format_table(results):
    contenders = list(results["summary"]["contenders"])
    head = "| kimg | " + " | ".join(f"{n} FD (median of 3) | min" for n in contenders) + " |"
    lines = [head, "|--:|" + "--:|--:|" * len(contenders)]
    for row in results["summary"]["by_round"]:
        cells = []
        for n in contenders:
            r = row.get(n)
            cells += [f"{r['fd']:.2f} ({r['fd_median3']:.2f})", f"{r['minutes']:.1f}"] if r else ["", ""]
        lines.append(f"| {row['kimg']:.4g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    config = {"contenders": [c.name for c in args.contenders], "eval_kimg": args.eval_kimg,
              "final_num": args.final_num,
              "max_kimg": args.max_kimg, "max_minutes": args.max_minutes,
              "max_wall_minutes": args.max_wall_minutes, "num_samples": args.num_samples,
              "metrics": args.metrics, "train": TRAIN_DATA, "real": REAL_DATA}
    if args.dry_run:
        print(json.dumps(config, indent=2))
        return config
    arrays = zoo_data.load_arrays(TRAIN_DATA)
    for c in args.contenders:
        build(c)
    rounds, wall_before = load_state(args, args.contenders) if args.resume else (0, 0.0)
    if args.resume:
        progress(f"resumed after round {rounds}")
    wall_start = time.perf_counter()
    load_start = os.getloadavg()
    first = args.contenders[0]
    last_round_seconds = 0.0
    while (first.seconds / 60 < args.max_minutes and first.images / 1000 < args.max_kimg
           and (time.perf_counter() - wall_start + last_round_seconds) / 60 < args.max_wall_minutes):
        round_start = time.perf_counter()
        target = round((rounds + 1) * args.eval_kimg * 1000)
        for c in args.contenders:
            train_to(c, target, rounds, arrays)
            start = time.perf_counter()
            scores = evaluate(c, args)
            c.points.append({"contender": c.name, "round": rounds + 1, "kimg": c.images / 1000,
                             "minutes": c.seconds / 60,
                             "eval_seconds": time.perf_counter() - start, **scores})
            progress(f"{c.label}: {c.images / 1000:.1f} kimg, {c.seconds / 60:.2f} min, "
                     + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        rounds += 1
        last_round_seconds = time.perf_counter() - round_start
        save_state(args, args.contenders, rounds, wall_before + time.perf_counter() - wall_start)
    final = {}
    if args.final_num:
        from zoo import metrics

        for c in args.contenders:
            c.model.save(args.state / c.weights_file.replace(".weights.h5", ".keras"))
            final[c.name] = metrics.evaluate(c.model, metrics=metrics.DEFAULT_METRICS, num=args.final_num,
                                             real=REAL_DATA, seed=0)
            progress(f"{c.label} final ({args.final_num} images): "
                     + ", ".join(f"{k} {v:.4g}" for k, v in final[c.name].items()))
    results = {
        "config": config,
        "environment": {"tensorflow": tf.__version__, "keras": keras.__version__,
                        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": device.machine(),
                        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
        "rounds": rounds,
        "wall_minutes": (wall_before + time.perf_counter() - wall_start) / 60,
        "summary": summarize(args.contenders),
        "final": final,
        "points": [p for c in args.contenders for p in c.points],
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
