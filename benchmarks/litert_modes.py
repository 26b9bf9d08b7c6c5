"""Size, latency and quality of every LiteRT quantization mode, per model family.

    python benchmarks/litert_modes.py [--families dcgan vae] [--presets dcgan_tiny]
        [--keras run/model.keras ...] [--runs 300] [--rounds 10] [--fd-num 2000] [--json out.json]

For each family's default preset (`zoo.default_preset`; `--presets` picks
another), or a trained `.keras` file given with `--keras` (its family is the
model's class), the model's `serving_default` signature is exported once with
`export.export_saved_model` and converted with every `export.Quantize` mode
(int8 calibrates on `model.representative_inputs()`; inputs and outputs stay
float32). A preset without `--keras` is first trained for `--fit-steps` (50)
steps on Fashion-MNIST's test split, so its batch-norm statistics and outputs
look like a real model's rather than a random init's near-constant images.

Reported per family and mode:

* size: the `.tflite` file in KiB and its ratio to the float32 (`none`) file;
* batch-1 latency with `ai_edge_litert`'s `Interpreter(model_content=...,
  num_threads=1)` and `num_threads=2` (default op resolver, so XNNPACK where it
  applies), one call of `get_signature_runner("serving_default")` (which also
  sets the input and allocates): median, p10 and p90 over `--runs` calls;
* quality against the float32 SavedModel on 256 fixed latents (not the
  calibration latents): max and mean absolute pixel error (pixels in [0, 1]; one
  8-bit gray level is 1/255 = 0.0039) and PSNR in dB (peak 1; capped at 200 dB,
  i.e. identical outputs);
* FD change: the Frechet distance (`zoo.metrics`, features of the project's
  Fashion-MNIST classifier, against the first `--fd-num` Fashion-MNIST test
  images) of the mode's images minus that of the float32 SavedModel's images,
  both made from the same `--fd-num` (2000) latents of a fixed seed. It says
  how much sample quality the quantization costs, on the scale of the
  metric itself (`fd_saved_model` in the JSON). Models the classifier cannot
  take (not 28/32-pixel grayscale) and `--fd-num 0` get none.

Method: all interpreters (families x modes x thread counts) are built and warmed
up first, then timed in `--rounds` interleaved rounds; in each round every
interpreter runs a block of `--runs / --rounds` calls, in an order rotated from
round to round, so load from other processes hits every mode alike. Latency
ratios to `none` (JSON only) are medians of per-round ratios of medians.

The FD column adds about 50 s per family at a load average of 7 (`fd_s` in the
JSON), most of it the `dynamic` (28 s) and `int8` (13 s) interpreters making
2,000 images; `--fd-num 0` skips it. Without it the defaults took 100 s
on a 2-core machine at a load average of 4 (most of it
the two 50-step fits, exports and conversions); less on an idle one. The
markdown table goes to stdout, progress to stderr; `--json` also writes every
number.
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

if __name__ == "__main__" and not __package__:
    # `python benchmarks/litert_modes.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from export import Quantize, convert, export_saved_model  # noqa: E402
from zoo import data as zoo_data  # noqa: E402
from zoo import device  # noqa: E402

DATA_SPEC = "fashion_mnist:test"
FIT_BATCH = 64
THREADS = (1, 2)
QUALITY_LATENTS = 256
QUALITY_SEED = 4242  # representative_inputs() calibrates on seeds 1000..1015
PSNR_CAP_DB = 200.0
MODES = tuple(Quantize)
FD_SEED = 4243  # neither the calibration nor the quality latents
FD_BATCH = 250  # latents per SavedModel / interpreter call


def parse_args(argv=None):
    """Parses command-line options; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", choices=sorted(zoo.FAMILIES),
                   default=list(zoo.FAMILIES), help="families to measure (default: all)")
    p.add_argument("--presets", nargs="+", default=[],
                   help="presets replacing their family's default (grayscale ones: the fit "
                        "data is Fashion-MNIST)")
    p.add_argument("--keras", nargs="+", type=pathlib.Path, default=[], metavar="FILE",
                   help="trained .keras files, at most one per family; used instead of a preset")
    p.add_argument("--fit-steps", type=int, default=50,
                   help="Fashion-MNIST steps (batch 64) before exporting a preset")
    p.add_argument("--runs", type=int, default=300,
                   help="timed batch-1 calls per mode and thread count")
    p.add_argument("--rounds", type=int, default=10,
                   help="interleaved rounds the runs are split into")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per interpreter")
    p.add_argument("--seed", type=int, default=0, help="model initialization and shuffle seed")
    p.add_argument("--fd-num", type=int, default=2000,
                   help="latents (and real test images) of the FD column; 0 skips it")
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = p.parse_args(argv)
    for name in ("runs", "rounds", "warmup"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.fit_steps < 0:
        p.error(f"--fit-steps must be >= 0, got {args.fit_steps}")
    if args.fd_num == 1 or args.fd_num < 0:
        p.error(f"--fd-num must be 0 (no FD) or >= 2, got {args.fd_num}")
    if args.runs < args.rounds:
        p.error(f"--runs ({args.runs}) must be >= --rounds ({args.rounds})")
    args.preset_of = {f: zoo.default_preset(f) for f in args.families}
    for preset in args.presets:
        family = next((f for f in args.families if preset in zoo.FAMILIES[f].presets), None)
        if family is None:
            p.error(f"preset {preset!r} belongs to none of --families {args.families}")
        if zoo.FAMILIES[family].presets[preset]["config"].get("channels", 1) != 1:
            p.error(f"preset {preset!r} is not grayscale; the fit data is Fashion-MNIST "
                    "(pass a trained model with --keras instead)")
        args.preset_of[family] = preset
    for path in args.keras:
        if path.suffix != ".keras" or not path.is_file():
            p.error(f"--keras {path}: not a .keras file")
    return args


def progress(message):
    """One line of progress on stderr (stdout carries the table)."""
    print(f"[litert_modes] {message}", file=sys.stderr, flush=True)


def load_keras_models(paths, families):
    """`{family: (model, path)}` of trained `.keras` files, family from the model class."""
    models = {}
    for path in paths:
        model = zoo.load_model(path)
        family = next((f for f, cls in zoo.FAMILIES.items() if isinstance(model, cls)), None)
        if family not in families:
            raise ValueError(f"{path} holds a {type(model).__name__}, not one of {families}")
        if family in models:
            raise ValueError(
                f"two --keras files for family {family!r}: {models[family][1]}, {path}")
        models[family] = (model, path)
    return models


def fitted_preset(family, preset, args, arrays):
    """The preset's model after `args.fit_steps` steps on Fashion-MNIST (test split)."""
    keras.utils.set_random_seed(args.seed)
    model = zoo.get_model(family, preset, seed=args.seed)
    model.compile()
    if args.fit_steps:
        ds = zoo_data.make_dataset(DATA_SPEC, model.image_size, model.channels, FIT_BATCH,
                                   repeat=True, seed=args.seed, arrays=arrays)
        model.fit(ds.take(args.fit_steps), epochs=1, verbose=0, shuffle=False)
    return model


def quality(reference, images):
    """Max/mean absolute pixel error and PSNR (peak 1) of `images` against `reference`."""
    diff = np.abs(np.asarray(images, np.float64) - np.asarray(reference, np.float64))
    mse = float(np.mean(diff**2))
    psnr = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * np.log10(1.0 / mse))
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
            "psnr_db": float(psnr)}


