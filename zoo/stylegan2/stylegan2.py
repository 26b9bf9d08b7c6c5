"""StyleGAN2 as a `keras.Model` with its own `train_step`.

One `train_step` runs NVIDIA's four phases of a training iteration
(stylegan2-ada-pytorch `training/loss.py`), each an optimizer step:

    G main   non-saturating loss on style-mixed fakes; updates the w average
    G reg    path-length penalty, every `pl_interval` steps (lazy)
    D main   logistic loss on (augmented) reals and fakes
    D reg    R1 on (augmented) reals, every `r1_interval` steps (lazy)

then the EMA generator follows the trained one and, with ADA on, the
augmentation probability is adjusted. The lazy phases run under a
condition that works inside every `tf.distribute` strategy
(`zoo.base.run_every`); all terms are reduced over the global batch and
noise is drawn per replica from stateless seeds, so one device and N
replicas compute the same step.
"""

import math

import keras
import tensorflow as tf

from zoo import base
from zoo.data import to_unit_range
from zoo.losses import discriminator_logistic_loss, generator_nonsaturating_loss
from zoo.stylegan2 import stylegan2_losses as losses
from zoo.stylegan2.stylegan2_augment import AdaptiveAugment, ada_adjust
from zoo.stylegan2.stylegan2_networks import Discriminator, MappingNetwork, SynthesisNetwork
from zoo.stylegan2.stylegan2_presets import STYLEGAN2_PRESETS

# Noise streams of one step (see `GenerativeModel.noise_seed`).
_G_Z, _G_MIX, _G_NOISE, _G_AUG = 0, 1, 2, 3
_PL_Z, _PL_MIX, _PL_NOISE, _PL_Y = 4, 5, 6, 7
_D_Z, _D_MIX, _D_NOISE, _D_AUG_REAL, _D_AUG_FAKE = 8, 9, 10, 11, 12
_R1_AUG = 13


class Generator(keras.layers.Layer):
    """Mapping and synthesis networks as one trainable unit (what G's optimizer trains).

    Args:
        mapping: a `MappingNetwork`.
        synthesis: a `SynthesisNetwork`.
    """

    def __init__(self, mapping, synthesis, **kwargs):
        super().__init__(**kwargs)
        self.mapping = mapping
        self.synthesis = synthesis

    def call(self, z, truncation_psi=1.0, noise=None, training=False):
        """`z` `[N, latent_dim]` -> images `[N, H, W, C]` roughly in [-1, 1]."""
        w = self.mapping(z, training=training)
        if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
            w = self.mapping.truncate(w, truncation_psi)
        return self.synthesis(w, noise=noise, training=training)


