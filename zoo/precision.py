"""Broadcast adds and products whose gradients are summed in float32.

Under `mixed_bfloat16` (and `mixed_float16`) a layer computes in 16 bits,
and the gradient of `x + b` or `x * s` with respect to a broadcast operand
(a bias `[C]`, a noise strength, a per-sample style `[N, 1, 1, C]`, a
constant `[1, H, W, C]` shared by the batch) is a sum over the broadcast
axes. Some of TensorFlow's CPU kernels form that sum in the 16-bit type
(KERAS_PITFALLS item 32; measured on TF 2.21, not under XLA): `BiasAddGrad`,
which Keras' `Dense`/`Conv*` biases use, in bfloat16 (2,048 ones sum to 256;
a VAE decoder's bias gradient came out 0.67 off), and `Sum`, which
the gradients of broadcast `+` and `*` use, in float16 (6.5 % off over 16,384
positions). Which kernel a graph gets is an implementation detail (grappler
fuses some bias adds into convolutions, XLA sums in float32), so the sums are
made float32 explicitly.

`add` and `multiply` compute the forward in the operands' 16-bit dtype
(cheap, and exactly what `x + b` computed) and, in the backward pass, sum
the upstream gradient over the broadcast axes in float32. For float32
operands they are plain `x + y` and `x * y`: float32 models compute the
same numbers as before. Both are differentiable twice (R1 and the path
length differentiate through gradients): the custom gradients are made of
ordinary ops on the functions' inputs.

Reductions that form statistics are float32 elsewhere: Keras'
`BatchNormalization` casts its input to float32, `MinibatchStddev` and the
demodulation coefficients compute in float32, and every loss casts its
logits to float32.

`Dense`, `Conv2D` and `Conv2DTranspose` are Keras' layers with their bias
added by `add`. They keep Keras' class names, so layer names and the
weight-file layout (`save_weights` / `load_weights`) stay those of the
Keras layers: weights saved with Keras' layers load into them unchanged.
"""

import keras
import tensorflow as tf

from zoo import device

HALF_DTYPES = (tf.float16, tf.bfloat16)
# x86 CPU flags of native bfloat16 arithmetic (oneDNN runs bfloat16 kernels on them).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bfloat16_flags(cpuinfo="/proc/cpuinfo"):
    """The `NATIVE_BFLOAT16_FLAGS` this machine's CPU reports, as a sorted list.

    Reads the `flags` lines of `cpuinfo` (Linux x86); an unreadable file
    (another OS, another architecture) gives `[]`.
    """
    return sorted(device.cpu_info(cpuinfo)[1].intersection(NATIVE_BFLOAT16_FLAGS))


def cpu_has_native_bfloat16():
    """Whether the CPU has bfloat16 instructions (x86 `avx512_bf16` or `amx_bf16`)."""
    return bool(cpu_bfloat16_flags())


def _is_half(tensor):
    return tensor.dtype in HALF_DTYPES


def _keeps_shape(operand, other):
    """True when `operand` statically has the shape of `operand + other` (nothing of it is broadcast).

    False when it is broadcast, or when static shapes cannot tell (the
    float32 sum then runs over possibly no axes: correct, two casts dearer).
    """
    if operand.shape.rank is None or other.shape.rank is None:
        return False
    if operand.shape.rank < other.shape.rank:
        return False
    dims = operand.shape.as_list()[operand.shape.rank - other.shape.rank :]
    for mine, theirs in zip(dims, other.shape.as_list()):
        if theirs == 1 or (mine is not None and mine > 1):
            continue  # this axis of the result is `mine`
        return False
    return True


def _sum_to(grad32, operand):
    """`grad32` (the result's shape, float32) summed over the axes `operand` was broadcast along."""
    shape = tf.shape(operand)
    axes, _ = tf.raw_ops.BroadcastGradientArgs(s0=shape, s1=tf.shape(grad32))
    return tf.reshape(tf.reduce_sum(grad32, axis=axes), shape)


@tf.custom_gradient
def _add(x, y):
    def grad(dy):
        dy32 = tf.cast(dy, tf.float32)
        dx = dy if _keeps_shape(x, y) else tf.cast(_sum_to(dy32, x), x.dtype)
        dy_y = tf.cast(dy, y.dtype) if _keeps_shape(y, x) else tf.cast(_sum_to(dy32, y), y.dtype)
        return dx, dy_y

    return x + tf.cast(y, x.dtype), grad