def fd_setup(model, fd_num):
    """`(fd_fn, None)` for the FD column, or `(None, reason)` when it cannot be measured.

    `fd_fn(generate)` is the FD against the real test statistics of the
    images `generate` makes from `fd_num` fixed latents (numpy), in batches.
    """
    if not fd_num:
        return None, "--fd-num 0"
    from zoo import metrics

    extractor = metrics.get_extractor("fashion_classifier")
    try:
        extractor.check_image_shape(model.image_shape)
    except ValueError as e:
        return None, str(e)
    real = metrics.real_statistics(DATA_SPEC, fd_num, model.image_shape, extractor)
    z = model.sample_latents(fd_num, seed=FD_SEED).numpy()

    def fd_fn(generate):
        images = np.concatenate([generate(z[i : i + FD_BATCH]) for i in range(0, len(z), FD_BATCH)])
        return metrics.compare(real, metrics.statistics_of(images, extractor), ("fd",))["fd"]

    return fd_fn, None


def convert_family(family, model, fd_num):
    """Exports and converts one model; returns its per-mode results and flatbuffers."""
    from ai_edge_litert.interpreter import Interpreter

    z = model.sample_latents(QUALITY_LATENTS, seed=QUALITY_SEED).numpy()
    fd_start = time.perf_counter()
    fd_fn, fd_skipped = fd_setup(model, fd_num)
    fd_seconds = time.perf_counter() - fd_start
    with tempfile.TemporaryDirectory(prefix="zoo-litert-") as tmp:
        saved = export_saved_model(model, tmp, family)
        saved_model_bytes = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
        signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
        reference = signature(z=tf.constant(z))["images"].numpy()
        fd_start = time.perf_counter()
        fd_saved = fd_fn(lambda batch: signature(z=tf.constant(batch))["images"].numpy()) if fd_fn else None
        fd_seconds += time.perf_counter() - fd_start
        flatbuffers, modes = {}, {}
        for mode in MODES:
            start = time.perf_counter()
            flatbuffers[mode] = convert(saved, "serving_default", mode,
                                        representative_data=lambda: model.representative_inputs())
            convert_s = time.perf_counter() - start
            interpreter = Interpreter(model_content=flatbuffers[mode], num_threads=max(THREADS))
            runner = interpreter.get_signature_runner("serving_default")
            images = runner(z=z)["images"]
            fd_start = time.perf_counter()
            fd = fd_fn(lambda batch: runner(z=batch)["images"]) if fd_fn else None
            fd_seconds += time.perf_counter() - fd_start
            modes[mode.value] = {
                "tflite_bytes": len(flatbuffers[mode]),
                "size_kib": len(flatbuffers[mode]) / 1024,
                "size_ratio_vs_none": len(flatbuffers[mode]) / len(flatbuffers[Quantize.NONE]),
                "convert_s": convert_s,
                "quality": quality(reference, images),
                "fd": fd,
                "fd_change": None if fd is None else fd - fd_saved,
            }
            fd_text = "" if fd is None else f", FD change {fd - fd_saved:+.3g}"
            progress(f"{family} {mode.value}: {len(flatbuffers[mode]) / 1024:.1f} KiB, "
                     f"max error {modes[mode.value]['quality']['max_abs_error']:.2e}{fd_text}")
    return {
        "saved_model_bytes": saved_model_bytes,
        # How much the reference images vary from latent to latent (0: parity means nothing).
        "reference_pixel_std": float(reference.std(axis=0).mean()),
        "fd_saved_model": fd_saved,
        "fd_not_measured": fd_skipped,
        "fd_s": fd_seconds,  # the FD column's share of the wall time
        "modes": modes,
    }, flatbuffers, z[:1]


