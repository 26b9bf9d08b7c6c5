"""Mixed precision: held optimizers scale losses, overflow skips a step, exports stay float32,
and bfloat16 training computes float32's gradients up to bfloat16 rounding (on CPU too)."""

import functools

import keras
import numpy as np
import pytest

import zoo
from export import custom_ops, export_model
from helpers import dataset_of, images_like, max_abs_diff, weights_of


@pytest.fixture
def policy(request):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(previous)


FAMILIES = [("dcgan", "dcgan_tiny"), ("vae", "vae_tiny"), ("stylegan2", "stylegan2_tiny")]


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("family, preset", [
    # StyleGAN2 under float16 on one device also runs in the fast
    # test_distribute.py::test_mirrored_float16_equals_one_device.
    *FAMILIES[:2], pytest.param(*FAMILIES[2], marks=pytest.mark.slow)])
def test_float16_wraps_held_optimizers_and_trains(policy, family, preset):
    model = zoo.get_model(family, preset)
    model.compile()
    for name in model.optimizer_targets():
        assert isinstance(getattr(model, name), keras.optimizers.LossScaleOptimizer), name
    # 4 steps: the dynamic scale starts at 2**15 and halves on each step whose
    # scaled gradients overflow float16, which skips it; the VAE's summed
    # per-image loss (~700 nats) overflows twice before its first update.
    images = images_like(model, 32)
    if hasattr(model, "discriminator"):  # logits leave D in float32 whatever the policy
        assert model.discriminator(images[:2]).dtype == "float32"
    before = weights_of(model)
    logs = model.fit(dataset_of(images, 8), verbose=0).history
    assert all(np.isfinite(v[0]) for v in logs.values()), logs
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert max_abs_diff(before, weights_of(model)) > 0


# D-optimizer updates in a GAN's first step: StyleGAN2 adds its lazy R1 step at step 0.
D_UPDATES_AT_STEP_0 = {"dcgan": 1, "stylegan2": 2}


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("family, preset", [
    ("dcgan", "dcgan_tiny"), pytest.param("stylegan2", "stylegan2_tiny", marks=pytest.mark.slow)])
def test_float16_overflow_skips_the_step_with_finite_weights(policy, family, preset):
    model = zoo.get_model(family, preset)
    huge = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(), initial_scale=1e38)
    model.compile(d_optimizer=huge)
    d_before = [v.numpy() for v in model.discriminator.trainable_variables]
    g_before = [v.numpy() for v in model.generator.trainable_variables]
    model.fit(dataset_of(images_like(model, 8), 8), verbose=0)
    # float16 gradients of a loss scaled by 1e38 overflow: each of D's updates
    # is skipped and halves the scale, while G (normal scale) still trains.
    assert max_abs_diff(d_before, [v.numpy() for v in model.discriminator.trainable_variables]) == 0
    assert float(model.d_optimizer.dynamic_scale) == pytest.approx(
        1e38 * 0.5 ** D_UPDATES_AT_STEP_0[family], rel=1e-6)
    assert max_abs_diff(g_before, [v.numpy() for v in model.generator.trainable_variables]) > 0
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_exports_are_float32_whatever_the_policy(policy, tmp_path):
    import tensorflow as tf

    model = zoo.get_model("dcgan", "dcgan_tiny")
    model.compile()
    model.fit(dataset_of(images_like(model, 16), 8), verbose=0)
    paths = export_model(model, tmp_path, "m")
    signature = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"]
    assert signature.structured_input_signature[1]["z"].dtype == tf.float32
    z = model.sample_latents(3).numpy()
    out = signature(z=tf.constant(z))["images"]
    assert out.dtype == tf.float32
    # Same weights computed in float32 vs the low-precision training graph.
    np.testing.assert_allclose(out.numpy(), model.generate(z).numpy(), atol=3e-2)
    assert custom_ops(paths["tflite"].read_bytes()) == []


