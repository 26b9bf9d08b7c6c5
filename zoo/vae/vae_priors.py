"""Learned priors over the VAE's latent codes: noise `[N, L]` -> codes `[N, L]`.

A VAE trained with the N(0, I) prior leaves holes: the aggregate posterior
(the codes of the training images) does not fill N(0, I), and prior draws
that land in a hole decode to blurs or to no class at all. A learned prior
is fitted to the codes `z ~ q(z|x)` of the training images (the first
stage's gradients are stopped) and maps N(0, I) noise into them, so
`generate(noise) = decoder(prior(noise))` samples where the decoder learned.

* `FlowPrior`: a RealNVP flow (Dinh et al. 2017), affine couplings with
  tanh-bounded scales. Exact log-density, so the VAE's NLL under it is
  tractable (`VAE.iwae_nll(prior="learned")`).
* `TwoStagePrior`: the second VAE of Dai & Wipf 2019 ("Diagnosing and
  enhancing VAE models"), an MLP VAE of the codes with a learned
  observation variance gamma; sampling decodes the mean.

Both compute in float32 under any policy (log-determinants and small
variances need the range), use only ops LiteRT has as builtins (dense,
ReLU, tanh, exp, slicing, concatenation) and draw nothing themselves: every
random number comes in as an input, so an exported sampler is a pure
function of its noise.
"""

import math

import keras
from keras import layers, ops

PRIORS = ("normal", "flow", "two_stage")


def _mlp(inputs, units, depth, outputs, name, zero_last=False):
    """`depth` ReLU layers of `units`, then a linear layer of `outputs` (zeros when `zero_last`), built."""
    hidden = [layers.Dense(units, activation="relu", dtype="float32", name=f"{name}_{i}") for i in range(depth)]
    last = layers.Dense(outputs, dtype="float32", name=f"{name}_out",
                        kernel_initializer="zeros" if zero_last else "glorot_uniform")
    mlp = keras.Sequential([*hidden, last], name=name)
    mlp.build((None, inputs))
    return mlp


@keras.saving.register_keras_serializable(package="zoo")
class FlowPrior(layers.Layer):
    """RealNVP prior: `call(noise)` samples codes, `log_prob(z)` is their exact log-density.

    Each coupling keeps the first `d = L // 2` coordinates `a` and maps the
    rest `b -> b * exp(s(a)) + t(a)` (`s = tanh(.)`, so a step scales by at
    most e), then moves `a` to the back so the next coupling transforms it.
    A per-dimension affine map ends the sampling direction. The last layer
    of every coupling network starts at zero: the untrained flow is the
    identity and the untrained prior is N(0, I).

    Args:
        latent_dim: size of the codes, >= 2.
        num_layers: affine couplings.
        units: width of each coupling's MLP.
        depth: hidden layers of each coupling's MLP.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    ```python
    prior = FlowPrior(32)
    z = prior(keras.random.normal([16, 32]))  # [16, 32] codes
    log_p = prior.log_prob(z)  # [16] nats
    ```
    """

    def __init__(self, latent_dim, num_layers=6, units=256, depth=2, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        if latent_dim < 2:
            raise ValueError(f"a flow prior needs latent_dim >= 2, got {latent_dim}")
        self.latent_dim, self.num_layers, self.units, self.depth = int(latent_dim), int(num_layers), int(units), int(depth)
        self.split = self.latent_dim // 2
        rest = self.latent_dim - self.split
        self.couplings = [_mlp(self.split, self.units, self.depth, 2 * rest, f"coupling{i}", zero_last=True)
                          for i in range(self.num_layers)]

    def build(self, input_shape):
        self.log_scale = self.add_weight((self.latent_dim,), initializer="zeros", name="log_scale")
        self.shift = self.add_weight((self.latent_dim,), initializer="zeros", name="shift")
        super().build(input_shape)

    def _scale_shift(self, stack, a):
        s, t = ops.split(stack(a), 2, axis=-1)
        return ops.tanh(s), t

    def call(self, noise):
        x = ops.cast(noise, "float32")  # [N, L]
        for stack in self.couplings:
            a, b = x[:, : self.split], x[:, self.split :]
            s, t = self._scale_shift(stack, a)
            x = ops.concatenate([b * ops.exp(s) + t, a], axis=-1)
        return x * ops.exp(self.log_scale) + self.shift

    def log_prob(self, z):
        """`log p(z)` `[N]` in nats: N(0, I) at the inverted flow plus the log-determinants."""
        x = (ops.cast(z, "float32") - self.shift) * ops.exp(-self.log_scale)
        log_det = -ops.sum(self.log_scale) * ops.ones_like(x[:, 0])  # [N]
        rest = self.latent_dim - self.split
        for stack in reversed(self.couplings):
            b, a = x[:, :rest], x[:, rest:]
            s, t = self._scale_shift(stack, a)
            x = ops.concatenate([a, (b - t) * ops.exp(-s)], axis=-1)
            log_det = log_det - ops.sum(s, axis=-1)
        log_normal = -0.5 * ops.sum(ops.square(x) + math.log(2.0 * math.pi), axis=-1)
        return log_normal + log_det

    def loss(self, z, eps=None):
        """Per-example training loss `[N]`: `-log p(z)`. `eps` is unused (the flow draws nothing)."""
        del eps
        return -self.log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "num_layers": self.num_layers,
                "units": self.units, "depth": self.depth}


