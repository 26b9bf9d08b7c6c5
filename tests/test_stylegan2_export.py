"""StyleGAN2 exports: the five SavedModel signatures in a fresh process, LiteRT parity, ψ on device."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import zoo
from conftest import REPO
from export import Quantize, convert, custom_ops, export_model
from helpers import last_json_line, run_python
from test_export import assert_requests_are_checked

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


def test_saved_model_refuses_oversized_samples_and_non_finite_latents(exported):
    _, paths, _ = exported
    assert_requests_are_checked(paths["saved_model"])  # serving_default, generate, mapping take z


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


# ---- quantized files ---------------------------------------------------------------
# A quantized file's error is compared with simulated draws of the roundings its
# mode makes, as tests/test_export.py does for the DC-GAN. Here the float model
# itself makes them: while `generate` runs, the StyleGAN2 modules' `keras.ops`
# is a `_Roundings`, so no second copy of the network is kept in the test.
# Modulation and demodulation put every rounding through per-sample styles and a
# wide-range sum of squares and rsqrt (int8 quantizes those too): the tiny
# model's int8 file is off by ~11/255 RMS, dynamic ~3/255, float16 ~0.1/255,
# hence the README's advice to prefer float16 or dynamic for StyleGAN2.

# LiteRT ops with a weight input, the `keras.ops` function computing them in the
# model, and the axes of that function's weight in the file's layout (output
# channels first; a depthwise kernel keeps its channels last).
_WEIGHT_OPS = {"FULLY_CONNECTED": "matmul", "CONV_2D": "conv", "TRANSPOSE_CONV": "conv_transpose",
               "DEPTHWISE_CONV_2D": "depthwise_conv"}
_FILE_AXES = {"matmul": (1, 0), "conv": (3, 0, 1, 2), "conv_transpose": (2, 0, 1, 3),
              "depthwise_conv": (3, 0, 1, 2)}
# Ops whose outputs a full-integer file holds on a scale of their own (pads,
# reshapes, concatenations and casts keep their input's).
_ARITHMETIC = {*_FILE_AXES, "add", "multiply", "square", "mean", "rsqrt", "leaky_relu"}


def _int8_weights(flatbuffer):
    """`[(keras.ops name, dequantized weight, step)]` for each op of the file with an int8 weight.

    `step` (the int8 scale) is per output channel, or per tensor.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    weights = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = _WEIGHT_OPS.get(codes[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
        if name is None or details[op.Inputs(1)]["dtype"] != np.int8:
            continue
        tensor = details[op.Inputs(1)]
        quantization = tensor["quantization_parameters"]
        shape = [1] * len(tensor["shape"])
        shape[quantization["quantized_dimension"]] = -1
        step, zero = (quantization[k].reshape(shape) for k in ("scales", "zero_points"))
        weights.append((name, (interpreter.get_tensor(tensor["index"]) - zero) * step, step))
    return weights


class _Roundings:
    """`keras.ops` for the StyleGAN2 modules that makes, in float, the roundings of a `mode` file.

    A rounding moves a number by a uniform fraction of its step, +-step/2.
    float16: every weight of a matmul or convolution (as the model computes
    it: a kernel times its gain, as the file stores it) and lrelu's gain,
    step their float16 spacing (numbers float16 holds exactly stay).
    dynamic and int8: each weight op whose weight the file holds as int8
    (from `_int8_weights`, found by value: the file's weight lies within
    half a step of the one the model computes, or of it times lrelu's
    sqrt 2, which the converter folds into the next dense kernel): that
    weight, steps the file's scales. dynamic: also that op's input, per
    sample, 256 levels over its [min, max] widened to hold 0
    (FULLY_CONNECTED and CONV_2D quantize inputs asymmetrically) or 255
    over +-max|x| (TRANSPOSE_CONV, symmetrically). int8: every
    `_ARITHMETIC` output and each `activation`, 256 levels of its range
    over the calibration data (widened to hold 0, clipped to it), and every
    non-scalar constant added or multiplied in, over its own range (a
    scalar is its range's end: exact). `matched` collects the weights found.
    """

    def __init__(self, mode, weights, seed=0):
        self._mode, self._weights = mode, weights
        self._rng = np.random.default_rng(seed)
        self._sites = []  # per `_ARITHMETIC` call or activation, in order: [first values, constant?, lo, hi]
        self._calibrating = False
        self.matched = set()  # indices into `weights`

    def __getattr__(self, name):
        fn = getattr(keras.ops, name)
        if name not in _ARITHMETIC:
            return fn
        return lambda *args, **kwargs: self._call(name, fn, list(args), kwargs)

    def calibrate(self, run, batches):
        """Records each activation's range over `run(batch)` for `batches`, and which are constants."""
        self._calibrating = True
        try:
            for batch in batches:
                self._count = 0
                run(batch)
        finally:
            self._calibrating = False

    def start(self):
        """Starts a draw."""
        self._count, self._used = 0, set()
        # lrelu's gain: one constant of the file, stored in float16 by a float16 file.
        self.gain = self.float16(np.sqrt(2)) if self._mode is Quantize.FLOAT16 else np.float32(np.sqrt(2))

    def _rounded(self, x, step):
        return np.float32(x + step * self._rng.uniform(-0.5, 0.5, np.shape(x)))

    def _requantized(self, x, lo, hi):  # 256 levels over [lo, hi] widened to hold 0
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
        return self._rounded(np.clip(x, lo, hi), (hi - lo) / 255)

    def _site(self, values):
        """The site's [constant?] flags of `values` (arguments, then output); records them when calibrating."""
        site = self._count
        self._count += 1
        if not self._calibrating:
            return self._sites[site] if self._mode is Quantize.INT8 else None
        if site == len(self._sites):
            self._sites.append([values, [True] * len(values), values[-1].min(), values[-1].max()])
        else:
            first, constant, lo, hi = self._sites[site]
            constant = [c and v.shape == f.shape and np.array_equal(v, f) for c, v, f in zip(constant, values, first)]
            self._sites[site] = [first, constant, min(lo, values[-1].min()), max(hi, values[-1].max())]
        return None

    def activation(self, x):
        """`x` as an int8 file holds it (a tensor `_ARITHMETIC` does not see: an input, the output's stages)."""
        if self._mode is not Quantize.INT8:
            return x
        x = np.asarray(x, np.float32)
        site = self._site([x])
        return x if site is None or site[1][-1] else self._requantized(x, site[2], site[3])

    def _call(self, name, fn, args, kwargs):
        if name in _FILE_AXES and not self._calibrating:
            args[:2] = self._weight_op(name, *args[:2])
        if self._mode is not Quantize.INT8:
            return fn(*args, **kwargs)
        if self._calibrating:
            out = fn(*args, **kwargs)
            self._site([*(np.asarray(a) for a in args[:2]), np.asarray(out)])
            return out
        _, constant, lo, hi = self._site(None)
        if name in ("add", "multiply"):
            args = [self._requantized(a, np.min(a), np.max(a)) if c and np.size(a) > 1 else a
                    for a, c in zip(args, constant)]
        out = fn(*args, **kwargs)
        return out if constant[-1] else self._requantized(np.asarray(out), lo, hi)

    def float16(self, x):
        """`x` rounded to float16 (numbers float16 holds exactly stay)."""
        x = np.asarray(x, np.float32)
        spacing = np.spacing(np.abs(x).astype(np.float16)).astype(np.float32)
        return np.where(x.astype(np.float16) == x, x, self._rounded(x, spacing))

    def _weight_op(self, name, x, w):
        """`x, w` as the file has them: `w` rounded if the file holds it as int8 (dynamic: `x` too)."""
        if self._mode is Quantize.FLOAT16:
            return x, self.float16(w)
        w = np.asarray(w)
        in_file = w.transpose(_FILE_AXES[name])
        for i, (op, values, step) in sorted(enumerate(self._weights), key=lambda e: e[0] in self._used):
            gain = op == name and values.shape == in_file.shape and next(
                (g for g in (1, np.sqrt(2)) if np.all(np.abs(values - g * in_file) <= 0.505 * step + 1e-7)), None)
            if gain:
                break
        else:
            return x, w  # float in the file
        self.matched.add(i)
        self._used.add(i)
        w = self._rounded(in_file, step / gain).transpose(np.argsort(_FILE_AXES[name]))
        if self._mode is Quantize.DYNAMIC:
            x = np.asarray(x)
            axes = tuple(range(1, x.ndim))
            if name == "conv_transpose":
                x = self._rounded(x, np.abs(x).max(axes, keepdims=True) / 127)
            else:
                x = self._requantized(x, x.min(axes, keepdims=True), x.max(axes, keepdims=True))
        return x, w


def _rounding_errors(model, mode, flatbuffer, z, psi, calibration, draws=8, seed=0):
    """Pixel errors `[draws, *images.shape]` of `generate` with draws of the roundings of a `mode` file.

    Also the file's int8 weights that no op of the model computes with
    (indices into `_int8_weights`). The EMA generator runs with
    `_Roundings` as its modules' `keras.ops` (int8: calibrated on
    `calibration`, the converter's data); float16 also rounds the variables
    that no weight op takes (constant input, biases, w average, noise).
    """
    from zoo.stylegan2 import stylegan2_layers, stylegan2_networks

    generator = model.generator_ema
    clean = model.generate(z, psi).numpy()
    weights = [] if mode is Quantize.FLOAT16 else _int8_weights(flatbuffer)
    roundings = _Roundings(mode, weights, seed)
    # float16: the variables no weight op takes (a kernel enters the file times its gain: rounded there).
    constants = [v for v in generator.weights if mode is Quantize.FLOAT16 and not v.path.endswith("kernel")]
    values = [v.numpy() for v in constants]

    def generate(z, psi):  # model.generate, the file's inputs and to_unit_range's ADD, MUL and clip as activations
        roundings.start()
        z, psi = roundings.activation(z), roundings.activation(np.float32(psi))
        x = roundings.activation(generator(z, truncation_psi=psi))  # the last skip connection's ADD
        return roundings.activation(np.clip(roundings.activation(roundings.activation(x + 1) * 0.5), 0, 1))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stylegan2_layers, "ops", roundings)
        patch.setattr(stylegan2_networks, "ops", roundings)
        # x + b and x * s, and lrelu's gain, through `roundings` too.
        patch.setattr(stylegan2_layers, "precision",
                      types.SimpleNamespace(add=roundings.add, multiply=roundings.multiply))
        patch.setattr(stylegan2_layers, "_activate", lambda x, activation: roundings.multiply(
            roundings.leaky_relu(x, negative_slope=0.2), roundings.gain) if activation == "lrelu" else x)
        if mode is Quantize.INT8:  # the ranges over all of `calibration`, in one batch per ψ
            by_psi = {}
            for batch in calibration:
                by_psi.setdefault(float(batch["truncation_psi"]), []).append(batch["z"])
            roundings.calibrate(lambda item: generate(np.concatenate(item[1]), item[0]), by_psi.items())
        errors = []
        try:
            for _ in range(draws):
                for v, value in zip(constants, values):
                    v.assign(roundings.float16(value))
                errors.append(generate(z, psi) - clean)
        finally:
            for v, value in zip(constants, values):
                v.assign(value)
    return np.array(errors), set(range(len(weights))) - roundings.matched


def _rounding_verdict(error, simulated):
    """None when `error` (|pixel error|) looks like one more draw of `simulated`, else a message saying how not."""
    rms, draw_rms = np.sqrt(np.mean(error**2)), np.sqrt(np.mean(simulated**2, axis=(1, 2, 3, 4)))
    if draw_rms.min() / 2 <= rms <= 2 * draw_rms.max() and error.max() <= 2 * np.abs(simulated).max():
        return None
    return (f"error: RMS {rms * 255:.3f}/255, max {error.max() * 255:.2f}/255; rounding model: RMS "
            f"{draw_rms.min() * 255:.3f}-{draw_rms.max() * 255:.3f}/255, max {np.abs(simulated).max() * 255:.2f}/255")


@pytest.mark.parametrize("mode", list(Quantize))
def test_generate_quantization_modes(exported, mode):
    """A quantized file's error against float32 must look like one more draw of `_rounding_errors`.

    Two checks that follow from what quantizing does, not from numbers
    measured on one CPU:

    * dynamic, int8: every int8 weight of the file is a weight of this model
      on the file's own grid, |dequantized - float| <= step / 2 (file
      content: the same on any CPU). A wrong scale on any one layer, or
      another model's file, fails here whatever the kernels then do.
    * The images. The worst of 4,096 pixels sums hundreds of roundings that
      equally valid kernels or weights move (int8 with XNNPACK's kernels
      60.1/255, with the builtin ones 50.9/255; latents moved by 1e-3:
      dynamic 11.7-14.6/255, int8 50.9-65.4/255), so no fixed max follows from
      the quantization. Against 8 draws the file's RMS must lie within
      [smallest draw RMS / 2, 2 x largest] and its max within 2x the draws'.
      Measured over five models (untrained seeds 0-2, seed 0 with every
      weight moved by 1% of its spread, 30 training steps), latents of
      seed 11 and three moved by 1e-3, XNNPACK, builtin and (but for int8,
      whose TILE they lack) reference kernels and 8 simulation seeds (1,280
      checks): the RMS was 0.74-1.35x
      the smallest draw's and 0.42-1.15x the largest's, the max 0.33-1.09x
      the draws'; dynamic inputs rounded otherwise (all symmetric, all
      asymmetric, per channel), as other CPUs' kernels may, stayed inside.
      Hence 2x, both ways for RMS: a file rounded finer or coarser than its
      mode fails (float16 checked as dynamic or int8, dynamic as int8 and
      back, a 25% wrong scale on most layers of a dynamic file).
    """
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
    if mode is Quantize.NONE:
        assert error.max() <= 1e-4  # float32 kernels summing in another order
        return
    if mode is not Quantize.FLOAT16:
        assert _int8_weights(flatbuffer), f"the {mode.value} file has no int8 weights"
    simulated, foreign = _rounding_errors(
        model, mode, flatbuffer, z, PSI, list(model.representative_inputs("generate")))
    assert not foreign, f"the file's int8 weights {sorted(foreign)} are no weights of this model on their grid"
    verdict = _rounding_verdict(error, simulated)
    assert verdict is None, f"{mode.value} {verdict}"


def test_on_device_script_takes_psi(exported, tmp_path):
    """`examples/generate_on_device.py` on the `generate` file: latents from numpy, ψ applied."""
    from PIL import Image

    model, paths, _ = exported
    num, seed = 4, 3
    proc = run_python(
        f"import runpy; runpy.run_path({str(REPO / 'examples' / 'generate_on_device.py')!r}, run_name='__main__')",
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
