"""StyleGAN2 layers (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), following NVIDIA's stylegan2-ada-pytorch.

Conventions, as in the reference implementation:

* Equalized learning rate: weights are stored with a unit-scale
  initialization (`N(0, 1 / lr_multiplier)`) and scaled at runtime by
  `lr_multiplier / sqrt(fan_in)`, so every layer learns at the same speed
  under Adam whatever its fan-in.
* `"lrelu"` is leaky ReLU (slope 0.2) times `sqrt(2)`, which keeps unit
  variance from layer to layer.
* Resampling uses FIR filters applied as `upfirdn2d` does: a true
  convolution with the normalized filter (upsampling: zero insertion and a
  gain of 4 = up**2), with NVIDIA's padding, so shapes and border values
  match the reference.

Everything is built from `keras.ops` with static spatial shapes and tensors
of rank <= 4 (5 in the minibatch stddev), compiles under XLA and converts to
TFLite builtin ops. Modulated convolutions use no grouped convolution: the
input is scaled per sample and channel by the styles, convolved with the
shared weight, and the output scaled by the demodulation coefficients
(NVIDIA's `fused_modconv=False` path, mathematically the same as modulating
the weights).

Under 16-bit policies, biases, noise strengths, styles and demodulation
coefficients enter through `zoo.precision.add` / `multiply`: the forward
pass computes in 16 bits, and their gradients, sums over the batch and the
pixels, are summed in float32 (TensorFlow's CPU kernels would sum them in
the 16-bit type). In float32 these are the plain `+` and `*`.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util

from zoo import precision

_SQRT2 = math.sqrt(2.0)
_ACTIVATIONS = ("linear", "lrelu")


def fir_kernel(taps=(1, 3, 3, 1), gain=1.0):
    """Normalized separable 2D FIR kernel, as NVIDIA's `upfirdn2d.setup_filter`.

    Args:
        taps: 1D filter taps (at least 2).
        gain: overall gain; the kernel sums to `gain`.

    Returns:
        float32 numpy array `[len(taps), len(taps)]`: `outer(taps, taps)`
        divided by its sum, times `gain`.
    """
    taps = np.asarray(taps, dtype=np.float64)
    if taps.ndim != 1 or taps.size < 2:
        raise ValueError(f"taps must be a 1D sequence of at least 2 values, got {taps.tolist()}")
    kernel = np.outer(taps, taps)
    return (kernel / kernel.sum() * gain).astype(np.float32)


def _as_kernel(kernel):
    # `None` -> the default [1, 3, 3, 1] filter; 1D taps -> their kernel.
    if kernel is None:
        return fir_kernel()
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim == 1:
        return fir_kernel(kernel)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] < 2:
        raise ValueError(f"FIR kernel must be square 2D of size >= 2, got shape {kernel.shape}")
    if abs(float(kernel.sum()) - 1.0) > 1e-5:
        # A kernel with the up gain already in it would be scaled twice.
        raise ValueError(
            f"FIR kernel must be normalized (sum 1, e.g. fir_kernel(taps)), got sum {kernel.sum():.4g}; "
            "upsample_2d applies the gain of 4 itself"
        )
    return kernel


def _in_xla_context():
    # TF's own test for "traced inside a jit_compile=True function" (tf.function
    # uses it to nest XLA contexts); False in eager mode.
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _depthwise(x, kernel, strides):
    # Flipped for a convolution (depthwise_conv correlates); [kh, kw, C, 1].
    taps = np.tile(kernel[::-1, ::-1, None, None], (1, 1, x.shape[-1], 1))
    return ops.depthwise_conv(x, ops.cast(taps, x.dtype), strides=strides, padding="valid")


def _shift_add(x, kernel, strides):
    """`_depthwise` as a sum of scaled (strided) slices: elementwise ops XLA fuses."""
    kernel = kernel[::-1, ::-1]  # convolution, as _depthwise
    (kh, kw), (sh, sw) = kernel.shape, strides
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0:
                term = x[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]
                term = term * float(kernel[i, j])
                out = term if out is None else out + term
    return out


def _fir(x, kernel, pad, stride=1):
    """Zero-pads `x` spatially by `pad = (before, after)` and convolves every
    channel with `kernel` (a true convolution, as upfirdn2d), with `stride`.

    Depthwise convolutions, except under XLA: its CPU backend runs them ~100x
    slower than TF's kernels, while it fuses the slices of `_shift_add` into
    one loop (which TF runs several times slower than a depthwise convolution).
    """
    x = ops.pad(x, ((0, 0), pad, pad, (0, 0)))
    column, row = kernel.sum(axis=1), kernel.sum(axis=0)
    separable = np.allclose(np.outer(column, row) / kernel.sum(), kernel, rtol=1e-5, atol=1e-7)
    if _in_xla_context():
        if not separable:
            return _shift_add(x, kernel, (stride, stride))
        x = _shift_add(x, column[:, None] / kernel.sum(), (stride, 1))
        return _shift_add(x, row[None, :], (1, stride))
    if not separable:
        return _depthwise(x, kernel, stride)
    # Separable (every fir_kernel): a vertical then a horizontal pass, ~5x
    # faster. TF's depthwise convolution needs equal strides, so the second
    # pass decimates both axes.
    x = _depthwise(x, column[:, None] / kernel.sum(), 1)
    return _depthwise(x, row[None, :], stride)


def _zero_insert(x):
    """`[N, H, W, C]` -> `[N, 2H, 2W, C]` with the input at even positions and
    zeros elsewhere (upfirdn2d's upsampling), in 4D only."""
    _, height, width, channels = x.shape
    x = ops.concatenate([x, ops.zeros_like(x)], axis=-1)  # [N, H, W, 2C]
    x = ops.reshape(x, (-1, height, 2 * width, channels))  # [N, H, 2W, C]
    x = ops.concatenate([x, ops.zeros_like(x)], axis=2)  # [N, H, 4W, C]
    return ops.reshape(x, (-1, 2 * height, 2 * width, channels))  # [N, 2H, 2W, C]


def upsample_2d(x, kernel=None):
    """FIR upsampling by 2, NVIDIA's `upfirdn2d.upsample2d(x, kernel)`.

    Zero insertion, padding `[(k+1)//2, (k-2)//2]` and a convolution with
    `4 * kernel` (the gain of 4 restores the mean the zeros removed).

    Args:
        x: `[N, H, W, C]`.
        kernel: normalized 2D kernel (sum 1, from `fir_kernel`), 1D taps,
            or None for `(1, 3, 3, 1)`.

    Returns:
        `[N, 2H, 2W, C]`, the dtype of `x`.
    """
    kernel = _as_kernel(kernel)
    size = kernel.shape[0]
    return _fir(_zero_insert(x), kernel * 4.0, ((size + 1) // 2, (size - 2) // 2))


def downsample_2d(x, kernel=None):
    """FIR downsampling by 2, NVIDIA's `upfirdn2d.downsample2d(x, kernel)`.

    Padding `[(k-1)//2, (k-2)//2]`, a convolution with `kernel`, and every
    second sample (a stride-2 convolution computes only those).

    Args:
        x: `[N, H, W, C]`, H and W even.
        kernel: normalized 2D kernel, 1D taps, or None for `(1, 3, 3, 1)`.

    Returns:
        `[N, H/2, W/2, C]`, the dtype of `x`.
    """
    kernel = _as_kernel(kernel)
    size = kernel.shape[0]
    return _fir(x, kernel, ((size - 1) // 2, (size - 2) // 2), stride=2)


def _activate(x, activation):
    if activation == "lrelu":
        return ops.leaky_relu(x, negative_slope=0.2) * _SQRT2
    return x


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    return activation


def _check_kernel_size(kernel_size):
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    return int(kernel_size)


@keras.saving.register_keras_serializable(package="zoo")
class Upsample2D(keras.layers.Layer):
    """`upsample_2d` as a layer: `[N, H, W, C]` -> `[N, 2H, 2W, C]`.

    Args:
        resample_filter: 1D taps of the FIR filter.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    up = Upsample2D()
    images = up(ops.ones((2, 8, 8, 3)))  # [2, 16, 16, 3]
    ```
    """

    def __init__(self, resample_filter=(1, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.resample_filter = tuple(float(t) for t in resample_filter)
        self._kernel = fir_kernel(self.resample_filter)
        self.built = True  # no weights

    def call(self, x):
        return upsample_2d(ops.cast(x, self.compute_dtype), self._kernel)

    def get_config(self):
        return {**super().get_config(), "resample_filter": self.resample_filter}


@keras.saving.register_keras_serializable(package="zoo")
class Downsample2D(keras.layers.Layer):
    """`downsample_2d` as a layer: `[N, H, W, C]` -> `[N, H/2, W/2, C]`.

    Args:
        resample_filter: 1D taps of the FIR filter.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    down = Downsample2D()
    x = down(ops.ones((2, 8, 8, 16)))  # [2, 4, 4, 16]
    ```
    """

    def __init__(self, resample_filter=(1, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.resample_filter = tuple(float(t) for t in resample_filter)
        self._kernel = fir_kernel(self.resample_filter)
        self.built = True  # no weights

    def call(self, x):
        return downsample_2d(ops.cast(x, self.compute_dtype), self._kernel)

    def get_config(self):
        return {**super().get_config(), "resample_filter": self.resample_filter}


@keras.saving.register_keras_serializable(package="zoo")
class EqualizedDense(keras.layers.Layer):
    """Fully connected layer with equalized learning rate.

    The kernel is stored `~N(0, 1 / lr_multiplier)` and used times
    `lr_multiplier / sqrt(fan_in)`; the bias is stored as `bias_init` and
    used times `lr_multiplier` (NVIDIA's `FullyConnectedLayer`).

    Args:
        units: output features.
        lr_multiplier: learning-rate multiplier (0.01 in the mapping network).
        bias_init: initial value of the bias.
        activation: "linear" or "lrelu" (leaky ReLU 0.2 times sqrt(2)).
        use_bias: add a bias before the activation.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    layer = EqualizedDense(64, lr_multiplier=0.01, activation="lrelu")
    y = layer(ops.ones((8, 32)))  # [8, 64]
    ```
    """

    def __init__(self, units, lr_multiplier=1.0, bias_init=0.0, activation="linear",
                 use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.lr_multiplier = float(lr_multiplier)
        self.bias_init = float(bias_init)
        self.activation = _check_activation(activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_multiplier),
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=keras.initializers.Constant(self.bias_init),
            )
        self.weight_gain = self.lr_multiplier / math.sqrt(fan_in)

    def call(self, x):
        x = ops.matmul(ops.cast(x, self.compute_dtype), self.kernel * self.weight_gain)
        if self.use_bias:
            x = precision.add(x, self.bias * self.lr_multiplier)
        return _activate(x, self.activation)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "lr_multiplier": self.lr_multiplier,
            "bias_init": self.bias_init,
            "activation": self.activation,
            "use_bias": self.use_bias,
        }


@keras.saving.register_keras_serializable(package="zoo")
class EqualizedConv2D(keras.layers.Layer):
    """2D convolution with equalized learning rate and optional FIR downsampling.

    "same" output size, or half of it with `down=True`: a 1x1 convolution
    downsamples first (`downsample_2d`, then the convolution); a larger
    kernel blurs with padding `k//2 + 1` on each side and then convolves
    with stride 2, as NVIDIA's `conv2d_resample`.

    Args:
        filters: output channels.
        kernel_size: odd side of the square kernel.
        activation: "lrelu" or "linear".
        down: halve the resolution.
        use_bias: add a bias before the activation.
        resample_filter: 1D taps of the FIR filter used with `down`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    conv = EqualizedConv2D(64, 3, down=True)
    y = conv(ops.ones((2, 16, 16, 32)))  # [2, 8, 8, 64]
    ```
    """

    def __init__(self, filters, kernel_size, activation="lrelu", down=False, use_bias=True,
                 resample_filter=(1, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.activation = _check_activation(activation)
        self.down = bool(down)
        self.use_bias = bool(use_bias)
        self.resample_filter = tuple(float(t) for t in resample_filter)
        self._fir = fir_kernel(self.resample_filter)

    def build(self, input_shape):
        fan_in = input_shape[-1] * self.kernel_size**2
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.weight_gain = 1.0 / math.sqrt(fan_in)

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        kernel = self.kernel * self.weight_gain
        if not self.down:
            x = ops.conv(x, kernel, padding="same")
        elif self.kernel_size == 1:
            x = ops.conv(downsample_2d(x, self._fir), kernel)
        else:
            taps = self._fir.shape[0]
            half = self.kernel_size // 2
            x = _fir(x, self._fir, (half + (taps - 1) // 2, half + (taps - 2) // 2))
            x = ops.conv(x, kernel, strides=2, padding="valid")
        if self.use_bias:
            x = precision.add(x, self.bias)
        return _activate(x, self.activation)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "down": self.down,
            "use_bias": self.use_bias,
            "resample_filter": self.resample_filter,
        }


@keras.saving.register_keras_serializable(package="zoo")
class ModulatedConv2D(keras.layers.Layer):
    """Modulated (and demodulated) convolution, StyleGAN2's weight demodulation.

    `styles = EqualizedDense(C_in, bias_init=1)(w)`; the output is
    `conv(x * styles, weight) * dcoefs` with
    `dcoefs = rsqrt(sum_{kh, kw, C_in} (weight * styles)^2 + 1e-8)` per sample
    and output channel, which equals a convolution with the per-sample
    weights `weight * styles * dcoefs` (NVIDIA's `fused_modconv=False`).
    The weight is stored `~N(0, 1)` and used times `1/sqrt(fan_in)`
    (this scale cancels with demodulation; without it, it is ToRGB's gain).

    `up=True` is NVIDIA's order: a stride-2 transposed convolution with the
    weight (output `2H+k-2`), then the FIR filter with gain 4 and padding
    trimming it to `2H` (`conv2d_resample`, up=2). That equals NVIDIA's
    reference path, FIR upsampling (to `2H + k - 1`) first and a valid
    convolution with the spatially flipped weight after, at 4x the
    convolution cost; the flip is a relabeling of learned weights.

    Styles and demodulation coefficients are computed in float32 whatever
    the policy, and so are their gradients (`zoo.precision.multiply`).
    Under float16 the styles and weight are pre-normalized by their maxima
    first, as NVIDIA does against overflow (demodulation makes the output
    invariant to both scales).

    Args:
        filters: output channels.
        kernel_size: odd side of the square kernel.
        demodulate: apply weight demodulation.
        up: double the resolution.
        resample_filter: 1D taps of the FIR filter used with `up`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    conv = ModulatedConv2D(64, 3, up=True)
    y = conv(ops.ones((2, 8, 8, 32)), ops.ones((2, 128)))  # [2, 16, 16, 64]
    ```
    """

    def __init__(self, filters, kernel_size, demodulate=True, up=False,
                 resample_filter=(1, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.demodulate = bool(demodulate)
        self.up = bool(up)
        self.resample_filter = tuple(float(t) for t in resample_filter)
        self._fir = fir_kernel(self.resample_filter, gain=4.0)
        taps = self._fir.shape[0]
        # Padding of the filter after the transposed convolution (conv2d_resample).
        half = self.kernel_size // 2
        self._up_pad = (half + (taps + 1) // 2 - (self.kernel_size - 1),
                        half + (taps - 2) // 2 - (self.kernel_size - 2))
        if self.up and min(self._up_pad) < 0:
            raise ValueError(
                f"kernel_size {kernel_size} is too large for a {taps}-tap filter with up=True"
            )

    def build(self, x_shape, w_shape):
        in_channels = x_shape[-1]
        # float32 styles: the modulation needs them precise (NVIDIA computes them in float32).
        self.affine = EqualizedDense(in_channels, bias_init=1.0, dtype="float32", name="affine")
        self.affine.build(w_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        self.weight_gain = 1.0 / math.sqrt(in_channels * self.kernel_size**2)

    def call(self, x, w):
        x = ops.cast(x, self.compute_dtype)
        styles = self.affine(w)  # [N, C_in] float32
        kernel = ops.cast(self.kernel, "float32") * self.weight_gain  # [k, k, C_in, C_out]
        if self.demodulate and self.compute_dtype == "float16":
            kernel = kernel * (self.weight_gain / ops.max(ops.abs(kernel), axis=(0, 1, 2), keepdims=True))
            styles = styles / ops.max(ops.abs(styles), axis=1, keepdims=True)
        x = precision.multiply(x, styles[:, None, None, :])  # [N, H, W, C_in]
        conv_kernel = ops.cast(kernel, x.dtype)
        if self.up:
            # conv_transpose takes [k, k, C_out, C_in].
            x = ops.conv_transpose(
                x, ops.transpose(conv_kernel, (0, 1, 3, 2)), strides=2, padding="valid"
            )  # [N, 2H + k - 2, 2W + k - 2, C_out]
            x = _fir(x, self._fir, self._up_pad)  # [N, 2H, 2W, C_out]
        else:
            x = ops.conv(x, conv_kernel, padding="same")
        if self.demodulate:
            # sum over (kh, kw, C_in) of (kernel * style)^2 as one matmul: [N, C_in] @ [C_in, C_out].
            energy = ops.matmul(ops.square(styles), ops.sum(ops.square(kernel), axis=(0, 1)))
            dcoefs = ops.rsqrt(energy + 1e-8)  # [N, C_out]
            x = precision.multiply(x, dcoefs[:, None, None, :])
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "demodulate": self.demodulate,
            "up": self.up,
            "resample_filter": self.resample_filter,
        }


@keras.saving.register_keras_serializable(package="zoo")
class SynthesisLayer(keras.layers.Layer):
    """StyleGAN2 synthesis layer: modulated conv, noise, bias, lrelu * sqrt(2).

    `call(x, w, noise)` with `noise` `[N or 1, H_out, W_out, 1]` scaled by a
    learned per-channel strength (initialized to 0) and added after
    demodulation; `noise=None` adds none.

    Args:
        filters: output channels.
        kernel_size: odd side of the square kernel.
        up: double the resolution (FIR filtered).
        resample_filter: 1D taps of the FIR filter used with `up`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    layer = SynthesisLayer(64, up=True)
    noise = tf.random.normal((2, 16, 16, 1))
    y = layer(ops.ones((2, 8, 8, 32)), ops.ones((2, 128)), noise)  # [2, 16, 16, 64]
    ```
    """

    def __init__(self, filters, kernel_size=3, up=False, resample_filter=(1, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.up = bool(up)
        self.resample_filter = tuple(float(t) for t in resample_filter)
        self.conv = ModulatedConv2D(
            filters, kernel_size, demodulate=True, up=up, resample_filter=resample_filter,
            dtype=self.dtype_policy, name="conv",
        )

    def build(self, x_shape, w_shape, noise_shape=None):
        self.conv.build(x_shape, w_shape)
        self.noise_strength = self.add_weight(
            name="noise_strength", shape=(self.filters,), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x, w, noise=None):
        x = self.conv(x, w)
        if noise is not None:
            noise = precision.multiply(ops.cast(noise, x.dtype), self.noise_strength)
            x = precision.add(x, noise)  # [N, H, W, C]
        return _activate(precision.add(x, self.bias), "lrelu")

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "up": self.up,
            "resample_filter": self.resample_filter,
        }


@keras.saving.register_keras_serializable(package="zoo")
class ToRGB(keras.layers.Layer):
    """Modulated 1x1 convolution without demodulation, plus bias, linear.

    Args:
        channels: image channels.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    torgb = ToRGB(3)
    rgb = torgb(ops.ones((2, 16, 16, 64)), ops.ones((2, 128)))  # [2, 16, 16, 3]
    ```
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv = ModulatedConv2D(
            channels, 1, demodulate=False, dtype=self.dtype_policy, name="conv"
        )

    def build(self, x_shape, w_shape):
        self.conv.build(x_shape, w_shape)
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, x, w):
        return precision.add(self.conv(x, w), self.bias)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="zoo")
class MinibatchStddev(keras.layers.Layer):
    """Appends the minibatch standard deviation as `num_channels` feature maps.

    The batch is split into groups of `G = min(group_size, N)` consecutive
    samples: sample `i` belongs to group `i // G`. (NVIDIA strides the
    groups, `i % (N / G)`; consecutive groups make a replica's groups a
    subset of one device's when the global batch is split across replicas
    in order, so N replicas compute what one device computes.) The
    channels are split into `num_channels` groups; each gets the stddev
    over the group's samples, averaged over its channels and pixels.

    `N` must be divisible by `G`: checked when the batch size is static;
    with a dynamic batch size `G = group_size` and an indivisible batch
    fails in the reshape at run time. Computed in float32 (the 1e-8
    inside the square root is 0 in float16).

    Args:
        group_size: samples per group.
        num_channels: feature maps appended (must divide the channels).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    y = MinibatchStddev(group_size=4)(ops.ones((8, 4, 4, 32)))  # [8, 4, 4, 33]
    ```
    """

    def __init__(self, group_size=4, num_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.group_size = int(group_size)
        self.num_channels = int(num_channels)
        self.built = True  # no weights

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        batch, height, width, channels = x.shape
        features = self.num_channels
        if channels % features:
            raise ValueError(f"num_channels={features} must divide the {channels} channels")
        group = self.group_size if batch is None else min(self.group_size, batch)
        if batch is not None and batch % group:
            raise ValueError(f"batch size {batch} is not divisible by the group size {group}")
        y = ops.reshape(
            ops.cast(x, "float32"), (-1, group, height * width, features, channels // features)
        )  # [n, G, HW, F, c]
        y = y - ops.mean(y, axis=1, keepdims=True)
        y = ops.sqrt(ops.mean(ops.square(y), axis=1) + 1e-8)  # [n, HW, F, c]
        y = ops.mean(y, axis=(1, 3))  # [n, F]
        y = ops.repeat(y, group, axis=0)  # [N, F]: row i is group i // G
        y = y[:, None, None, :] * ops.ones((1, height, width, 1))  # [N, H, W, F]
        return ops.concatenate([x, ops.cast(y, x.dtype)], axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "group_size": self.group_size,
            "num_channels": self.num_channels,
        }
