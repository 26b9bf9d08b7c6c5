"""Strategy x precision matrix: does every family train the same, and how fast, under each strategy?

    python benchmarks/distribute_matrix.py [--families dcgan,vae] [--precisions float32,...]
        [--steps 3] [--time-steps 20] [--batch-size 16] [--json out.json] [--workdir DIR]

For every family in `zoo.FAMILIES` (its tiny preset: the one named `*tiny*`,
else the one with the fewest parameters) and every precision policy, three
strategies train the same initial weights on the same global batches:

* one device (the reference);
* `MirroredStrategy` over 2 logical CPUs in one process
  (`tests/scripts/golden_step.py`: Keras' default optimizers);
* `MultiWorkerMirroredStrategy`, 2 worker processes on 127.0.0.1, one CPU
  replica each (`tests/scripts/multiworker_worker.py`: SGD, lr 0.05), with
  that script's one-device run, alone, as its reference.

Each distributed cell reports (a) the golden check: the largest weight
difference after `--steps` steps to the one-device run of the same policy,
against the tolerance below, and (b) the median step time over `--time-steps`
further steps as a ratio to that one-device run. The mirrored ratio comes
from one process that times both models back to back; the multi-worker one
from separate processes run one after the other, so load from other jobs on
a shared machine moves it more.

Tolerances: float32 as the tests hold it (1e-5 mirrored with Adam, 1e-6
multi-worker with SGD: only the summation order differs). Mixed policies
compute in 16 bits, where a different summation order rounds differently;
the bound is a few steps' worth of that rounding (`TOLERANCE`).

A markdown table goes to stdout, progress to stderr; `--json` writes every
number. Exit code 1 if a golden check fails or a run fails.
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # this process imports zoo for presets and weights
if __name__ == "__main__" and not __package__:
    # `python benchmarks/distribute_matrix.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "scripts" / "golden_step.py"
WORKER = REPO / "tests" / "scripts" / "multiworker_worker.py"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Largest weight difference to one device accepted, by strategy and policy.
TOLERANCE = {
    ("mirrored", "float32"): 1e-5,
    ("multiworker", "float32"): 1e-6,
    ("mirrored", "mixed_float16"): 1e-3,
    ("multiworker", "mixed_float16"): 1e-3,
    ("mirrored", "mixed_bfloat16"): 1e-2,
    ("multiworker", "mixed_bfloat16"): 1e-2,
}
TIMEOUT = 300  # seconds per launch (a tiny preset takes under 2 minutes); a hung collective must not hang the benchmark


def log(message):
    print(message, file=sys.stderr, flush=True)


def tiny_preset(family):
    """The family's preset named `*tiny*`, else the one with the fewest parameters."""
    import zoo

    presets = list(zoo.FAMILIES[family].presets)
    named = [p for p in presets if "tiny" in p]
    if named:
        return named[0]
    return min(presets, key=lambda p: zoo.get_model(family, p).count_params())


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def environment(tf_config=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def start(name, argv, log_path, tf_config=None):
    """Starts `python argv...` with its stdout and stderr in `log_path` (a pipe could fill and block it)."""
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, *map(str, argv)], env=environment(tf_config), cwd=REPO,
                                stdout=log_file, stderr=subprocess.STDOUT)
    return name, proc, log_path


def wait_all(procs):
    """Waits for `start()`ed processes, killing every one at the deadline; raises on failure."""
    deadline = time.monotonic() + TIMEOUT
    try:
        for _, proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"hung: killed after {TIMEOUT} s") from None
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc, log_path in procs:
        if proc.returncode != 0:
            tail = pathlib.Path(log_path).read_text()[-1500:]
            raise RuntimeError(f"{name} exited {proc.returncode}: {tail}")


def mirrored_cell(family, preset, precision, args, workdir):
    """Golden check and step times of 2 mirrored logical CPUs vs one device, in one process."""
    log_path = workdir / f"{family}-{precision}-mirrored.log"
    wait_all([start("golden_step", [GOLDEN, family, preset, args.steps, args.batch_size,
                                    "--precision", precision, "--time-steps", args.time_steps], log_path)])
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"golden_step printed no result: {log_path.read_text()[-1500:]}")
    result = json.loads(lines[-1])
    seconds = result["step_seconds"]
    return {
        "max_weight_diff": result["max_weight_diff"],
        "weight_change": result["weight_change"],
        "iterations": result["steps"],
        "one_step_seconds": seconds["one"],
        "step_seconds": seconds["two"],
        "ratio": seconds["two"] / seconds["one"],
    }


