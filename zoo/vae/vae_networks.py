"""VAE encoder, decoder and reparameterized sampling layer.

Encoder and decoder are functional `keras.Model`s so they save, export and
summarize on their own. The encoder halves the resolution with strided
convolutions down to 4x4 and maps the features to the mean and
log-variance of the diagonal Gaussian q(z|x); the decoder mirrors it with
strided transposed convolutions.

There is no batch normalization: it would make an image's ELBO depend on
the other images of its batch, and the ELBO and IWAE bound are per-image
quantities.
"""

import math

import keras
from keras import layers

from zoo import precision


def _levels(image_size):
    levels = math.log2(image_size / 4)
    if image_size < 8 or levels != int(levels):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(levels)


def build_encoder(latent_dim, image_size, channels, base_filters, name="encoder"):
    """images `[N, H, W, C]` in [0, 1] -> `z_mean`, `z_log_var`, each `[N, latent_dim]`.

    Args:
        latent_dim: size of `z`.
        image_size: input side, a power of two >= 8.
        channels: input channels.
        base_filters: filters of the first convolution; doubled per level.
        name: model name.

    Returns:
        A functional `keras.Model` with input `images` and float32 outputs
        `z_mean` and `z_log_var`.
    """
    levels = _levels(image_size)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for level in range(levels):
        x = precision.Conv2D(base_filters * 2**level, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)  # [N, 4 * 4 * C]
    # float32 heads under mixed precision: exp(log_var) and the KL need the range.
    z_mean = precision.Dense(latent_dim, dtype="float32", name="z_mean")(x)
    z_log_var = precision.Dense(latent_dim, dtype="float32", name="z_log_var")(x)
    return keras.Model(images, {"z_mean": z_mean, "z_log_var": z_log_var}, name=name)


def _residual_block(x, filters, name):
    """`x + conv3x3(relu(conv3x3(x)))`, ReLU after; the second convolution starts at zero (identity block)."""
    h = precision.Conv2D(filters, 3, padding="same", name=f"{name}_conv0")(x)
    h = layers.ReLU()(h)
    h = precision.Conv2D(filters, 3, padding="same", kernel_initializer="zeros", name=f"{name}_conv1")(h)
    return layers.ReLU()(layers.Add(name=f"{name}_add")([x, h]))


def build_decoder(latent_dim, image_size, channels, base_filters, output="logits", residual_blocks=0,
                  head_filters=0, name="decoder"):
    """z `[N, latent_dim]` -> `[N, H, W, C]` Bernoulli logits or Gaussian mean in [0, 1].

    Args:
        latent_dim: size of `z`.
        image_size: output side, a power of two >= 8.
        channels: output channels.
        base_filters: filters of the last hidden layer; each lower
            resolution has twice as many.
        output: "logits" (Bernoulli likelihood, unbounded) or "mean"
            (Gaussian likelihood, sigmoid so the mean stays in [0, 1]).
        residual_blocks: residual blocks of two 3x3 convolutions after the
            4x4 input and after each hidden upsampling; 0 gives the plain
            DC-GAN-like decoder (the shipped presets' weights).
        head_filters: 0 maps the last hidden layer to the image with one
            strided transposed convolution; N > 0 upsamples to N channels
            instead and adds a 3x3 convolution at full resolution to the
            image (a hidden layer where the pixels are).
        name: model name.

    Returns:
        A functional `keras.Model` with input `z` and one float32 output
        named `output`.
    """
    if output not in ("logits", "mean"):
        raise ValueError(f"decoder output must be 'logits' or 'mean', got {output!r}")
    levels = _levels(image_size)
    top = base_filters * 2 ** (levels - 1)
    z = keras.Input((latent_dim,), name="z")
    x = precision.Dense(4 * 4 * top)(z)
    x = layers.ReLU()(layers.Reshape((4, 4, top))(x))  # [N, 4, 4, top]
    for block in range(residual_blocks):
        x = _residual_block(x, top, f"res4_{block}")
    for level in range(levels - 1):
        filters = top // 2 ** (level + 1)
        x = precision.Conv2DTranspose(filters, 4, strides=2, padding="same")(x)
        x = layers.ReLU()(x)
        for block in range(residual_blocks):
            x = _residual_block(x, filters, f"res{8 * 2**level}_{block}")
    if head_filters:
        x = precision.Conv2DTranspose(head_filters, 4, strides=2, padding="same", name="head_upsample")(x)
        x = layers.ReLU()(x)  # [N, H, W, head_filters]
        x = precision.Conv2D(channels, 3, padding="same", name="head_conv")(x)  # [N, H, W, C]
    else:
        x = precision.Conv2DTranspose(channels, 4, strides=2, padding="same")(x)  # [N, H, W, C]
    activation = "linear" if output == "logits" else "sigmoid"
    out = layers.Activation(activation, dtype="float32", name=output)(x)
    return keras.Model(z, out, name=name)


@keras.saving.register_keras_serializable(package="zoo")
class Sampling(layers.Layer):
    """Reparameterized draw `z = z_mean + eps * exp(z_log_var / 2)`.

    The noise `eps` is an input rather than drawn here: the caller draws it
    per replica from a stateless seed (KERAS_PITFALLS item 6), and `z` is
    a differentiable function of `z_mean` and `z_log_var`.

    Example:

    ```python
    eps = tf.random.stateless_normal(tf.shape(z_mean), seed=[0, 0])
    z = Sampling()([z_mean, z_log_var, eps])
    ```
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # no weights; an unbuilt layer would make `fit` trace `call` first

    def call(self, inputs):
        z_mean, z_log_var, eps = inputs
        return z_mean + eps * keras.ops.exp(0.5 * z_log_var)