def test_bfloat16_bias_gradients_are_wrong_on_cpu():
    """The TensorFlow kernel `zoo.precision` works around (a TF fix makes this fail)."""
    import tensorflow as tf

    x, bias = tf.ones([1, 2048, 1, 4], tf.bfloat16), tf.zeros([4], tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(bias)
        y = tf.nn.bias_add(x, bias)  # what Keras' ops.add(x, bias) becomes on TensorFlow
    # The true gradient is 2048 per channel; summed in bfloat16 it stops at
    # 256, where adding 1 no longer changes a bfloat16 (8 significant bits).
    np.testing.assert_array_equal(tape.gradient(y, bias).numpy().astype("float32"), [256.0] * 4)


# ---- bfloat16 on CPU: every gradient sum in float32 (zoo.precision) --------------
#
# Numbers below: bfloat16 keeps 8 significant bits, so one rounding changes a
# value by at most U = 2**-8 of it (relative RMS ~U/2 over many values).
U = 2.0**-8


def _rel(a, b):
    """`||a - b|| / ||b||`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _as_bfloat16(x):
    """float32 `x` rounded to the nearest bfloat16."""
    import tensorflow as tf

    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()


def test_cpu_bfloat16_flags_come_from_proc_cpuinfo(tmp_path):
    from zoo import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16\n")
    assert precision.cpu_bfloat16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert precision.cpu_bfloat16_flags(cpuinfo) == []
    assert precision.cpu_bfloat16_flags(tmp_path / "missing") == []


def test_add_and_multiply_are_the_plain_ops_in_float32():
    """float32 models compute exactly what they computed before zoo.precision."""
    import tensorflow as tf

    from zoo import precision

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4, 5, 5, 3)), tf.float32)
    for y in (tf.constant(rng.standard_normal(3), tf.float32),
              tf.constant(rng.standard_normal((4, 1, 1, 3)), tf.float32)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, y])
            ours = [precision.add(x, y), precision.multiply(x, y)]
            plain = [x + y, x * y]
        for a, b in zip(ours, plain):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            for ga, gb in zip(tape.gradient(a, [x, y]), tape.gradient(b, [x, y])):
                np.testing.assert_array_equal(ga.numpy(), gb.numpy())


@pytest.mark.parametrize("mode", ["eager", "function", "dynamic_batch"])
def test_float32_summed_gradients_are_exact_to_second_order(mode):
    """The custom gradients (forced here on float32, where they are exact) equal autodiff's,
    and so do their own gradients: R1 and the path length differentiate through them."""
    import tensorflow as tf

    from zoo import precision

    rng = np.random.default_rng(0)
    const = tf.constant(rng.standard_normal((1, 5, 5, 3)), tf.float32)  # broadcast over the batch
    styles = tf.constant(rng.standard_normal((4, 1, 1, 3)), tf.float32)
    bias = tf.constant(rng.standard_normal(3), tf.float32)

    def first_and_second(add, multiply, const, styles, bias):
        operands = [const, styles, bias]
        with tf.GradientTape() as outer:
            outer.watch(operands)
            with tf.GradientTape() as inner:
                inner.watch(operands)
                h = add(multiply(const, styles), bias)  # [4, 5, 5, 3]
                loss = tf.reduce_sum(tf.tanh(h) * tf.cos(h))
            first = inner.gradient(loss, operands)
            penalty = tf.add_n([tf.reduce_sum(g**2) for g in first])
        return first + outer.gradient(penalty, operands)

    expected = first_and_second(lambda a, b: a + b, lambda a, b: a * b, const, styles, bias)
    ours = functools.partial(first_and_second, precision._add, precision._multiply)
    if mode == "function":
        ours = tf.function(ours)
    elif mode == "dynamic_batch":
        ours = tf.function(ours, input_signature=[
            tf.TensorSpec([None, 5, 5, 3]), tf.TensorSpec([None, 1, 1, 3]), tf.TensorSpec([3])])
    for got, want in zip(ours(const, styles, bias), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5 * np.abs(want).max())


# One layer, one forward and backward pass, the same weights, inputs and
# upstream gradient in float32 and under a 16-bit policy. The upstream
# gradient is positive (as a reconstruction loss's on a dark background), so
# a bias gradient is a sum of 2,048+ same-sign terms: summed in 16 bits it
# stalls once the running sum is 2**p times a term (p significant bits; in
# bfloat16 2,048 ones give 256), summed in float32 it is exact but for the
# final rounding.
#
# Bound 8 units of rounding (bfloat16 U = 2**-8, float16 2**-11): a weight's
# gradient goes through at most ~8 roundings of at most one unit each (input,
# weight, the layer's 1-4 intermediate results, the upstream gradient, the
# backward products, the result), which add at worst. (The styles' gradient,
# `affine/*`, is the difference of a modulation and a demodulation term that
# nearly cancel; with 4 input channels instead of 16 its relative error
# reached 8 U for some initializations.) Measured, gradients summed in
# float32: <= 0.0065 = 1.7 U in bfloat16, <= 0.0008 = 1.6 units in float16.
# Before zoo.precision: Keras' Dense and Conv2DTranspose biases 0.75 in
# bfloat16 (BiasAddGrad); the StyleGAN2 layers' broadcast gradients up to
# 0.0047 = 9.6 units in float16 (TensorFlow's float16 Sum; ToRGB's bias).
ROUNDING_UNIT = {"mixed_bfloat16": U, "mixed_float16": 2.0**-11}
LAYER_BOUND_UNITS = 8


def _precision():
    from zoo import precision

    return precision


def _sg():
    from zoo.stylegan2 import stylegan2_layers

    return stylegan2_layers


# name: (layer factory, input shapes). Factories import when called.
LAYER_CASES = {
    "Dense": (lambda: _precision().Dense(16), [(2048, 32)]),
    "Conv2D": (lambda: _precision().Conv2D(8, 3, padding="same"), [(8, 16, 16, 4)]),
    "Conv2D_strided": (lambda: _precision().Conv2D(8, 4, strides=2, padding="same"), [(8, 32, 32, 4)]),
    "Conv2DTranspose": (lambda: _precision().Conv2DTranspose(8, 4, strides=2, padding="same"),
                        [(8, 8, 8, 4)]),
    "EqualizedDense": (lambda: _sg().EqualizedDense(16, activation="linear"), [(2048, 32)]),
    "EqualizedDense_mapping": (lambda: _sg().EqualizedDense(16, lr_multiplier=0.01, activation="linear"),
                               [(2048, 32)]),
    "EqualizedConv2D": (lambda: _sg().EqualizedConv2D(8, 3, activation="linear"), [(8, 16, 16, 4)]),
    "EqualizedConv2D_down": (lambda: _sg().EqualizedConv2D(8, 3, activation="linear", down=True),
                             [(8, 32, 32, 4)]),
    "ModulatedConv2D": (lambda: _sg().ModulatedConv2D(8, 3), [(8, 16, 16, 16), (8, 32)]),
    "ModulatedConv2D_up": (lambda: _sg().ModulatedConv2D(8, 3, up=True), [(8, 8, 8, 16), (8, 32)]),
    # The synthesis network's learned constant: one [1, H, W, C] input for the batch.
    "ModulatedConv2D_const": (lambda: _sg().ModulatedConv2D(8, 3), [(1, 16, 16, 16), (8, 32)]),
    "SynthesisLayer": (lambda: _sg().SynthesisLayer(8), [(8, 16, 16, 16), (8, 32), (8, 16, 16, 1)]),
    "SynthesisLayer_up": (lambda: _sg().SynthesisLayer(8, up=True), [(8, 8, 8, 16), (8, 32), (8, 16, 16, 1)]),
    "ToRGB": (lambda: _sg().ToRGB(3), [(8, 16, 16, 16), (8, 32)]),
}


def _layer_gradients(make, shapes, policy, weights=None):
    """`(gradients by weight path, weights)` of `sum(layer(inputs) * upstream)` in a tf.function."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    inputs = [tf.constant(rng.standard_normal(shape).astype("float32")) for shape in shapes]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before
    try:
        layer = make()
        outputs = layer(*inputs)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if weights is None:
        # Biases and noise strengths away from 0, so lrelu sees no pre-activation
        # near its kink (a rounding there would flip its slope, not round it).
        shift = {"bias": 4.0, "noise_strength": 0.5}
        weights = [w + shift.get(v.name, 0.0) if "affine" not in v.path else w
                   for v, w in zip(layer.weights, layer.get_weights())]
    layer.set_weights(weights)
    upstream = tf.constant(rng.uniform(0.5, 1.5, outputs.shape).astype("float32"))

    @tf.function
    def gradients(inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(*inputs), tf.float32) * upstream)
        return tape.gradient(loss, layer.trainable_weights)

    grads = gradients(inputs)
    return {v.path.split("/", 1)[-1]: g.numpy() for v, g in zip(layer.trainable_weights, grads)}, weights


