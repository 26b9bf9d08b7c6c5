"""Training runs: the run directory, kill-and-resume in new processes, the NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import train
import zoo
from conftest import REPO
from helpers import dataset_of, images_like
from zoo import callbacks, training

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
TINY = ["--preset", "dcgan_tiny", "--batch-size", "16", "--samples", "4", "--no-jit"]


def _train(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "train.py", *map(str, args)], cwd=REPO, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def _iterations(keras_path):
    model = keras.saving.load_model(keras_path)
    return int(model.d_optimizer.iterations), int(model.g_optimizer.iterations)


def test_run_writes_a_complete_run_directory(tmp_path):
    config = training.TrainConfig(
        preset="dcgan_tiny", epochs=2, steps=3, batch_size=16, samples=4, jit=False,
        outdir=str(tmp_path),
    )
    result = training.run(config, verbose=0)
    assert result.run_dir.name == "00000-dcgan-dcgan_tiny"
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["preset"] == "dcgan_tiny" and saved["steps"] == 3
    assert sorted(p.name for p in (result.run_dir / "samples").iterdir()) == [
        "samples-0001.png", "samples-0002.png"]
    assert list((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (result.run_dir / "backup").exists()  # a finished run cleans up its backup
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


def test_killed_run_resumes_with_both_optimizers_in_a_new_process(tmp_path):
    proc = _train(*TINY, "--epochs", 60, "--steps", 4, "--outdir", tmp_path)
    metadata = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("*/backup/training_metadata.json"))
        if found:
            try:
                if json.loads(found[0].read_text())["epoch"] >= 2:
                    metadata = found[0]
                    break
            except ValueError:  # caught mid-write
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert metadata is not None, "the run never backed up two epochs"
    run_dir = metadata.parents[1]
    assert not (run_dir / "model.keras").exists()
    done_epochs = json.loads(metadata.read_text())["epoch"]

    resumed = _train("--resume", run_dir, "--epochs", done_epochs + 2)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Skipping variable loading for optimizer" not in err
    # Restored iterations continue: 4 steps per epoch for every epoch, none repeated.
    assert _iterations(run_dir / "model.keras") == ((done_epochs + 2) * 4,) * 2
    assert len(json.loads((run_dir / "history.json").read_text())["d_loss"]) == 2


def test_nan_in_a_loss_names_the_term_and_step():
    keras.utils.set_random_seed(0)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    images = images_like(model, 32)
    images[16:] = np.nan  # the second batch poisons D's loss on real images
    with pytest.raises(callbacks.NonFiniteLossError, match=r"non-finite d_loss=nan at step 2"):
        model.fit(dataset_of(images, 16), callbacks=[callbacks.NonFiniteGuard()], verbose=0)


def test_nan_weights_stop_the_cli_with_exit_3_and_keep_the_backup(tmp_path, monkeypatch, capsys):
    # Epoch 1 trains normally and is backed up; then the learning rate turns NaN.
    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.g_optimizer.learning_rate.assign(float("nan"))

    make = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks",
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
    make = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: make(*a, **k) + [CrashAfterEpoch(2)])
    with pytest.raises(KeyboardInterrupt):
        train.main([*TINY, "--epochs", "3", "--steps", "2", "--outdir", str(tmp_path), "--no-export"])
    monkeypatch.setattr(training, "make_callbacks", make)
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
