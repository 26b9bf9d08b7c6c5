"""Training runs: the run directory, kill-and-resume in new processes, the NaN guard."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import zoo
from conftest import REPO
from helpers import dataset_of, images_like
from zoo import callbacks, training
from zoo.cli import train
from zoo.training import runner

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = ["--preset", "dcgan_tiny", "--batch-size", "16", "--samples", "4", "--no-jit"]


def _train(*args, **kwargs):
    return subprocess.Popen(
        # The checkout's train.py; -P: the zoo it imports is the installed one.
        [sys.executable, "-P", str(REPO / "train.py"), *map(str, args)], env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def _iterations(keras_path):
    model = keras.saving.load_model(keras_path)
    return int(model.d_optimizer.iterations), int(model.g_optimizer.iterations)


def test_run_writes_a_complete_run_directory(tmp_path):
    config = training.TrainConfig(
        preset="dcgan_tiny", epochs=2, steps=3, batch_size=16, samples=4, jit=False,
        outdir=str(tmp_path), minutes=60, cooldown=0.1,  # a budget and a cooldown the run ends long before
    )
    result = training.run(config, verbose=0)
    assert result.run_dir.name == "00000-dcgan-dcgan_tiny"
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["preset"] == "dcgan_tiny" and saved["steps"] == 3 and saved["cooldown"] == 0.1
    assert sorted(p.name for p in (result.run_dir / "samples").iterdir()) == [
        "samples-0001.png", "samples-0002.png"]
    assert list((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (result.run_dir / "backup").exists()  # a finished run cleans up its backup
    with pytest.raises(training.ConfigError, match="the run has finished; start a new run"):
        training.run(training.load_run_config(result.run_dir), resume_dir=result.run_dir)  # would overwrite it
    assert _iterations(result.run_dir / "model.keras") == (6, 6)
    assert result.exports["saved_model"] == result.run_dir / "export/saved_model/dcgan_tiny/1"
    assert result.exports["tflite"].is_file()
    assert len(result.history["d_loss"]) == 2 and result.history["images_per_sec"][0] > 0
    again = training.run(config, verbose=0)
    assert again.run_dir.name == "00001-dcgan-dcgan_tiny"
    # The same seed gives the same losses and the same samples.
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert again.history[key] == result.history[key], key
    for png in ("samples-0001.png", "samples-0002.png"):
        assert (again.run_dir / "samples" / png).read_bytes() == (result.run_dir / "samples" / png).read_bytes()


def test_deterministic_run_enables_op_determinism_before_building(tmp_path, monkeypatch):
    from tensorflow.python.framework import config as tf_config

    at_build = []
    build = runner.build_model
    monkeypatch.setattr(runner, "build_model",
                        lambda *a: at_build.append(tf_config.is_op_determinism_enabled()) or build(*a))
    code = train.main([*TINY, "--epochs", "1", "--steps", "2", "--outdir", str(tmp_path),
                       "--deterministic", "--serving-base-path", "/srv/zoo"])
    assert code == 0 and at_build == [True]
    assert not tf_config.is_op_determinism_enabled()  # process-wide: restored after the run
    run_dir = next(tmp_path.iterdir())
    assert json.loads((run_dir / "config.json").read_text())["deterministic"] is True
    assert 'base_path: "/srv/zoo/dcgan_tiny"' in (run_dir / "export/saved_model/models.config").read_text()


def _metadata(path):
    """A backup metadata file's content, or None while it is absent or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def restorable_backup(backup):
    """The metadata of the copy a resume restores: the newest whose weights match it."""
    for suffix in ("", ".bkp"):
        saved = _metadata(backup / f"training_metadata.json{suffix}")
        weights = backup / f"latest.weights.h5{suffix}"
        if saved and weights.is_file() and hashlib.sha256(weights.read_bytes()).hexdigest() == saved["weights_sha256"]:
            return saved
    return None


