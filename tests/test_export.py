"""Export: SavedModel in a fresh process, saved_model_cli, LiteRT modes, repository layout, CLI."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from keras import layers, ops

from export import Quantize, builtin_ops, convert, custom_ops, export_model, export_saved_model, versions
from helpers import run_python, trained_tiny_dcgan
from zoo import base


def _litert_stages(generator):
    """The DC-GAN generator up to its tanh as LiteRT runs it: `[apply(x, kernel), kernel, bias, relu]` per op.

    As the converter does, a batch norm after a transposed convolution is
    folded into its kernel and bias; the one after Dense + Reshape stays a
    MUL and an ADD.
    """
    stages = []
    for previous, layer in zip(generator.layers, generator.layers[1:-1]):
        if isinstance(layer, layers.Dense):
            stages.append([lambda x, k: x @ k, layer.kernel.numpy(), None, False])
        elif isinstance(layer, layers.Reshape):
            dense, shape = stages[-1][0], layer.target_shape
            stages[-1][0] = lambda x, k, dense=dense, shape=shape: dense(x, k).reshape(-1, *shape)
        elif isinstance(layer, layers.Conv2DTranspose):
            def conv(x, k, strides=layer.strides):
                return ops.convert_to_numpy(ops.conv_transpose(x, k, strides, padding="same"))
            stages.append([conv, layer.kernel.numpy(), layer.bias.numpy() if layer.use_bias else None, False])
        elif isinstance(layer, layers.BatchNormalization):
            scale = layer.gamma.numpy() / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
            shift = layer.beta.numpy() - layer.moving_mean.numpy() * scale
            if isinstance(previous, layers.Conv2DTranspose):
                kernel, bias = stages[-1][1:3]
                stages[-1][1:3] = [kernel * scale[:, None], shift if bias is None else bias * scale + shift]
            else:
                stages += [[lambda x, k: x * k, scale, None, False], [lambda x, k: x, None, shift, False]]
        elif isinstance(layer, layers.ReLU):
            stages[-1][3] = True
        else:
            raise TypeError(f"no LiteRT stage for {layer.name}")
    return stages


def _forward(stages, z):
    """`[z, every stage's float output]` for latents `z`."""
    xs = [z]
    for apply, kernel, bias, relu in stages:
        x = apply(xs[-1], kernel) + (0 if bias is None else bias)
        xs.append(np.maximum(x, 0) if relu else x)
    return xs


def _lite_shape(kernel):
    """A Dense or transposed-convolution kernel's shape in a .tflite file (output channels first)."""
    if kernel.ndim == 4:  # [h, w, out, in]
        return (kernel.shape[2], *kernel.shape[:2], kernel.shape[3])
    return kernel.shape[::-1] if kernel.ndim == 2 else None


def _rounding_errors(stages, z, mode, flatbuffer, calibration, draws=16):
    """Pixel errors of `draws` random draws of the roundings a `mode` file makes, `[draws, *images.shape]`.

    A rounding moves a number by a uniform fraction of its step, +-step/2.
    float16: every constant, step its float16 spacing. dynamic: kernels per
    output channel (steps: the file's int8 scales) and each sample's input to
    those ops, 256 levels over its [min, max] (the hybrid kernels quantize
    inputs asymmetrically). int8: kernels likewise, MUL/ADD constants per
    tensor, and every activation to 256 levels of its range over
    `calibration` (the converter's calibration data), clipped to it.
    """
    rng = np.random.default_rng(0)

    def rounded(x, step):  # onto a grid of `step` at an unknown offset
        return np.float32(x + step * rng.uniform(-0.5, 0.5, np.shape(x)))

    def requantized(x, lo, hi):  # int8 over [lo, hi], widened to hold 0
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
        return rounded(np.clip(x, lo, hi), (hi - lo) / 255)

    scales = {tuple(t["shape"]): t["quantization_parameters"]["scales"]
              for t in Interpreter(model_content=flatbuffer).get_tensor_details() if t["dtype"] == np.int8}
    calibrated = [_forward(stages, batch) for batch in calibration]
    ranges = [(min(c[i].min() for c in calibrated), max(c[i].max() for c in calibrated))
              for i in range(len(stages) + 1)]
    clean = (np.tanh(_forward(stages, z)[-1]) + 1) / 2
    errors = []
    for _ in range(draws):
        x = requantized(z, *ranges[0]) if mode is Quantize.INT8 else z
        for (apply, kernel, bias, relu), out_range in zip(stages, ranges[1:]):
            if mode is Quantize.FLOAT16:
                kernel, bias = (None if c is None else rounded(c, np.spacing(np.abs(c).astype(np.float16)))
                                for c in (kernel, bias))
            elif kernel is not None and _lite_shape(kernel) in scales:  # int8 kernel
                step = scales[_lite_shape(kernel)]
                kernel = rounded(kernel, step[:, None] if kernel.ndim == 4 else step)
                if mode is Quantize.DYNAMIC:
                    axes = tuple(range(1, x.ndim))
                    x = requantized(x, x.min(axes, keepdims=True), x.max(axes, keepdims=True))
            elif mode is Quantize.INT8:  # MUL/ADD constants (an int8 kernel's bias is int32: near exact)
                kernel, bias = (None if c is None else requantized(c, c.min(), c.max())
                                for c in (kernel, bias))
            x = apply(x, kernel) + (0 if bias is None else bias)
            x = np.maximum(x, 0) if relu else x
            if mode is Quantize.INT8:
                x = requantized(x, *out_range)
        if mode is Quantize.INT8:  # TANH's int8 output has scale 1/128; +1 and x0.5 span [0, 2], [0, 1]
            errors.append(rounded(rounded(rounded(np.tanh(x), 1 / 128) + 1, 2 / 255) / 2, 1 / 255) - clean)
        else:
            errors.append((np.tanh(x) + 1) / 2 - clean)
    return np.array(errors)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_test_arrays):
    """A tiny DC-GAN after 100 steps on Fashion-MNIST, its exports and a .keras file."""
    model = trained_tiny_dcgan(fashion_test_arrays)
    out = tmp_path_factory.mktemp("export")
    paths = export_model(model, out, "dcgan_tiny")
    model.save(out / "model.keras")
    return model, paths, out


