"""DC-GAN generator and discriminator (Radford et al. 2015).

Both are functional `keras.Model`s so they save, export and summarize on
their own. Layout follows the paper: the generator projects `z` to a 4x4
feature map and doubles the resolution with strided transposed convolutions
(batch norm + ReLU, tanh output); the discriminator mirrors it with strided
convolutions (batch norm on all but the first, LeakyReLU 0.2) and one logit.

Batch norm is `synchronized`: under a strategy it normalizes with the global
batch's statistics, so N replicas compute what one device computes. Its
momentum is 0.9 (PyTorch's 0.1, as in the reference DC-GAN code) rather than
Keras' 0.99: the exported generator runs on the moving statistics, which
must follow the fast-changing GAN activations.
"""

import math

import keras
from keras import layers

from zoo import precision


def _init():
    # Radford et al.: weights from N(0, 0.02). A fresh instance per layer: a
    # shared unseeded instance gives every same-shaped layer the same values.
    return keras.initializers.RandomNormal(stddev=0.02)


def _batch_norm():
    return layers.BatchNormalization(momentum=0.9, synchronized=True)


def _levels(image_size):
    levels = math.log2(image_size / 4)
    if image_size < 8 or levels != int(levels):
        raise ValueError(
            f"image_size must be a power of two >= 8, got {image_size}"
        )
    return int(levels)


def build_generator(latent_dim, image_size, channels, base_filters, name="generator"):
    """z `[N, latent_dim]` -> images `[N, image_size, image_size, channels]` in [-1, 1].

    Args:
        latent_dim: size of `z`.
        image_size: output side, a power of two >= 8.
        channels: output channels (1 grayscale, 3 RGB).
        base_filters: filters of the last hidden layer; each lower
            resolution has twice as many.
        name: model name.

    Returns:
        A functional `keras.Model` with input `z` and output `images`.
    """
    levels = _levels(image_size)
    top = base_filters * 2 ** (levels - 1)
    z = keras.Input((latent_dim,), name="z")
    x = precision.Dense(4 * 4 * top, use_bias=False, kernel_initializer=_init())(z)
    x = layers.Reshape((4, 4, top))(x)  # [N, 4, 4, C]
    x = _batch_norm()(x)
    x = layers.ReLU()(x)
    for level in range(levels - 1):
        filters = top // 2 ** (level + 1)
        x = precision.Conv2DTranspose(
            filters, 4, strides=2, padding="same", use_bias=False,
            kernel_initializer=_init(),
        )(x)
        x = _batch_norm()(x)
        x = layers.ReLU()(x)
    x = precision.Conv2DTranspose(
        channels, 4, strides=2, padding="same", kernel_initializer=_init()
    )(x)  # [N, H, W, channels]
    # tanh in float32 whatever the policy: images leave the model as float32.
    images = layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(z, images, name=name)


def build_discriminator(image_size, channels, base_filters, name="discriminator"):
    """images `[N, image_size, image_size, channels]` in [-1, 1] -> logits `[N, 1]`.

    Args:
        image_size: input side, a power of two >= 8.
        channels: input channels.
        base_filters: filters of the first convolution; doubled per level.
        name: model name.

    Returns:
        A functional `keras.Model` with input `images` and float32 `logits`.
    """
    levels = _levels(image_size)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for level in range(levels):
        x = precision.Conv2D(
            base_filters * 2**level, 4, strides=2, padding="same",
            use_bias=level == 0, kernel_initializer=_init(),
        )(x)
        if level > 0:
            x = _batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)  # [N, 4 * 4 * C]
    # Logits stay float32 under mixed precision (KERAS_PITFALLS item 10).
    logits = precision.Dense(1, kernel_initializer=_init(), dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name=name)