@tf.custom_gradient
def _multiply(x, y):
    def grad(dy):
        # A product of two 16-bit values is exact in float32: only the sums round.
        y_in = tf.cast(y, x.dtype)  # the factor the forward pass used
        if _keeps_shape(x, y):
            dx = dy * y_in  # elementwise, as TensorFlow's own gradient
        else:
            dx = tf.cast(_sum_to(tf.cast(dy, tf.float32) * tf.cast(y_in, tf.float32), x), x.dtype)
        dy_y = tf.cast(dy, tf.float32) * tf.cast(x, tf.float32)
        if not _keeps_shape(y, x):
            dy_y = _sum_to(dy_y, y)
        return dx, tf.cast(dy_y, y.dtype)

    return x * tf.cast(y, x.dtype), grad


def add(x, y):
    """`x + y` in `x`'s dtype, with broadcasting; 16-bit gradients summed in float32.

    Args:
        x: the activations, e.g. `[N, H, W, C]`; its dtype is the result's.
        y: broadcastable to `x` (a bias `[C]`, a `[N, 1, 1, C]` term, ...);
            cast to `x`'s dtype in the forward pass. Its gradient has its
            own dtype (a float32 `y` gets a float32 gradient).

    Returns:
        `x + y`, the broadcast shape, `x.dtype`.

    Example:

    ```python
    x = add(x, self.bias)  # under mixed_bfloat16: bfloat16 forward, float32-summed bias gradient
    ```
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if not _is_half(x):
        return x + tf.cast(y, x.dtype)
    return _add(x, y)


def multiply(x, y):
    """`x * y` in `x`'s dtype, with broadcasting; 16-bit gradients summed in float32.

    Args:
        x: the activations; its dtype is the result's.
        y: broadcastable to `x` (a per-channel scale, a per-sample style
            `[N, 1, 1, C]`, ...); cast to `x`'s dtype in the forward pass.

    Returns:
        `x * y`, the broadcast shape, `x.dtype`.

    Example:

    ```python
    x = multiply(x, styles[:, None, None, :])  # float32 styles get a float32 gradient
    ```
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if not _is_half(x):
        return x * tf.cast(y, x.dtype)
    return _multiply(x, y)


def _is_half_layer(layer):
    return keras.backend.standardize_dtype(layer.compute_dtype) in ("float16", "bfloat16")


def _add_bias_and_activate(layer, outputs):
    """The end of Keras' `Dense` / `Conv*` `call`, with the bias added by `add`."""
    if layer.use_bias:
        outputs = add(outputs, layer.bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


@keras.saving.register_keras_serializable(package="zoo")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose bias gradient is summed in float32 under 16-bit policies.

    Same arguments, weights and weight names as `keras.layers.Dense` (the
    class name is the same on purpose: Keras derives layer names and the
    weight-file layout from it). Quantization and LoRA are not supported.
    """

    def call(self, inputs, training=None):
        if not _is_half_layer(self):
            return super().call(inputs, training=training)  # float32: Keras' own arithmetic
        return _add_bias_and_activate(self, keras.ops.matmul(inputs, self.kernel))


@keras.saving.register_keras_serializable(package="zoo")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose bias gradient is summed in float32 under 16-bit policies.

    Same arguments, weights and weight names as `keras.layers.Conv2D`;
    channels-last only.
    """

    def call(self, inputs):
        if not _is_half_layer(self):
            return super().call(inputs)
        if self.data_format != "channels_last":
            raise ValueError("zoo.precision.Conv2D supports data_format='channels_last' only")
        return _add_bias_and_activate(self, self.convolution_op(inputs, self.kernel))


@keras.saving.register_keras_serializable(package="zoo")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` whose bias gradient is summed in float32 under 16-bit policies.

    Same arguments, weights and weight names as `keras.layers.Conv2DTranspose`;
    channels-last only.
    """

    def call(self, inputs):
        if not _is_half_layer(self):
            return super().call(inputs)
        if self.data_format != "channels_last":
            raise ValueError("zoo.precision.Conv2DTranspose supports data_format='channels_last' only")
        outputs = keras.ops.conv_transpose(
            inputs, self.kernel, strides=list(self.strides), padding=self.padding,
            output_padding=self.output_padding, dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return _add_bias_and_activate(self, outputs)
