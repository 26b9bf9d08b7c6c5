"""ONNX export: ONNX Runtime matches the SavedModel's `serving_default`, its I/O, the CLI."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import first_varied

import zoo
from export import export_model, export_onnx
from zoo import base, data

pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx: pip install tf2onnx onnxruntime")
ort = pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime: pip install tf2onnx onnxruntime")

# Max |pixel| error against the SavedModel / Keras, pixels in [0, 1]. Both
# are the same float32 graph (no quantization, no fusion changing the math
# beyond summation order); ONNX Runtime's convolution kernels accumulate in
# another order than TensorFlow's, which moves a pixel by ~1e-7 (measured:
# 1.5e-7, one or two float32 ulps at 1.0). 1e-5 leaves room for other CPUs'
# kernels and is still ~400x under one 8-bit gray level (1/255), so a real
# mismatch (a missing output mapping shifts pixels by ~0.5) fails.
ATOL = 1e-5

# Steps of real training: enough that images vary from latent to latent.
STEPS = {"dcgan": 100, "vae": 120}


@pytest.fixture(scope="module", params=["dcgan", "vae"])
def exported(request, tmp_path_factory, fashion_test_arrays):
    """`(model, {format: path}, out_dir)`: a briefly fitted tiny model exported as SavedModel and ONNX."""
    family = request.param
    images = fashion_test_arrays[0][:2048], fashion_test_arrays[1][:2048]

    def fit(seed):
        keras.utils.set_random_seed(seed)
        model = zoo.get_model(family, f"{family}_tiny")
        if family == "dcgan":  # test_export's settings: faster than the paper's 2e-4
            model.compile(d_optimizer=keras.optimizers.Adam(1e-3, 0.5),
                          g_optimizer=keras.optimizers.Adam(1e-3, 0.5))
        else:
            model.compile()
        ds = data.make_dataset("fashion_mnist:test", 32, 1, 32, repeat=True, arrays=images)
        model.fit(ds, steps_per_epoch=STEPS[family], epochs=1, verbose=0)
        return model

    # Parity below means something only if the images vary from latent to latent.
    model = first_varied(fit)
    out = tmp_path_factory.mktemp(f"onnx_{family}")
    paths = export_model(model, out, f"{family}_tiny", formats=("saved_model", "onnx"))
    return model, paths, out


def test_layout(exported):
    model, paths, out = exported
    name = "dcgan_tiny" if isinstance(model, zoo.DCGAN) else "vae_tiny"
    assert paths["onnx"] == out / "onnx" / f"{name}.onnx" and paths["onnx"].is_file()
    assert sorted(paths) == ["onnx", "saved_model"]


def test_io_is_z_with_dynamic_batch_and_images(exported):
    model, paths, _ = exported
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    (z,) = session.get_inputs()
    assert z.name == "z" and z.type == "tensor(float)"
    assert len(z.shape) == 2 and not isinstance(z.shape[0], int)  # symbolic: any batch
    assert z.shape[1] == model.latent_dim
    (images,) = session.get_outputs()
    assert images.name == "images" and images.type == "tensor(float)"
    assert images.shape[1:] == list(model.image_shape)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_saved_model_and_keras(exported, batch):
    model, paths, _ = exported
    z = model.sample_latents(batch, seed=batch).numpy()
    got = run_onnx(paths["onnx"], z)
    saved = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"]
    expected = saved(z=tf.constant(z))["images"].numpy()
    assert got.shape == (batch, *model.image_shape) and got.dtype == np.float32
    # [0, 1] images, not the raw network output (tanh in [-1, 1] or VAE logits).
    assert got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got, model.generate(z).numpy(), atol=ATOL, rtol=0)


def run_onnx(path, z):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["images"], {"z": np.asarray(z)})[0]


def test_serving_model_is_generate(exported, tmp_path):
    """The family override and the base class's generic wrapper both compute `generate`."""
    model, _, _ = exported
    z = model.sample_latents(4, seed=9)
    expected = model.generate(z).numpy()
    generic = base.GenerativeModel.serving_model(model)  # what a family without an override exports
    for serving in (model.serving_model(), generic):
        assert serving.input_shape == (None, model.latent_dim)
        assert serving.weights  # the networks' weights, tracked by the wrapper
        np.testing.assert_allclose(serving(z)["images"].numpy(), expected, atol=1e-6, rtol=0)
    _, signature = model.export_endpoints()["serving_default"]
    generic.export(str(tmp_path / "generic.onnx"), format="onnx", input_signature=signature, verbose=False)
    np.testing.assert_allclose(run_onnx(tmp_path / "generic.onnx", z), expected, atol=ATOL, rtol=0)


def test_vae_gaussian_likelihood(tmp_path):
    """The Gaussian decoder's output is the mean image itself: no sigmoid on top."""
    keras.utils.set_random_seed(1)
    model = zoo.get_model("vae", "vae_tiny", likelihood="gaussian")
    z = model.sample_latents(3, seed=2)
    path = export_onnx(model, tmp_path)  # a folder: <folder>/<model.name>.onnx
    assert path == tmp_path / f"{model.name}.onnx"
    np.testing.assert_allclose(run_onnx(path, z), model.generate(z).numpy(), atol=ATOL, rtol=0)


def test_missing_tf2onnx_is_a_clear_error(exported, tmp_path, monkeypatch):
    model, _, _ = exported
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # importlib.util.find_spec -> None
    with pytest.raises(RuntimeError, match=r"pip install tf2onnx onnxruntime"):
        export_model(model, tmp_path / "out", "gan", formats=("saved_model", "onnx"))
    assert not (tmp_path / "out").exists()  # failed before writing anything


@pytest.mark.parametrize("exported", ["dcgan"], indirect=True)  # once is enough
def test_export_cli_onnx(exported, tmp_path):
    model, _, _ = exported
    keras_path = tmp_path / "gan.keras"
    model.save(keras_path)
    done = subprocess.run(
        [sys.executable, "-P", "-m", "export", str(keras_path), "--format", "onnx", "--output", str(tmp_path / "o")],
        capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    written = tmp_path / "o" / "gan.onnx"
    assert done.stdout.strip().splitlines()[-1] == str(written) and written.is_file()
    z = model.sample_latents(3, seed=4).numpy()
    np.testing.assert_allclose(run_onnx(written, z), model.generate(z).numpy(), atol=ATOL, rtol=0)


def test_export_cli_onnx_rejects_quantization(capsys):
    from export.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["run", "--format", "onnx", "--quantize", "float16", "--output", "o"])
    assert exit_.value.code == 2 and "apply to --format tflite" in capsys.readouterr().err