def saved_state(keras_path):
    """`(weights and every held optimizer's variables, the optimizers' iterations)` of a saved model."""
    model = keras.saving.load_model(keras_path)
    optimizers = [getattr(model, name) for name in model.optimizer_targets()]
    return (model.get_weights() + [v.numpy() for opt in optimizers for v in opt.variables],
            [int(opt.iterations) for opt in optimizers])


def test_run_killed_mid_epoch_resumes_where_it_stopped_in_a_new_process(tmp_path):
    # 7 batches per epoch, a backup every 5: backups fall mid-epoch until step 35.
    steps, every = 7, 5
    proc = _train(*TINY, "--epochs", 100, "--steps", steps, "--backup-every", every,
                  "--outdir", tmp_path / "killed", "--no-export")
    deadline = time.monotonic() + 300
    seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*/backup"))
        seen = _metadata(found[0] / "training_metadata.json") if found else None
        if seen and seen["epoch"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen and seen["epoch"] >= 1, f"no backup in epoch 1 within 300 s: {seen}"
    run_dir = found[0].parent
    assert not (run_dir / "model.keras").exists()
    left = restorable_backup(run_dir / "backup")
    assert 0 < left["batches_done"] < steps, left  # killed mid-epoch, after a mid-epoch backup
    epochs = left["epoch"] + 2  # the rest of the interrupted epoch, then one more

    resumed = _train("--resume", run_dir, "--epochs", epochs)
    # Meanwhile, in this process (2 cores: the test stays under 30 s), the run uninterrupted.
    config = training.TrainConfig(
        preset="dcgan_tiny", batch_size=16, samples=4, jit=False, epochs=epochs, steps=steps,
        backup_every=every, outdir=str(tmp_path / "uninterrupted"), export=False,
    )
    uninterrupted = training.run(config, verbose=0)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Skipping variable loading for optimizer" not in err
    # No batch trained twice or skipped: the step counters end where the uninterrupted run's do.
    state, iterations = saved_state(run_dir / "model.keras")
    assert iterations == [epochs * steps] * 2
    # The same batches with the same noise in the same order: the same weights and optimizer
    # state, bit for bit (the same ops on the same numbers).
    for a, b in zip(state, saved_state(uninterrupted.run_dir / "model.keras")[0]):
        np.testing.assert_array_equal(a, b)
    # The resumed process logged the rest of the interrupted epoch as that epoch, then the next.
    assert len(json.loads((run_dir / "history.json").read_text())["d_loss"]) == 2
    assert f"Epoch {epochs - 1}/{epochs}" in out and f"Epoch {epochs - 2}/{epochs}" not in out
    assert not (run_dir / "backup").exists()


def test_plan_fits_finishes_the_interrupted_epoch_first():
    Position = training.Position
    assert training.plan_fits(None, 7, 3) == [training.Fit(0, 3, 7, 0)]
    # Saved at epoch 1, batch 3 (step 10): 4 batches of epoch 1, then epoch 2.
    assert training.plan_fits(Position(1, 3, 10), 7, 3) == [training.Fit(1, 2, 4, 10), training.Fit(2, 3, 7, 14)]
    assert training.plan_fits(Position(2, 0, 14), 7, 3) == [training.Fit(2, 3, 7, 14)]
    # Saved after an epoch's last batch, before its end: the epoch is done.
    assert training.plan_fits(Position(1, 7, 14), 7, 3) == [training.Fit(2, 3, 7, 14)]
    # Resumed with no epochs left: nothing to train.
    assert training.plan_fits(Position(3, 2, 23), 7, 3) == [training.Fit(3, 3, 7, 23)]


def test_the_batch_size_is_the_presets_unless_given():
    for family, cls in zoo.FAMILIES.items():
        for preset, entry in cls.presets.items():
            config = training.TrainConfig(model=family, preset=preset).resolved()
            assert config.batch_size == entry.get("batch_size", training.DEFAULT_BATCH_SIZE), preset
            assert training.TrainConfig(model=family, preset=preset, batch_size=8).resolved().batch_size == 8
    # Resolving twice keeps what the first resolution chose.
    config = training.TrainConfig(model="dcgan").resolved()
    assert config.resolved() == config


def test_collective_timeout_needs_several_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = training.TrainConfig(preset="dcgan_tiny", collective_timeout=60).resolved()
    with pytest.raises(training.ConfigError, match="--collective-timeout goes with --strategy multiworker"):
        training.validate(config)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    training.validate(dataclasses.replace(config, strategy="multiworker"))
    with pytest.raises(training.ConfigError, match="--collective-timeout must be >= 0"):
        training.validate(dataclasses.replace(config, strategy="multiworker", collective_timeout=-1))


_IS_CHIEF = """
import json
from zoo import training
strategy = training.make_strategy(training.TrainConfig(strategy="multiworker"))
print(json.dumps(training.is_chief(strategy)))
"""


def test_exactly_one_chief_per_cluster():
    # Real clusters (the strategy connects every task before it answers):
    # with a `chief` task it alone writes; without one, worker 0 does.
    import socket

    sockets = [socket.socket() for _ in range(4)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    clusters = {
        "chief+worker": {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]},
        "2 workers": {"worker": [f"127.0.0.1:{ports[2]}", f"127.0.0.1:{ports[3]}"]},
    }
    procs = {}
    for name, cluster in clusters.items():
        for task_type, addresses in cluster.items():
            for index in range(len(addresses)):
                tf_config = {"cluster": cluster, "task": {"type": task_type, "index": index}}
                procs[name, f"{task_type}:{index}"] = subprocess.Popen(
                    [sys.executable, "-P", "-c", _IS_CHIEF], env={**ENV, "TF_CONFIG": json.dumps(tf_config)},
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
    answers = {}
    try:
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            answers[key] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert answers == {
        ("chief+worker", "chief:0"): True, ("chief+worker", "worker:0"): False,
        ("2 workers", "worker:0"): True, ("2 workers", "worker:1"): False,
    }
    assert training.is_chief(training.make_strategy(training.TrainConfig(strategy="one")))


def test_a_failed_collective_is_summed_up_in_one_line():
    import tensorflow as tf

    trace = ("Graph execution error:\n\nDetected at node CollectiveReduceV2_28 defined at (most recent call "
             "last):\n  File \"/work/main/train.py\", line 85, in <module>\n\n")
    tail = ("The error could be from a previous operation. Restart your program to reset.\n"
            "\t [[{{node CollectiveReduceV2_28}}]] [Op:__inference_multi_step_on_iterator_5320]")
    killed = (trace + "Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error "
              "information from remote target /job:worker/replica:0/task:1 while calling /tensorflow.Worker"
              "Service/RecvBuf:\n:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"
              "\"recvmsg:Connection reset by peer\"}\n" + tail)
    frozen = (trace + "Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
              "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
              "crashed. Check the task logs for an earlier error.\n" + tail)
    timed_out = ("{{function_node __inference_<lambda>_31}} Collective has timed out waiting for other "
                 "workers.\n\t [[{{node CollectiveReduceV2}}]] [Op:__inference_<lambda>_31]")
    summary = lambda message: training.collective_failure(tf.errors.UnavailableError(None, None, message))
    assert summary(killed) == "recvmsg:Connection reset by peer"
    assert summary(frozen) == ("Error reported from /job:worker/task:1: The following tasks are unhealthy "
                               "(stopped sending heartbeats): /job:worker/replica:0/task:1")
    assert summary(timed_out) == "Collective has timed out waiting for other workers."


def test_nan_in_a_loss_names_the_term_and_step():
    keras.utils.set_random_seed(0)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    images = images_like(model, 32)
    images[16:] = np.nan  # the second batch poisons D's loss on real images
    with pytest.raises(callbacks.NonFiniteLossError, match=r"non-finite d_loss=nan at step 2"):
        model.fit(dataset_of(images, 16), callbacks=[callbacks.NonFiniteGuard()], verbose=0)


def test_nan_in_a_non_trainable_weight_stops_training():
    # Batch norm's moving mean reaches no training loss, only the exports.
    class PoisonMovingMean(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                moving_mean = next(w for w in self.model.generator.weights if "moving_mean" in w.path)
                moving_mean.assign(np.full(moving_mean.shape, np.nan, "float32"))

    keras.utils.set_random_seed(0)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    with pytest.raises(callbacks.NonFiniteLossError, match=r"^non-finite weights in generator after step 2;"):
        model.fit(dataset_of(images_like(model, 64), 16), verbose=0,
                  callbacks=[PoisonMovingMean(), callbacks.NonFiniteGuard()])


def test_every_saved_float_weight_is_checked():
    model = zoo.get_model("stylegan2", "stylegan2_tiny")
    owned = callbacks.saved_weights(model)
    floats = [w for w in model.weights if w.dtype.startswith("float")]
    assert [v for _, v in owned] == floats and len(floats) > len(model.trainable_variables)
    owners = {owner for owner, _ in owned}
    assert {"generator", "generator_ema", "discriminator", f"{model.name}/pl_mean"} <= owners
    assert any(o == "generator" and v.path.endswith("w_avg") for o, v in owned)


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_throughput_counts_every_step(monkeypatch, steps_per_execution):
    clock = iter([0.0, 2.0])  # the epoch's start and end
    monkeypatch.setattr(callbacks, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(clock))}))
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile(steps_per_execution=steps_per_execution)
    history = model.fit(dataset_of(images_like(model, 128), 16), verbose=0, callbacks=[callbacks.Throughput(16)])
    assert history.history["images_per_sec"] == [8 * 16 / 2.0]  # 8 steps of 16 images in 2 s