def test_savedmodel_in_fresh_process_matches_keras(trained, tmp_path):
    model, paths, _ = trained
    z = model.sample_latents(5, seed=3).numpy()
    np.save(tmp_path / "z.npy", z)
    code = f"""
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(paths['saved_model'])!r})
z = np.load({str(tmp_path / 'z.npy')!r})
s = m.signatures
np.savez({str(tmp_path / 'out.npz')!r},
         images=s["serving_default"](z=tf.constant(z))["images"].numpy(),
         a=s["sample"](num=tf.constant(4), seed=tf.constant(7, tf.int64))["images"].numpy(),
         b=s["sample"](num=tf.constant(4), seed=tf.constant(7, tf.int64))["images"].numpy(),
         c=s["sample"](num=tf.constant(4), seed=tf.constant(8, tf.int64))["images"].numpy())
"""
    run_python(code)
    out = np.load(tmp_path / "out.npz")
    expected = model.generate(z).numpy()
    assert out["images"].shape == (5, 32, 32, 1) and out["images"].dtype == np.float32
    np.testing.assert_allclose(out["images"], expected, atol=1e-5)
    assert out["images"].min() >= 0 and out["images"].max() <= 1
    assert out["a"].shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(out["a"], out["b"])  # a seed fixes the samples
    assert not np.array_equal(out["a"], out["c"])
    # `sample` is `serving_default` on N(0, 1) latents from the stateless seed [seed, 0].
    z8 = base.stateless_normal([4, 16], seed=[8, 0])
    np.testing.assert_allclose(out["c"], model.generate(z8), atol=1e-5)


