"""The TensorFlow DCGAN tutorial as a reference trainer, on the project's Fashion-MNIST.

    python benchmarks/reference_dcgan.py [--epochs 1] [--seed 0]

Written from the published description of tensorflow.org/tutorials/generative/dcgan:

* generator: Dense(7*7*256, no bias) - BN - LeakyReLU - reshape to 7x7x256 -
  Conv2DTranspose(128, 5, stride 1) - BN - LeakyReLU - Conv2DTranspose(64, 5,
  stride 2) - BN - LeakyReLU - Conv2DTranspose(1, 5, stride 2, tanh), every
  transposed convolution without bias, "same" padding;
* discriminator: Conv2D(64, 5, stride 2) - LeakyReLU - Dropout(0.3) -
  Conv2D(128, 5, stride 2) - LeakyReLU - Dropout(0.3) - Flatten - Dense(1);
* `BinaryCrossentropy(from_logits=True)`; D's loss is the sum of its real and
  fake terms, G's is the cross-entropy of D(G(z)) against ones;
* `Adam(1e-4)` for each network, 100-d N(0, 1) noise, batch 256;
* one `@tf.function` step: one noise batch, both networks' losses under two
  `GradientTape`s, both updated from the same forward pass;
* data: the 60,000 training images as float32 in [-1, 1], `shuffle(60000)`,
  `batch(256)` (the last batch of an epoch holds 96 images; the noise batch
  stays 256, as in the tutorial).

The only change is the data: Fashion-MNIST from `zoo.data.load_arrays` (the
same images the project trains on) instead of MNIST. Running this file
trains `--epochs` epochs and prints the training images/s of each.
"""

import argparse
import math
import pathlib
import sys
import time

if __name__ == "__main__" and not __package__:
    # `python benchmarks/reference_dcgan.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoo import base  # noqa: E402
from zoo import data as zoo_data  # noqa: E402

NOISE_DIM = 100
BATCH_SIZE = 256
LEARNING_RATE = 1e-4
IMAGE_SHAPE = (28, 28, 1)
# tf.keras' LeakyReLU default, which the tutorial relies on (it passes no slope).
LEAKY_SLOPE = 0.3


def make_generator():
    """The tutorial's generator: `[N, 100]` noise -> `[N, 28, 28, 1]` images in [-1, 1]."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((NOISE_DIM,)),
        layers.Dense(7 * 7 * 256, use_bias=False),
        layers.BatchNormalization(),
        layers.LeakyReLU(LEAKY_SLOPE),
        layers.Reshape((7, 7, 256)),  # [N, 12544] -> [N, 7, 7, 256]
        layers.Conv2DTranspose(128, 5, strides=1, padding="same", use_bias=False),  # 7x7
        layers.BatchNormalization(),
        layers.LeakyReLU(LEAKY_SLOPE),
        layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False),  # 14x14
        layers.BatchNormalization(),
        layers.LeakyReLU(LEAKY_SLOPE),
        layers.Conv2DTranspose(1, 5, strides=2, padding="same", use_bias=False,
                               activation="tanh"),  # 28x28
    ], name="reference_generator")


def make_discriminator():
    """The tutorial's discriminator: `[N, 28, 28, 1]` images -> `[N, 1]` logits."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        layers.Conv2D(64, 5, strides=2, padding="same"),  # 14x14
        layers.LeakyReLU(LEAKY_SLOPE),
        layers.Dropout(0.3),
        layers.Conv2D(128, 5, strides=2, padding="same"),  # 7x7
        layers.LeakyReLU(LEAKY_SLOPE),
        layers.Dropout(0.3),
        layers.Flatten(),  # [N, 7, 7, 128] -> [N, 6272]
        layers.Dense(1),
    ], name="reference_discriminator")


