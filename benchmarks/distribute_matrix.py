"""Strategy x precision matrix: does every family train the same, and how fast, under each strategy?

    python benchmarks/distribute_matrix.py [--families dcgan,vae] [--precisions float32,...]
        [--steps 3] [--time-steps 20] [--batch-size 16] [--json out.json] [--workdir DIR]

For every family in `zoo.FAMILIES` (its tiny preset: the one named `*tiny*`,
else the one with the fewest parameters) and every precision policy, three
strategies train the same initial weights on the same global batches with
`tests/scripts/golden_common.golden_optimizers` (SGD, lr 0.05, the VAE's
0.005: its update is linear in the gradient, so a different summation order
shows only as rounding; Adam turns the rounding of near-zero gradients into
whole steps; under mixed_float16 a fixed initial loss scale of 2**10, so
both runs take the same steps):

* one device (the reference);
* `MirroredStrategy` over 2 logical CPUs in one process
  (`tests/scripts/golden_step.py --sgd`), against that process's one-device run;
* `MultiWorkerMirroredStrategy`, 2 worker processes on 127.0.0.1, one CPU
  replica each (`tests/scripts/multiworker_worker.py`), against that
  script's one-device run, started alone after the workers.

Each distributed cell reports (a) the golden check of the float weights after
`--steps` steps against one device of the same policy: in float32 every
weight within `1e-6 + 1e-5 |w_one|` (the tests' bound; the cell shows the
largest difference); in a mixed policy, where the 16-bit backward pass
rounds differently for 8 or 16 examples per reduction, the relative update
difference `||w - w_one|| / ||w_one - w_init||` over all float weights
within `UPDATE_TOLERANCE` (a wrong data shard or noise slice changes the
update itself: a difference of order 1); and (b) the median step time over
`--time-steps` further steps as a ratio to that one-device run. The
mirrored ratio comes from one process that times both models back to back;
the multi-worker one from separate processes run one after the other, so
load from other jobs on a shared machine moves it more.

A markdown table goes to stdout, progress to stderr; `--json` writes every
number. Exit code 1 if a golden check fails or a run fails or hangs.
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
# float32: `(rtol, atol)` of the elementwise golden check (the tests' bound).
FLOAT32_TOLERANCE = (1e-5, 1e-6)
# Mixed policies: bound on the relative update difference (module docstring),
# about 20 epsilons of the 16-bit compute dtype (float16 2**-10, bfloat16 2**-7).
UPDATE_TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 1.5e-1}


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


def wait_all(procs, timeout):
    """Waits for `start()`ed processes, killing every one after `timeout` s; raises on failure.

    A hung collective must not hang the benchmark.
    """
    deadline = time.monotonic() + timeout
    try:
        for _, proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"hung: killed after {timeout:g} s") from None
    finally:
        for _, proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc, log_path in procs:
        if proc.returncode != 0:
            tail = pathlib.Path(log_path).read_text()[-1500:]
            raise RuntimeError(f"{name} exited {proc.returncode}: {tail}")


def golden(weights, reference, initial, precision):
    """Golden numbers of `weights` against the one-device `reference` (lists of arrays)."""
    import numpy as np

    floats = [(w, r, i) for w, r, i in zip(weights, reference, initial) if i.dtype.kind == "f"]
    update = float(np.sqrt(sum(np.sum((r - i) ** 2) for _, r, i in floats)))
    result = {
        "max_weight_diff": max(float(np.max(np.abs(w - r))) for w, r, _ in floats),
        "weight_change": max(float(np.max(np.abs(r - i))) for _, r, i in floats),
        "relative_update_diff": float(np.sqrt(sum(np.sum((w - r) ** 2) for w, r, _ in floats))) / update,
    }
    if precision == "float32":
        rtol, atol = FLOAT32_TOLERANCE
        result["ok"] = bool(all(np.all(np.abs(w - r) <= atol + rtol * np.abs(r)) for w, r, _ in floats))
    else:
        result["ok"] = result["relative_update_diff"] <= UPDATE_TOLERANCE[precision]
    return result


def arrays(path, prefix):
    """The arrays `<prefix>0, <prefix>1, ...` of an `.npz`, in order."""
    import numpy as np

    with np.load(path) as f:
        return [f[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in f.files))]


def mirrored_cell(family, preset, precision, args, workdir):
    """Golden check and step times of 2 mirrored logical CPUs vs one device, in one process."""
    log_path, saved = workdir / f"{family}-{precision}-mirrored.log", workdir / f"{family}-{precision}-mirrored.npz"
    wait_all([start("golden_step", [GOLDEN, family, preset, args.steps, args.batch_size, "--sgd", "--save", saved,
                                    "--precision", precision, "--time-steps", args.time_steps], log_path)], args.timeout)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"golden_step printed no result: {log_path.read_text()[-1500:]}")
    result = json.loads(lines[-1])
    seconds = result["step_seconds"]
    return {
        **golden(arrays(saved, "two"), arrays(saved, "one"), arrays(saved, "init"), precision),
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
              for i in range(2)], args.timeout)
    wait_all([launch("one device", outs[2])], args.timeout)
    w0, w1, one = (arrays(f"{out}.npz", "w") for out in outs)
    if any(not np.array_equal(a, b) for a, b in zip(w0, w1)):
        raise RuntimeError("the two workers ended with different weights")
    info0, info_one = (json.loads(pathlib.Path(f"{out}.json").read_text()) for out in (outs[0], outs[2]))
    return {
        **golden(w0, one, arrays(init, "w"), precision),
        "iterations": info0["iterations"] + info_one["iterations"],
        "one_step_seconds": info_one["step_seconds"],
        "step_seconds": info0["step_seconds"],
        "ratio": info0["step_seconds"] / info_one["step_seconds"],
    }


def cell_text(cell, precision):
    if "error" in cell:
        return "hung" if cell["error"].startswith("hung") else "failed"
    difference = cell["max_weight_diff" if precision == "float32" else "relative_update_diff"]
    return f"{difference:.1e} {'ok' if cell['ok'] else '**FAIL**'}; {cell['ratio']:.2f}x"


def criterion(precision):
    if precision == "float32":
        return "every \\|w − w₁\\| ≤ 1e-6 + 1e-5 \\|w₁\\|"
    return f"relative update diff ≤ {UPDATE_TOLERANCE[precision]:g}"


def markdown(rows):
    lines = [
        "| family (preset) | precision: golden criterion | one device ms/step | mirrored, 2 logical CPUs: "
        "difference, golden; time ratio | multi-worker, 2 processes: difference, golden; time ratio |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = (row["mirrored"], row["multiworker"])
        one = " / ".join(f"{c['one_step_seconds'] * 1e3:.1f}" if "error" not in c else "-" for c in cells)
        precision = row["precision"]
        lines.append(
            f"| {row['family']} ({row['preset']}) | {precision}: {criterion(precision)} "
            f"| {one} | {cell_text(cells[0], precision)} | {cell_text(cells[1], precision)} |"
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
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds per launch before it counts as hung (StyleGAN2's tiny preset took "
                             "up to 9 minutes on a loaded 2-core machine)")
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
                    began = time.monotonic()
                    try:
                        row[strategy] = measure()
                    except RuntimeError as e:
                        row[strategy] = {"error": str(e)}
                        log(f"  failed: {e}")
                    row[strategy]["wall_seconds"] = time.monotonic() - began
                rows.append(row)
    print(markdown(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    bad = [r for r in rows for s in ("mirrored", "multiworker") if "error" in r[s] or not r[s]["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
