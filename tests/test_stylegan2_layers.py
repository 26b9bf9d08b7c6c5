"""StyleGAN2 layers against numpy references written from NVIDIA's definitions.

The references follow stylegan2-ada-pytorch's ops directly: `upfirdn2d`
(zero insertion, padding, true convolution, decimation), `conv2d_resample`
(blur-then-strided-conv down, transposed-conv-then-blur up) and the fused
modulated convolution (per-sample weights `weight * style * dcoef`), which
the layers implement differently (activation scaling, stride-2 filtering).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.stylegan2.stylegan2_layers import (
    Downsample2D,
    EqualizedConv2D,
    EqualizedDense,
    MinibatchStddev,
    ModulatedConv2D,
    SynthesisLayer,
    ToRGB,
    Upsample2D,
    downsample_2d,
    fir_kernel,
    upsample_2d,
)

SQRT2 = np.sqrt(2.0)


# ---- numpy references (NHWC, float64) ---------------------------------------
def np_upfirdn2d(x, f, up=1, down=1, pad=(0, 0)):
    """NVIDIA's upfirdn2d: zero-insert by `up`, zero-pad, convolve with `f`, keep every `down`-th."""
    n, h, w, c = x.shape
    y = np.zeros((n, h * up, w * up, c))
    y[:, ::up, ::up] = x
    y = np.pad(y, ((0, 0), pad, pad, (0, 0)))
    f = np.asarray(f, np.float64)[::-1, ::-1]  # convolution = correlation with the flipped filter
    k = f.shape[0]
    out_h, out_w = y.shape[1] - k + 1, y.shape[2] - k + 1
    out = sum(f[i, j] * y[:, i:i + out_h, j:j + out_w] for i in range(k) for j in range(k))
    return out[:, ::down, ::down]


def np_conv2d(x, w, pad=0, stride=1):
    """Correlation (torch/TF conv2d), `w` `[k, k, C_in, C_out]`."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[0]
    out_h, out_w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = sum(
        np.einsum("nhwc,cd->nhwd", x[:, i:i + out_h, j:j + out_w], w[i, j])
        for i in range(k) for j in range(k)
    )
    return out[:, ::stride, ::stride]


def np_conv_transpose2x(x, w):
    """torch conv_transpose2d(stride 2, padding 0): out[2i + k] += x[i] w[k]; `w` `[k, k, C_in, C_out]`."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    out = np.zeros((n, 2 * h + k - 2, 2 * wd + k - 2, w.shape[-1]))
    for i in range(k):
        for j in range(k):
            out[:, i:i + 2 * h - 1:2, j:j + 2 * wd - 1:2] += np.einsum("nhwc,cd->nhwd", x, w[i, j])
    return out


def lrelu(x):
    return np.where(x >= 0, x, 0.2 * x) * SQRT2


def np_modulated_conv(x, kernel, styles, demodulate=True, up=False):
    """The fused definition, one sample at a time: conv with `kernel * style (* dcoef)`."""
    outs = []
    for xi, si in zip(x, styles):
        wi = kernel * si[None, None, :, None]  # [k, k, C_in, C_out]
        if demodulate:
            wi = wi / np.sqrt((wi**2).sum(axis=(0, 1, 2)) + 1e-8)
        if up:  # conv2d_resample, up=2, padding=k//2: transposed conv, then the filter, pad [1, 1] for k=3
            y = np_conv_transpose2x(xi[None], wi)
            y = np_upfirdn2d(y, fir_kernel(gain=4.0), pad=(1, 1))
        else:
            y = np_conv2d(xi[None], wi, pad=kernel.shape[0] // 2)
        outs.append(y[0])
    return np.stack(outs)


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype("float32")


def randomize(layer, seed=1, scale=1.0):
    """Random values for every weight (biases and noise strengths start at 0/1)."""
    rng = np.random.RandomState(seed)
    for v in layer.weights:
        v.assign(scale * rng.standard_normal(v.shape).astype("float32"))


def copy_round_trip(layer, *inputs):
    """A layer rebuilt from its config, with the weights copied, gives the same output."""
    clone = type(layer).from_config(layer.get_config())
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(*inputs).numpy(), layer(*inputs).numpy())
    assert clone.get_config() == layer.get_config()


# ---- FIR filters -----------------------------------------------------------
def test_fir_kernel_is_normalized_outer_product():
    k = fir_kernel()
    np.testing.assert_allclose(k, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0, rtol=1e-7)
    assert k.dtype == np.float32 and k.shape == (4, 4)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(fir_kernel((1, 2, 1), gain=4.0).sum(), 4.0, rtol=1e-6)
    with pytest.raises(ValueError):
        fir_kernel((1,))


