"""StyleGAN2 exports: the five SavedModel signatures in a fresh process, LiteRT parity, ψ on device."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import zoo
from export import Quantize, convert, custom_ops, export_model
from helpers import last_json_line, run_python

PSI = 0.7


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny StyleGAN2 with a non-zero w average, exported as SavedModel + LiteRT."""
    keras.utils.set_random_seed(0)
    model = zoo.get_model("stylegan2", "stylegan2_tiny")
    # Untrained, w_avg is 0 and truncation would be a plain scaling: give it a value.
    w_avg = model.generator_ema.mapping.w_avg
    w_avg.assign(np.random.RandomState(1).normal(size=w_avg.shape).astype("float32"))
    out = tmp_path_factory.mktemp("sg2")
    paths = export_model(model, out, "stylegan2_tiny")
    return model, paths, out


def test_layout_has_every_signature_and_tflite_file(exported):
    model, paths, _ = exported
    assert set(paths) == {"saved_model", "tflite", "tflite_generate", "tflite_mapping", "tflite_synthesis"}
    loaded = tf.saved_model.load(str(paths["saved_model"]))
    assert set(loaded.signatures) == {"serving_default", "generate", "mapping", "synthesis", "sample"}
    generate = loaded.signatures["generate"]
    specs = generate.structured_input_signature[1]
    assert specs["z"].shape.as_list() == [None, model.latent_dim]
    assert specs["truncation_psi"].shape.as_list() == [] and specs["truncation_psi"].dtype == tf.float32
    w_spec = loaded.signatures["synthesis"].structured_input_signature[1]["w"]
    assert w_spec.shape.as_list() == [None, model.num_ws, model.w_dim]


def test_saved_model_in_fresh_process_matches_keras(exported, tmp_path):
    model, paths, _ = exported
    z = model.sample_latents(3, seed=5).numpy()
    np.save(tmp_path / "z.npy", z)
    code = f"""
import json, numpy as np, tensorflow as tf
sigs = tf.saved_model.load({str(paths["saved_model"])!r}).signatures
z = tf.constant(np.load({str(tmp_path / "z.npy")!r}))
psi = tf.constant({PSI}, tf.float32)
out = {{
    "serving_default": sigs["serving_default"](z=z)["images"],
    "generate": sigs["generate"](z=z, truncation_psi=psi)["images"],
    "mapping": sigs["mapping"](z=z, truncation_psi=psi)["w"],
}}
out["synthesis"] = sigs["synthesis"](w=out["mapping"])["images"]
a = sigs["sample"](num=tf.constant(3), seed=tf.constant(9, tf.int64), truncation_psi=psi)["images"]
b = sigs["sample"](num=tf.constant(3), seed=tf.constant(9, tf.int64), truncation_psi=psi)["images"]
np.savez({str(tmp_path / "out.npz")!r}, **{{k: v.numpy() for k, v in out.items()}}, sample=a.numpy())
print(json.dumps({{"sample_repeatable": bool(np.array_equal(a.numpy(), b.numpy()))}}))
"""
    result = last_json_line(run_python(code).stdout)
    assert result["sample_repeatable"]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["serving_default"], model.generate(z), atol=1e-5)
    np.testing.assert_allclose(out["generate"], model.generate(z, PSI), atol=1e-5)
    np.testing.assert_allclose(out["mapping"], model.mapping(z, PSI), atol=1e-5)
    np.testing.assert_allclose(out["synthesis"], out["generate"], atol=1e-5)
    assert np.abs(out["generate"] - out["serving_default"]).max() > 1e-3  # psi changed the images
    assert out["sample"].shape == (3, 32, 32, 1)