def assert_requests_are_checked(saved_model_dir):
    """A loaded SavedModel refuses `sample` requests outside [0, MAX] and NaN/Inf `z` in every signature taking it.

    Shared with the VAE and StyleGAN2 export tests.
    """
    signatures = tf.saved_model.load(str(saved_model_dir)).signatures

    def feed(name, **given):
        # Scalar inputs besides num and seed (StyleGAN2's truncation_psi) get 1.
        specs = signatures[name].structured_input_signature[1]
        return {k: given[k] if k in given else tf.constant(1, s.dtype) for k, s in specs.items()}

    sample = lambda num: signatures["sample"](**feed("sample", num=tf.constant(num), seed=tf.constant(7, tf.int64)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sample: num must be at most 1024 images per request"):
        sample(base.MAX_SAMPLES_PER_REQUEST + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sample: num must be >= 0"):
        sample(-1)
    assert sample(2)["images"].shape[0] == 2
    with_z = [name for name in signatures if "z" in signatures[name].structured_input_signature[1]]
    assert "serving_default" in with_z
    for name in with_z:
        latent = signatures[name].structured_input_signature[1]["z"].shape[1]
        for bad in (np.nan, np.inf):
            z = np.zeros((2, latent), np.float32)
            z[1, 0] = bad
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"z \(latents\) must be finite"):
                signatures[name](**feed(name, z=tf.constant(z)))
        assert np.isfinite(next(iter(signatures[name](**feed(name, z=tf.zeros((2, latent)))).values()))).all()


def test_saved_model_refuses_oversized_samples_and_non_finite_latents(trained):
    model, paths, _ = trained
    assert_requests_are_checked(paths["saved_model"])
    # The bound is inclusive: the maximum itself is served.
    sample = tf.saved_model.load(str(paths["saved_model"])).signatures["sample"]
    images = sample(num=tf.constant(base.MAX_SAMPLES_PER_REQUEST), seed=tf.constant(1, tf.int64))["images"]
    assert images.shape == (base.MAX_SAMPLES_PER_REQUEST, *model.image_shape)


def test_saved_model_cli_lists_signatures(trained):
    _, paths, _ = trained
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    text = subprocess.run(
        [str(cli), "show", "--dir", str(paths["saved_model"]), "--all"],
        capture_output=True, text=True, check=True,
    ).stdout
    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['z'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 16)" in default
    assert "outputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 32, 32, 1)" in default
    sample = text.split("signature_def['sample']")[1].split("signature_def[")[0]
    assert "inputs['num'] tensor_info:\n        dtype: DT_INT32\n        shape: ()" in sample
    assert "inputs['seed'] tensor_info:\n        dtype: DT_INT64\n        shape: ()" in sample


def test_saved_model_cli_run_with_npy_matches_keras(trained, tmp_path):
    model, paths, _ = trained
    z = model.sample_latents(2, seed=11).numpy()
    np.save(tmp_path / "z.npy", z)
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    subprocess.run(
        [str(cli), "run", "--dir", str(paths["saved_model"]), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"z={tmp_path / 'z.npy'}",
         "--outdir", str(tmp_path / "cli")],
        capture_output=True, text=True, check=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "cli" / "images.npy"), model.generate(z), atol=1e-5)


def test_tflite_is_builtin_only_and_matches_saved_model(trained):
    model, paths, _ = trained
    flatbuffer = paths["tflite"].read_bytes()
    assert custom_ops(flatbuffer) == []
    assert "TRANSPOSE_CONV" in builtin_ops(flatbuffer)
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    saved = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"]
    for batch in (1, 4):
        z = model.sample_latents(batch, seed=batch).numpy()
        lite = runner(z=z)["images"]
        assert lite.shape == (batch, 32, 32, 1)
        np.testing.assert_allclose(lite, saved(z=tf.constant(z))["images"].numpy(), atol=1e-4)


@pytest.mark.parametrize("mode", list(Quantize))
def test_quantization_modes(trained, mode):
    """A quantized file's error against float32 must look like one more draw of `_rounding_errors`.

    The worst of 8,192 pixels sums hundreds of roundings; equally valid ones
    (another CPU's kernels or trained weights) move it 2x, so no fixed max
    follows from the quantization (dynamic's old 2/255 failed at 2.4/255).
    Against 16 draws, a held-out draw (2,000 trials per mode on three models,
    trained with oneDNN on AVX-512, on AVX2 and without it) kept its RMS
    within 1.6x of their RMS range and its max below 1.8x their largest; the
    files were at 0.84-1.37x the mean draw RMS. Hence 2x, both ways for RMS:
    a file rounded finer or coarser than its mode (float16 checked as int8,
    a 25% wrong scale) fails.
    """
    model, paths, _ = trained
    flatbuffer = convert(
        paths["saved_model"], "serving_default", mode,
        representative_data=lambda: model.representative_inputs(),
    )
    assert custom_ops(flatbuffer) == []
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    z = model.sample_latents(8, seed=21).numpy()
    expected = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"](
        z=tf.constant(z))["images"].numpy()
    got = np.concatenate([runner(z=z[i : i + 1])["images"] for i in range(len(z))])
    error = np.abs(got - expected)
    if mode is Quantize.NONE:
        assert error.max() <= 1e-4  # float32 kernels summing in another order
        return
    simulated = np.abs(_rounding_errors(
        _litert_stages(model.generator), z, mode, flatbuffer,
        [batch["z"] for batch in model.representative_inputs()]))
    rms, draw_rms = np.sqrt(np.mean(error**2)), np.sqrt(np.mean(simulated**2, axis=(1, 2, 3, 4)))
    assert draw_rms.min() / 2 <= rms <= 2 * draw_rms.max() and error.max() <= 2 * simulated.max(), (
        f"{mode.value} error: RMS {rms * 255:.3f}/255, max {error.max() * 255:.2f}/255; rounding model: "
        f"RMS {draw_rms.min() * 255:.3f}-{draw_rms.max() * 255:.3f}/255, max {simulated.max() * 255:.2f}/255")
    assert len(flatbuffer) < paths["tflite"].stat().st_size  # quantizing shrinks the file


