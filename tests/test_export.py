"""Export: SavedModel in a fresh process, saved_model_cli, LiteRT modes, repository layout, CLI."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from conftest import REPO
from export import Quantize, builtin_ops, convert, custom_ops, export_model, export_saved_model, versions
from helpers import run_python, trained_tiny_dcgan
from zoo import base

# Max |pixel| error against the float32 SavedModel, pixels in [0, 1]; one
# 8-bit gray level is 1/255. Quantized modes are allowed a few gray levels.
TOLERANCE = {
    Quantize.NONE: 1e-4,
    Quantize.FLOAT16: 1 / 255,
    Quantize.DYNAMIC: 2 / 255,
    Quantize.INT8: 8 / 255,
}


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
    assert np.abs(got - expected).max() <= TOLERANCE[mode]
    if mode is not Quantize.NONE:
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
    assert "name: 'gan'" in config and "name: 'other'" in config
    assert "base_path: '/models/gan'" in config


def _export_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
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


def test_export_cli_bad_source(tmp_path):
    done = _export_cli(tmp_path, "--format", "saved_model", "--output", tmp_path / "o")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "model.keras" in done.stderr
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    done = _export_cli(tmp_path / "broken.keras", "--format", "tflite", "--output", tmp_path / "o")
    assert done.returncode == 2 and "error: cannot load" in done.stderr
