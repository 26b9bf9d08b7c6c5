"""StyleGAN2's regularizers as pure per-example functions (Karras et al. 2020).

The adversarial terms are the shared logistic losses in `zoo.losses`.
Everything here returns float32 `[N]` values; `train_step` reduces them over
the global batch.
"""

import tensorflow as tf


def r1_penalty(real_grads):
    """R1: squared norm of D's gradient at real images (Mescheder et al. 2018).

    Args:
        real_grads: `[N, H, W, C]` gradient of the summed real logits w.r.t.
            the real images.

    Returns:
        `[N]` float32 `||grad D(x)||^2`; the loss is `gamma / 2` times it.
    """
    real_grads = tf.cast(real_grads, tf.float32)
    return tf.reduce_sum(tf.square(real_grads), axis=[1, 2, 3])


def path_lengths(ws_grads):
    """Per-example path length `||J_w^T y||` from the gradient w.r.t. the ws.

    Args:
        ws_grads: `[N, num_ws, w_dim]` gradient of `sum(images * y)` w.r.t. the
            per-layer ws, with `y ~ N(0, 1) / sqrt(H * W)`.

    Returns:
        `[N]` float32: the norm over `w_dim`, mean-squared over the layers, as
        NVIDIA computes it (`sqrt(mean_l sum_d g^2)`).
    """
    ws_grads = tf.cast(ws_grads, tf.float32)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(ws_grads), axis=2), axis=1))


def path_length_penalty(lengths, pl_mean):
    """`(|J^T y| - a)^2` with `a` the running mean of the path lengths; `[N]`."""
    return tf.square(lengths - tf.cast(pl_mean, tf.float32))


def lazy_regularization_ratio(interval):
    """`interval / (interval + 1)`: scales Adam's lr and betas when a regularizer
    takes its own optimizer step every `interval` steps (paper, appendix B)."""
    return interval / (interval + 1)


def ema_beta(global_batch, ema_kimg, images_seen=None, rampup=None):
    """Decay of the generator EMA for one step: `0.5 ** (batch / half_life_images)`.

    Args:
        global_batch: images per step over all replicas.
        ema_kimg: half-life of the EMA in thousands of images.
        images_seen: images trained so far (scalar tensor), for the ramp-up.
        rampup: if set, the half-life is at most `images_seen * rampup`
            (short runs then track the generator from the start).

    Returns:
        float32 scalar tensor.
    """
    half_life = tf.constant(ema_kimg * 1000.0, tf.float32)
    if rampup is not None:
        half_life = tf.minimum(half_life, tf.cast(images_seen, tf.float32) * rampup)
    return tf.pow(0.5, global_batch / tf.maximum(half_life, 1e-8))