def test_tflite_files_are_builtin_only_and_match_the_saved_model(exported):
    model, paths, _ = exported
    sigs = tf.saved_model.load(str(paths["saved_model"])).signatures
    z = model.sample_latents(4, seed=2).numpy()
    psi = np.float32(PSI)
    expected = {
        "tflite": sigs["serving_default"](z=tf.constant(z))["images"].numpy(),
        "tflite_generate": sigs["generate"](z=tf.constant(z), truncation_psi=tf.constant(psi))["images"].numpy(),
        "tflite_mapping": sigs["mapping"](z=tf.constant(z), truncation_psi=tf.constant(psi))["w"].numpy(),
    }
    expected["tflite_synthesis"] = sigs["synthesis"](w=tf.constant(expected["tflite_mapping"]))["images"].numpy()
    feeds = {
        "tflite": {"z": z},
        "tflite_generate": {"z": z, "truncation_psi": psi},
        "tflite_mapping": {"z": z, "truncation_psi": psi},
        "tflite_synthesis": {"w": expected["tflite_mapping"]},
    }
    for key, feed in feeds.items():
        flatbuffer = paths[key].read_bytes()
        assert custom_ops(flatbuffer) == [], key  # no Flex: runs on LiteRT's builtin kernels
        interpreter = Interpreter(model_content=flatbuffer)
        (signature,) = interpreter.get_signature_list()
        got = next(iter(interpreter.get_signature_runner(signature)(**feed).values()))
        np.testing.assert_allclose(got, expected[key], atol=1e-4, err_msg=key)


# (max, mean) |pixel| error of `generate` against the float32 SavedModel, pixels
# in [0, 1], for the untrained tiny model. Modulation multiplies per-sample
# styles into every convolution, so weight quantization errors compound more
# than in the DC-GAN (measured dynamic: max 0.053, mean 0.0077); full-integer
# int8 also quantizes the demodulation's sum of squares and rsqrt, whose range
# is wide (measured: max 0.236, mean 0.032). The README says so: prefer
# float16 or dynamic for StyleGAN2.
TOLERANCE = {
    Quantize.NONE: (1e-4, 1e-5),
    Quantize.FLOAT16: (2 / 255, 0.5 / 255),
    Quantize.DYNAMIC: (16 / 255, 3 / 255),
    Quantize.INT8: (80 / 255, 12 / 255),
}


@pytest.mark.parametrize("mode", list(Quantize))
def test_generate_quantization_modes(exported, mode):
    model, paths, _ = exported
    flatbuffer = convert(
        paths["saved_model"], "generate", mode,
        representative_data=lambda: model.representative_inputs("generate"),
    )
    assert custom_ops(flatbuffer) == []
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("generate")
    z = model.sample_latents(4, seed=11).numpy()
    expected = tf.saved_model.load(str(paths["saved_model"])).signatures["generate"](
        z=tf.constant(z), truncation_psi=tf.constant(PSI))["images"].numpy()
    got = np.concatenate([runner(z=z[i : i + 1], truncation_psi=np.float32(PSI))["images"]
                          for i in range(len(z))])
    error = np.abs(got - expected)
    max_tol, mean_tol = TOLERANCE[mode]
    assert error.max() <= max_tol and error.mean() <= mean_tol, (mode, float(error.max()), float(error.mean()))


def test_on_device_script_takes_psi(exported, tmp_path):
    """`examples/generate_on_device.py` on the `generate` file: latents from numpy, ψ applied."""
    from PIL import Image

    model, paths, _ = exported
    num, seed = 4, 3
    proc = run_python(
        "import runpy; runpy.run_path('examples/generate_on_device.py', run_name='__main__')",
        args=(str(paths["tflite_generate"]), "--num", str(num), "--seed", str(seed), "--psi", "0.5",
              "--out", str(tmp_path / "grid.png")),
    )
    assert proc.stdout.strip().endswith("grid.png")
    z = np.random.default_rng(seed).standard_normal((num, model.latent_dim), dtype=np.float32)
    expected = model.generate(z, 0.5).numpy()  # [4, 32, 32, 1]
    grid = np.asarray(Image.open(tmp_path / "grid.png"), np.float64) / 255  # 2x2 grid
    top_left = grid[:32, :32]
    assert np.abs(top_left - expected[0, ..., 0]).max() <= 1 / 255 + 1e-4
    assert np.abs(grid[32:, 32:] - expected[3, ..., 0]).max() <= 1 / 255 + 1e-4