def _cpu_has_float16_units(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo) as f:
            return any(flag in f.read().split() for flag in ("avx512_fp16", "amx_fp16"))
    except OSError:
        return False


# Found on an AMD EPYC with AVX512-BF16 but no AVX512-FP16/AMX-FP16 (TF 2.21): the float16
# kernel gradient of a stride-1 3x3 convolution comes out 11.6 units off (0.0057), the bias and
# the strided/transposed/modulated convolutions within bound; the AMX Xeon measured <= 1.6 units.
# TensorFlow's float16 filter-gradient kernel there seems to sum in float16; zoo.precision does
# not yet recompute it in float32. Not strict: seen on one CPU type only.
#
# Found the same way for bfloat16 on an AMD EPYC with AVX2 only (no AVX512-BF16/AMX-BF16, TF 2.21):
# the kernel gradient of the stride-1 3x3 convolutions comes out 12.4 units off (0.048), the bias
# and the other convolutions within bound, with oneDNN on or off (TF_ENABLE_ONEDNN_OPTS=0: same
# numbers). CPUs with bfloat16 instructions pass. `train.py` refuses mixed_bfloat16 on such CPUs
# (zoo.training.config); a user who sets the policy there gets these sums. Not strict: one CPU type.
CONV_KERNEL_SUMS = {
    "mixed_float16": pytest.mark.xfail(
        not _cpu_has_float16_units(), strict=False,
        reason="float16 Conv2D filter gradient summed in float16 on CPUs without float16 units"),
    "mixed_bfloat16": pytest.mark.xfail(
        not zoo.precision.cpu_has_native_bfloat16(), strict=False,
        reason="bfloat16 Conv2D filter gradient summed in bfloat16 on CPUs without bfloat16 instructions"),
}


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_gradients_under_16_bits_are_float32_up_to_rounding(case, policy, request):
    if case in ("Conv2D", "EqualizedConv2D"):
        request.applymarker(CONV_KERNEL_SUMS[policy])
    make, shapes = LAYER_CASES[case]
    expected, weights = _layer_gradients(make, shapes, "float32")
    got, _ = _layer_gradients(make, shapes, policy, weights)
    errors = {name: _rel(got[name], expected[name]) for name in expected}
    assert max(errors.values()) <= LAYER_BOUND_UNITS * ROUNDING_UNIT[policy], errors


