"""Loss functions shared by the families: pure, per-example, no reduction.

Reduction over the global batch happens in `train_step` through
`zoo.base.global_mean`, so the same functions serve one device and N
replicas.
"""

import tensorflow as tf


def discriminator_logistic_loss(real_logits, fake_logits):
    """Cross-entropy of D on a real and a fake batch, per example.

    `-log D(x) - log(1 - D(G(z)))` with `D = sigmoid(logits)`, written with
    softplus so it stays finite for large logits.

    Args:
        real_logits: `[N, 1]` logits on real images.
        fake_logits: `[N, 1]` logits on generated images.

    Returns:
        `[N]` float32.
    """
    real_logits = tf.cast(real_logits, tf.float32)
    fake_logits = tf.cast(fake_logits, tf.float32)
    loss = tf.nn.softplus(-real_logits) + tf.nn.softplus(fake_logits)
    return tf.reshape(loss, [-1])


def generator_nonsaturating_loss(fake_logits):
    """Non-saturating generator loss `-log D(G(z))`, per example.

    Args:
        fake_logits: `[N, 1]` logits of D on generated images.

    Returns:
        `[N]` float32.
    """
    fake_logits = tf.cast(fake_logits, tf.float32)
    return tf.reshape(tf.nn.softplus(-fake_logits), [-1])
