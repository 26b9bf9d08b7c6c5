"""Data loaders at scale (issue 16): decoded into memory vs streamed folder vs packed TFRecords.

    python benchmarks/data_loaders.py --workdir /tmp/loaders [--sizes 20000 40000] [--rounds 3] \\
        [--preset dcgan_64_rgb] [--json docs/data_loaders.json]

For every size, generates a folder of that many images of mixed sizes
(180-300 px per side), formats (JPEG and PNG) and channels (RGB and gray)
once (`make_folder`, reused when it is there), packs it once as TFRecords at
the model's size (`python -m zoo.data pack`, timed), then measures three
loaders, each in a process of its own, alternately, `--rounds` times:

* `memory`: every file decoded and fitted up front, then `make_dataset` from
  the uint8 array (what a folder took before streaming, minus its refusal
  of mixed sizes);
* `folder`: `folder:` streamed (`zoo.data.streams.Stream`);
* `tfrecord`: the packed shards streamed.

Each process reports its peak RSS after the pipeline ran and after
training, the seconds from nothing to the first batch, the pipeline's
steady img/s alone (`--batches` batches after the first), and the
training img/s of the preset fed by it (`--train-steps` steps after two
warm-up steps, XLA as the family's default). Prints a Markdown table of
medians and writes the rounds to `--json`.

Targets from the issue: streamed RSS <= 1.5 GB and first batch <= 5 s at
both sizes; training fed by the streamed folder >= 0.9x the rate fed from
memory; pipeline >= 3x the training rate.

Every measurement is appended to `<workdir>/rounds.jsonl` as it is taken and
a rerun with the same `--workdir` skips what is there, so an interrupted run
(the full one took 55 minutes on 2 cores) resumes where it stopped.

Inside a child (`--child LOADER`), one loader is measured and its JSON
printed on the last line of stdout.
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

LOADERS = ("memory", "folder", "tfrecord")


# ---- test folders ----------------------------------------------------------------


def _write_image(args):
    path, seed = args
    from PIL import Image

    rng = np.random.RandomState(seed)
    h, w = rng.randint(180, 301, size=2)
    gray = rng.rand() < 0.25
    # Smooth content (a few random colors, upsampled) compresses like photos, not like noise.
    coarse = (rng.rand(4, 4, 1 if gray else 3) * 255).astype(np.uint8)
    image = Image.fromarray(coarse[..., 0] if gray else coarse).resize((int(w), int(h)), Image.BICUBIC)
    if path.suffix == ".jpg":
        image.save(path, quality=90)
    else:
        image.save(path)


def make_folder(root, n, workers=2):
    """`n` images below `root` in 10 subfolders, 180-300 px per side, JPEG/PNG, RGB/gray, reproducible."""
    root = pathlib.Path(root)
    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == n:
        return root
    jobs = []
    for i in range(n):
        sub = root / f"class{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        jobs.append((sub / f"{i:06d}.{'jpg' if i % 2 else 'png'}", i))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=256))
    done.write_text(str(n))
    return root


# ---- one loader, in its own process ----------------------------------------------


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_loader(loader, spec, preset, batch_size, batches, train_steps):
    """Times one loader in this process; returns its measurements."""
    import keras

    import zoo
    from zoo import data
    from zoo.data import streams

    model = zoo.get_model("dcgan", preset, seed=0)
    size, channels = model.image_size, model.channels
    start = time.perf_counter()
    if loader == "memory":
        source = data.open_source(spec)
        images = np.stack([image for image, _, ok, _ in data.in_source_order(source, size, channels)
                           .as_numpy_iterator() if ok])
        dataset = data.make_dataset("npz:memory", size, channels, batch_size, repeat=True, arrays=(images, None))
    else:
        dataset = streams.Stream(data.open_source(spec), size, channels, batch_size).dataset()
    iterator = iter(dataset)
    next(iterator)
    first_batch_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    pipeline_img_s = batches * batch_size / (time.perf_counter() - start)
    rss_after_pipeline = _peak_rss_mib()

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:  # steps 0 and 1 trace and warm up
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    model.compile(jit_compile=type(model).xla_by_default())
    timer = StepTimer()
    # Keras takes a dataset, not an iterator: `fit` starts the pipeline again (warm-up covers it).
    model.fit(dataset, steps_per_epoch=train_steps + 2, epochs=1, verbose=0, callbacks=[timer])
    return {
        "first_batch_s": first_batch_s,
        "pipeline_img_s": pipeline_img_s,
        "train_img_s": train_steps * batch_size / timer.seconds,
        "peak_rss_mib_after_pipeline": rss_after_pipeline,
        "peak_rss_mib": _peak_rss_mib(),
    }


def run_child(loader, spec, args):
    command = [sys.executable, __file__, "--child", loader, "--spec", spec, "--preset", args.preset,
               "--batch-size", str(args.batch_size), "--batches", str(args.batches),
               "--train-steps", str(args.train_steps)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"{loader} on {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the run ---------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="/tmp/zoo_data_loaders", help="generated folders and shards")
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 40_000], help="images per folder")
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    p.add_argument("--rounds", type=int, default=3, help="times each loader is measured, alternately")
    p.add_argument("--preset", default="dcgan_64_rgb", help="the DC-GAN preset trained (its size and channels)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=200, help="pipeline batches timed after the first")
    p.add_argument("--train-steps", type=int, default=30, help="training steps timed after 2 warm-up steps")
    p.add_argument("--shards", type=int, default=64, help="TFRecord shards to pack")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--child", choices=LOADERS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _median(rounds, key):
    return statistics.median(r[key] for r in rounds)


def format_table(results):
    # RSS after the pipeline judges the loader; after training it adds the XLA-compiled step (~1.1 GB for dcgan_64_rgb).
    lines = ["| images | loader | peak RSS, pipeline (MiB) | peak RSS, + training (MiB) | first batch (s) | "
             "pipeline img/s | training img/s | training vs memory | pipeline / training |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size, measured in results["sizes"].items():
        memory = measured["loaders"].get("memory")
        for loader, rounds in measured["loaders"].items():
            train = _median(rounds, "train_img_s")
            versus = f"{train / _median(memory, 'train_img_s'):.2f}x" if memory else ""
            lines.append(
                f"| {size} | {loader} | {_median(rounds, 'peak_rss_mib_after_pipeline'):.0f} "
                f"| {_median(rounds, 'peak_rss_mib'):.0f} | {_median(rounds, 'first_batch_s'):.2f} "
                f"| {_median(rounds, 'pipeline_img_s'):.0f} | {train:.0f} | {versus} "
                f"| {_median(rounds, 'pipeline_img_s') / train:.1f}x |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_loader(args.child, args.spec, args.preset, args.batch_size, args.batches,
                                        args.train_steps)))
        return None
    import zoo
    from zoo.data.__main__ import pack

    size = zoo.get_model("dcgan", args.preset).image_size
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "rounds.jsonl"
    done = {}  # (images, round, loader) -> measurement, from earlier runs
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            done[entry["images"], entry["round"], entry["loader"]] = entry["measured"]
    results = {"config": vars(args), "sizes": {}}
    began = time.perf_counter()
    for n in args.sizes:
        folder = make_folder(workdir / f"folder_{n}", n)
        specs = {"memory": f"folder:{folder}", "folder": f"folder:{folder}"}
        measured = {"pack_s": None, "loaders": {}}  # pack_s: None when the shards were there
        if "tfrecord" in args.loaders:
            packed = workdir / f"packed_{n}_{size}"
            start = time.perf_counter()
            if not (packed / ".complete").is_file():
                pack(f"folder:{folder}", str(packed), args.shards, size)
                (packed / ".complete").write_text("")
                measured["pack_s"] = time.perf_counter() - start
            specs["tfrecord"] = f"tfrecord:{packed}/*.tfrecord"
        for r in range(args.rounds):
            for loader in args.loaders:
                if (n, r, loader) not in done:
                    print(f"{n} images, round {r + 1}/{args.rounds}: {loader}", file=sys.stderr, flush=True)
                    done[n, r, loader] = run_child(loader, specs[loader], args)
                    with log.open("a") as f:
                        f.write(json.dumps({"images": n, "round": r, "loader": loader,
                                            "measured": done[n, r, loader]}) + "\n")
                measured["loaders"].setdefault(loader, []).append(done[n, r, loader])
        results["sizes"][n] = measured
    results["wall_time_s"] = time.perf_counter() - began
    print(format_table(results))
    for n, measured in results["sizes"].items():
        if measured["pack_s"] is not None:
            print(f"packing {n} images: {measured['pack_s']:.0f} s")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