class Reference:
    """The tutorial's training loop, resumable in slices of time or steps.

    Args:
        images: uint8 `[N, 28, 28, 1]` training images, as the first element
            `zoo.data.load_arrays` returns; default: the Fashion-MNIST train split.
        seed: seeds the initial weights, the noise and the shuffle.

    Example:

    ```python
    ref = Reference()
    ref.train(seconds=30)                     # continues where the last call stopped
    images = ref.generate(ref.sample_latents(16))  # [16, 28, 28, 1] in [0, 1]
    ```
    """

    latent_shape = (NOISE_DIM,)
    image_shape = IMAGE_SHAPE
    batch_size = BATCH_SIZE

    def __init__(self, images=None, seed=0):
        if images is None:
            images, _ = zoo_data.load_arrays("fashion_mnist:train")
        if tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"the reference takes {IMAGE_SHAPE} images, got {images.shape[1:]}")
        keras.utils.set_random_seed(seed)  # weights, tf.random.normal noise
        self.generator = make_generator()
        self.discriminator = make_discriminator()
        self.generator_optimizer = keras.optimizers.Adam(LEARNING_RATE)
        self.discriminator_optimizer = keras.optimizers.Adam(LEARNING_RATE)
        # Keras 3 optimizers create their slots in `build`; a tf.function
        # may create variables on its first trace only, so build them here.
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
        self.num_images = len(images)
        train_images = (images.astype("float32") - 127.5) / 127.5  # [-1, 1]
        self.dataset = (
            tf.data.Dataset.from_tensor_slices(train_images)
            .shuffle(self.num_images, seed=seed)
            .batch(BATCH_SIZE)
        )
        self.steps_per_epoch = math.ceil(self.num_images / BATCH_SIZE)
        self.steps = 0
        self.images_seen = 0
        self._iterator = iter(self.dataset)
        self._train_step = tf.function(self._step)

    @property
    def epochs(self):
        """Passes over the training images so far (fractional)."""
        return self.images_seen / self.num_images

    def _step(self, images):
        noise = tf.random.normal([BATCH_SIZE, NOISE_DIM])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated = self.generator(noise, training=True)
            real_output = self.discriminator(images, training=True)
            fake_output = self.discriminator(generated, training=True)
            gen_loss = self.cross_entropy(tf.ones_like(fake_output), fake_output)
            disc_loss = (self.cross_entropy(tf.ones_like(real_output), real_output)
                         + self.cross_entropy(tf.zeros_like(fake_output), fake_output))
        gen_grads = gen_tape.gradient(gen_loss, self.generator.trainable_variables)
        disc_grads = disc_tape.gradient(disc_loss, self.discriminator.trainable_variables)
        self.generator_optimizer.apply_gradients(zip(gen_grads, self.generator.trainable_variables))
        self.discriminator_optimizer.apply_gradients(
            zip(disc_grads, self.discriminator.trainable_variables))
        return {"gen_loss": gen_loss, "disc_loss": disc_loss}

    def train(self, seconds=None, steps=None):
        """Trains until `seconds` of wall time have passed or `steps` steps ran.

        The time is checked before each step, so a call overshoots `seconds`
        by at most one step. Epochs continue across calls.

        Returns:
            `{"seconds", "steps", "images", "gen_loss", "disc_loss"}` of this call.
        """
        if seconds is None and steps is None:
            raise ValueError("train() needs seconds or steps")
        start = time.perf_counter()
        done = images = 0
        logs = None
        while (steps is None or done < steps) and (
            seconds is None or time.perf_counter() - start < seconds
        ):
            batch = next(self._iterator, None)
            if batch is None:  # end of an epoch: a new pass reshuffles, like the tutorial's loop
                self._iterator = iter(self.dataset)
                continue
            logs = self._train_step(batch)
            done += 1
            images += int(batch.shape[0])
        losses = {k: float(v) for k, v in logs.items()} if logs else {}  # waits for the last step
        elapsed = time.perf_counter() - start
        self.steps += done
        self.images_seen += images
        return {"seconds": elapsed, "steps": done, "images": images, **losses}

    def generate(self, z):
        """Images in [0, 1], float32 `[N, 28, 28, 1]`, from `[N, 100]` noise."""
        return zoo_data.to_unit_range(self.generator(z, training=False))

    def sample_latents(self, num, seed=0):
        """Deterministic N(0, 1) noise `[num, 100]`, drawn as the zoo's models draw theirs."""
        return base.stateless_normal([num, NOISE_DIM], seed=[seed, 0])


def main(argv=None):
    """Trains the reference `--epochs` epochs, printing each epoch's images/s."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=1, help="epochs to train")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    reference = Reference(seed=args.seed)
    rates = []
    for epoch in range(args.epochs):
        result = reference.train(steps=reference.steps_per_epoch)
        rates.append(result["images"] / result["seconds"])
        print(f"epoch {epoch + 1}: {result['seconds']:.1f} s, {rates[-1]:.0f} img/s, "
              f"gen_loss {result['gen_loss']:.3f}, disc_loss {result['disc_loss']:.3f}"
              + (" (includes tracing)" if epoch == 0 else ""), flush=True)
    return rates


if __name__ == "__main__":
    main()