def test_the_layer_bound_catches_bfloat16_sums():
    """Keras' own Dense (bias through BiasAdd, summed in bfloat16) fails the bound by far."""
    bound = LAYER_BOUND_UNITS * U
    _, shapes = LAYER_CASES["Dense"]
    expected, weights = _layer_gradients(lambda: keras.layers.Dense(16), shapes, "float32")
    got, _ = _layer_gradients(lambda: keras.layers.Dense(16), shapes, "mixed_bfloat16", weights)
    assert _rel(got["kernel"], expected["kernel"]) <= bound
    assert _rel(got["bias"], expected["bias"]) > 10 * bound


# ---- One training step and the first steps of each family: bfloat16 vs float32 -----
#
# The real `train_step` of each family (one tf.function, no XLA: TensorFlow's
# own kernels, where the bfloat16 sums went wrong) on the same real
# Fashion-MNIST batch, the same weights and the same noise, once under float32
# and once under mixed_bfloat16. Every optimizer call of the step records its
# gradients; learning rates are 0 for that step, so every phase (D, G, R1, path
# length) differentiates at the same weights in both precisions.
#
# The bound cannot be a few U for every variable: a ReLU or leaky ReLU whose
# input is within rounding distance of 0 switches its slope, which moves that
# unit's whole term of a gradient sum, not U of it. At initialization a share
# ~U of the units are that close, so such gradients move by ~sqrt(U) = 2**-4
# relative (a sum of random-sign terms) under ANY perturbation of size U: in
# float32 too. How far each gradient moves is measured, in float32 arithmetic
# (the same traced step), for two perturbations of bfloat16 size: weights and
# images rounded to bfloat16, and weights times (1 + U * uniform(-1, 1)).
# `sensitivity` = the larger of the two relative changes. The bfloat16 step
# perturbs in more places than these float32 runs (weights and images): every
# activation, every backward gradient, and again in the second backward pass
# of R1 and the path length, each by rounding of the same size. Bound per
# variable:
#
#     ||g_bf16 - g_fp32|| / ||g_fp32||  <=  STEP_FACTOR * (sensitivity + STEP_FLOOR)
#
# STEP_FLOOR = 4 U: a well-conditioned gradient still goes through a handful
# of roundings. STEP_FACTOR = 4: independent effects of ~4x as many
# perturbations add to ~2x in quadrature; 4 leaves room for other CPUs'
# kernels. Measured on this machine, error / (sensitivity + 4 U): <= 2.2
# (StyleGAN2, the path-length step's style gradients), <= 1.1 (DC-GAN), <= 0.7
# (VAE). The code before zoo.precision fails it 9x over: the bias gradient of
# the VAE decoder's 16x16 transposed convolution (4,096 positions a channel,
# summed by BiasAddGrad in bfloat16) was off by 0.67 against a sensitivity
# of 0.003.
STEP_FACTOR = 4.0
STEP_FLOOR = 4 * U
# Losses of the first LOSS_STEPS steps, bfloat16 vs float32 from the same
# weights and batches. A loss summed over 1,024 pixels from bfloat16 logits
# averages their roundings: it may move by U of itself (LOSS_RTOL; ~2.8 nats of
# the VAE's ~707). A GAN loss (~0.7-1.4) is the mean softplus of a few logits,
# each a few U off, and after the first update the two runs' weights differ
# where a gradient was within rounding of 0 (Adam moves those by +-lr either
# way): LOSS_ATOL = 8 U = 2**-5. Measured here: DC-GAN <= 0.001, StyleGAN2
# <= 0.013, VAE <= 0.008 nats.
LOSS_STEPS = 10
LOSS_RTOL = U
LOSS_ATOL = 8 * U
# family, preset, batch, log names compared
STEP_FAMILIES = [
    ("dcgan", "dcgan_tiny", 16, ("d_loss", "g_loss")),
    ("vae", "vae_tiny", 16, ("loss", "reconstruction_loss", "kl_loss")),
    ("stylegan2", "stylegan2_tiny", 8, ("d_loss", "g_loss")),
]