def test_quantize_errors(trained):
    _, paths, _ = trained
    with pytest.raises(ValueError, match=r"unknown quantization mode 'int4'"):
        convert(paths["saved_model"], quantize="int4")
    with pytest.raises(ValueError, match="needs representative_data"):
        convert(paths["saved_model"], quantize="int8")


def test_repository_versions_are_never_overwritten(trained, tmp_path):
    model, _, _ = trained
    first = export_saved_model(model, tmp_path, "gan")
    second = export_saved_model(model, tmp_path, "gan")
    assert (first.name, second.name) == ("1", "2") and versions(tmp_path / "gan") == [1, 2]
    assert not [p for p in (tmp_path / "gan").iterdir() if p.name.startswith(".")]  # no temp left
    with pytest.raises(FileExistsError):
        export_saved_model(model, tmp_path, "gan", version=1)
    export_saved_model(model, tmp_path, "other")
    config = (tmp_path / "models.config").read_text()
    assert 'name: "gan"' in config and 'name: "other"' in config
    assert 'base_path: "/models/gan"' in config


def _models_config(base_dir):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((base_dir / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    return {entry.name: entry for entry in config.model_config_list.config}


def test_models_config_keeps_other_entries_and_takes_the_base_path(trained, tmp_path):
    model, _, _ = trained
    # Hand-written: a model served from elsewhere, and settings of `gan` beyond its path.
    (tmp_path / "models.config").write_text(
        "model_config_list {\n"
        "  config { name: 'elsewhere' base_path: 'gs://bucket/elsewhere' model_platform: 'tensorflow' }\n"
        "  config { name: 'gan' base_path: '/old/gan' model_platform: 'tensorflow'\n"
        "           model_version_policy { specific { versions: 1 } } }\n"
        "}\n")
    export_saved_model(model, tmp_path, "gan", serving_base_path="/srv/repo/")
    entries = _models_config(tmp_path)
    assert list(entries) == ["elsewhere", "gan"]
    assert entries["elsewhere"].base_path == "gs://bucket/elsewhere"
    assert entries["gan"].base_path == "/srv/repo/gan" and entries["gan"].model_platform == "tensorflow"
    assert list(entries["gan"].model_version_policy.specific.versions) == [1]  # kept
    export_saved_model(model, tmp_path, "other")  # added; the others stay as they are
    entries = _models_config(tmp_path)
    assert list(entries) == ["elsewhere", "gan", "other"]
    assert (entries["gan"].base_path, entries["other"].base_path) == ("/srv/repo/gan", "/models/other")
    # A file the server could not read either is left alone, and nothing is exported.
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'x' } }\n")
    with pytest.raises(ValueError, match=r"models.config is not a TF Serving model config"):
        export_saved_model(model, tmp_path, "third")
    assert not (tmp_path / "third").exists()


def _export_cli(*args):
    return subprocess.run(
        [sys.executable, "-P", "-m", "export", *map(str, args)],  # -P: the installed package
        capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )


def test_export_cli_from_keras_file(trained, tmp_path):
    model, _, out = trained
    done = _export_cli(out / "model.keras", "--format", "saved_model", "--output", tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    assert versions(tmp_path / "repo" / "model") == [1]
    done = _export_cli(out / "model.keras", "--format", "tflite", "--quantize", "float16",
                       "--output", tmp_path / "lite", "--name", "gan")
    assert done.returncode == 0, done.stderr
    assert custom_ops((tmp_path / "lite" / "gan.float16.tflite").read_bytes()) == []


def test_export_cli_serving_base_path(trained, tmp_path):
    _, _, out = trained
    done = _export_cli(out / "model.keras", "--format", "saved_model", "--output", tmp_path,
                       "--serving-base-path", "/srv/models")
    assert done.returncode == 0, done.stderr
    assert _models_config(tmp_path)["model"].base_path == "/srv/models/model"
    done = _export_cli(out / "model.keras", "--format", "tflite", "--output", tmp_path, "--serving-base-path", "/x")
    assert done.returncode == 2 and "--serving-base-path applies to --format saved_model" in done.stderr


def test_export_cli_bad_source(tmp_path):
    done = _export_cli(tmp_path, "--format", "saved_model", "--output", tmp_path / "o")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "model.keras" in done.stderr
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    done = _export_cli(tmp_path / "broken.keras", "--format", "tflite", "--output", tmp_path / "o")
    assert done.returncode == 2 and "error: cannot load" in done.stderr
