"""DC-GAN as a `keras.Model` with its own `train_step`."""

import keras
import tensorflow as tf

from zoo import base
from zoo.data import to_unit_range
from zoo.dcgan.dcgan_networks import build_discriminator, build_generator
from zoo.dcgan.dcgan_presets import DCGAN_PRESETS
from zoo.losses import discriminator_logistic_loss, generator_nonsaturating_loss


@keras.saving.register_keras_serializable(package="zoo")
class DCGAN(base.GenerativeModel):
    """Deep convolutional GAN (Radford et al. 2015), trained with `fit`.

    Each step updates the discriminator on a real and a generated batch,
    then the generator on fresh noise with the non-saturating loss
    `-log D(G(z))`. Losses are reduced over the global batch and noise is
    drawn per replica, so `fit` under any `tf.distribute` strategy matches
    one device.

    Args:
        latent_dim: size of the latent vector `z`.
        image_size: side of the square images, a power of two >= 8.
        channels: image channels (1 or 3).
        base_filters: width of the networks (see `dcgan_networks`).
        seed: base seed of the training noise.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = zoo.DCGAN.from_preset("dcgan_tiny", load_weights=False)
    model.compile()  # Adam(2e-4, beta_1=0.5) for both networks
    model.fit(zoo.data.make_dataset("fashion_mnist", 32, 1, 64), epochs=1)
    images = model.generate(model.sample_latents(16))  # [16, 32, 32, 1] in [0, 1]
    ```
    """

    presets = DCGAN_PRESETS

    def __init__(self, latent_dim=64, image_size=32, channels=1, base_filters=32, seed=0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.base_filters = int(base_filters)
        self.generator = build_generator(latent_dim, image_size, channels, base_filters)
        self.discriminator = build_discriminator(image_size, channels, base_filters)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.built = True

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def optimizer_targets(self):
        return {"d_optimizer": self.discriminator, "g_optimizer": self.generator}

    def default_optimizers(self):
        return {
            name: keras.optimizers.Adam(2e-4, beta_1=0.5, name=name)
            for name in ("d_optimizer", "g_optimizer")
        }

    def call(self, z, training=False):
        """`z` `[N, latent_dim]` -> images in [-1, 1]."""
        return self.generator(z, training=training)

    def generate(self, z):
        return to_unit_range(self.generator(z, training=False))

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        # Read once: `iterations` changes when D's update is applied below.
        step = tf.convert_to_tensor(self.d_optimizer.iterations)
        d_per_example, real_logits, fake_logits = self._discriminator_step(step, real)
        g_per_example = self._generator_step(step, real)

        # Trackers take this replica's unscaled means; Keras averages replicas.
        self.d_loss_tracker.update_state(tf.reduce_mean(d_per_example))
        self.g_loss_tracker.update_state(tf.reduce_mean(g_per_example))
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(tf.reduce_mean(tf.sigmoid(fake_logits)))
        return {m.name: m.result() for m in self.metrics}

    # The phases of one step (`benchmarks/profile_step.py` times each).
    def _discriminator_step(self, step, real):
        """One D step on a real batch and a generated batch: `(loss [N], real logits, fake logits)`."""
        batch = base.batch_size_of(real)
        z = base.replica_normal(batch, self.latent_shape, self.noise_seed(step, 0))
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_per_example = discriminator_logistic_loss(real_logits, fake_logits)
            d_loss = base.global_mean(d_per_example)
        self.apply_loss(self.d_optimizer, tape, d_loss, self.discriminator)
        return d_per_example, real_logits, fake_logits

    def _generator_step(self, step, real):
        """One G step on fresh noise against the (updated) D: the per-example loss `[N]`."""
        z = base.replica_normal(base.batch_size_of(real), self.latent_shape, self.noise_seed(step, 1))
        with tf.GradientTape() as tape:
            g_logits = self.discriminator(self.generator(z, training=True), training=True)
            g_per_example = generator_nonsaturating_loss(g_logits)
            g_loss = base.global_mean(g_per_example)
        self.apply_loss(self.g_optimizer, tape, g_loss, self.generator)
        return g_per_example

    def export_networks(self):
        return [self.generator]

    def serving_model(self):
        """`z` -> `{"images"}` in [0, 1]: the generator and `to_unit_range` as Keras ops."""
        z = keras.Input(self.latent_shape, name="z")
        x = keras.ops.cast(self.generator(z), "float32")  # [N, H, W, C] in [-1, 1]
        images = keras.ops.clip((x + 1.0) * 0.5, 0.0, 1.0)
        return keras.Model(z, {"images": images}, name=f"{self.name}_serving")

    def export_endpoints(self):
        latent = self.latent_dim

        def serving_default(z):
            return {"images": self.generate(base.finite_latents(z))}

        return {
            "serving_default": (serving_default, [tf.TensorSpec([None, latent], tf.float32, name="z")]),
            "sample": self.sample_endpoint(),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "image_size": self.image_size,
            "channels": self.channels,
            "base_filters": self.base_filters,
        }
