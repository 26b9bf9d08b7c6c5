"""Run directories, backups and exports on a remote file system (`gs://` on a TPU VM).

Through TensorFlow's in-memory `ram://` file system, which only `tf.io.gfile`
reaches: `open`, `os` and `shutil` fail on it, and pathlib turns `ram://x`
into the local path `ram:/x`. Each test runs in an empty working directory
and checks that nothing was written there.
"""

import json
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from export import export_saved_model, versions
from export.saved_model import read_models_config
from test_training import saved_state
from zoo import training
from zoo.training import runner


def _config(outdir, **changes):
    return training.TrainConfig(
        preset="dcgan_tiny", epochs=2, steps=2, batch_size=16, samples=4, jit=False, outdir=outdir, **changes,
    )


def _read(path, mode="r"):
    with tf.io.gfile.GFile(path, mode) as f:
        return f.read()


@pytest.fixture(scope="module")
def remote_root():
    return f"ram://zoo-{uuid.uuid4().hex}"  # the file system lives as long as the process


@pytest.fixture(scope="module")
def finished_run(remote_root, tmp_path_factory):
    """A 2-epoch x 2-step `dcgan_tiny` run with exports, all under `ram://`, and its working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = training.run(_config(f"{remote_root}/runs"), verbose=0)
    return result, cwd


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert not list(tmp_path.iterdir()), "something was written locally"


def test_a_run_writes_its_directory_and_exports_to_a_remote_path(finished_run, remote_root):
    result, cwd = finished_run
    run_dir = f"{remote_root}/runs/00000-dcgan-dcgan_tiny"
    assert result.run_dir == run_dir
    assert not list(cwd.iterdir()), "something was written locally"
    assert training.load_run_config(run_dir).preset == "dcgan_tiny"
    assert len(json.loads(_read(f"{run_dir}/history.json"))["d_loss"]) == 2
    assert saved_state(f"{run_dir}/model.keras")[1] == [4, 4]
    assert sorted(tf.io.gfile.listdir(f"{run_dir}/samples")) == ["samples-0001.png", "samples-0002.png"]
    assert tf.io.decode_png(_read(f"{run_dir}/samples/samples-0002.png", "rb")).shape == (64, 64, 1)
    assert tf.io.gfile.glob(f"{run_dir}/tensorboard/train/events.out.tfevents.*")
    assert not tf.io.gfile.exists(f"{run_dir}/backup")  # a finished run deletes its backup
    with pytest.raises(training.ConfigError, match="the run has finished; start a new run"):
        training.run(training.load_run_config(run_dir), resume_dir=run_dir)

    version = f"{run_dir}/export/saved_model/dcgan_tiny/1"
    assert result.exports["saved_model"] == version
    assert tf.io.gfile.exists(f"{version}/assets.extra/tf_serving_warmup_requests")
    assert 'base_path: "/models/dcgan_tiny"' in _read(f"{run_dir}/export/saved_model/models.config")
    generate = tf.saved_model.load(version).signatures["serving_default"]
    latent_dim = generate.structured_input_signature[1]["z"].shape[-1]
    images = generate(z=tf.random.normal([2, latent_dim]))["images"].numpy()
    assert images.shape == (2, 32, 32, 1) and 0 <= images.min() and images.max() <= 1
    assert result.exports["tflite"] == f"{run_dir}/export/tflite/dcgan_tiny.tflite"
    assert _read(result.exports["tflite"], "rb")[4:8] == b"TFL3"  # the flatbuffer's identifier


class CrashAfterBatches(keras.callbacks.Callback):
    """Simulates a crash after `batches` batches (each backed up first)."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.seen = batches, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batches:
            raise KeyboardInterrupt("simulated crash")


