"""VAE loss terms: pure, per-example, in nats, no reduction.

Reduction over the global batch happens in `train_step` through
`zoo.base.global_mean`, so the same functions serve one device and N
replicas. Images are targets in [0, 1]; latents are `[N, latent_dim]`.
"""

import math

import tensorflow as tf


def _sum_per_example(values):
    """`[N, ...]` -> `[N]` sum over every axis but the first."""
    return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def bernoulli_nll(targets, logits):
    """`-log p(x|z)` under independent Bernoulli pixels, per example.

    Args:
        targets: `[N, H, W, C]` in [0, 1].
        logits: `[N, H, W, C]` decoder logits.

    Returns:
        `[N]` float32, nats per image.

    Example:

    ```python
    nll = bernoulli_nll(images01, decoder(z))  # [N]
    ```
    """
    targets = tf.cast(targets, tf.float32)
    logits = tf.cast(logits, tf.float32)
    return _sum_per_example(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


def gaussian_nll(targets, mean, sigma):
    """`-log p(x|z)` under independent Gaussian pixels of fixed `sigma`, per example.

    Sums `0.5 * ((x - mean) / sigma)**2 + log(sigma * sqrt(2 pi))` over pixels.

    Args:
        targets: `[N, H, W, C]` in [0, 1].
        mean: `[N, H, W, C]` decoder mean.
        sigma: the pixel standard deviation, a positive float.

    Returns:
        `[N]` float32, nats per image.

    Example:

    ```python
    nll = gaussian_nll(images01, decoder(z), sigma=0.1)  # [N]
    ```
    """
    targets = tf.cast(targets, tf.float32)
    mean = tf.cast(mean, tf.float32)
    log_norm = math.log(sigma * math.sqrt(2.0 * math.pi))
    return _sum_per_example(0.5 * tf.square((targets - mean) / sigma) + log_norm)


def gaussian_kl(z_mean, z_log_var):
    """Analytic `KL(N(z_mean, exp(z_log_var)) || N(0, I))`, per example.

    Args:
        z_mean: `[N, L]`.
        z_log_var: `[N, L]`.

    Returns:
        `[N]` float32, nats, summed over the `L` latent dimensions.

    Example:

    ```python
    kl = gaussian_kl(z_mean, z_log_var)  # [N]
    ```
    """
    z_mean = tf.cast(z_mean, tf.float32)
    z_log_var = tf.cast(z_log_var, tf.float32)
    return -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=-1)


def log_normal(z, mean=0.0, log_var=0.0):
    """Log density of a diagonal Gaussian at `z`, summed over the last axis.

    Args:
        z: `[..., L]`.
        mean: broadcastable to `z`; 0 gives the standard normal prior.
        log_var: broadcastable to `z`.

    Returns:
        `[...]` float32, nats.

    Example:

    ```python
    log_prior = log_normal(z)  # log N(z; 0, I)
    log_q = log_normal(z, z_mean, z_log_var)  # log q(z|x)
    ```
    """
    z = tf.cast(z, tf.float32)
    log_var = tf.cast(log_var, tf.float32)
    return -0.5 * tf.reduce_sum(
        math.log(2.0 * math.pi) + log_var + tf.square(z - mean) * tf.exp(-log_var), axis=-1
    )