@keras.saving.register_keras_serializable(package="zoo")
class TwoStagePrior(layers.Layer):
    """Second-stage VAE (Dai & Wipf 2019): `call(noise)` decodes noise `u` to the code mean.

    Its encoder maps a code `z` to q(u|z) (diagonal Gaussian), its decoder
    maps `u` to the mean of p(z|u) = N(mean, gamma I) with one learned
    `gamma`; training minimizes that VAE's negative ELBO of the codes. As
    gamma shrinks the decoder becomes sharp, and sampling returns the mean.

    Args:
        latent_dim: size of the codes (and of `u`).
        units: width of both MLPs.
        depth: hidden layers of each MLP.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    ```python
    prior = TwoStagePrior(32)
    z = prior(keras.random.normal([16, 32]))  # [16, 32] codes
    loss = prior.loss(z, keras.random.normal([16, 32]))  # [16] nats
    ```
    """

    def __init__(self, latent_dim, units=512, depth=3, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        self.latent_dim, self.units, self.depth = int(latent_dim), int(units), int(depth)
        self.encoder = _mlp(self.latent_dim, self.units, self.depth, 2 * self.latent_dim, "stage2_encoder")
        self.decoder = _mlp(self.latent_dim, self.units, self.depth, self.latent_dim, "stage2_decoder")

    def build(self, input_shape):
        self.log_gamma = self.add_weight((), initializer="zeros", name="log_gamma")
        super().build(input_shape)

    def call(self, noise):
        return self.decoder(ops.cast(noise, "float32"))

    def loss(self, z, eps):
        """Per-example negative ELBO `[N]` of codes `z` `[N, L]` for noise `eps` `[N, L]`, nats."""
        z = ops.cast(z, "float32")
        u_mean, u_log_var = ops.split(self.encoder(z), 2, axis=-1)
        u = u_mean + eps * ops.exp(0.5 * u_log_var)
        z_mean = self.decoder(u)
        nll = 0.5 * ops.sum(ops.square(z - z_mean) * ops.exp(-self.log_gamma)
                            + self.log_gamma + math.log(2.0 * math.pi), axis=-1)
        kl = -0.5 * ops.sum(1.0 + u_log_var - ops.square(u_mean) - ops.exp(u_log_var), axis=-1)
        return nll + kl

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "units": self.units, "depth": self.depth}


def build_prior(kind, latent_dim, name="prior"):
    """The prior layer for `kind` in `PRIORS`; None for "normal" (N(0, I) needs no weights)."""
    if kind not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {kind!r}")
    if kind == "normal":
        return None
    cls = FlowPrior if kind == "flow" else TwoStagePrior
    prior = cls(latent_dim, name=name)
    prior.build((None, latent_dim))
    return prior