def test_a_run_resumes_from_its_remote_backup(finished_run, remote_root, monkeypatch, empty_cwd):
    outdir = f"{remote_root}/crashed"
    make = runner.make_callbacks
    monkeypatch.setattr(runner, "make_callbacks", lambda *a, **k: make(*a, **k) + [CrashAfterBatches(3)])
    with pytest.raises(KeyboardInterrupt):
        training.run(_config(outdir, backup_every=1, export=False), verbose=0)
    monkeypatch.setattr(runner, "make_callbacks", make)
    run_dir = f"{outdir}/00000-dcgan-dcgan_tiny"
    saved = json.loads(_read(f"{run_dir}/backup/training_metadata.json"))
    assert (saved["epoch"], saved["batches_done"], saved["step"]) == (1, 1, 3)
    assert tf.io.gfile.exists(f"{run_dir}/backup/latest.weights.h5.bkp")  # step 2, rotated by a remote copy

    training.run(training.load_run_config(run_dir), resume_dir=run_dir, verbose=0)
    # Only the rest of epoch 2 ran (a fresh start would log 2 epochs), and it ends where the
    # uninterrupted run does, bit for bit.
    assert len(json.loads(_read(f"{run_dir}/history.json"))["d_loss"]) == 1
    state, iterations = saved_state(f"{run_dir}/model.keras")
    assert iterations == [4, 4]
    for a, b in zip(state, saved_state(f"{finished_run[0].run_dir}/model.keras")[0]):
        np.testing.assert_array_equal(a, b)
    assert not tf.io.gfile.exists(f"{run_dir}/backup")


def test_a_remote_backup_falls_back_to_its_previous_copy(remote_root, empty_cwd):
    backup_dir = f"{remote_root}/fallback/backup"
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    backup = training.BackupAndRestore(backup_dir, save_freq=1)
    backup.set_model(model)
    backup.on_epoch_begin(0)
    kernel = model.weights[0]
    kernel.assign_add(tf.ones_like(kernel))
    step_1 = model.get_weights()
    backup.on_train_batch_end(0)  # backs up step 1
    kernel.assign_add(tf.ones_like(kernel))
    backup.on_train_batch_end(1)  # backs up step 2; step 1 becomes the previous copy
    tf.io.gfile.remove(f"{backup_dir}/latest.weights.h5")  # step 2's upload was cut short

    fresh = zoo.get_model("dcgan", "dcgan_tiny")
    fresh.compile()
    restoring = training.BackupAndRestore(backup_dir, save_freq=1)
    restoring.set_model(fresh)
    assert restoring.restore() == training.Position(epoch=0, batches_done=1, step=1)
    for a, b in zip(fresh.get_weights(), step_1):
        np.testing.assert_array_equal(a, b)


def test_a_remote_export_uploads_saved_model_pb_last_and_skips_a_cut_upload(
        remote_root, monkeypatch, empty_cwd):
    base = f"{remote_root}/serving"
    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    copied = []
    copy = tf.io.gfile.copy

    def cut_at_saved_model_pb(source, target, overwrite=False):
        if target.endswith("/1/saved_model.pb"):
            raise tf.errors.UnavailableError(None, None, "simulated network failure")
        copied.append(target)
        copy(source, target, overwrite)

    # `tf.io.gfile` looked up now: the module object it names can change once Keras has used it.
    monkeypatch.setattr(tf.io.gfile, "copy", cut_at_saved_model_pb)
    with pytest.raises(tf.errors.UnavailableError):
        export_saved_model(model, base, "dcgan_tiny")
    # Everything else of version 1 was uploaded before its saved_model.pb.
    assert {t.removeprefix(f"{base}/dcgan_tiny/1/") for t in copied} == {
        "fingerprint.pb", "variables/variables.index", "variables/variables.data-00000-of-00001",
        "assets.extra/tf_serving_warmup_requests"}
    assert versions(f"{base}/dcgan_tiny") == [1]
    assert not tf.io.gfile.exists(f"{base}/dcgan_tiny/1/saved_model.pb")

    copied.clear()
    assert export_saved_model(model, base, "dcgan_tiny") == f"{base}/dcgan_tiny/2"  # 1 is never reused
    assert copied[-1] == f"{base}/dcgan_tiny/2/saved_model.pb"
    assert versions(f"{base}/dcgan_tiny") == [1, 2]
    assert [c.name for c in read_models_config(base).model_config_list.config] == ["dcgan_tiny"]
    assert tf.saved_model.load(f"{base}/dcgan_tiny/2").signatures["serving_default"] is not None
