"""Training, input and serving throughput of the zoo's models and a reference, side by side.

    python benchmarks/throughput.py [--preset dcgan_fashion_mnist] [--batch-size 128]
        [--steps 20] [--reference-steps 8] [--families vae,...] [--family-preset FAMILY=PRESET]
        [--repeats 3] [--json out.json]

Each round trains every variant for `--steps` steps (the reference for
`--reference-steps`); warm-up compiles every model with XLA first. With
`--families vae` the defaults took 6.3 CPU-minutes (15 minutes of wall time at
a load average of 7 on 2 cores); each further family adds its own XLA
compilation and rounds. Progress goes to stderr.

One run measures, on real Fashion-MNIST (`zoo.data.make_dataset("fashion_mnist", ...)`):

* training images/s of the `--preset` DC-GAN through `model.fit`, XLA off and on;
* the same `train_step` driven by a bare loop (a Python `for` calling a
  `tf.function` of `model.train_step` on batches of the same pipeline), XLA off
  and on; the Keras overhead is the ratio of step times fit / bare;
* training images/s of every other family in `zoo.FAMILIES` (default preset,
  float32, batch `--batch-size`) through `model.fit`, XLA off and on;
* training images/s of the reference: the TensorFlow DCGAN tutorial's
  `tf.function` loop (`reference_dcgan.py`, batch 256, 28x28); every training
  variant is also given as a speed ratio to it;
* the input pipeline alone, iterated without training;
* the process's peak RSS, and the sizes of the SavedModel folder and the
  `.tflite` file that `export.export_model` writes;
* batch-1 LiteRT latency of that `.tflite` with 1 and 2 interpreter threads.

Method:

* Every training variant gets its own model built from the same seed (same
  initial weights) and its own pipeline; each is warmed up first, so tracing
  and XLA compilation are never timed.
* The variants then run in turns (fit, fit+XLA, bare, bare+XLA, pipeline,
  reference, each family's fit and fit+XLA, fit, ...) for `--repeats` rounds,
  so load from other processes on a shared machine hits all of them alike.
  Rates are medians over rounds, with the min..max spread; ratios (to the
  DC-GAN's `fit` without XLA, to the reference, and the Keras overhead) are
  medians of per-round ratios, which cancel load that changes between rounds.
* Each round starts a fresh iterator, as every `fit` call does, and runs one
  untimed step first: that step fills the shuffle buffer with the whole
  dataset (its time is reported as `pipeline_first_batch_s`). The rates are
  thus steady-state rates within an epoch; `fit`'s per-call setup is not in
  them.
* Peak RSS covers this whole process: every model, its XLA compilation and
  its pipeline's shuffle buffer, so it bounds one training run from above;
  the RSS after importing TensorFlow and loading the data is given next to it.
* The reference keeps one iterator across rounds, as its loop does (it
  reshuffles at each epoch's end only), so its rounds need no untimed step;
  its images are counted per batch (an epoch's last batch holds 96).
* `fit` steps are timed from `on_train_batch_begin` of step 1 to that of step
  `steps + 1`. That hook runs in the fit loop after the previous step has
  returned, and overriding only `*_batch_begin` keeps Keras' asynchronous
  `*_batch_end` dispatch as in a plain `fit`.

The markdown table goes to stdout; `--json` also writes every number.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

if __name__ == "__main__" and not __package__:
    # `python benchmarks/throughput.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# The sibling script reference_dcgan.py, however this file is loaded (benchmarks/ is no package).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from reference_dcgan import Reference  # noqa: E402
from export import export_model  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo import device  # noqa: E402

DATA_SPEC = "fashion_mnist"
LATENCY_THREADS = (1, 2)
LATENCY_WARMUP = 10
# The `--preset` DC-GAN's timed variants, in the order they take turns, with their table labels.
DCGAN_VARIANTS = {
    "fit_xla_off": "training img/s: fit, XLA off",
    "fit_xla_on": "training img/s: fit, XLA on",
    "bare_xla_off": "training img/s: bare tf.function loop, XLA off",
    "bare_xla_on": "training img/s: bare tf.function loop, XLA on",
    "data_pipeline": "input img/s: data pipeline alone",
}
REFERENCE = "reference"
JITS = (("off", False), ("on", True))


def variant_labels(families):
    """Table label of every timed variant, in turn order.

    Args:
        families: `{family: preset}` timed through `fit` besides the DC-GAN.
    """
    labels = {**DCGAN_VARIANTS,
              REFERENCE: "training img/s: reference (TF DCGAN tutorial loop, batch 256, 28x28)"}
    for family, preset in families.items():
        for name, _ in family_jits(family):
            labels[f"{family}_fit_xla_{name}"] = (
                f"training img/s: {family} `{preset}` fit, XLA {name}")
    return labels


def family_jits(family):
    """XLA settings timed for a family: both, so each device kind's default can be
    checked, except for a family that trains without XLA everywhere (StyleGAN2:
    XLA compiles its step for over 20 minutes on CPU), timed without it only."""
    return JITS if any(zoo.FAMILIES[family].xla_by_device.values()) else [j for j in JITS if not j[1]]


def parse_args(argv=None):
    """Parses command-line options; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    grayscale = sorted(n for n, p in zoo.DCGAN.presets.items() if p["config"]["channels"] == 1)
    p.add_argument("--preset", default="dcgan_fashion_mnist", choices=grayscale,
                   help="DC-GAN preset; grayscale ones only, the data is Fashion-MNIST")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    p.add_argument("--reference-steps", type=int, default=8,
                   help="timed steps per round of the reference (batch 256: 3.7 CPU-s a step)")
    others = [f for f in zoo.FAMILIES if f != "dcgan"]
    p.add_argument("--families", default=",".join(others),
                   help="other families timed through fit, comma-separated (default: all of "
                        f"{others}; the DC-GAN is --preset)")
    p.add_argument("--family-preset", action="append", default=[], metavar="FAMILY=PRESET",
                   help="time another preset than the family's default (repeatable)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; medians are over these")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (compilation)")
    p.add_argument("--pipeline-batches", type=int, default=0,
                   help="timed batches per round of the pipeline alone "
                        "(0: 10 x --steps, at most one epoch)")
    p.add_argument("--latency-runs", type=int, default=200,
                   help="timed LiteRT calls per thread count")
    p.add_argument("--seed", type=int, default=0, help="model and shuffle seed")
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = p.parse_args(argv)
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in names if f not in others]
    if bad:
        p.error(f"--families: {bad} not among {others}")
    args.families = {f: zoo.default_preset(f) for f in names}
    for item in args.family_preset:
        family, _, preset = item.partition("=")
        if family not in args.families or preset not in zoo.FAMILIES[family].presets:
            p.error(f"--family-preset {item!r}: expected FAMILY=PRESET for a family in --families")
        args.families[family] = preset
    for name in ("batch_size", "steps", "reference_steps", "repeats", "warmup", "latency_runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.pipeline_batches < 0:
        p.error(f"--pipeline-batches must be >= 0, got {args.pipeline_batches}")
    return args


class StepTimer(keras.callbacks.Callback):
    """Wall time of steps `1..steps` of one `fit` call (step 0 is excluded).

    Args:
        steps: steps to time; the `fit` call must run `steps + 2` steps.
    """

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.seconds = None
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            self._start = time.perf_counter()
        elif batch == self.steps + 1:
            self.seconds = time.perf_counter() - self._start


@dataclasses.dataclass
class Variant:
    """One timed configuration: `run_round()` returns `(seconds, images)` of one round."""

    name: str
    run_round: Callable[[], tuple]
    seconds: list = dataclasses.field(default_factory=list)
    images: list = dataclasses.field(default_factory=list)

    def run(self):
        seconds, images = self.run_round()
        self.seconds.append(seconds)
        self.images.append(images)

    def rates(self):
        return [n / s for n, s in zip(self.images, self.seconds)]


def fresh_model(family, preset, seed, jit):
    """A compiled model with the same initial weights for any `jit`."""
    keras.utils.set_random_seed(seed)  # the initializers draw from the global seed
    model = zoo.get_model(family, preset, seed=seed)
    model.compile(jit_compile=jit)
    if bool(model.jit_compile) != jit:  # Keras may turn XLA off for unsupported layers
        raise RuntimeError(f"compile(jit_compile={jit}) gave jit_compile={model.jit_compile}")
    return model


def fit_variant(family, preset, make_data, args, jit):
    """A `model.fit` variant; returns `(model, run_round)`."""
    model = fresh_model(family, preset, args.seed, jit)
    dataset = make_data(model.image_size, model.channels, repeat=True)
    # shuffle=False: the dataset shuffles itself.
    model.fit(dataset, epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)

    def run_round():
        timer = StepTimer(args.steps)
        model.fit(dataset, epochs=1, steps_per_epoch=args.steps + 2, shuffle=False,
                  verbose=0, callbacks=[timer])
        return timer.seconds, args.steps * args.batch_size

    return model, run_round


def bare_variant(make_data, args, jit):
    """The same step as `fit` runs, from a plain Python loop; returns `run_round`."""
    model = fresh_model("dcgan", args.preset, args.seed, jit)
    dataset = make_data(model.image_size, model.channels, repeat=True)
    step = tf.function(model.train_step, jit_compile=jit)
    iterator = iter(dataset)
    for _ in range(args.warmup):
        step(next(iterator))

    def run_round():
        iterator = iter(dataset)
        step(next(iterator))  # fills the shuffle buffer, like fit's untimed step 0
        start = time.perf_counter()
        for _ in range(args.steps):
            logs = step(next(iterator))
        float(logs["d_loss"])  # the step has finished once its result is readable
        return time.perf_counter() - start, args.steps * args.batch_size

    return run_round


def reference_variant(arrays, args):
    """The TF DCGAN tutorial's loop on the same images; returns `run_round`."""
    reference = Reference(arrays[0], seed=args.seed)
    reference.train(steps=args.warmup)

    def run_round():
        result = reference.train(steps=args.reference_steps)
        return result["seconds"], result["images"]

    return run_round


def pipeline_variant(make_data, batches, batch_size, first_batch_seconds):
    """The input pipeline alone; appends each round's first-batch time to the list given."""
    dataset = make_data(repeat=False)

    def run_round():
        start = time.perf_counter()
        iterator = iter(dataset)
        next(iterator)
        first = time.perf_counter()
        first_batch_seconds.append(first - start)
        for _ in range(batches):
            next(iterator)
        return time.perf_counter() - first, batches * batch_size

    return run_round


def progress(message):
    """One line of progress on stderr (stdout carries the table)."""
    print(f"[throughput] {message}", file=sys.stderr, flush=True)


def peak_rss_mib():
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path):
    """Total size of the files below `path`."""
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