@keras.saving.register_keras_serializable(package="zoo")
class StyleGAN2(base.GenerativeModel):
    """StyleGAN2 (Karras et al. 2020) with optional ADA (Karras et al. 2020b), trained with `fit`.

    Args:
        image_size: side of the square images, a power of two >= 8.
        channels: image channels (1 or 3).
        latent_dim: size of `z`.
        w_dim: size of `w` (the intermediate latent).
        mapping_layers: depth of the mapping MLP.
        mapping_lr_multiplier: learning-rate multiplier of the mapping MLP.
        channel_base, channel_max: widths; resolution r has
            `min(channel_base // r, channel_max)` channels.
        mbstd_group_size: minibatch-stddev group size of D (the per-replica
            batch must be divisible by it, or smaller).
        r1_gamma: R1 weight `gamma` (the loss is `gamma / 2 * ||grad||^2`).
        r1_interval: D steps between R1 steps (lazy regularization).
        pl_weight: path-length penalty weight (0 disables it).
        pl_interval: G steps between path-length steps.
        pl_decay: decay of the running mean of path lengths.
        pl_batch_shrink: the path-length batch is the batch divided by this.
        style_mixing_prob: probability that a batch mixes two ws.
        ema_kimg: half-life of the generator EMA in thousands of images.
        ema_rampup: if set, the EMA half-life is at most this fraction of the
            images seen so far.
        ada_target: target of E[sign(D(real))] for adaptive augmentation;
            None disables augmentation.
        ada_interval: steps between adjustments of the augmentation probability.
        ada_kimg: thousands of images over which p can go from 0 to 1.
        seed: base seed of the training noise and of the fixed noise buffers.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = zoo.StyleGAN2.from_preset("stylegan2_tiny", load_weights=False)
    model.compile()  # Adam(0.0025, betas (0, 0.99)), adjusted for lazy regularization
    model.fit(zoo.data.make_dataset("fashion_mnist", 32, 1, 32), epochs=1, steps_per_epoch=10)
    z = model.sample_latents(16)
    images = model.generate(z, truncation_psi=0.7)  # [16, 32, 32, 1] in [0, 1], EMA generator
    ```
    """

    presets = STYLEGAN2_PRESETS
    streams_per_step = 16
    # On CPU, XLA compiles this step for many minutes (seen: > 20 min for the
    # Fashion-MNIST preset) and its strided/transposed-conv gradients run
    # 1.5-2x slower than TensorFlow's kernels; on GPUs it is unmeasured.
    xla_by_device = {"gpu": False, "cpu-amx": False, "cpu": False}
    # Per-epoch sample grids are written without and with this truncation.
    sample_truncation_psi = 0.7

    def __init__(
        self,
        image_size=32,
        channels=1,
        latent_dim=128,
        w_dim=128,
        mapping_layers=8,
        mapping_lr_multiplier=0.01,
        channel_base=2048,
        channel_max=128,
        mbstd_group_size=4,
        r1_gamma=0.01,
        r1_interval=16,
        pl_weight=2.0,
        pl_interval=4,
        pl_decay=0.01,
        pl_batch_shrink=2,
        style_mixing_prob=0.9,
        ema_kimg=10.0,
        ema_rampup=None,
        ada_target=None,
        ada_interval=4,
        ada_kimg=500.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.latent_dim = int(latent_dim)
        self.w_dim = int(w_dim)
        self.mapping_layers = int(mapping_layers)
        self.mapping_lr_multiplier = float(mapping_lr_multiplier)
        self.channel_base = int(channel_base)
        self.channel_max = int(channel_max)
        self.mbstd_group_size = int(mbstd_group_size)
        self.r1_gamma = float(r1_gamma)
        self.r1_interval = int(r1_interval)
        self.pl_weight = float(pl_weight)
        self.pl_interval = int(pl_interval)
        self.pl_decay = float(pl_decay)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.style_mixing_prob = float(style_mixing_prob)
        self.ema_kimg = float(ema_kimg)
        self.ema_rampup = None if ema_rampup is None else float(ema_rampup)
        self.ada_target = None if ada_target is None else float(ada_target)
        self.ada_interval = int(ada_interval)
        self.ada_kimg = float(ada_kimg)

        self.generator = self._make_generator("generator")
        self.generator_ema = self._make_generator("generator_ema")
        self.discriminator = Discriminator(
            image_size=self.image_size, channels=self.channels, channel_base=self.channel_base,
            channel_max=self.channel_max, mbstd_group_size=self.mbstd_group_size,
            name="discriminator",
        )
        self.augment = AdaptiveAugment(name="augment") if self.ada_target is not None else None
        self._build_networks()

        def state(name, dtype="float32"):
            # Written identically on every replica (from all-reduced values).
            return self.add_weight(
                shape=(), initializer="zeros", dtype=dtype, trainable=False,
                aggregation="only_first_replica", name=name,
            )

        self.step_counter = state("step", "int64")  # one per train_step, whatever the phases
        self.pl_mean = state("pl_mean")
        self.ada_p = state("ada_p")
        self.ada_sign_sum = state("ada_sign_sum")  # sum of batch means of sign(D(real)) ...
        self.ada_sign_count = state("ada_sign_count")  # ... over this many steps
        self.last_r1 = state("last_r1")
        self.last_pl = state("last_pl")

        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("g_loss", "d_loss", "d_real", "d_fake")
        }
        self.built = True

    # ---- construction -----------------------------------------------------
    def _make_generator(self, name):
        mapping = MappingNetwork(
            latent_dim=self.latent_dim, w_dim=self.w_dim, num_layers=self.mapping_layers,
            lr_multiplier=self.mapping_lr_multiplier, name=f"{name}_mapping",
        )
        synthesis = SynthesisNetwork(
            image_size=self.image_size, channels=self.channels, w_dim=self.w_dim,
            channel_base=self.channel_base, channel_max=self.channel_max,
            noise_seed=self.seed, name=f"{name}_synthesis",
        )
        return Generator(mapping, synthesis, name=name)

    def _build_networks(self):
        z = tf.zeros([1, self.latent_dim])
        for generator in (self.generator, self.generator_ema):
            generator(z)
        self.discriminator(tf.zeros([1, *self.image_shape]))
        if self.augment is not None:
            self.augment(tf.zeros([1, *self.image_shape]), tf.constant(0.0), tf.constant([0, 0]))
        self.generator_ema.trainable = False
        # The EMA generator starts as a copy of the generator.
        for ema, var in zip(self.generator_ema.weights, self.generator.weights):
            if ema.shape != var.shape:
                raise AssertionError(f"EMA weight {ema.path} {ema.shape} != {var.path} {var.shape}")
            ema.assign(var)

    @property
    def num_ws(self):
        return self.generator.synthesis.num_ws

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def train_steps(self):
        return int(keras.ops.convert_to_numpy(self.step_counter))

    def reset_training_progress(self):
        """Fine-tuning restarts the step counter (lazy-regularization phases, EMA ramp-up) and
        the ADA sign accumulators; w average, path-length mean and ADA p are kept."""
        for variable in (self.step_counter, self.ada_sign_sum, self.ada_sign_count, self.last_r1, self.last_pl):
            variable.assign(keras.ops.zeros_like(variable))

    def optimizer_targets(self):
        return {"g_optimizer": self.generator, "d_optimizer": self.discriminator}

    def default_optimizers(self):
        """Adam(0.0025, betas (0, 0.99), eps 1e-8) with the lazy-regularization adjustment.

        A regularizer that takes its own step every `k` steps makes `k + 1`
        steps per `k`: lr and betas are raised to `k / (k + 1)` so the
        optimizer's effective horizon stays that of `k` steps.
        """
        result = {}
        for name, interval in (("g_optimizer", self.pl_interval if self.pl_weight else 0),
                               ("d_optimizer", self.r1_interval if self.r1_gamma else 0)):
            ratio = losses.lazy_regularization_ratio(interval) if interval else 1.0
            result[name] = keras.optimizers.Adam(
                0.0025 * ratio, beta_1=0.0, beta_2=0.99**ratio, epsilon=1e-8, name=name
            )
        return result

    # ---- sampling ------------------------------------------------------------
    def call(self, z, training=False):
        """`z` `[N, latent_dim]` -> images in [-1, 1] from the EMA generator (ψ = 1)."""
        return self.generator_ema(z, training=training)

    def generate(self, z, truncation_psi=1.0):
        """Images in [0, 1] `[N, H, W, C]` from the EMA generator with fixed noise.

        Args:
            z: `[N, latent_dim]` latents.
            truncation_psi: ψ; `w = w_avg + ψ (w - w_avg)`. 1 = no truncation.
        """
        return to_unit_range(self.generator_ema(z, truncation_psi=truncation_psi))

    def mapping(self, z, truncation_psi=1.0):
        """`z` -> truncated ws `[N, num_ws, w_dim]` of the EMA generator."""
        mapping = self.generator_ema.mapping
        w = mapping.truncate(mapping(z), truncation_psi)  # [N, w_dim]
        return tf.tile(w[:, None, :], [1, self.num_ws, 1])  # [N, num_ws, w_dim]

    def synthesis(self, ws):
        """ws `[N, num_ws, w_dim]` -> images in [0, 1] (EMA generator, fixed noise)."""
        return to_unit_range(self.generator_ema.synthesis(ws))

    # ---- training ------------------------------------------------------------
    def _noise(self, batch, seed):
        """Per-layer noise `[N, H, W, 1]` for this replica, drawn in one call."""
        shapes = self.generator.synthesis.noise_shapes
        sizes = [h * w for h, w in shapes]
        flat = base.replica_normal(batch, (sum(sizes),), seed)  # [N, sum(H*W)]
        parts = tf.split(flat, sizes, axis=1)
        return [tf.reshape(p, [-1, h, w, 1]) for p, (h, w) in zip(parts, shapes)]  # [N, H, W, 1]

    def _mixed_ws(self, batch, z_seed, mix_seed, training=True):
        """ws `[N, num_ws, w_dim]` with style mixing, and the unmixed first w `[N, w_dim]`.

        As NVIDIA, one cutoff per (global) batch: layers from the cutoff on
        take the ws of a second latent, with probability `style_mixing_prob`.
        """
        z = base.replica_normal(batch, (2, self.latent_dim), z_seed)  # [N, 2, latent]
        mapping = self.generator.mapping
        w1 = mapping(z[:, 0], training=training)  # [N, w_dim]
        ws = tf.tile(w1[:, None, :], [1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if self.style_mixing_prob > 0:
            u = base.stateless_uniform([2], seed=mix_seed)  # one draw per global batch
            cutoff = 1 + tf.cast(u[0] * (self.num_ws - 1), tf.int32)
            cutoff = tf.where(u[1] < self.style_mixing_prob, cutoff, self.num_ws)
            w2 = mapping(z[:, 1], training=training)
            layer = tf.range(self.num_ws)[None, :, None]  # [1, num_ws, 1]
            ws = tf.where(layer < cutoff, ws, w2[:, None, :])
        return ws, w1

    def _augment(self, images, seed):
        if self.augment is None:
            return images
        return self.augment(images, tf.convert_to_tensor(self.ada_p), seed)

    def _seed(self, step, stream):
        return self.noise_seed(step, stream)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.cast(real, tf.float32)
        batch = base.batch_size_of(real)
        step = tf.convert_to_tensor(self.step_counter)  # read once: phases change optimizer counters

        g_per_example = self._generator_step(step, real)
        if self.pl_weight:
            base.run_every(step, self.pl_interval, self._path_length_step, step, real)
        d_per_example, real_logits, fake_logits = self._discriminator_step(step, real)
        if self.r1_gamma:
            base.run_every(step, self.r1_interval, self._r1_step, step, real)
        if self.augment is not None:
            self._adapt_augmentation(step, real_logits, batch)
        self._update_ema(step, batch)
        self.step_counter.assign_add(1)

        self.trackers["g_loss"].update_state(tf.reduce_mean(g_per_example))
        self.trackers["d_loss"].update_state(tf.reduce_mean(d_per_example))
        self.trackers["d_real"].update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        self.trackers["d_fake"].update_state(tf.reduce_mean(tf.sigmoid(fake_logits)))
        _, num_replicas = base.replica_info()
        kimg = tf.cast(step + 1, tf.float32) * tf.cast(batch * num_replicas, tf.float32) / 1000.0
        return {
            **{m.name: m.result() for m in self.metrics},
            "r1": tf.convert_to_tensor(self.last_r1),
            "pl": tf.convert_to_tensor(self.last_pl),
            "ada_p": tf.convert_to_tensor(self.ada_p),
            "kimg": kimg,
        }

    # The phases of one step, in `train_step`'s order (`benchmarks/profile_step.py` times each).
    def _generator_step(self, step, real):
        """G main: one G step on the non-saturating loss of style-mixed fakes; updates w_avg.

        Returns:
            the per-example loss `[N]`.
        """
        batch = base.batch_size_of(real)
        with tf.GradientTape() as tape:
            ws, w_first = self._mixed_ws(batch, self._seed(step, _G_Z), self._seed(step, _G_MIX))
            fake = self.generator.synthesis(
                ws, noise=self._noise(batch, self._seed(step, _G_NOISE)), training=True
            )
            g_logits = self.discriminator(self._augment(fake, self._seed(step, _G_AUG)), training=True)
            g_per_example = generator_nonsaturating_loss(g_logits)
            g_loss = base.global_mean(g_per_example)
        self.apply_loss(self.g_optimizer, tape, g_loss, self.generator)
        self.generator.mapping.update_w_avg(
            base.cross_replica_mean(tf.reduce_mean(tf.cast(w_first, tf.float32), axis=0))
        )
        return g_per_example

    def _discriminator_step(self, step, real):
        """D main: one D step on the logistic loss of (augmented) reals and fakes (G frozen).

        Returns:
            `(per-example loss [N], real logits [N, 1], fake logits [N, 1])`.
        """
        batch = base.batch_size_of(real)
        ws, _ = self._mixed_ws(batch, self._seed(step, _D_Z), self._seed(step, _D_MIX), training=False)
        fake = self.generator.synthesis(ws, noise=self._noise(batch, self._seed(step, _D_NOISE)))
        fake = tf.stop_gradient(fake)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(
                self._augment(real, self._seed(step, _D_AUG_REAL)), training=True
            )
            fake_logits = self.discriminator(
                self._augment(fake, self._seed(step, _D_AUG_FAKE)), training=True
            )
            d_per_example = discriminator_logistic_loss(real_logits, fake_logits)
            d_loss = base.global_mean(d_per_example)
        self.apply_loss(self.d_optimizer, tape, d_loss, self.discriminator)
        return d_per_example, real_logits, fake_logits

    def _path_length_step(self, step, real):
        """One G step on `pl_weight * pl_interval * (|J^T y| - a)^2` (a = running mean)."""
        batch = base.batch_size_of(real)
        # A tensor under MultiWorkerMirroredStrategy, whose auto-sharding loses the static batch.
        batch = max(batch // self.pl_batch_shrink, 1) if isinstance(batch, int) else tf.maximum(
            batch // self.pl_batch_shrink, 1)
        with tf.GradientTape() as tape:
            ws, _ = self._mixed_ws(batch, self._seed(step, _PL_Z), self._seed(step, _PL_MIX))
            with tf.GradientTape() as inner:
                inner.watch(ws)
                images = self.generator.synthesis(
                    ws, noise=self._noise(batch, self._seed(step, _PL_NOISE)), training=True
                )
                images = tf.cast(images, tf.float32)
                y = base.replica_normal(batch, images.shape[1:], self._seed(step, _PL_Y))
                y = y / math.sqrt(self.image_size * self.image_size)
                projected = tf.reduce_sum(images * y)
            lengths = losses.path_lengths(inner.gradient(projected, ws))  # [N]
            batch_mean = base.cross_replica_mean(tf.reduce_mean(tf.stop_gradient(lengths)))
            pl_mean = self.pl_mean + self.pl_decay * (batch_mean - self.pl_mean)
            penalty = losses.path_length_penalty(lengths, pl_mean)  # [N]
            loss = base.global_mean(penalty) * (self.pl_weight * self.pl_interval)
        self.pl_mean.assign(pl_mean)
        self.last_pl.assign(base.cross_replica_mean(tf.reduce_mean(penalty)))
        self.apply_loss(self.g_optimizer, tape, loss, self.generator)

    def _r1_step(self, step, real):
        """One D step on `r1_interval * gamma / 2 * ||grad_x D(aug(x))||^2` at reals."""
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                inner.watch(real)
                logits = self.discriminator(
                    self._augment(real, self._seed(step, _R1_AUG)), training=True
                )
                summed = tf.reduce_sum(tf.cast(logits, tf.float32))
            penalty = losses.r1_penalty(inner.gradient(summed, real))  # [N]
            loss = base.global_mean(penalty) * (self.r1_gamma / 2 * self.r1_interval)
        self.last_r1.assign(base.cross_replica_mean(tf.reduce_mean(penalty)))
        self.apply_loss(self.d_optimizer, tape, loss, self.discriminator)

    def _adapt_augmentation(self, step, real_logits, batch):
        """Accumulates E[sign(D(real))]; every `ada_interval` steps moves p toward the target."""
        sign_mean = base.cross_replica_mean(tf.reduce_mean(tf.sign(tf.cast(real_logits, tf.float32))))
        sign_sum = self.ada_sign_sum + sign_mean
        count = self.ada_sign_count + 1.0
        update = tf.equal(tf.math.floormod(step + 1, self.ada_interval), 0)
        _, num_replicas = base.replica_info()
        adjusted = ada_adjust(
            self.ada_p, sign_sum / count, target=self.ada_target,
            batch_size=batch * num_replicas, interval=self.ada_interval, ada_kimg=self.ada_kimg,
        )
        self.ada_p.assign(tf.where(update, adjusted, self.ada_p))
        self.ada_sign_sum.assign(tf.where(update, 0.0, sign_sum))
        self.ada_sign_count.assign(tf.where(update, 0.0, count))

    def _update_ema(self, step, batch):
        """EMA of G's trainable weights; G's buffers (w average, noise) copied."""
        _, num_replicas = base.replica_info()
        global_batch = tf.cast(batch * num_replicas, tf.float32)
        images_seen = tf.cast(step + 1, tf.float32) * global_batch
        beta = losses.ema_beta(global_batch, self.ema_kimg, images_seen, self.ema_rampup)
        trainable = {id(v) for v in self.generator.trainable_weights}
        for ema, var in zip(self.generator_ema.weights, self.generator.weights):
            if id(var) in trainable:
                ema.assign(var + tf.cast(beta, var.dtype) * (ema - var))
            else:
                ema.assign(var)

    # ---- export ----------------------------------------------------------------
    def tflite_signatures(self):
        return ("serving_default", "generate", "mapping", "synthesis")

    def export_networks(self):
        return [self.generator_ema]

    def representative_inputs(self, signature="serving_default", num_batches=16, batch=8):
        """Calibration batches for int8: latents, ψ in [0.5, 1] and the ws they map to."""
        _, specs = self.export_endpoints()[signature]
        for i in range(num_batches):
            z = self.sample_latents(batch, seed=1000 + i)
            psi = tf.constant(0.5 + 0.5 * (i % 2), tf.float32)
            sources = {"z": lambda: z, "truncation_psi": lambda: psi, "w": lambda: self.mapping(z, psi)}
            yield {s.name: keras.ops.convert_to_numpy(sources[s.name]()) for s in specs}

    def export_endpoints(self):
        latent, num_ws, w_dim = self.latent_dim, self.num_ws, self.w_dim
        z_spec = tf.TensorSpec([None, latent], tf.float32, name="z")
        psi_spec = tf.TensorSpec([], tf.float32, name="truncation_psi")

        def serving_default(z):
            return {"images": self.generate(base.finite_latents(z))}

        def generate(z, truncation_psi):
            return {"images": self.generate(base.finite_latents(z), truncation_psi)}

        def mapping(z, truncation_psi):
            return {"w": self.mapping(base.finite_latents(z), truncation_psi)}

        def synthesis(w):
            return {"images": self.synthesis(w)}

        def sample(num, seed, truncation_psi):
            return {"images": self.sample_images(num, seed, truncation_psi)}

        return {
            "serving_default": (serving_default, [z_spec]),
            "generate": (generate, [z_spec, psi_spec]),
            "mapping": (mapping, [z_spec, psi_spec]),
            "synthesis": (synthesis, [tf.TensorSpec([None, num_ws, w_dim], tf.float32, name="w")]),
            "sample": (sample, [*base.SAMPLE_INPUTS, psi_spec]),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "channels": self.channels,
            "latent_dim": self.latent_dim,
            "w_dim": self.w_dim,
            "mapping_layers": self.mapping_layers,
            "mapping_lr_multiplier": self.mapping_lr_multiplier,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "mbstd_group_size": self.mbstd_group_size,
            "r1_gamma": self.r1_gamma,
            "r1_interval": self.r1_interval,
            "pl_weight": self.pl_weight,
            "pl_interval": self.pl_interval,
            "pl_decay": self.pl_decay,
            "pl_batch_shrink": self.pl_batch_shrink,
            "style_mixing_prob": self.style_mixing_prob,
            "ema_kimg": self.ema_kimg,
            "ema_rampup": self.ema_rampup,
            "ada_target": self.ada_target,
            "ada_interval": self.ada_interval,
            "ada_kimg": self.ada_kimg,
        }