def resample(fn, x, kernel, jit):
    """`fn(x, kernel)` eagerly, or traced under XLA (which filters with slices, not depthwise convs)."""
    if jit:
        return tf.function(lambda t: fn(t, kernel), jit_compile=True)(tf.constant(x)).numpy()
    return fn(tf.constant(x), kernel).numpy()


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 1), (1, 2, 3, 5)])
def test_up_and_downsample_match_upfirdn2d(taps, jit):
    """Padding as upsample2d/downsample2d: [(k+1)//2, (k-2)//2] up (gain 4), [(k-1)//2, (k-2)//2] down.

    The asymmetric (1, 2, 3, 5) filter shows the flip of a true convolution.
    """
    x = rand(2, 6, 6, 3)
    f = fir_kernel(taps)
    k = len(taps)
    up = resample(upsample_2d, x, f, jit)
    assert up.shape == (2, 12, 12, 3)
    np.testing.assert_allclose(up, np_upfirdn2d(x, 4 * f, up=2, pad=((k + 1) // 2, (k - 2) // 2)), atol=1e-5)
    down = resample(downsample_2d, x, f, jit)
    assert down.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(down, np_upfirdn2d(x, f, down=2, pad=((k - 1) // 2, (k - 2) // 2)), atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_non_separable_kernel_matches_upfirdn2d(jit):
    kernel = np.array([[1, 2, 0], [0, 3, 1], [2, 0, 1]], "float32")
    kernel /= kernel.sum()
    x = rand(1, 6, 6, 2)
    np.testing.assert_allclose(resample(upsample_2d, x, kernel, jit),
                               np_upfirdn2d(x, 4 * kernel, up=2, pad=(2, 0)), atol=1e-5)
    np.testing.assert_allclose(resample(downsample_2d, x, kernel, jit),
                               np_upfirdn2d(x, kernel, down=2, pad=(1, 0)), atol=1e-5)


def test_downsample_of_upsample_keeps_a_constant_in_the_interior():
    x = tf.fill((1, 8, 8, 2), 0.7)
    up = upsample_2d(x, fir_kernel())  # gain 4 restores the mean the inserted zeros remove
    np.testing.assert_allclose(up.numpy()[:, 2:-2, 2:-2], 0.7, rtol=1e-6)
    both = downsample_2d(up, fir_kernel()).numpy()
    assert both.shape == (1, 8, 8, 2)
    np.testing.assert_allclose(both[:, 2:-2, 2:-2], 0.7, rtol=1e-6)
    assert abs(both[0, 0, 0, 0] - 0.7) > 0.05  # zero padding shows at the border


def test_resampling_rejects_a_kernel_with_the_gain_already_in():
    with pytest.raises(ValueError, match="normalized"):
        upsample_2d(tf.zeros((1, 4, 4, 1)), fir_kernel(gain=4.0))


def test_resample_layers_shapes_and_config():
    x = tf.constant(rand(2, 8, 8, 3))
    up, down = Upsample2D(), Downsample2D(resample_filter=(1, 2, 1))
    assert up(x).shape == (2, 16, 16, 3) and down(x).shape == (2, 4, 4, 3)
    np.testing.assert_allclose(up(x).numpy(), upsample_2d(x).numpy())
    np.testing.assert_allclose(down(x).numpy(), downsample_2d(x, (1, 2, 1)).numpy())
    copy_round_trip(up, x)
    copy_round_trip(down, x)


# ---- equalized learning rate ------------------------------------------------
def test_equalized_dense_runtime_scale_and_unit_variance():
    layer = EqualizedDense(256, lr_multiplier=0.01, bias_init=0.5)
    x = rand(512, 128)
    y = layer(x).numpy()
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    assert abs(kernel.std() - 100.0) < 2.0  # stored ~N(0, 1/lr)
    np.testing.assert_allclose(bias, 0.5)
    expected = x.astype("float64") @ (kernel * 0.01 / np.sqrt(128)) + bias * 0.01
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert abs((y - 0.005).var() - 1.0) < 0.1  # unit-variance in, unit-variance pre-activation out

    copy_round_trip(layer, x)

    act = EqualizedDense(64, activation="lrelu")
    x = rand(4, 32, seed=1)
    y = act(x).numpy()
    pre = x.astype("float64") @ (act.kernel.numpy() / np.sqrt(32)) + act.bias.numpy()
    np.testing.assert_allclose(y, lrelu(pre), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        EqualizedDense(4, activation="relu")


def test_equalized_conv_matches_reference_and_keeps_unit_variance():
    x = rand(2, 8, 8, 16)
    conv = EqualizedConv2D(32, 3, activation="linear")
    conv(x)
    randomize(conv)
    kernel, bias = conv.kernel.numpy() / np.sqrt(16 * 9), conv.bias.numpy()
    y = conv(x).numpy()
    np.testing.assert_allclose(y, np_conv2d(x, kernel, pad=1) + bias, rtol=1e-4, atol=1e-4)

    big = EqualizedConv2D(64, 3, activation="linear", use_bias=False)
    out = big(rand(8, 16, 16, 64, seed=3)).numpy()[:, 1:-1, 1:-1]  # interior: no zero padding
    assert abs(out.var() - 1.0) < 0.1


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1)])
def test_equalized_conv_down_is_blur_then_strided_conv(taps):
    """conv2d_resample down=2: 3x3 = filter with pad 1 + [(k-1)//2, (k-2)//2] then a stride-2
    conv ([2, 2] for 4 taps); 1x1 = downsample then conv."""
    x = rand(2, 8, 8, 6)
    f, k = fir_kernel(taps), len(taps)
    conv3 = EqualizedConv2D(5, 3, down=True, resample_filter=taps)
    conv3(x)
    randomize(conv3)
    y = conv3(x).numpy()
    assert y.shape == (2, 4, 4, 5)
    blurred = np_upfirdn2d(x, f, pad=(1 + (k - 1) // 2, 1 + (k - 2) // 2))
    ref = np_conv2d(blurred, conv3.kernel.numpy() / np.sqrt(6 * 9), stride=2) + conv3.bias.numpy()
    np.testing.assert_allclose(y, lrelu(ref), rtol=1e-4, atol=1e-4)

    conv1 = EqualizedConv2D(5, 1, activation="linear", down=True, use_bias=False, resample_filter=taps)
    y = conv1(x).numpy()
    downsampled = np_upfirdn2d(x, f, down=2, pad=((k - 1) // 2, (k - 2) // 2))
    ref = np_conv2d(downsampled, conv1.kernel.numpy() / np.sqrt(6))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert not conv1.use_bias and len(conv1.weights) == 1
    copy_round_trip(conv3, x)
    copy_round_trip(conv1, x)


# ---- modulated convolution -------------------------------------------------
def _styles(layer, w):
    affine = layer.affine
    return w @ (affine.kernel.numpy() / np.sqrt(w.shape[1])) + affine.bias.numpy()


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_fused_per_sample_weights(up, demodulate):
    x, w = rand(3, 6, 6, 8), rand(3, 16, seed=1)
    layer = ModulatedConv2D(4, 3, demodulate=demodulate, up=up)
    layer(x, w)
    randomize(layer, seed=2)
    y = layer(x, w).numpy()
    assert y.shape == (3, 12 if up else 6, 12 if up else 6, 4)
    kernel = layer.kernel.numpy() / np.sqrt(8 * 9)
    ref = np_modulated_conv(x, kernel, _styles(layer, w), demodulate=demodulate, up=up)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_affine_starts_at_bias_one():
    layer = ModulatedConv2D(4, 3)
    layer(rand(1, 4, 4, 8), rand(1, 16))
    np.testing.assert_array_equal(layer.affine.bias.numpy(), np.ones(8))


@pytest.mark.parametrize("up", [False, True])
def test_demodulation_makes_the_output_invariant_to_the_style_scale(up):
    x, w = rand(4, 8, 8, 16), rand(4, 32, seed=1)
    outputs = {}
    for demodulate in (True, False):
        layer = ModulatedConv2D(32, 3, demodulate=demodulate, up=up)
        base = layer(x, w).numpy()
        affine = layer.affine
        affine.kernel.assign(affine.kernel * 7.0)  # styles * 7
        affine.bias.assign(affine.bias * 7.0)
        outputs[demodulate] = base, layer(x, w).numpy()
    base, scaled = outputs[True]
    np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-5)
    if not up:  # unit variance for white input (the up filter averages it down, as NVIDIA's)
        assert 0.8 < base[:, 1:-1, 1:-1].var() < 1.2
    base, scaled = outputs[False]
    np.testing.assert_allclose(scaled, 7.0 * base, rtol=1e-4, atol=1e-5)


def test_modulated_conv_rejects_too_large_kernel_with_up():
    with pytest.raises(ValueError):
        ModulatedConv2D(4, 7, up=True)


def test_synthesis_layer_adds_scaled_noise_bias_and_lrelu():
    x, w = rand(2, 4, 4, 8), rand(2, 16, seed=1)
    noise = rand(2, 8, 8, 1, seed=2)
    layer = SynthesisLayer(6, up=True)
    y0 = layer(x, w, noise).numpy()
    np.testing.assert_array_equal(layer.noise_strength.numpy(), np.zeros(6))  # init 0: noise unused
    np.testing.assert_array_equal(y0, layer(x, w, None).numpy())
    layer.noise_strength.assign(rand(6, seed=3))
    layer.bias.assign(rand(6, seed=4))
    conv = layer.conv(x, w).numpy()
    expected = lrelu(conv + noise * layer.noise_strength.numpy() + layer.bias.numpy())
    y = layer(x, w, noise).numpy()
    assert y.shape == (2, 8, 8, 6)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # A [1, H, W, 1] noise is shared by the batch.
    np.testing.assert_allclose(layer(x, w, noise[:1]).numpy()[1], lrelu(
        conv + noise[:1] * layer.noise_strength.numpy() + layer.bias.numpy())[1], rtol=1e-5, atol=1e-5)
    copy_round_trip(layer, x, w, noise)


def test_torgb_is_unnormalized_1x1_modulated_conv_plus_bias():
    x, w = rand(2, 8, 8, 16), rand(2, 32, seed=1)
    layer = ToRGB(3)
    layer(x, w)
    randomize(layer, seed=5)
    kernel = layer.conv.kernel.numpy() / np.sqrt(16)
    ref = np_modulated_conv(x, kernel, _styles(layer.conv, w), demodulate=False) + layer.bias.numpy()
    y = layer(x, w).numpy()
    assert y.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    copy_round_trip(layer, x, w)


# ---- minibatch stddev -------------------------------------------------------
def np_mbstd(x, group_size, num_channels):
    """NVIDIA's MinibatchStdLayer in NHWC, with groups of consecutive samples."""
    n, h, w, c = x.shape
    g = min(group_size, n)
    y = x.astype("float64").reshape(n // g, g, h, w, num_channels, c // num_channels)
    y = np.sqrt(((y - y.mean(axis=1, keepdims=True)) ** 2).mean(axis=1) + 1e-8)  # [n, H, W, F, c]
    y = y.mean(axis=(1, 2, 4))  # [n, F]
    y = np.repeat(y, g, axis=0)[:, None, None, :] * np.ones((1, h, w, 1))
    return np.concatenate([x, y], axis=-1)


@pytest.mark.parametrize("batch,group_size,num_channels", [(8, 4, 1), (6, 2, 2), (2, 4, 1)])
def test_minibatch_stddev_matches_numpy(batch, group_size, num_channels):
    x = rand(batch, 4, 4, 6) * np.arange(1, batch + 1, dtype="float32")[:, None, None, None]
    layer = MinibatchStddev(group_size, num_channels)
    y = layer(tf.constant(x)).numpy()
    assert y.shape == (batch, 4, 4, 6 + num_channels)
    np.testing.assert_allclose(y, np_mbstd(x, group_size, num_channels), rtol=1e-5, atol=1e-6)
    copy_round_trip(layer, x)


def test_minibatch_stddev_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStddev(4)(tf.zeros((6, 4, 4, 2)))


# ---- mixed precision -------------------------------------------------------
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layers_compute_in_the_policy_dtype(policy):
    x, w = rand(4, 8, 8, 16), rand(4, 32, seed=1)
    for make, args in [
        (lambda d: ModulatedConv2D(16, 3, up=True, dtype=d), (x, w)),
        (lambda d: EqualizedConv2D(16, 3, down=True, dtype=d), (x,)),
        (lambda d: MinibatchStddev(dtype=d), (x,)),
    ]:
        exact, mixed = make("float32"), make(policy)
        exact(*args)
        mixed(*args)
        mixed.set_weights(exact.get_weights())
        y = mixed(*args)
        assert y.dtype == keras.mixed_precision.Policy(policy).compute_dtype
        assert all(v.dtype == "float32" for v in mixed.weights)
        ref = exact(*args).numpy()
        # Half precision: ~3 (bfloat16) / ~4 (float16) significant digits.
        tol = 0.05 if policy == "mixed_bfloat16" else 0.01
        np.testing.assert_allclose(y.numpy().astype("float32"), ref, atol=tol * np.abs(ref).max())