def litert_latency_ms(tflite_path, latent_dim, runs):
    """Median and p10/p90 batch-1 latency per thread count, calls interleaved.

    Returns:
        `{threads: {"median_ms", "p10_ms", "p90_ms"}}`.
    """
    from ai_edge_litert.interpreter import Interpreter

    # The interpreters must outlive their signature runners.
    interpreters = {
        n: Interpreter(model_path=str(tflite_path), num_threads=n) for n in LATENCY_THREADS
    }
    runners = {n: it.get_signature_runner("serving_default") for n, it in interpreters.items()}
    z = np.random.default_rng(0).standard_normal((1, latent_dim)).astype(np.float32)
    for runner in runners.values():
        for _ in range(LATENCY_WARMUP):
            runner(z=z)
    times = {n: [] for n in runners}
    for _ in range(runs):
        for n, runner in runners.items():
            start = time.perf_counter()
            runner(z=z)
            times[n].append((time.perf_counter() - start) * 1e3)
    result = {}
    for n, t in times.items():
        p10, p90 = np.percentile(t, [10, 90])
        result[n] = {"median_ms": statistics.median(t), "p10_ms": float(p10), "p90_ms": float(p90)}
    return result


def measure(args):
    """Runs every measurement; returns the results as a JSON-ready dict."""
    wall_start = time.perf_counter()
    load_start = os.getloadavg()
    arrays = zoo_data.load_arrays(DATA_SPEC)
    rss_baseline = peak_rss_mib()
    preset = zoo.DCGAN.presets[args.preset]["config"]

    def make_data(image_size, channels, repeat):
        return zoo_data.make_dataset(DATA_SPEC, image_size, channels, args.batch_size,
                                     repeat=repeat, seed=args.seed, arrays=arrays)

    # Stay inside one epoch: crossing it would refill the shuffle buffer mid-round.
    epoch_batches = len(arrays[0]) // args.batch_size
    pipeline_batches = min(args.pipeline_batches or 10 * args.steps, epoch_batches - 1)
    if pipeline_batches < 1:
        raise ValueError(f"--batch-size {args.batch_size} leaves no batch to time in one epoch")

    progress("warming up (tracing, XLA compilation)")
    fit_off_model, fit_off = fit_variant("dcgan", args.preset, make_data, args, jit=False)
    _, fit_on = fit_variant("dcgan", args.preset, make_data, args, jit=True)
    first_batch_seconds = []
    variants = [
        Variant("fit_xla_off", fit_off),
        Variant("fit_xla_on", fit_on),
        Variant("bare_xla_off", bare_variant(make_data, args, jit=False)),
        Variant("bare_xla_on", bare_variant(make_data, args, jit=True)),
        Variant("data_pipeline", pipeline_variant(
            lambda repeat: make_data(preset["image_size"], preset["channels"], repeat),
            pipeline_batches, args.batch_size, first_batch_seconds)),
        Variant(REFERENCE, reference_variant(arrays, args)),
    ]
    for family, family_preset in args.families.items():
        for name, jit in family_jits(family):
            _, run_round = fit_variant(family, family_preset, make_data, args, jit=jit)
            variants.append(Variant(f"{family}_fit_xla_{name}", run_round))
    for r in range(args.repeats):
        for variant in variants:  # interleaved: machine load hits every variant alike
            variant.run()
        progress(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{v.name} {v.rates()[-1]:,.0f} img/s" for v in variants))
    by_name = {v.name: v for v in variants}
    rss_training = peak_rss_mib()

    def paired_ratio(numerator, denominator):
        # Per-round ratio of seconds per image, median over rounds.
        return statistics.median(
            (sa / na) / (sb / nb)
            for sa, na, sb, nb in zip(by_name[numerator].seconds, by_name[numerator].images,
                                      by_name[denominator].seconds, by_name[denominator].images)
        )

    throughput = {}
    for v in variants:
        rates = v.rates()
        throughput[v.name] = {
            "images_per_sec": statistics.median(rates),
            "min_images_per_sec": min(rates),
            "max_images_per_sec": max(rates),
            "rounds_images_per_sec": rates,
            "vs_fit_xla_off": paired_ratio("fit_xla_off", v.name),
            "vs_reference": paired_ratio(REFERENCE, v.name),
        }
    overhead = {f"xla_{j}": paired_ratio(f"fit_xla_{j}", f"bare_xla_{j}") for j in ("off", "on")}

    progress("exporting and timing LiteRT")
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        written = export_model(fit_off_model, tmp, args.preset)
        saved_model_bytes = folder_bytes(written["saved_model"])
        tflite_bytes = written["tflite"].stat().st_size
        latency = litert_latency_ms(written["tflite"], preset["latent_dim"], args.latency_runs)

    return {
        "config": {
            "preset": args.preset, "data": DATA_SPEC, "batch_size": args.batch_size,
            "steps": args.steps, "reference_steps": args.reference_steps,
            "families": args.families, "repeats": args.repeats, "warmup": args.warmup,
            "pipeline_batches": pipeline_batches, "latency_runs": args.latency_runs,
            "seed": args.seed,
        },
        "environment": {
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "machine": device.machine(),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        },
        "throughput": throughput,
        "pipeline_first_batch_s": statistics.median(first_batch_seconds),
        "keras_overhead": overhead,
        "peak_rss_mib_after_data": rss_baseline,
        "peak_rss_mib_after_training": rss_training,
        "peak_rss_mib": peak_rss_mib(),
        "saved_model_bytes": saved_model_bytes,
        "tflite_bytes": tflite_bytes,
        "litert_latency": {f"threads_{n}": v for n, v in latency.items()},
        "wall_time_s": time.perf_counter() - wall_start,
    }


def format_table(results):
    """The results as a markdown table (with a heading line)."""
    c, env = results["config"], results["environment"]
    tp = results["throughput"]
    rows = []

    def row(label, median, spread="", ratio="", baseline=""):
        rows.append((label, median, spread, "", ratio, baseline))

    for name, label in variant_labels(c["families"]).items():
        r = tp[name]
        rows.append((
            label, f"{r['images_per_sec']:,.0f}",
            f"{r['min_images_per_sec']:,.0f}..{r['max_images_per_sec']:,.0f}",
            f"{r['vs_reference']:.2f}x", f"{r['vs_fit_xla_off']:.2f}x", "fit, XLA off",
        ))
    row("pipeline first batch (shuffle-buffer fill), s", f"{results['pipeline_first_batch_s']:.2f}")
    for jit in ("off", "on"):
        row(f"Keras overhead, XLA {jit}: fit / bare step time", "", "",
            f"{results['keras_overhead'][f'xla_{jit}']:.3f}x", f"bare loop, XLA {jit}")
    row("peak RSS after import and data load, MiB", f"{results['peak_rss_mib_after_data']:,.0f}")
    row("peak RSS after training, MiB", f"{results['peak_rss_mib_after_training']:,.0f}")
    row("peak RSS incl. export and LiteRT, MiB", f"{results['peak_rss_mib']:,.0f}")
    row("SavedModel folder, MiB", f"{results['saved_model_bytes'] / 2**20:.2f}")
    row(".tflite file, MiB", f"{results['tflite_bytes'] / 2**20:.2f}")
    lat = results["litert_latency"]
    for n in LATENCY_THREADS:
        r = lat[f"threads_{n}"]
        row(f"LiteRT batch-1 latency, {n} thread{'s' * (n > 1)}, ms", f"{r['median_ms']:.3f}",
            f"p10..p90 {r['p10_ms']:.3f}..{r['p90_ms']:.3f}",
            f"{r['median_ms'] / lat['threads_1']['median_ms']:.2f}x", "1 thread")
    families = ", ".join(f"{f} `{p}`" for f, p in c["families"].items()) or "none"
    heading = (
        f"DC-GAN `{c['preset']}` on {c['data']}, batch {c['batch_size']}; other families: "
        f"{families}; reference: TF DCGAN tutorial, batch 256. {c['repeats']} interleaved "
        f"rounds of {c['steps']} steps ({c['reference_steps']} for the reference, "
        f"{c['pipeline_batches']} batches for the pipeline), medians with min..max, ratios are "
        f"medians of per-round ratios; LiteRT over {c['latency_runs']} calls. "
        f"TF {env['tensorflow']}, Keras {env['keras']}, {env['cpus']} CPUs, load average "
        f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}, "
        f"{results['wall_time_s']:.0f} s from data load to the end."
    )
    header = ("measurement", "median", "spread", "vs reference", "ratio", "ratio baseline")
    lines = [heading, "", "| " + " | ".join(header) + " |", "|---|--:|--:|--:|--:|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def main(argv=None):
    """Measures, prints the table, optionally writes JSON; returns the results."""
    args = parse_args(argv)
    results = measure(args)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
