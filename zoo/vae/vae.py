"""Convolutional VAE as a `keras.Model` with its own `train_step` and `test_step`."""

import math

import keras
import tensorflow as tf

from zoo import base
from zoo.data import to_unit_range
from zoo.vae.vae_losses import bernoulli_nll, gaussian_kl, gaussian_nll, log_normal
from zoo.vae.vae_networks import Sampling, build_decoder, build_encoder
from zoo.vae.vae_presets import VAE_PRESETS
from zoo.vae.vae_priors import build_prior

LIKELIHOODS = ("bernoulli", "gaussian")


class _Networks:
    """Sub-networks an optimizer trains together: their `trainable_variables`, in order."""

    def __init__(self, *networks):
        self.networks = networks

    @property
    def trainable_variables(self):
        return [v for network in self.networks for v in network.trainable_variables]


@keras.saving.register_keras_serializable(package="zoo")
class VAE(base.GenerativeModel):
    """Variational autoencoder (Kingma & Welling 2014), trained with `fit`.

    The encoder gives a diagonal Gaussian q(z|x), a reparameterized draw
    `z = mu + eps * sigma` feeds the decoder, and each step minimizes
    `reconstruction + beta * KL(q(z|x) || N(0, I))` per image, in nats.
    Losses are reduced over the global batch and `eps` is drawn per replica,
    so `fit` under any `tf.distribute` strategy matches one device.

    With a learned `prior` (`zoo.vae.vae_priors`), the same step also fits
    the prior to that step's codes `z ~ q(z|x)` (gradients stopped at `z`,
    its own `prior_optimizer`), and sampling goes noise -> prior -> decoder:
    `generate(noise)`, `sample` and `serving_default` draw where the decoder
    learned, while `decode(z)` decodes codes (reconstruction, attribute
    vectors, interpolation). The first stage still trains against N(0, I),
    so `iwae_nll` keeps its meaning.

    Image ranges: what `make_dataset` yields, [-1, 1], goes into `fit`,
    `evaluate`, `call` and `iwae_nll`; the networks, `generate`,
    `reconstruct` and the exported signatures use [0, 1].

    Args:
        latent_dim: size of the latent vector `z`.
        image_size: side of the square images, a power of two >= 8.
        channels: image channels (1 or 3).
        base_filters: width of the networks (see `vae_networks`).
        beta: weight of the KL term; 1 is the plain VAE.
        likelihood: "bernoulli" (binary cross-entropy on [0, 1] pixels) or
            "gaussian" (squared error with fixed `gaussian_sigma`).
        gaussian_sigma: pixel standard deviation of the Gaussian likelihood,
            on the [0, 1] scale.
        kl_warmup_steps: the KL weight ramps linearly from 0 to `beta` over
            this many steps; 0 disables the warm-up.
        prior: the sampling prior, one of `vae_priors.PRIORS`: "normal" (N(0, I)),
            "flow" (a RealNVP flow) or "two_stage" (Dai & Wipf's second VAE).
        decoder_blocks: residual blocks per decoder resolution (see
            `build_decoder`).
        decoder_head_filters: channels of a hidden decoder layer at full
            resolution (`build_decoder`'s `head_filters`); 0 for none.
        seed: base seed of the training noise.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = zoo.VAE.from_preset("vae_tiny", load_weights=False)
    model.compile()  # Adam(1e-3)
    model.fit(zoo.data.make_dataset("fashion_mnist", 32, 1, 64), epochs=1)
    model.evaluate(zoo.data.make_dataset("fashion_mnist:test", 32, 1, 100))  # neg_elbo in nats
    images = model.generate(model.sample_latents(16))  # [16, 32, 32, 1] in [0, 1]
    codes = model.encoder(images)["z_mean"]
    recon = model.decode(codes)  # decode codes; generate() takes prior noise
    ```
    """

    presets = VAE_PRESETS
    # Images decoded per pass in `iwae_nll`, to bound memory for large k.
    IWAE_IMAGES_PER_PASS = 4096

    def __init__(
        self,
        latent_dim=32,
        image_size=32,
        channels=1,
        base_filters=32,
        beta=1.0,
        likelihood="bernoulli",
        gaussian_sigma=0.1,
        kl_warmup_steps=0,
        prior="normal",
        decoder_blocks=0,
        decoder_head_filters=0,
        seed=0,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if gaussian_sigma <= 0:
            raise ValueError(f"gaussian_sigma must be > 0, got {gaussian_sigma}")
        if beta < 0 or kl_warmup_steps < 0:
            raise ValueError(f"beta and kl_warmup_steps must be >= 0, got {beta}, {kl_warmup_steps}")
        if decoder_blocks < 0 or decoder_head_filters < 0:
            raise ValueError(f"decoder_blocks and decoder_head_filters must be >= 0, got {decoder_blocks}, "
                             f"{decoder_head_filters}")
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.base_filters = int(base_filters)
        self.beta = float(beta)
        self.likelihood = likelihood
        self.gaussian_sigma = float(gaussian_sigma)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.prior_kind = prior
        self.decoder_blocks = int(decoder_blocks)
        self.decoder_head_filters = int(decoder_head_filters)
        self.encoder = build_encoder(latent_dim, image_size, channels, base_filters)
        self.decoder = build_decoder(
            latent_dim, image_size, channels, base_filters,
            output="logits" if likelihood == "bernoulli" else "mean", residual_blocks=self.decoder_blocks,
            head_filters=self.decoder_head_filters,
        )
        self.prior = build_prior(prior, self.latent_dim)  # None for "normal"
        self._first_stage = _Networks(self.encoder, self.decoder)
        # float32 whatever the policy: float16 `z` would blur log q(z|x) in `iwae_nll`.
        self.sampling = Sampling(name="sampling", dtype="float32")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")
        # The prior's loss on the step's codes: -log p(z) (flow), the second stage's -ELBO (two-stage).
        self.prior_tracker = keras.metrics.Mean(name="prior_loss") if self.prior is not None else None
        self.built = True

    @property
    def metrics(self):
        # Our own `loss` tracker; compile() gets no loss, so Keras adds none
        # that would shadow it (KERAS_PITFALLS item 8b).
        trackers = [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker, self.neg_elbo_tracker]
        return trackers + ([self.prior_tracker] if self.prior is not None else [])

    def optimizer_targets(self):
        # Encoder + decoder share one optimizer; a learned prior has its own
        # (its loss never reaches the first stage: the codes are constants to it).
        targets = {"vae_optimizer": self._first_stage}
        if self.prior is not None:
            targets["prior_optimizer"] = self.prior
        return targets

    def default_optimizers(self):
        optimizers = {"vae_optimizer": keras.optimizers.Adam(1e-3, name="vae_optimizer")}
        if self.prior is not None:
            optimizers["prior_optimizer"] = keras.optimizers.Adam(1e-3, name="prior_optimizer")
        return optimizers

    # ---- inference ------------------------------------------------------------
    def _decoded_mean(self, out):
        """Decoder output -> float32 mean image in [0, 1]."""
        out = tf.cast(out, tf.float32)
        return tf.sigmoid(out) if self.likelihood == "bernoulli" else out

    def call(self, images, training=False):
        """Dataset images `[N, H, W, C]` in [-1, 1] -> reconstructions in [-1, 1].

        Decodes the posterior mean, so the result is deterministic.
        """
        stats = self.encoder(to_unit_range(images), training=training)
        return self._decoded_mean(self.decoder(stats["z_mean"], training=training)) * 2.0 - 1.0

    def generate(self, z):
        """Prior noise `z` `[N, L]` (N(0, I)) -> images in [0, 1]: the decoded prior draws."""
        return self.decode(z if self.prior is None else self.prior(z))

    def decode(self, z):
        """Codes `z` `[N, L]` (the encoder's space) -> decoded mean images in [0, 1], float32."""
        return self._decoded_mean(self.decoder(z, training=False))

    def reconstruct(self, images):
        """Images in [0, 1] -> decoded posterior means in [0, 1], float32."""
        return self.decode(self.encoder(images, training=False)["z_mean"])

    # ---- losses -----------------------------------------------------------------
    def _reconstruction_nll(self, targets, out):
        if self.likelihood == "bernoulli":
            return bernoulli_nll(targets, out)
        return gaussian_nll(targets, out, self.gaussian_sigma)

    def _loss_terms(self, images01, eps, training):
        """Per-example reconstruction NLL and KL `([N], [N])` and the codes `z` `[N, L]` for noise `eps`."""
        stats = self.encoder(images01, training=training)
        z = self.sampling([stats["z_mean"], stats["z_log_var"], eps])
        out = self.decoder(z, training=training)
        return (
            self._reconstruction_nll(images01, out),
            gaussian_kl(stats["z_mean"], stats["z_log_var"]),
            z,
        )

    def kl_weight(self, step):
        """The KL weight at training step `step`: `beta`, ramped up during warm-up."""
        if not self.kl_warmup_steps:
            return tf.constant(self.beta, tf.float32)
        ramp = tf.minimum(1.0, tf.cast(step, tf.float32) / self.kl_warmup_steps)
        return self.beta * ramp

    def _update_trackers(self, recon, kl, weight):
        # Per-example values: each Mean counts images, so a short last batch
        # and unequal replicas are weighted right; Keras sums replicas' states.
        self.loss_tracker.update_state(recon + weight * kl)
        self.reconstruction_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        self.neg_elbo_tracker.update_state(recon + kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images = to_unit_range(data[0] if isinstance(data, (tuple, list)) else data)
        batch = base.batch_size_of(images)
        # Read once: `iterations` changes when the first stage's update is applied below.
        step = tf.convert_to_tensor(self.vae_optimizer.iterations)
        eps = base.replica_normal(batch, self.latent_shape, self.noise_seed(step, 0))
        weight = self.kl_weight(step)
        with tf.GradientTape() as tape:
            recon, kl, z = self._loss_terms(images, eps, training=True)
            loss = base.global_mean(recon + weight * kl)
        self.apply_loss(self.vae_optimizer, tape, loss, self._first_stage)
        if self.prior is not None:
            # Codes of the weights before this step's update: the prior follows q(z|x) one step behind.
            prior_eps = base.replica_normal(batch, self.latent_shape, self.noise_seed(step, 2))
            with tf.GradientTape() as tape:
                prior_loss = self.prior.loss(tf.stop_gradient(z), prior_eps)
                loss = base.global_mean(prior_loss)
            self.apply_loss(self.prior_optimizer, tape, loss, self.prior)
            self.prior_tracker.update_state(prior_loss)
        return self._update_trackers(recon, kl, weight)

    def test_step(self, data):
        """Logs `neg_elbo`, the negative ELBO in nats per image (one `eps` draw)."""
        images = to_unit_range(data[0] if isinstance(data, (tuple, list)) else data)
        batch = base.batch_size_of(images)
        step = self.vae_optimizer.iterations
        # A stream training never uses: evaluation is repeatable for given weights.
        eps = base.replica_normal(batch, self.latent_shape, self.noise_seed(step, 1))
        recon, kl, z = self._loss_terms(images, eps, training=False)
        if self.prior is not None:
            prior_eps = base.replica_normal(batch, self.latent_shape, self.noise_seed(step, 3))
            self.prior_tracker.update_state(self.prior.loss(z, prior_eps))
        return self._update_trackers(recon, kl, self.kl_weight(step))

    def iwae_nll(self, images, k=64, seed=0, prior="normal"):
        """Importance-weighted estimate of `-log p(x)` (Burda et al. 2016), nats per image.

        `-log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)` with `z_i ~ q(z|x)`. It
        is an upper bound of the true NLL that tightens as `k` grows; `k=1`
        is a one-sample estimate of the negative ELBO.

        Args:
            images: `[N, H, W, C]` in [-1, 1], as `make_dataset` yields.
            k: importance samples per image.
            seed: integer seed of the samples.
            prior: "normal" scores `p(z)` with N(0, I), the prior the first
                stage trains against; "learned" with the model's flow prior
                (exact density; a two-stage prior has none).

        Returns:
            `[N]` float32.

        Example:

        ```python
        images = next(iter(zoo.data.make_dataset("fashion_mnist:test", 32, 1, 100)))
        nll = tf.reduce_mean(model.iwae_nll(images, k=1000))
        ```
        """
        if prior not in ("normal", "learned"):
            raise ValueError(f"prior must be 'normal' or 'learned', got {prior!r}")
        if prior == "learned" and not hasattr(self.prior, "log_prob"):
            raise ValueError(f"prior='learned' needs a prior with a density (flow); this VAE's is {self.prior_kind!r}")
        log_prior = self.prior.log_prob if prior == "learned" else log_normal
        images = to_unit_range(images)
        batch = int(images.shape[0])
        stats = self.encoder(images, training=False)
        eps = base.stateless_normal([batch, k, self.latent_dim], seed=[seed, 0])
        per_pass = max(1, self.IWAE_IMAGES_PER_PASS // batch)
        log_w = [
            self._log_weights(images, stats["z_mean"], stats["z_log_var"], eps[:, i : i + per_pass], log_prior)
            for i in range(0, k, per_pass)
        ]
        log_w = tf.concat(log_w, axis=1)  # [N, k]
        return -(tf.reduce_logsumexp(log_w, axis=1) - math.log(k))

    def _log_weights(self, images01, z_mean, z_log_var, eps, log_prior):
        """`log p(x|z) + log p(z) - log q(z|x)` `[N, n]` for noise `eps` `[N, n, L]`."""
        n = eps.shape[1]
        z_mean, z_log_var = z_mean[:, None], z_log_var[:, None]  # [N, 1, L]
        z = self.sampling([z_mean, z_log_var, eps])  # [N, n, L]
        out = self.decoder(tf.reshape(z, [-1, self.latent_dim]), training=False)  # [N * n, H, W, C]
        targets = tf.repeat(images01, n, axis=0)  # [N * n, H, W, C], image-major like `out`
        log_px = -tf.reshape(self._reconstruction_nll(targets, out), [-1, n])  # [N, n]
        log_pz = tf.reshape(log_prior(tf.reshape(z, [-1, self.latent_dim])), [-1, n])  # [N, n]
        return log_px + log_pz - log_normal(z, z_mean, z_log_var)

    # ---- export -------------------------------------------------------------
    def tflite_signatures(self):
        # `serving_default` samples (noise -> prior -> decoder); `encode` and `decode` are the codes' round trip.
        return ("serving_default", "decode", "encode")

    def export_networks(self):
        return [self.encoder, self.decoder] + ([self.prior] if self.prior is not None else [])

    def serving_model(self):
        """Noise `z` -> `{"images"}` in [0, 1]: prior, decoder and `_decoded_mean` as Keras ops."""
        z = keras.Input(self.latent_shape, name="z")
        codes = z if self.prior is None else self.prior(z)
        out = keras.ops.cast(self.decoder(codes), "float32")  # Bernoulli logits or Gaussian mean
        images = keras.ops.sigmoid(out) if self.likelihood == "bernoulli" else out
        return keras.Model(z, {"images": images}, name=f"{self.name}_serving")

    def export_endpoints(self):
        latent = self.latent_dim
        images_spec = tf.TensorSpec([None, *self.image_shape], tf.float32, name="images")
        z_spec = tf.TensorSpec([None, latent], tf.float32, name="z")

        def generate(z):
            return {"images": self.generate(base.finite_latents(z))}

        def decode(z):
            return {"images": self.decode(base.finite_latents(z))}

        def encode(images):
            stats = self.encoder(images, training=False)
            return {"z_mean": stats["z_mean"], "z_log_var": stats["z_log_var"]}

        def reconstruct(images):
            return {"images": self.reconstruct(images)}

        return {
            "serving_default": (generate, [z_spec]),
            "decode": (decode, [z_spec]),
            "encode": (encode, [images_spec]),
            "reconstruct": (reconstruct, [images_spec]),
            "sample": self.sample_endpoint(),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "image_size": self.image_size,
            "channels": self.channels,
            "base_filters": self.base_filters,
            "beta": self.beta,
            "likelihood": self.likelihood,
            "gaussian_sigma": self.gaussian_sigma,
            "kl_warmup_steps": self.kl_warmup_steps,
            "prior": self.prior_kind,
            "decoder_blocks": self.decoder_blocks,
            "decoder_head_filters": self.decoder_head_filters,
        }