def test_nan_weights_stop_the_cli_with_exit_3_and_keep_the_backup(tmp_path, monkeypatch, capsys):
    # Epoch 1 trains normally and is backed up; then the learning rate turns NaN.
    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.g_optimizer.learning_rate.assign(float("nan"))

    make = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks",
                        lambda *a, **k: make(*a, **k) + [PoisonAfterFirstEpoch()])
    code = train.main([*TINY, "--epochs", "3", "--steps", "2", "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip().splitlines()[-1] == (
        "error: non-finite weights in generator after step 3; "
        "training stopped, the last backup is kept")
    run_dir = next(tmp_path.iterdir())
    backup = run_dir / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    model.load_weights(next(backup.glob("*.weights.h5")))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert int(model.g_optimizer.iterations) == 2


class CrashAfterEpoch(keras.callbacks.Callback):
    """Simulates a crash once `epochs` epochs are backed up."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt("simulated crash")


@pytest.fixture
def crashed_run(tmp_path, monkeypatch):
    """A run of 3 epochs x 2 steps that crashed after backing up epoch 2 (and 1 as the previous copy)."""
    make = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks", lambda *a, **k: make(*a, **k) + [CrashAfterEpoch(2)])
    with pytest.raises(KeyboardInterrupt):
        train.main([*TINY, "--epochs", "3", "--steps", "2", "--outdir", str(tmp_path), "--no-export"])
    monkeypatch.setattr(runner, "make_callbacks", make)
    run_dir = next(tmp_path.iterdir())
    backup = run_dir / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    copies = [backup / "latest.weights.h5", backup / "latest.weights.h5.bkp"]  # Keras' names
    assert all(p.is_file() for p in copies)
    return run_dir, copies


def test_corrupt_latest_backup_falls_back_to_the_previous_copy(crashed_run, capsys):
    run_dir, (latest, _) = crashed_run
    latest.write_bytes(b"corrupted")
    assert train.main(["--resume", str(run_dir), "--no-export"]) == 0
    # The previous copy is epoch 1 (2 steps); epochs 2 and 3 then run: 6 steps.
    assert _iterations(run_dir / "model.keras") == (6, 6)


def test_unreadable_backup_is_one_line_and_left_intact(crashed_run, capsys):
    run_dir, copies = crashed_run
    for path in copies:
        path.write_bytes(b"corrupted")
    code = train.main(["--resume", str(run_dir), "--no-export"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"error: cannot restore the backup in {run_dir / 'backup'}: no readable copy")
    assert all(p.read_bytes() == b"corrupted" for p in copies)  # nothing overwritten
    assert not (run_dir / "model.keras").exists()


def test_eval_every_logs_sample_quality_to_history_and_tensorboard(tmp_path, capsys):
    config = training.TrainConfig(
        preset="dcgan_tiny", batch_size=16, samples=0, jit=False, epochs=2, steps=2,
        outdir=str(tmp_path), export=False, eval_every=1, eval_num=200, eval_metrics="fd,kid",
    )
    training.validate(config)
    result = training.run(config, verbose=0)
    history = json.loads((result.run_dir / "history.json").read_text())
    assert len(history["fd"]) == len(history["kid"]) == 2 and all(v > 0 for v in history["fd"])
    assert "epoch 2: fd=" in capsys.readouterr().out
    import tensorflow as tf

    tags = {v.tag for path in (result.run_dir / "tensorboard" / "train").glob("events*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for v in event.summary.value}
    assert {"epoch_fd", "epoch_kid"} <= tags


@pytest.mark.parametrize("changes, message", [
    ({"data": "npz:/x.npz"}, "--eval-every needs --data fashion_mnist"),
    ({"eval_metrics": "fd,fid"}, "--eval-metrics: unknown metric"),
    ({"eval_metrics": "nll"}, "--eval-metrics nll is the VAE's likelihood"),
    ({"eval_num": 1}, "--eval-num must be an integer >= 2"),
])
def test_eval_options_are_validated(changes, message):
    config = training.TrainConfig(eval_every=1, **changes).resolved()
    with pytest.raises(training.ConfigError, match=message):
        training.validate(config)


def test_plateau_stop_compares_with_the_evaluation_minutes_earlier(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    stop = callbacks.PlateauStop("fd", minutes=10, min_improvement=0.05)

    class Model:
        stop_training = False

    stop.set_model(Model())
    stop.on_train_begin()
    # (minute, fd): 20 -> 10 over 10 minutes continues; 9.6 at minute 20 is 4 % below minute 10's 10.0.
    for minute, fd, stops in [(0, 40.0, False), (5, 20.0, False), (10, 10.0, False), (15, 9.0, False),
                              (20, 9.6, True)]:
        clock[0] = minute * 60.0
        stop.on_epoch_end(0, {"fd": fd})
        assert stop.model.stop_training is stops, (minute, fd)
    stop.on_epoch_end(0, {"d_loss": 1.0})  # epochs without an evaluation are ignored
    with pytest.raises(ValueError, match="min_improvement"):
        callbacks.PlateauStop(minutes=10, min_improvement=1.5)


def test_plateau_options_are_validated(capsys):
    assert train.main(["--plateau-minutes", "10", "--dry-run"]) == 2
    assert "--plateau-minutes needs --eval-every" in capsys.readouterr().err
    assert train.main(["--plateau-minutes", "10", "--eval-every", "1", "--eval-metrics", "kid", "--dry-run"]) == 2
    assert "--plateau-minutes watches the FD" in capsys.readouterr().err


def test_cooldown_anneals_every_optimizer_over_the_last_fraction_across_fits(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    model = zoo.get_model("vae", "vae_tiny", prior="flow")
    model.compile(vae_optimizer=keras.optimizers.Adam(2e-3), prior_optimizer=keras.optimizers.Adam(1e-3))
    cool = callbacks.Cooldown(10, fraction=0.2)  # full rates for 8 minutes, then linear to 0 at 10
    keras.callbacks.CallbackList([cool], model=model)  # as `RunCallbacks` does before a resumed run's restore
    # The restored backup's optimizers hold decayed rates; the base rates were read from the compiled ones.
    model.vae_optimizer.learning_rate, model.prior_optimizer.learning_rate = 1e-5, 1e-5

    def rates_at(minute):
        clock[0] = minute * 60.0
        cool.on_train_batch_begin(0)
        return [float(model.vae_optimizer.learning_rate.numpy()), float(model.prior_optimizer.learning_rate.numpy())]

    cool.on_train_begin()
    assert rates_at(7.9) == pytest.approx([2e-3, 1e-3])
    assert rates_at(9.0) == pytest.approx([1e-3, 5e-4])
    cool.on_train_end()  # a saved model holds the recipe's rates
    assert model.vae_optimizer.learning_rate.numpy() == np.float32(2e-3)
    assert model.prior_optimizer.learning_rate.numpy() == np.float32(1e-3)
    # A second fit continues the clock of the first (9 minutes) and keeps the base rates, although its
    # optimizers start from a backup that holds decayed ones.
    model.vae_optimizer.learning_rate, model.prior_optimizer.learning_rate = 1e-5, 1e-5
    clock[0] = 100.0 * 60
    cool.on_train_begin()
    assert rates_at(100.0) == pytest.approx([1e-3, 5e-4])
    assert rates_at(100.5) == pytest.approx([5e-4, 2.5e-4])
    assert rates_at(101.5) == [0.0, 0.0]
    assert cool.base_rates == pytest.approx({"vae_optimizer": 2e-3, "prior_optimizer": 1e-3})

    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.5)
    model.compile(vae_optimizer=keras.optimizers.Adam(schedule), prior_optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="vae_optimizer needs a float learning rate"):
        callbacks.Cooldown(10).set_model(model)
    with pytest.raises(ValueError, match="0 < fraction <= 1"):
        callbacks.Cooldown(10, fraction=0.0)


def test_a_cooled_down_rate_reaches_the_compiled_step():
    # A budget that is over before the first step: every step runs at rate 0 and leaves the weights as they were.
    # If the traced step had captured the rate as a constant, Adam's first steps would move every weight.
    keras.utils.set_random_seed(0)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    images = images_like(model, 32)
    model.fit(dataset_of(images, 16), epochs=1, steps_per_epoch=1, verbose=0)  # trace and build first
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(dataset_of(images, 16), verbose=0, callbacks=[callbacks.Cooldown(1e-9, fraction=1.0)])
    assert int(model.d_optimizer.iterations.numpy()) == 3  # the steps ran
    for a, w in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_cooldown_option_is_validated_and_precedes_the_backup(tmp_path, capsys):
    assert train.main(["--cooldown", "0.2", "--dry-run"]) == 2
    assert "--cooldown needs --minutes" in capsys.readouterr().err
    assert train.main(["--cooldown", "1.5", "--minutes", "5", "--dry-run"]) == 2
    assert "--cooldown is a fraction of --minutes in (0, 1], got 1.5" in capsys.readouterr().err
    config = training.TrainConfig(preset="dcgan_tiny", minutes=5, cooldown=0.25).resolved()
    training.validate(config)
    kinds = [type(c).__name__ for c in runner.make_callbacks(config, str(tmp_path), write=False)]
    assert kinds.index("Cooldown") < kinds.index("BackupAndRestore"), kinds
    cool = next(c for c in runner.make_callbacks(config, None, write=False) if isinstance(c, callbacks.Cooldown))
    assert (cool.minutes, cool.fraction) == (5.0, 0.25)
