"""Two real worker processes: `fit` equals one device, and a killed worker's job resumes.

Two processes on 127.0.0.1 form a `MultiWorkerMirroredStrategy` cluster
(one CPU replica each) and train from the same initial weights on the same
global batches as a third, one-device process. Then `train.py` runs on such
a cluster, one worker is killed mid-epoch, and both restart from the chief's
backup.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import zoo
from conftest import REPO
from helpers import expected_optimizer_iterations
from test_training import restorable_backup, saved_state

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "multiworker_worker.py"
TIMEOUT = 600  # seconds for the whole launch (StyleGAN2 tiny: up to 9 min loaded); a hung collective must not hang the suite


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(args, out, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(f"{out}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, str(out)], env=env,
        stdout=log, stderr=subprocess.STDOUT,
    ), log


def run_all(procs):
    """Waits for every process (killing all at the deadline); returns their exit codes."""
    deadline = time.monotonic() + TIMEOUT
    codes = []
    try:
        for proc, _ in procs:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return codes


def load(out):
    """`(arrays, info)`: the process's `.npz` as a dict and its `.json`."""
    with np.load(f"{out}.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}, json.loads(pathlib.Path(f"{out}.json").read_text())


@pytest.mark.slow  # 62-111 s measured on a shared 2-core host (StyleGAN2 ~1-5 min), mostly tracing
@pytest.mark.parametrize("family, preset", [
    ("dcgan", "dcgan_tiny"), ("vae", "vae_tiny"), ("stylegan2", "stylegan2_tiny")])
def test_two_workers_equal_one_device(family, preset, tmp_path):
    steps, batch = 3, 16
    model = zoo.get_model(family, preset)
    initial = model.get_weights()
    init_path = tmp_path / "init.npz"
    np.savez(init_path, **{f"w{i}": w for i, w in enumerate(initial)})
    args = [family, preset, str(steps), str(batch), str(init_path)]

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    outs = [tmp_path / "worker0", tmp_path / "worker1", tmp_path / "one"]
    procs = [
        launch(args, outs[i], {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ] + [launch(args, outs[2])]
    codes = run_all(procs)
    logs = "\n".join(f"--- {o.name}:\n" + pathlib.Path(f"{o}.log").read_text()[-3000:] for o in outs)
    assert codes == [0, 0, 0], f"exit codes {codes} (None: timed out after {TIMEOUT}s)\n{logs}"
    (w0, info0), (w1, info1), (one, info_one) = (load(o) for o in outs)

    assert [info0["replicas"], info1["replicas"], info_one["replicas"]] == [2, 2, 1]
    assert [info0["task"], info1["task"]] == [["worker", 0], ["worker", 1]]
    # Every process ran every train step once, and every held optimizer took
    # the steps the model's schedule implies: one per train step, plus
    # StyleGAN2's lazy regularizer steps (its own optimizer steps, as NVIDIA's
    # Greg/Dreg phases; tiny: path length and R1 both at step 0, so 3 + 1).
    # Derived, not copied from one run, so a step skipped or doubled on every
    # process fails too; comparing all three lists makes the two workers and
    # one device agree on every optimizer.
    expected = expected_optimizer_iterations(model, steps)
    iterations = {name: dict(zip(info["optimizers"], info["iterations"], strict=True))
                  for name, info in (("worker0", info0), ("worker1", info1), ("one", info_one))}
    assert iterations == {name: expected for name in iterations}, (expected, iterations)
    assert [info0["train_steps"], info1["train_steps"], info_one["train_steps"]] == [steps] * 3
    # Each worker's replica gets its contiguous half of every global batch
    # (auto-shard of a batched in-memory dataset rebatches, then shards), which
    # matches the rows `base.replica_normal` gives the global replica id 0 or 1.
    for worker, info in enumerate((info0, info1)):
        expected = [list(range(s * batch + worker * batch // 2, s * batch + (worker + 1) * batch // 2))
                    for s in range(steps)]
        assert info["seen"] == expected
    assert info_one["seen"] == np.arange(steps * batch).reshape(steps, batch).tolist()

    # The workers hold one synchronized model: identical weights and
    # optimizer state (the collective all-reduce gives both the same sum).
    for key in w0:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    weights = sorted((k for k in one if k[0] == "w"), key=lambda k: int(k[1:]))
    # Float weights only: StyleGAN2's integer step counter moves by itself.
    change = max(float(np.max(np.abs(one[k] - w))) for k, w in zip(weights, initial) if w.dtype.kind == "f")
    assert change > 1e-4  # the steps did move the weights
    # Versus one device only the float summation order differs (gradients
    # summed over two replicas vs one batch). With SGD that stays at rounding
    # level, relative to the weight: with lr 0.05 the VAE's summed loss moved
    # some biases by up to ~20 in 3 steps, where float32's spacing reaches 1e-6
    # (seen: 3.1e-6 on -2.42, 13 ulps), so an absolute 1e-6 bound failed with
    # some initial weights. A wrong shard or noise slice changes the gradients
    # themselves, and the weights by far more than this tolerance.
    for key in weights:
        np.testing.assert_allclose(w0[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for key, value in info_one["logs"].items():
        np.testing.assert_allclose(info0["logs"][key], value, rtol=1e-5, err_msg=key)
        assert info1["logs"][key] == info0["logs"][key], key


@pytest.mark.slow  # 2 worker processes, 12 steps
@pytest.mark.parametrize("family, preset", [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny")])
def test_two_workers_skip_the_same_float16_steps(family, preset, tmp_path):
    """Keras' LossScaleOptimizer decides from each worker's own gradients whether to skip a
    step; where one worker's overflow and the other's do not, the two run different collectives
    and wait for each other forever. `base.overflow_on_every_replica` makes them agree."""
    import keras

    steps, batch = 12, 16
    keras.utils.set_random_seed(1)
    init_path = tmp_path / "init.npz"
    np.savez(init_path, **{f"w{i}": w for i, w in enumerate(zoo.get_model(family, preset).get_weights())})
    args = [family, preset, str(steps), str(batch), str(init_path), "--precision", "mixed_float16"]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    outs = [tmp_path / "worker0", tmp_path / "worker1"]
    codes = run_all([launch(args, outs[i], {"cluster": cluster, "task": {"type": "worker", "index": i}})
                     for i in range(2)])
    logs = "\n".join(f"--- {o.name}:\n" + pathlib.Path(f"{o}.log").read_text()[-3000:] for o in outs)
    assert codes == [0, 0], f"exit codes {codes} (None: timed out after {TIMEOUT}s)\n{logs}"
    (w0, info0), (w1, info1) = (load(o) for o in outs)
    assert info0["iterations"] == info1["iterations"]
    for key in w0:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
        assert np.isfinite(w0[key]).all(), key


# ---- fault tolerance: a worker killed mid-epoch ------------------------------

TRAIN = ["--strategy", "multiworker", "--preset", "dcgan_tiny", "--batch-size", "16", "--samples", "4",
         "--no-jit", "--no-export", "--steps", "7", "--backup-every", "5"]
EPOCHS = 4  # 28 steps; backups at steps 5, 10, ... 25 all fall mid-epoch (7 batches each)
FAIL_WITHIN = 60  # seconds from the kill until the surviving worker has exited


def launch_train(args, log_path, index, ports, tmpdir):
    """`train.py args` as worker `index` of a 2-worker cluster; TMPDIR shows what it leaves behind."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmpdir)}
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                   "task": {"type": "worker", "index": index}})
    log = open(log_path, "w")
    # The checkout's train.py; -P: the zoo it imports is the installed one.
    return subprocess.Popen([sys.executable, "-P", str(REPO / "train.py"), *map(str, args)], env=env,
                            stdout=log, stderr=subprocess.STDOUT), log


def run_cluster(args, tmp_path, name):
    """Both workers of `train.py args`, to the end; returns their exit codes and logs."""
    tmpdir = tmp_path / f"{name}-tmp"
    tmpdir.mkdir()
    ports = free_ports(2)
    procs = [launch_train(args, tmp_path / f"{name}{i}.log", i, ports, tmpdir) for i in range(2)]
    codes = run_all(procs)
    logs = [(tmp_path / f"{name}{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], f"{name}: exit codes {codes} (None: timed out)\n" + "\n".join(l[-3000:] for l in logs)
    assert not list(tmpdir.iterdir()), "a worker left temporary files"
    return logs


@pytest.fixture(scope="module")
def uninterrupted_two_workers(tmp_path_factory):
    """Final state of the same 2-worker run, never interrupted."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    run_cluster([*TRAIN, "--epochs", EPOCHS, "--outdir", tmp_path / "runs"], tmp_path, "worker")
    return saved_state(next((tmp_path / "runs").iterdir()) / "model.keras")


@pytest.mark.slow  # 264-323 s each, plus 106 s once for the uninterrupted run (2-core host, load 7-9)
@pytest.mark.parametrize("victim", [1, 0], ids=["other-worker-killed", "chief-killed"])
def test_killed_worker_fails_the_job_and_both_resume_from_the_chiefs_backup(
        victim, tmp_path, uninterrupted_two_workers):
    outdir = tmp_path / "runs"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    ports = free_ports(2)
    procs = [launch_train([*TRAIN, "--epochs", EPOCHS, "--outdir", outdir], tmp_path / f"first{i}.log",
                          i, ports, tmpdir) for i in range(2)]
    survivor = procs[1 - victim][0]
    try:
        deadline = time.monotonic() + TIMEOUT
        seen = None
        while time.monotonic() < deadline and all(p.poll() is None for p, _ in procs):
            backups = list(outdir.glob("*/backup"))
            seen = restorable_backup(backups[0]) if backups else None
            if seen and seen["epoch"] >= 1:
                break
            time.sleep(0.05)
        assert seen and seen["epoch"] >= 1, f"no backup in epoch 1: {seen}"
        procs[victim][0].kill()
        killed_at = time.monotonic()
        try:
            code = survivor.wait(timeout=FAIL_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {1 - victim} still runs {FAIL_WITHIN} s after worker {victim} was killed")
        failed_after = time.monotonic() - killed_at
    finally:
        run_all(procs)
    output = (tmp_path / f"first{1 - victim}.log").read_text()
    last = output.strip().splitlines()[-1]
    print(f"worker {1 - victim} exited {code} {failed_after:.1f} s after worker {victim} was killed: {last}")
    assert code == 4, output[-3000:]
    assert last.startswith("error: lost a worker (") and "restart every worker with --resume" in last

    run_dir = backups[0].parent
    left = restorable_backup(run_dir / "backup")  # whatever the chief was doing when it died or failed
    assert left is not None and 0 < left["batches_done"] < 7, left
    # Only what TensorFlow's autograph writes there, from the process it could not clean up after.
    left_behind = [p.name for p in tmpdir.iterdir() if not p.name.startswith("__autograph_generated_file")]
    assert not left_behind, left_behind

    logs = run_cluster(["--resume", run_dir, "--epochs", EPOCHS], tmp_path, "resumed")
    assert "Skipping variable loading" not in logs[0] + logs[1]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json", "history.json", "model.keras", "preset", "samples", "tensorboard"]  # no backup left
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        f"samples-{e:04d}.png" for e in range(1, EPOCHS + 1)]
    state, iterations = saved_state(run_dir / "model.keras")
    assert iterations == [EPOCHS * 7] * 2  # both optimizers, no step repeated or lost
    expected, _ = uninterrupted_two_workers
    for a, b in zip(state, expected):
        np.testing.assert_array_equal(a, b)
