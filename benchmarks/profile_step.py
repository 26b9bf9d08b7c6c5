"""Where a training step goes: wall time per phase of `train_step`, and the top op types.

    python benchmarks/profile_step.py [--models stylegan2,dcgan] [--preset FAMILY=PRESET]
        [--batch-size 64] [--repeats 7] [--calls 4] [--precision float32] [--jit]
        [--ops 12] [--json out.json]

For each model (its default preset unless `--preset` names another, built,
compiled and fed real Fashion-MNIST batches as `train.py` does):

* every phase of its `train_step` (the family's phase methods, e.g.
  StyleGAN2's G main, path length, D main, R1, EMA) runs as its own
  `tf.function` on the same batch, `--calls` times per repeat;
* the whole `train_step` runs for one regularization cycle (the least common
  multiple of the lazy intervals: 16 steps for StyleGAN2's defaults), so its
  per-step time includes the lazy phases at their real frequency;
* the phases' amortized sum (a lazy phase counts `1 / interval`) is given
  next to the measured step: the difference is what the phases' separation
  hides (cross-phase fusion, `tf.cond` and metric updates);
* FLOPs per phase are counted from each phase's graph
  (`tf.profiler` float_operation: convolutions, their gradients and matmuls),
  so the achieved GFLOP/s is a measured number;
* one TF profiler trace of a regularization cycle gives the self time of the
  top `--ops` op types (`framework_op_stats`).

Method: the models and phases run in turns for `--repeats` rounds (model A's
phases, model B's phases, A's, ...), so load from other processes on a shared
machine hits all alike; every number is a median over rounds, and the cost
ratio between models is the median of per-round ratios of milliseconds per
image. Tracing is never timed: every function runs once first.

The markdown tables go to stdout, `--json` writes every number; progress goes
to stderr.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

if __name__ == "__main__" and not __package__:
    # `python benchmarks/profile_step.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo import device  # noqa: E402

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _phases(family, model):
    """`[(name, fn(step, real), runs per step)]` of a family's `train_step`, in its order."""
    if family == "stylegan2":
        batch = lambda real: zoo.base.batch_size_of(real)  # noqa: E731
        phases = [("G main", model._generator_step, 1.0)]
        if model.pl_weight:
            phases.append(("G reg (path length)", model._path_length_step, 1.0 / model.pl_interval))
        phases.append(("D main", model._discriminator_step, 1.0))
        if model.r1_gamma:
            phases.append(("D reg (R1)", model._r1_step, 1.0 / model.r1_interval))
        phases.append(("EMA", lambda step, real: model._update_ema(step, batch(real)), 1.0))
        phases.append(("noise (z, ws mixing, per-layer noise)",
                       lambda step, real: (model._mixed_ws(batch(real), model._seed(step, 0),
                                                           model._seed(step, 1), training=False),
                                           model._noise(batch(real), model._seed(step, 2))), 0.0))
        return phases
    if family == "dcgan":
        return [("D step", model._discriminator_step, 1.0), ("G step", model._generator_step, 1.0)]
    if family == "vae":
        return [("train_step", lambda step, real: model.train_step(real), 1.0)]
    raise ValueError(f"no phases known for {family!r}")


def _cycle(model):
    """Steps in one regularization cycle (every lazy phase runs a whole number of times)."""
    intervals = [getattr(model, name, 1) for name in ("pl_interval", "r1_interval")]
    return math.lcm(*[i for i in intervals if i]) if intervals else 1


def _flops(fn, *args):
    """Float operations of one call of the tf.function `fn` (graph count, nested calls included)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = fn.get_concrete_function(*args).graph
    opts = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return model_analyzer.profile(graph, options=opts).total_float_ops


def _op_stats(fn, args, calls, top):
    """Self time (ms per call) of the `top` op types over `calls` calls, from a profiler trace."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            fn(*args)
        tf.profiler.experimental.stop()
        paths = [str(p) for p in pathlib.Path(logdir).rglob("*.xplane.pb")]
        raw, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        return []
    table = json.loads(raw)[0]  # Google DataTable: the first table is the per-op one
    cols = [c["id"] for c in table["cols"]]
    by_type = {}
    for row in table["rows"]:
        cell = dict(zip(cols, (c["v"] for c in row["c"])))
        if cell.get("host_or_device") == "Host" and cell["type"] not in ("IDLE",):
            by_type[cell["type"]] = by_type.get(cell["type"], 0.0) + cell["total_self_time"]
    total = sum(by_type.values())
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "ms_per_call": us / 1000 / calls, "share": us / total} for op, us in ranked]