def time_latency(flatbuffers, inputs, args):
    """Interleaved batch-1 latency of every `(family, mode)` flatbuffer and thread count.

    Returns:
        `{family: {mode: {"threads_N": {median_ms, p10_ms, p90_ms, ratio_vs_none}}}}`.
    """
    from ai_edge_litert.interpreter import Interpreter

    keys = [(f, m, n) for f in flatbuffers for m in MODES for n in THREADS]
    # The interpreters (and their flatbuffers) must outlive the signature runners.
    interpreters = {k: Interpreter(model_content=flatbuffers[k[0]][k[1]], num_threads=k[2])
                    for k in keys}
    runners = {k: it.get_signature_runner("serving_default") for k, it in interpreters.items()}
    for k, runner in runners.items():
        for _ in range(args.warmup):
            runner(z=inputs[k[0]])
    times = {k: [] for k in keys}
    round_medians = {k: [] for k in keys}
    per_round = [args.runs // args.rounds + (r < args.runs % args.rounds)
                 for r in range(args.rounds)]
    for r, calls in enumerate(per_round):
        shift = r % len(keys)
        for k in keys[shift:] + keys[:shift]:  # rotated order: no fixed position in the round
            runner, z = runners[k], inputs[k[0]]
            block = []
            for _ in range(calls):
                start = time.perf_counter()
                runner(z=z)
                block.append((time.perf_counter() - start) * 1e3)
            times[k] += block
            round_medians[k].append(statistics.median(block))
        progress(f"latency round {r + 1}/{args.rounds}")
    result = {}
    for (f, m, n), t in times.items():
        p10, p90 = np.percentile(t, [10, 90])
        base = round_medians[(f, Quantize.NONE, n)]
        result.setdefault(f, {}).setdefault(m.value, {})[f"threads_{n}"] = {
            "median_ms": statistics.median(t), "p10_ms": float(p10), "p90_ms": float(p90),
            "ratio_vs_none": statistics.median(
                a / b for a, b in zip(round_medians[(f, m, n)], base)),
        }
    return result