def multiworker_cell(family, preset, precision, args, workdir):
    """Golden check and step times of 2 worker processes vs one device (run after them, alone)."""
    import numpy as np

    import zoo

    init = workdir / f"{family}-init.npz"
    if not init.exists():
        np.savez(init, **{f"w{i}": w for i, w in enumerate(zoo.get_model(family, preset).get_weights())})
    outs = [workdir / f"{family}-{precision}-worker{i}" for i in range(2)] + [workdir / f"{family}-{precision}-one"]

    def launch(name, out, tf_config=None):
        argv = [WORKER, family, preset, args.steps, args.batch_size, init, out,
                "--precision", precision, "--time-steps", args.time_steps]
        return start(name, argv, f"{out}.log", tf_config)

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    wait_all([launch(f"worker {i}", outs[i], {"cluster": cluster, "task": {"type": "worker", "index": i}})
              for i in range(2)])
    wait_all([launch("one device", outs[2])])

    def load(out):
        with np.load(f"{out}.npz") as arrays:
            weights = {k: arrays[k] for k in arrays.files if k.startswith("w")}
        return weights, json.loads(pathlib.Path(f"{out}.json").read_text())

    (w0, info0), (w1, _), (one, info_one) = (load(o) for o in outs)
    if any(not np.array_equal(w0[k], w1[k]) for k in w0):
        raise RuntimeError("the two workers ended with different weights")
    return {
        "max_weight_diff": max(float(np.max(np.abs(w0[k] - one[k]))) for k in one),
        "iterations": info0["iterations"] + info_one["iterations"],
        "one_step_seconds": info_one["step_seconds"],
        "step_seconds": info0["step_seconds"],
        "ratio": info0["step_seconds"] / info_one["step_seconds"],
    }


def cell_text(cell, tolerance):
    if "error" in cell:
        return "hung" if cell["error"].startswith("hung") else "failed"
    verdict = "ok" if cell["max_weight_diff"] <= tolerance else "**FAIL**"
    return f"{cell['max_weight_diff']:.1e} ≤ {tolerance:.0e} {verdict}; {cell['ratio']:.2f}x"


def markdown(rows):
    lines = [
        "| family (preset) | precision | one device ms/step (Adam / SGD) "
        "| mirrored, 2 logical CPUs: max diff; time ratio | multi-worker, 2 processes: max diff; time ratio |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        mirrored, multi = row["mirrored"], row["multiworker"]
        one = " / ".join(f"{c['one_step_seconds'] * 1e3:.1f}" if "error" not in c else "-" for c in (mirrored, multi))
        lines.append(
            f"| {row['family']} ({row['preset']}) | {row['precision']} | {one} "
            f"| {cell_text(mirrored, TOLERANCE['mirrored', row['precision']])} "
            f"| {cell_text(multi, TOLERANCE['multiworker', row['precision']])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    import zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(zoo.FAMILIES),
                        help=f"comma-separated, from {sorted(zoo.FAMILIES)} (default: all)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--steps", type=int, default=3, help="golden steps")
    parser.add_argument("--time-steps", type=int, default=20, help="timed steps after them")
    parser.add_argument("--batch-size", type=int, default=16, help="GLOBAL batch (even)")
    parser.add_argument("--json", help="also write every number here")
    parser.add_argument("--workdir", help="keep every process's log and arrays here (default: a temporary folder)")
    args = parser.parse_args(argv)
    families = args.families.split(",")
    precisions = args.precisions.split(",")
    unknown = [f for f in families if f not in zoo.FAMILIES] + [p for p in precisions if p not in PRECISIONS]
    if unknown:
        parser.error(f"unknown family or precision: {', '.join(unknown)}")
    if args.batch_size % 2 or min(args.steps, args.time_steps) < 1:
        parser.error("--batch-size must be even, --steps and --time-steps positive")

    rows = []
    with tempfile.TemporaryDirectory(prefix="distribute-matrix-") as tmp:
        workdir = pathlib.Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for family in families:
            preset = tiny_preset(family)
            for precision in precisions:
                row = {"family": family, "preset": preset, "precision": precision}
                for strategy, measure in (
                    ("mirrored", lambda: mirrored_cell(family, preset, precision, args, workdir)),
                    ("multiworker", lambda: multiworker_cell(family, preset, precision, args, workdir)),
                ):
                    log(f"{family} {precision} {strategy} ...")
                    start = time.monotonic()
                    try:
                        row[strategy] = measure()
                    except RuntimeError as e:
                        row[strategy] = {"error": str(e)}
                        log(f"  failed: {e}")
                    row[strategy]["wall_seconds"] = time.monotonic() - start
                    row[strategy]["tolerance"] = TOLERANCE[strategy, precision]
                rows.append(row)
    print(markdown(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    bad = [r for r in rows for s in ("mirrored", "multiworker")
           if "error" in r[s] or r[s]["max_weight_diff"] > r[s]["tolerance"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