class Subject:
    """One model: its phase functions, a batch, and the timings collected per round."""

    def __init__(self, family, preset, args, arrays):
        self.family, self.preset = family, preset
        keras.utils.set_random_seed(0)
        self.model = zoo.FAMILIES[family].from_preset(preset, load_weights=False)
        self.model.compile(jit_compile=args.jit)
        dataset = zoo_data.make_dataset("fashion_mnist:train", self.model.image_size,
                                        self.model.channels, args.batch_size, seed=0, arrays=arrays)
        self.real = next(iter(dataset))
        self.real = self.real[0] if isinstance(self.real, (tuple, list)) else self.real
        self.batch = args.batch_size
        self.step = tf.constant(1, tf.int64)
        self.cycle = _cycle(self.model)
        self.phases = [(name, tf.function(fn, jit_compile=args.jit), per_step)
                       for name, fn, per_step in _phases(family, self.model)]
        train_step = self.model.train_step
        real = self.real

        def cycle():
            for _ in tf.range(self.cycle):
                train_step(real)
        self.full = tf.function(cycle, jit_compile=False)
        self.times = {name: [] for name, _, _ in self.phases}
        self.times["full step"] = []
        self.flops = {}

    def warm_up(self):
        for name, fn, _ in self.phases:
            fn(self.step, self.real)
            self.flops[name] = _flops(fn, self.step, self.real)
        self.full()

    def round(self, calls):
        for name, fn, _ in self.phases:
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(self.step, self.real)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
            self.times[name].append((time.perf_counter() - start) / calls)
        start = time.perf_counter()
        self.full()
        keras.ops.convert_to_numpy(self.model.metrics[0].result())  # waits for the cycle
        self.times["full step"].append((time.perf_counter() - start) / self.cycle)

    def summary(self):
        median = {name: statistics.median(t) for name, t in self.times.items()}
        rows = []
        amortized = 0.0
        amortized_flops = 0.0
        for name, _, per_step in self.phases:
            ms = median[name] * 1000
            amortized += ms * per_step
            amortized_flops += self.flops[name] * per_step
            rows.append({"phase": name, "ms_per_call": ms, "runs_per_step": per_step,
                         "ms_per_step": ms * per_step, "gflop_per_call": self.flops[name] / 1e9,
                         "gflops_per_s": self.flops[name] / 1e9 / median[name]})
        step_ms = median["full step"] * 1000
        for row in rows:
            row["share_of_step"] = row["ms_per_step"] / step_ms
        return {
            "family": self.family, "preset": self.preset, "batch_size": self.batch,
            "cycle_steps": self.cycle, "phases": rows,
            "phases_amortized_ms": amortized, "step_ms": step_ms,
            "step_ms_per_image": step_ms / self.batch, "images_per_sec": self.batch / median["full step"],
            "gflop_per_step": amortized_flops / 1e9,
            "gflops_per_s": amortized_flops / 1e9 / median["full step"],
            "step_ms_spread": [min(self.times["full step"]) * 1000, max(self.times["full step"]) * 1000],
        }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="stylegan2,dcgan", help="comma-separated families")
    p.add_argument("--preset", action="append", default=[], metavar="FAMILY=PRESET")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians over them)")
    p.add_argument("--calls", type=int, default=4, help="calls of each phase per round")
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--jit", action="store_true", help="XLA-compile every phase")
    p.add_argument("--ops", type=int, default=12, help="op types listed per model (0: no trace)")
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in zoo.FAMILIES:
            p.error(f"unknown family {m!r}; choose from {sorted(zoo.FAMILIES)}")
    args.presets = {}
    for item in args.preset:
        family, _, preset = item.partition("=")
        if family not in args.models or preset not in zoo.FAMILIES[family].presets:
            p.error(f"--preset {item!r}: expected FAMILY=PRESET for a family in --models")
        args.presets[family] = preset
    if args.batch_size < 1 or args.repeats < 1 or args.calls < 1:
        p.error("--batch-size, --repeats and --calls must be >= 1")
    return args