class _RecordedStep:
    """A model's own `train_step` as one tf.function that records every gradient its phases compute.

    Wraps `apply_loss` (every family's phases call it) so that the tape's
    `gradient` call also stores its result in float32 slot variables; the
    optimizer update is the model's own.
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.targets = model.optimizer_targets()
        self.optimizers = [getattr(model, name) for name in self.targets]
        names = {id(network): name for name, network in self.targets.items()}
        self.slots, self.has_gradient, calls = {}, {}, {}
        for name, network in self.targets.items():
            for phase in range(2):  # main loss and lazy regularizer
                self.slots[name, phase] = [tf.Variable(tf.zeros(v.shape), trainable=False)
                                           for v in network.trainable_variables]
        apply_loss = model.apply_loss

        def recording_apply_loss(optimizer, tape, loss, network):
            name = names[id(network)]
            key = (name, calls.setdefault(name, 0))
            calls[name] += 1
            gradient = tape.gradient

            def recording_gradient(target, sources, *args, **kwargs):
                grads = gradient(target, sources, *args, **kwargs)
                self.has_gradient[key] = [g is not None for g in grads]
                for slot, g in zip(self.slots[key], grads):
                    if g is not None:
                        slot.assign(tf.cast(g, tf.float32))
                return grads

            tape.gradient = recording_gradient
            return apply_loss(optimizer, tape, loss, network)

        model.apply_loss = recording_apply_loss
        self.step = tf.function(model.train_step, jit_compile=False)

    def gradients(self, weights, images):
        """`{(optimizer, phase, index): (weight path, float32 gradient)}` of one step at `weights`."""
        import tensorflow as tf

        saved = [v.numpy() for opt in self.optimizers for v in opt.variables]
        for v, w in zip(self.model.weights, weights):
            v.assign(w)
        for opt in self.optimizers:
            opt.learning_rate = 0.0
        self.step(tf.constant(images))
        for v, w in zip([v for opt in self.optimizers for v in opt.variables], saved):
            v.assign(w)  # iterations, moments and the learning rate back
        result = {}
        for (name, phase), flags in self.has_gradient.items():
            variables = self.targets[name].trainable_variables
            for i, (v, flag) in enumerate(zip(variables, flags)):
                if flag:
                    result[name, phase, i] = (v.path, self.slots[name, phase][i].numpy())
        return result

    def losses(self, weights, batches, names):
        """`{name: [value per step]}` of `len(batches)` real training steps from `weights`."""
        import tensorflow as tf

        for v, w in zip(self.model.weights, weights):
            v.assign(w)
        out = {name: [] for name in names}
        for images in batches:
            for metric in self.model.metrics:
                metric.reset_state()
            logs = self.step(tf.constant(images))
            for name in names:
                out[name].append(float(logs[name]))
        return out


def _build(family, preset, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = zoo.get_model(family, preset)
        model.compile()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


@pytest.fixture(scope="module", params=STEP_FAMILIES, ids=[f[0] for f in STEP_FAMILIES])
def bfloat16_vs_float32(request, fashion_test_arrays):
    """Gradients of one step (float32, two bfloat16-sized perturbations of it, bfloat16)
    and the first steps' losses in both precisions, for one family."""
    import time

    from zoo import data

    family, preset, batch, names = request.param
    start = time.perf_counter()
    fp32 = _RecordedStep(_build(family, preset, "float32"))
    model = fp32.model
    dataset = data.make_dataset("fashion_mnist:test", model.image_size, model.channels, batch,
                                shuffle=False, arrays=fashion_test_arrays)
    batches = [b.numpy() for b in dataset.take(LOSS_STEPS)]
    weights = [v.numpy() for v in model.weights]
    rounded = [_as_bfloat16(w) if w.dtype == np.float32 else w for w in weights]
    rng = np.random.default_rng(1)
    jittered = [(w * (1 + U * rng.uniform(-1, 1, w.shape))).astype(w.dtype) if w.dtype == np.float32 else w
                for w in weights]
    result = {
        "family": family,
        "fp32": fp32.gradients(weights, batches[0]),
        "rounded": fp32.gradients(rounded, _as_bfloat16(batches[0])),
        "jittered": fp32.gradients(jittered, batches[0]),
        "fp32_losses": fp32.losses(weights, batches, names),
    }
    bf16 = _RecordedStep(_build(family, preset, "mixed_bfloat16"))
    result["bf16"] = bf16.gradients(weights, batches[0])
    result["bf16_losses"] = bf16.losses(weights, batches, names)
    result["seconds"] = time.perf_counter() - start
    return result


