"""StyleGAN2 mapping, synthesis ("skip" generator) and "resnet" discriminator.

Config F of Karras et al. 2020 as laid out in NVIDIA's stylegan2-ada-pytorch
(`training/networks.py`): channels at resolution `r` are
`min(channel_base // r, channel_max)`; the generator starts from a learned
4x4 constant, has two modulated convolutions per resolution (one at 4x4)
and sums upsampled ToRGB outputs; the discriminator has residual blocks
and a minibatch-stddev epilogue.

All three are subclassed `keras.Model`s built in their constructor, so
their variables exist right away (optimizers can be built on them) and
`from_config` + `set_weights` reproduces a network.
"""

import math

import keras
import numpy as np
from keras import ops

from zoo.stylegan2.stylegan2_layers import (
    EqualizedConv2D,
    EqualizedDense,
    MinibatchStddev,
    SynthesisLayer,
    ToRGB,
    Upsample2D,
)


def _log2_resolution(image_size):
    log2 = math.log2(image_size)
    if image_size < 4 or log2 != int(log2):
        raise ValueError(f"image_size must be a power of two >= 4, got {image_size}")
    return int(log2)


def _channels(resolution, channel_base, channel_max):
    return min(channel_base // resolution, channel_max)


@keras.saving.register_keras_serializable(package="zoo")
class MappingNetwork(keras.Model):
    """z -> w: 2nd-moment normalization, then `num_layers` lrelu EqualizedDense.

    Also tracks `w_avg`, the moving average of w used for truncation: a
    non-trainable float32 variable with `only_first_replica` aggregation,
    so a replicated `train_step` can assign it (with the same value on
    every replica, e.g. a cross-replica mean).

    Args:
        latent_dim: size of z.
        w_dim: size of w (and of the hidden layers).
        num_layers: dense layers.
        lr_multiplier: learning-rate multiplier of the dense layers.
        w_avg_beta: decay of `w_avg` in `update_w_avg`.
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:

    ```python
    mapping = MappingNetwork(latent_dim=64, w_dim=64, num_layers=2)
    w = mapping(tf.random.normal((8, 64)))  # [8, 64] float32
    mapping.update_w_avg(tf.reduce_mean(w, axis=0))
    w_trunc = mapping.truncate(w, 0.7)
    ```
    """

    def __init__(self, latent_dim=512, w_dim=512, num_layers=8, lr_multiplier=0.01,
                 w_avg_beta=0.995, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.w_dim = int(w_dim)
        self.num_layers = int(num_layers)
        self.lr_multiplier = float(lr_multiplier)
        self.w_avg_beta = float(w_avg_beta)
        self.dense_layers = [
            EqualizedDense(self.w_dim, lr_multiplier=self.lr_multiplier, activation="lrelu",
                           dtype=self.dtype_policy, name=f"fc{i}")
            for i in range(self.num_layers)
        ]
        self.build((None, self.latent_dim))

    def build(self, input_shape):
        features = self.latent_dim
        for layer in self.dense_layers:
            layer.build((None, features))
            features = self.w_dim
        self.w_avg = self.add_weight(
            name="w_avg", shape=(self.w_dim,), initializer="zeros", trainable=False,
            aggregation="only_first_replica", autocast=False,
        )

    def call(self, z, training=False):
        """`z` `[N, latent_dim]` -> `w` `[N, w_dim]` float32."""
        z = ops.cast(z, "float32")
        x = z * ops.rsqrt(ops.mean(ops.square(z), axis=1, keepdims=True) + 1e-8)
        for layer in self.dense_layers:
            x = layer(x)
        return ops.cast(x, "float32")

    def truncate(self, w, psi):
        """`w_avg + psi * (w - w_avg)` for `w` `[..., w_dim]` (float32).

        Args:
            w: `[N, w_dim]` or `[N, num_ws, w_dim]`.
            psi: float or scalar tensor; 1 returns `w`, 0 returns `w_avg`.
        """
        psi = ops.cast(psi, "float32")
        # As a lerp, exact at both ends: psi = 1 gives w, psi = 0 gives w_avg.
        return ops.convert_to_tensor(self.w_avg) * (1.0 - psi) + ops.cast(w, "float32") * psi

    def update_w_avg(self, batch_mean_w):
        """`w_avg <- beta * w_avg + (1 - beta) * batch_mean_w` (`[w_dim]`)."""
        beta = self.w_avg_beta
        self.w_avg.assign(beta * self.w_avg + (1.0 - beta) * ops.cast(batch_mean_w, "float32"))

    def get_config(self):
        return {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "latent_dim": self.latent_dim,
            "w_dim": self.w_dim,
            "num_layers": self.num_layers,
            "lr_multiplier": self.lr_multiplier,
            "w_avg_beta": self.w_avg_beta,
        }


@keras.saving.register_keras_serializable(package="zoo")
class SynthesisNetwork(keras.Model):
    """ws -> images, StyleGAN2's "skip" generator.

    Block 4: const -> SynthesisLayer -> ToRGB. Blocks 8..image_size:
    SynthesisLayer(up) -> SynthesisLayer -> ToRGB, with
    `img = upsample_2d(img) + torgb(x)` (in float32). Layer `i` uses `ws[:, i]`
    and a block's ToRGB uses the index of the next block's first layer,
    so `num_ws = 2 * log2(image_size) - 2`.

    Noise (`call(..., noise=...)`):

    * `None`: the fixed per-layer buffers (non-trainable `[1, H, W, 1]`
      variables drawn from `noise_seed`), the same for every sample:
      deterministic, for export.
    * a list of `[N, H, W, 1]` tensors, one per `noise_shapes` entry, e.g.
      drawn per replica in training.
    * `"none"`: no noise.

    Args:
        image_size: output side, a power of two >= 4.
        channels: image channels.
        w_dim: size of w.
        channel_base: channels at resolution r are
            `min(channel_base // r, channel_max)`.
        channel_max: see `channel_base`.
        noise_seed: seed of the fixed noise buffers.
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:

    ```python
    synthesis = SynthesisNetwork(image_size=32, w_dim=32, channel_base=256, channel_max=32)
    ws = tf.random.normal((4, synthesis.num_ws, 32))
    images = synthesis(ws)  # [4, 32, 32, 1] float32, fixed noise
    noise = [tf.random.normal((4, h, w, 1)) for h, w in synthesis.noise_shapes]
    images = synthesis(ws, noise=noise)
    ```
    """

    def __init__(self, image_size=32, channels=1, w_dim=512, channel_base=16384, channel_max=512,
                 noise_seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.w_dim = int(w_dim)
        self.channel_base = int(channel_base)
        self.channel_max = int(channel_max)
        self.noise_seed = int(noise_seed)
        log2 = _log2_resolution(self.image_size)
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        policy = self.dtype_policy
        self.synthesis_layers = []  # in ws order
        self.torgb_layers = []  # one per resolution
        for res in self.resolutions:
            filters = _channels(res, self.channel_base, self.channel_max)
            if res > 4:
                self.synthesis_layers.append(
                    SynthesisLayer(filters, up=True, dtype=policy, name=f"b{res}_conv0")
                )
            self.synthesis_layers.append(SynthesisLayer(filters, dtype=policy, name=f"b{res}_conv1"))
            self.torgb_layers.append(ToRGB(self.channels, dtype=policy, name=f"b{res}_torgb"))
        self.upsample = Upsample2D(dtype="float32", name="upsample")  # the RGB skips stay float32
        self.build((None, self.num_ws, self.w_dim))

    @property
    def num_ws(self):
        """Number of w vectors `call` takes: one per SynthesisLayer, plus the last ToRGB."""
        return 2 * len(self.resolutions)

    @property
    def noise_shapes(self):
        """`(H, W)` of the noise of each SynthesisLayer, in order."""
        return [(res, res) for res in self.resolutions for _ in range(1 if res == 4 else 2)]

    def build(self, input_shape):
        w_shape = (None, self.w_dim)
        in_channels = _channels(4, self.channel_base, self.channel_max)
        self.const = self.add_weight(
            name="const", shape=(1, 4, 4, in_channels),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        rng = np.random.default_rng(self.noise_seed)
        self.noise_buffers = []
        for i, ((h, w), layer) in enumerate(zip(self.noise_shapes, self.synthesis_layers)):
            values = rng.standard_normal((1, h, w, 1)).astype("float32")
            self.noise_buffers.append(self.add_weight(
                name=f"noise_const_{i}", shape=(1, h, w, 1),
                initializer=lambda shape, dtype=None, values=values: ops.cast(values, dtype),
                trainable=False,
            ))
            in_res = h // 2 if layer.up else h
            layer.build((None, in_res, in_res, in_channels), w_shape)
            in_channels = layer.filters
        for res, torgb in zip(self.resolutions, self.torgb_layers):
            torgb.build((None, res, res, _channels(res, self.channel_base, self.channel_max)), w_shape)

    def _noise_list(self, noise):
        if noise is None:
            return list(self.noise_buffers)
        if isinstance(noise, str):
            if noise != "none":
                raise ValueError(f"noise must be None, 'none' or a list of tensors, got {noise!r}")
            return [None] * len(self.synthesis_layers)
        noise = list(noise)
        if len(noise) != len(self.synthesis_layers):
            raise ValueError(
                f"noise has {len(noise)} tensors; expected {len(self.synthesis_layers)} "
                f"with shapes [N, H, W, 1] for (H, W) in {self.noise_shapes}"
            )
        return noise

    def call(self, ws, noise=None, training=False):
        """ws `[N, num_ws, w_dim]` (or `[N, w_dim]`, used for every layer) -> `[N, H, W, C]` float32."""
        noise = self._noise_list(noise)
        if len(ws.shape) == 2:
            ws = ops.repeat(ws[:, None, :], self.num_ws, axis=1)  # [N, num_ws, w_dim]
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        # [1, 4, 4, C]: the first modulation broadcasts it to the batch.
        x = self.const
        img = None
        index = 0  # of the next SynthesisLayer, = its ws index
        for res, torgb in zip(self.resolutions, self.torgb_layers):
            for _ in range(1 if res == 4 else 2):
                x = self.synthesis_layers[index](x, ws[:, index], noise[index])
                index += 1
            y = ops.cast(torgb(x, ws[:, index]), "float32")
            img = y if img is None else self.upsample(img) + y
        return img

    def get_config(self):
        return {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "image_size": self.image_size,
            "channels": self.channels,
            "w_dim": self.w_dim,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "noise_seed": self.noise_seed,
        }


@keras.saving.register_keras_serializable(package="zoo")
class Discriminator(keras.Model):
    """images -> logits, StyleGAN2's "resnet" discriminator.

    fromRGB (1x1, lrelu) at the top resolution; per block (image_size..8)
    `(skip(x) + conv1(conv0(x))) * sqrt(0.5)` with conv0 3x3, conv1 3x3
    downsampling and skip 1x1 downsampling, linear, without bias; epilogue
    at 4x4: minibatch stddev, conv 3x3, flatten, dense (lrelu), dense (1).

    Args:
        image_size: input side, a power of two >= 4.
        channels: image channels.
        channel_base: channels at resolution r are
            `min(channel_base // r, channel_max)`.
        channel_max: see `channel_base`.
        mbstd_group_size: minibatch-stddev group size (must divide the
            batch size when it is larger).
        mbstd_num_channels: minibatch-stddev feature maps.
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:

    ```python
    discriminator = Discriminator(image_size=32, channel_base=256, channel_max=32)
    logits = discriminator(tf.zeros((8, 32, 32, 1)))  # [8, 1] float32
    ```
    """

    def __init__(self, image_size=32, channels=1, channel_base=16384, channel_max=512,
                 mbstd_group_size=4, mbstd_num_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.channel_base = int(channel_base)
        self.channel_max = int(channel_max)
        self.mbstd_group_size = int(mbstd_group_size)
        self.mbstd_num_channels = int(mbstd_num_channels)
        log2 = _log2_resolution(self.image_size)
        policy = self.dtype_policy

        def ch(res):
            return _channels(res, self.channel_base, self.channel_max)

        self.from_rgb = EqualizedConv2D(ch(self.image_size), 1, dtype=policy, name="fromrgb")
        # One entry per block (resolution image_size..8, top first).
        self.block_conv0, self.block_conv1, self.block_skip = [], [], []
        for res in [2**i for i in range(log2, 2, -1)]:
            self.block_conv0.append(EqualizedConv2D(ch(res), 3, dtype=policy, name=f"b{res}_conv0"))
            self.block_conv1.append(
                EqualizedConv2D(ch(res // 2), 3, down=True, dtype=policy, name=f"b{res}_conv1")
            )
            self.block_skip.append(EqualizedConv2D(
                ch(res // 2), 1, activation="linear", down=True, use_bias=False, dtype=policy,
                name=f"b{res}_skip",
            ))
        self.mbstd = MinibatchStddev(self.mbstd_group_size, self.mbstd_num_channels,
                                     dtype=policy, name="mbstd")
        self.epilogue_conv = EqualizedConv2D(ch(4), 3, dtype=policy, name="b4_conv")
        self.epilogue_fc = EqualizedDense(ch(4), activation="lrelu", dtype=policy, name="b4_fc")
        # The logit in float32 whatever the policy (KERAS_PITFALLS item 10): a
        # 1-unit layer, so it costs nothing, and the losses see no 16-bit rounding.
        self.epilogue_out = EqualizedDense(1, dtype="float32", name="b4_out")
        self.build((None, self.image_size, self.image_size, self.channels))

    def build(self, input_shape):
        res = self.image_size
        self.from_rgb.build((None, res, res, self.channels))
        for conv0, conv1, skip in zip(self.block_conv0, self.block_conv1, self.block_skip):
            features = conv0.filters
            conv0.build((None, res, res, features))
            conv1.build((None, res, res, features))
            skip.build((None, res, res, features))
            res //= 2
        features = self.epilogue_conv.filters
        self.epilogue_conv.build((None, 4, 4, features + self.mbstd_num_channels))
        self.epilogue_fc.build((None, 4 * 4 * features))
        self.epilogue_out.build((None, features))

    def call(self, images, training=False):
        """images `[N, H, W, C]` in [-1, 1] -> logits `[N, 1]` float32."""
        x = self.from_rgb(images)
        for conv0, conv1, skip in zip(self.block_conv0, self.block_conv1, self.block_skip):
            x = (skip(x) + conv1(conv0(x))) * math.sqrt(0.5)
        x = self.epilogue_conv(self.mbstd(x))
        x = ops.reshape(x, (-1, 4 * 4 * x.shape[-1]))  # [N, 16 C]
        x = self.epilogue_out(self.epilogue_fc(x))
        return ops.cast(x, "float32")

    def get_config(self):
        return {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "image_size": self.image_size,
            "channels": self.channels,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "mbstd_group_size": self.mbstd_group_size,
            "mbstd_num_channels": self.mbstd_num_channels,
        }