def format_tables(results):
    lines = []
    for s in results["models"]:
        lines += [
            f"### {s['family']} ({s['preset']}, batch {s['batch_size']}, {results['precision']}"
            f"{', XLA' if results['jit'] else ''})",
            "",
            "| phase | ms per call | runs per step | ms per step | share of step | GFLOP per call | GFLOP/s |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in s["phases"]:
            lines.append(
                f"| {r['phase']} | {r['ms_per_call']:.1f} | {r['runs_per_step']:.3g} "
                f"| {r['ms_per_step']:.1f} | {r['share_of_step']:.0%} | {r['gflop_per_call']:.2f} "
                f"| {r['gflops_per_s']:.0f} |")
        lines += [
            f"| **phases, amortized** | | | {s['phases_amortized_ms']:.1f} | "
            f"{s['phases_amortized_ms'] / s['step_ms']:.0%} | {s['gflop_per_step']:.2f} | |",
            f"| **train_step (measured, {s['cycle_steps']}-step cycle)** | | | {s['step_ms']:.1f} "
            f"| 100% | | {s['gflops_per_s']:.0f} |",
            "",
            f"{s['images_per_sec']:.0f} img/s, {s['step_ms_per_image']:.2f} ms per image "
            f"(step spread {s['step_ms_spread'][0]:.0f}..{s['step_ms_spread'][1]:.0f} ms).",
            "",
        ]
        if s.get("ops"):
            lines += ["| op type | ms per step | share |", "|---|--:|--:|"]
            lines += [f"| {o['op']} | {o['ms_per_call'] / s['cycle_steps']:.1f} | {o['share']:.0%} |"
                      for o in s["ops"]]
            lines.append("")
    for pair, ratio in results.get("cost_ratios", {}).items():
        lines.append(f"Cost per image, {pair}: **{ratio:.2f}x** (median of per-round ratios).")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    keras.mixed_precision.set_global_policy(args.precision)
    arrays = zoo_data.load_arrays("fashion_mnist:train")
    subjects = []
    for family in args.models:
        preset = args.presets.get(family) or zoo.default_preset(family)
        print(f"[profile_step] building and tracing {family} ({preset})", file=sys.stderr, flush=True)
        subject = Subject(family, preset, args, arrays)
        subject.warm_up()
        subjects.append(subject)
    load_start = os.getloadavg()
    for r in range(args.repeats):
        for s in subjects:
            s.round(args.calls)
        print(f"[profile_step] round {r + 1}/{args.repeats}: " + ", ".join(
            f"{s.family} {s.times['full step'][-1] * 1000:.0f} ms/step" for s in subjects),
            file=sys.stderr, flush=True)
    summaries = [s.summary() for s in subjects]
    if args.ops:
        for s, summary in zip(subjects, summaries):
            summary["ops"] = _op_stats(s.full, (), 1, args.ops)
    ratios = {}
    for a in subjects[1:]:
        per_round = [(x / subjects[0].batch) / (y / a.batch)
                     for x, y in zip(subjects[0].times["full step"], a.times["full step"])]
        ratios[f"{subjects[0].family} / {a.family}"] = statistics.median(per_round)
    results = {
        "precision": args.precision, "jit": args.jit, "repeats": args.repeats, "calls": args.calls,
        "models": summaries, "cost_ratios": ratios,
        "environment": {"tensorflow": tf.__version__, "keras": keras.__version__,
                        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": device.machine(),
                        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
    }
    print(format_tables(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