def test_one_step_gradients_under_bfloat16_within_rounding_of_float32(bfloat16_vs_float32):
    r = bfloat16_vs_float32
    assert r["bf16"].keys() == r["fp32"].keys() and r["fp32"]
    rows = []
    for key, (path, g32) in r["fp32"].items():
        error = _rel(r["bf16"][key][1], g32)
        sensitivity = max(_rel(r["rounded"][key][1], g32), _rel(r["jittered"][key][1], g32))
        bound = STEP_FACTOR * (sensitivity + STEP_FLOOR)
        rows.append((error / bound, error, sensitivity, f"{key[0]}[phase {key[1]}] {path}"))
    rows.sort(reverse=True)
    print(f"{r['family']}: {len(rows)} gradients, {r['seconds']:.0f} s; worst error/bound "
          + "; ".join(f"{q:.2f} ({e:.4f} vs sensitivity {s:.4f}, {name})" for q, e, s, name in rows[:3]))
    assert rows[0][0] <= 1.0, rows[:5]


def test_first_steps_losses_under_bfloat16_track_float32(bfloat16_vs_float32):
    r = bfloat16_vs_float32
    for name, fp32 in r["fp32_losses"].items():
        bf16 = np.array(r["bf16_losses"][name])
        fp32 = np.array(fp32)
        assert np.all(np.isfinite(bf16)), (name, bf16)
        diff = np.abs(bf16 - fp32)
        print(f"{r['family']} {name}: max |bf16 - fp32| = {diff.max():.4g} "
              f"(fp32 {fp32.min():.4g}..{fp32.max():.4g})")
        np.testing.assert_allclose(bf16, fp32, rtol=LOSS_RTOL, atol=LOSS_ATOL, err_msg=name)