def measure(args):
    """Runs every measurement; returns the results as a JSON-ready dict."""
    import ai_edge_litert

    wall_start = time.perf_counter()
    load_start = os.getloadavg()
    trained = load_keras_models(args.keras, args.families)
    arrays = None
    families, flatbuffers, inputs = {}, {}, {}
    for family in args.families:
        if family in trained:
            model, path = trained[family]
            source = {"preset": None, "weights": str(path)}
        else:
            preset = args.preset_of[family]
            if arrays is None:
                arrays = zoo_data.load_arrays(DATA_SPEC)
            progress(f"{family}: fitting {preset} for {args.fit_steps} steps")
            model = fitted_preset(family, preset, args, arrays)
            source = {"preset": preset,
                      "weights": f"random init + {args.fit_steps} fit steps on {DATA_SPEC}"}
        progress(f"{family}: exporting and converting {[m.value for m in MODES]}")
        results, flatbuffers[family], inputs[family] = convert_family(family, model, args.fd_num)
        families[family] = {**source, **results}
    progress(f"timing {len(args.families) * len(MODES) * len(THREADS)} interpreters, "
             f"{args.runs} calls each")
    latency = time_latency(flatbuffers, inputs, args)
    for family, modes in latency.items():
        for mode, by_threads in modes.items():
            families[family]["modes"][mode]["latency"] = by_threads
    return {
        "config": {
            "families": args.families, "fit_data": DATA_SPEC, "fit_steps": args.fit_steps,
            "fit_batch": FIT_BATCH, "runs": args.runs, "rounds": args.rounds,
            "warmup": args.warmup, "threads": list(THREADS), "quality_latents": QUALITY_LATENTS,
            "quality_seed": QUALITY_SEED, "seed": args.seed, "fd_num": args.fd_num,
            "fd_seed": FD_SEED,
        },
        "environment": {
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
            "python": platform.python_version(), "cpus": os.cpu_count(), "machine": device.machine(),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        },
        "fd_change": fd_note(args.fd_num),
        "families": families,
        "wall_time_s": time.perf_counter() - wall_start,
    }


def fd_note(fd_num):
    """What the FD change column holds, for the heading and the JSON."""
    if not fd_num:
        return "FD change not measured (--fd-num 0)."
    return (f"FD change: FD of the mode's images minus FD of the float32 SavedModel's images, "
            f"both from the same {fd_num} latents (seed {FD_SEED}), against the first {fd_num} "
            f"{DATA_SPEC} images, features of the project's Fashion-MNIST classifier "
            f"(zoo.metrics).")


def format_table(results):
    """The results as a markdown table (with a heading paragraph)."""
    c, env = results["config"], results["environment"]

    def latency_cell(r):
        return f"{r['median_ms']:.3f} ({r['p10_ms']:.3f}..{r['p90_ms']:.3f})"

    rows = []
    for family, fr in results["families"].items():
        label = f"{family} `{fr['preset']}`" if fr["preset"] else f"{family} `{fr['weights']}`"
        for mode, r in fr["modes"].items():
            q = r["quality"]
            rows.append((
                label, mode, f"{r['size_kib']:,.1f}", f"{r['size_ratio_vs_none']:.2f}x",
                *(latency_cell(r["latency"][f"threads_{n}"]) for n in THREADS),
                f"{q['max_abs_error']:.2e}", f"{q['mean_abs_error']:.2e}", f"{q['psnr_db']:.1f}",
                "n/a" if r["fd_change"] is None else f"{r['fd_change']:+.3f}",
            ))
    weights = "; ".join(f"{f}: {fr['weights']}" for f, fr in results["families"].items())
    fd_saved = "; ".join(
        f"{f}: {fr['fd_saved_model']:.3f}" if fr["fd_saved_model"] is not None
        else f"{f}: not measured ({fr['fd_not_measured']})"
        for f, fr in results["families"].items())
    heading = (
        f"LiteRT quantization modes, batch-1 `serving_default`. Weights: {weights}. "
        f"Latency: median (p10..p90) in ms over {c['runs']} calls in {c['rounds']} interleaved "
        f"rounds, `ai_edge_litert` {env['ai_edge_litert']} signature runner. Quality: against "
        f"the float32 SavedModel on {c['quality_latents']} fixed latents, pixels in [0, 1] "
        f"(1/255 = 3.9e-03), PSNR with peak 1. {results['fd_change']} FD of the SavedModel: "
        f"{fd_saved}. "
        f"TF {env['tensorflow']}, Keras {env['keras']}, {env['cpus']} CPUs, load average "
        f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}, "
        f"{results['wall_time_s']:.0f} s."
    )
    header = ("model", "mode", "size KiB", "size vs none",
              *(f"latency {n} thread{'s' * (n > 1)}, ms" for n in THREADS),
              "max abs error", "mean abs error", "PSNR dB", "FD change")
    lines = [heading, "", "| " + " | ".join(header) + " |",
             "|---|---|--:|--:|" + "--:|" * len(THREADS) + "--:|--:|--:|--:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    """Measures, prints the table, optionally writes JSON; returns the results."""
    import json

    args = parse_args(argv)
    results = measure(args)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
