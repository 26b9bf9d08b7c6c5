"""Adaptive discriminator augmentation (ADA) for the StyleGAN2 family.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data": every image the discriminator sees, real or generated, goes through
the same random, differentiable augmentations, each applied with
probability `p`; `p` is tuned during training from the overfitting
heuristic `r_t = E[sign(D(real))]` (`ada_adjust`).

This module provides ADA's "bgc" pipeline (pixel blitting, general geometric
and color transformations) as a Keras layer that

* compiles with XLA: every geometric op is one 3x3 inverse matrix per image,
  composed in ADA's order and executed as one bilinear resampling with
  reflect padding written as gathers (no `ImageProjectiveTransform`);
* is reproducible across devices: the random numbers come from a
  counter-based integer hash of `(seed, global row, column)`, so each replica
  computes its own rows of the table one device would draw for the global
  batch, and XLA computes the same numbers as the TF kernels (TF's stateless
  RNG does not: `base.stateless_normal`).

Deviations from ADA's `AugmentPipe`: no 2x oversampling with the `sym6`
low-pass filter around the resampling (plain bilinear, so strong rotations
and down-scalings alias a little more); reflection extends to any distance
(ADA zero-fills beyond one image size of padding); `lumaflip`, `hue`,
`saturation` are off by default (ADA's "bgc" enables them); the image
filtering, noise and cutout ops are not provided.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from zoo import base

# Column of each random draw in the per-image table of uniforms. Fixed for
# every op, enabled or not, so an op draws the same numbers whichever other
# ops are enabled. Normal draws take two columns (Box-Muller).
_COLUMNS = (
    "xflip_gate", "xflip",
    "rotate90_gate", "rotate90",
    "xint_gate", "xint_x", "xint_y",
    "scale_gate", "scale_u1", "scale_u2",
    "rotate_pre_gate", "rotate_pre",
    "aniso_gate", "aniso_u1", "aniso_u2",
    "rotate_post_gate", "rotate_post",
    "xfrac_gate", "xfrac_u1", "xfrac_u2",
    "brightness_gate", "brightness_u1", "brightness_u2",
    "contrast_gate", "contrast_u1", "contrast_u2",
    "lumaflip_gate", "lumaflip",
    "hue_gate", "hue",
    "saturation_gate", "saturation_u1", "saturation_u2",
)
_COLUMN = {name: i for i, name in enumerate(_COLUMNS)}
NUM_RANDOM_COLUMNS = len(_COLUMNS)

_GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_RGB_ONLY_OPS = ("hue", "saturation")
_STRENGTHS = (
    "xint_max", "scale_std", "rotate_max", "aniso_std", "xfrac_std",
    "brightness_std", "contrast_std", "hue_max", "saturation_std",
)

# The unit luma axis `v = (1, 1, 1) / sqrt(3)` as the projection `vv^T`
# onto it and the cross-product matrix `[v]x` (rotation generator around it).
_LUMA_PROJECTION = np.full((3, 3), 1.0 / 3.0, "float32")
_LUMA_CROSS = (
    np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / np.sqrt(3.0)
).astype("float32")


def _mix32(x):
    """`lowbias32` integer hash (C. Wellons): a bijection of uint32 with full avalanche."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _seed_keys(seed):
    """Two uint32 keys from a `[2]` integer seed (all 64 bits of each entry count)."""
    seed = tf.cast(tf.reshape(seed, [2]), tf.int64)
    low = tf.cast(seed, tf.uint32)  # int64 -> uint32 keeps the low 32 bits
    high = tf.cast(tf.bitwise.right_shift(seed, tf.constant(32, tf.int64)), tf.uint32)
    golden = tf.constant(0x9E3779B9, tf.uint32)
    key = tf.constant(0, tf.uint32)
    for word in (low[0], high[0], low[1], high[1]):
        key = _mix32(key + word + golden)
    return key, _mix32(key + golden)


def _global_rows(local_batch):
    """This replica's row numbers in the global batch, `[B_local]` int32."""
    replica_id, _ = base.replica_info()
    return replica_id * local_batch + tf.range(local_batch)


def _hash_uniform(counters, keys):
    """Uniform (0, 1) float32 of int32 `counters` under the `_seed_keys` `keys`."""
    key_a, key_b = keys
    bits = _mix32(tf.bitwise.bitwise_xor(_mix32(tf.cast(counters, tf.uint32) + key_a), key_b))
    top24 = tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32))
    return (tf.cast(top24, tf.float32) + 0.5) * (2.0**-24)


def replica_uniform(local_batch, num_columns, seed):
    """Uniform (0, 1) numbers for this replica's rows of a global-batch table.

    Entry `(r, column)` of the table is an integer hash of `seed` and the
    counter `r * num_columns + column`. A replica computes rows
    `replica_id * local_batch + [0, local_batch)`, exactly the rows it would
    keep from the table drawn for the global batch, so N replicas together
    see what one device sees. The hash is plain uint32 arithmetic, so XLA and
    the TF kernels compute the same bits.

    Args:
        local_batch: this replica's batch size (Python int or scalar tensor).
        num_columns: numbers per row, a Python int.
        seed: `[2]` integer tensor.

    Returns:
        float32 tensor `[local_batch, num_columns]`, values in (0, 1), each
        a multiple of 2^-24 plus 2^-25.

    Example:

    ```python
    u = replica_uniform(8, 3, tf.constant([0, 1]))  # [8, 3]
    ```
    """
    counters = (
        _global_rows(local_batch)[:, None] * num_columns + tf.range(num_columns)
    )  # [B_local, num_columns]
    return _hash_uniform(counters, _seed_keys(seed))


def _normal(u1, u2):
    """Standard normal from two uniforms (Box-Muller, cosine branch)."""
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * math.pi * u2)


def _exp2(x):
    return tf.pow(2.0, x)


# A 2D affine map is 6 per-image `[N]` tensors `(a, b, c, d, e, f)`, the
# rows `[[a, b, c], [d, e, f]]`: composed elementwise (no per-op [N, 3, 3]
# stacks and batched matmuls), and an identity factor (cos 1, sin 0, scale
# 1, shift 0) leaves the map exactly unchanged.
def _then_scale(g, sx, sy):
    """`g @ diag(sx, sy, 1)`."""
    a, b, c, d, e, f = g
    return a * sx, b * sy, c, d * sx, e * sy, f


def _then_rotate(g, cos, sin):
    """`g @ [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]`."""
    a, b, c, d, e, f = g
    return a * cos + b * sin, b * cos - a * sin, c, d * cos + e * sin, e * cos - d * sin, f


def _then_translate(g, tx, ty):
    """`g @ [[1, 0, tx], [0, 1, ty], [0, 0, 1]]`."""
    a, b, c, d, e, f = g
    return a, b, a * tx + b * ty + c, d, e, d * tx + e * ty + f


def _reflect(index, size):
    """Reflects integer indices into `[0, size)` ("reflect" padding: -1 -> 1), at any distance."""
    period = max(2 * (size - 1), 1)
    index = tf.math.floormod(index, period)
    return tf.where(index >= size, period - index, index)


def warp_images(images, matrices):
    """Bilinear resampling of each image by its inverse affine matrix, reflect-padded.

    Coordinates are in pixels with the origin at the image center: output
    pixel `(x, y)` (column, row) is read from input position
    `matrices[n] @ (x - cx, y - cy, 1) + (cx, cy)`, `cx = (W - 1) / 2`,
    `cy = (H - 1) / 2`, as ADA's `G_inv`. Outside the image the input is
    mirrored without repeating the edge pixel. An identity matrix and
    integer translations/flips/quarter turns read exact pixels.

    Args:
        images: float32 `[N, H, W, C]`.
        matrices: float32 `[N, 3, 3]` (or `[N, 2, 3]`): output -> input.

    Returns:
        float32 `[N, H, W, C]`, differentiable w.r.t. `images`.

    Example:

    ```python
    flip = tf.constant([[[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]]])
    mirrored = warp_images(images[:1], flip)  # == images[:1, :, ::-1]
    ```
    """
    n = base.batch_size_of(images)
    h, w, c = images.shape[1:]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    grid = tf.constant(
        np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)]), tf.float32
    )  # [3, H*W]
    source = tf.einsum("nij,jk->nik", tf.cast(matrices[:, :2, :], tf.float32), grid)  # [N, 2, H*W]
    sx = source[:, 0] + cx  # [N, H*W]
    sy = source[:, 1] + cy
    x0 = tf.floor(sx)
    y0 = tf.floor(sy)
    fx = (sx - x0)[..., None]  # [N, H*W, 1]
    fy = (sy - y0)[..., None]
    x0 = tf.cast(x0, tf.int32)
    y0 = tf.cast(y0, tf.int32)
    xs = tf.stack([_reflect(x0, w), _reflect(x0 + 1, w)])  # [2, N, H*W]
    ys = tf.stack([_reflect(y0, h), _reflect(y0 + 1, h)])  # [2, N, H*W]
    # One gather from the flattened batch: much faster under XLA than
    # per-image gathers (`batch_dims=1`).
    first_pixel = (tf.range(n) * (h * w))[:, None]  # [N, 1]
    index = ys[:, None] * w + xs[None] + first_pixel  # [2 (y), 2 (x), N, H*W]
    corners = tf.gather(tf.reshape(images, [n * h * w, c]), index)  # [2, 2, N, H*W, C]
    top = corners[0, 0] * (1.0 - fx) + corners[0, 1] * fx
    bottom = corners[1, 0] * (1.0 - fx) + corners[1, 1] * fx
    out = top * (1.0 - fy) + bottom * fy  # [N, H*W, C]
    return tf.reshape(out, [n, h, w, c])  # [N, H, W, C]


def apply_color(images, matrices):
    """Applies a homogeneous 4x4 color matrix per image, as ADA does.

    RGB: `rgb' = C[:3, :3] @ rgb + C[:3, 3]`. One channel: the gray value is
    treated as `(l, l, l)` and the output rows are averaged, so
    `l' = l * mean_i(sum_j C[i, j]) + mean_i(C[i, 3])`.

    Args:
        images: float32 `[N, H, W, C]`, C = 1 or 3.
        matrices: float32 `[N, 4, 4]`.

    Returns:
        float32 `[N, H, W, C]`.

    Example:

    ```python
    brighter = apply_color(images, tf.constant([[[1.0, 0, 0, 0.1], [0, 1, 0, 0.1],
                                                 [0, 0, 1, 0.1], [0, 0, 0, 1]]]))
    ```
    """
    matrices = tf.cast(matrices, tf.float32)
    offset = matrices[:, None, None, :3, 3]  # [N, 1, 1, 3]
    if images.shape[-1] == 3:
        return tf.einsum("nij,nhwj->nhwi", matrices[:, :3, :3], images) + offset
    gain = tf.reduce_mean(tf.reduce_sum(matrices[:, :3, :3], axis=2), axis=1)  # [N]
    return images * gain[:, None, None, None] + tf.reduce_mean(offset, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="zoo")
class AdaptiveAugment(keras.layers.Layer):
    """ADA's differentiable "bgc" augmentation pipeline as a stateless layer.

    Each op is applied to each image independently with probability
    `multiplier * p` (the two optional rotations each with
    `1 - sqrt(1 - rotate * p)`, so that at least one happens with
    probability `rotate * p`), in ADA's order: x-flip, quarter turns,
    integer translation, isotropic scaling, rotation, anisotropic scaling,
    rotation, fractional translation (one resampling for all), then
    brightness, contrast, luma flip, hue rotation, saturation (one color
    matrix). Hue and saturation need RGB and are skipped for one-channel
    images (for gray they would be identities anyway).

    Keras does not autocast its inputs (`p` keeps float32 precision): it
    computes in float32 and returns the dtype of `images` (float16 in, float16
    out under `mixed_float16`). With `p = 0` it returns its input exactly.

    Args:
        xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness,
            contrast, lumaflip, hue, saturation: probability multipliers of
            the ops (0 disables an op).
        xint_max: range of integer translation, relative to image size.
        scale_std: log2 standard deviation of isotropic scaling.
        rotate_max: range of rotation, 1 = full circle.
        aniso_std: log2 standard deviation of anisotropic scaling.
        xfrac_std: standard deviation of fractional translation, relative
            to image size.
        brightness_std: standard deviation of the added brightness.
        contrast_std: log2 standard deviation of the contrast factor.
        hue_max: range of hue rotation, 1 = full circle.
        saturation_std: log2 standard deviation of saturation.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        images: `[N, H, W, C]` in [-1, 1], C = 1 or 3, static H, W, C.
        p: scalar float, the augmentation probability.
        seed: `[2]` integer tensor, the stateless seed. Under a
            `tf.distribute` strategy pass the same seed on every replica:
            each replica augments its own rows of the global batch.

    Example:

    ```python
    augment = AdaptiveAugment()
    seed = model.noise_seed(step, stream=3)
    logits_real = discriminator(augment(reals, ada_p, seed))
    ```
    """

    def __init__(
        self,
        xflip=1.0, rotate90=1.0, xint=1.0, scale=1.0, rotate=1.0, aniso=1.0, xfrac=1.0,
        brightness=1.0, contrast=1.0, lumaflip=0.0, hue=0.0, saturation=0.0,
        xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
        brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # keep p in float32 and images in their dtype
        super().__init__(**kwargs)
        values = dict(locals())  # the arguments, by name
        self.multipliers = {op: float(values[op]) for op in _GEOMETRIC_OPS + _COLOR_OPS}
        self.strengths = {name: float(values[name]) for name in _STRENGTHS}
        negative = sorted(k for k, v in self.multipliers.items() if v < 0)
        if negative:
            raise ValueError(f"probability multipliers must be >= 0, got negative {negative}")
        self.built = True

    def _enabled(self, op, rgb=True):
        return self.multipliers[op] > 0 and (rgb or op not in _RGB_ONLY_OPS)

    def sample_transforms(self, batch_size, image_shape, p, seed):
        """This replica's per-image transforms for probability `p` and `seed`.

        Args:
            batch_size: this replica's batch size (Python int or scalar tensor).
            image_shape: `(H, W, C)`; translations are in pixels, and hue and
                saturation are drawn only for C = 3.
            p: scalar float, the augmentation probability.
            seed: `[2]` integer tensor.

        Returns:
            `(geometry, color)`: float32 `[N, 3, 3]` inverse geometric
            matrices (output -> input, see `warp_images`) and `[N, 4, 4]`
            color matrices (see `apply_color`); an op not drawn for an image
            contributes an exact identity.

        Example:

        ```python
        geometry, color = AdaptiveAugment().sample_transforms(8, (32, 32, 1), 0.5, tf.constant([0, 1]))
        ```
        """
        h, w, channels = image_shape
        rgb = channels == 3
        p = tf.cast(p, tf.float32)
        first_counter = _global_rows(batch_size) * NUM_RANDOM_COLUMNS  # [N]
        keys = _seed_keys(seed)
        s = self.strengths

        drawn = {}

        def uniform(name):
            # Column `name` of `replica_uniform(batch_size, NUM_RANDOM_COLUMNS, seed)`,
            # hashed on its own: slicing columns out of one table took XLA 4x
            # longer to compile (seen: 1.9 s vs 0.5 s CPU for the 33 columns).
            if name not in drawn:
                drawn[name] = _hash_uniform(first_counter + _COLUMN[name], keys)
            return drawn[name]

        def gated(op, value, identity, prob=None):
            # As ADA: the op's parameter where drawn, its identity value elsewhere.
            prob = self.multipliers[op] * p if prob is None else prob
            return tf.where(uniform(f"{op}_gate") < prob, value, identity)

        def signed(name):  # uniform in (-1, 1)
            return uniform(name) * 2.0 - 1.0

        def normal(name):
            return _normal(uniform(f"{name}_u1"), uniform(f"{name}_u2"))

        one = tf.ones([batch_size])
        zero = tf.zeros([batch_size])

        # Inverse geometric transform, composed as ADA's `G_inv = G_inv @ op_inv`.
        g = (one, zero, zero, zero, one, zero)
        if self._enabled("xflip"):
            flip = gated("xflip", tf.floor(uniform("xflip") * 2.0), zero)
            g = _then_scale(g, 1.0 - 2.0 * flip, 1.0)
        if self._enabled("rotate90"):
            # Exact cos/sin of quarter turns, so blitting reads exact pixels.
            turns = tf.cast(gated("rotate90", tf.floor(uniform("rotate90") * 4.0), zero), tf.int32)
            cos = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), turns)
            sin = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), turns)
            g = _then_rotate(g, cos, sin)
        if self._enabled("xint"):
            tx = gated("xint", tf.round(signed("xint_x") * s["xint_max"] * w), zero)
            ty = gated("xint", tf.round(signed("xint_y") * s["xint_max"] * h), zero)
            g = _then_translate(g, -tx, -ty)
        if self._enabled("scale"):
            factor = gated("scale", _exp2(normal("scale") * s["scale_std"]), one)
            g = _then_scale(g, 1.0 / factor, 1.0 / factor)
        # Two optional rotations around the anisotropic scaling, each with
        # p_rot, so that at least one happens with probability rotate * p.
        p_rot = 1.0 - tf.sqrt(tf.clip_by_value(1.0 - self.multipliers["rotate"] * p, 0.0, 1.0))
        if self._enabled("rotate"):
            theta = gated("rotate_pre", signed("rotate_pre") * math.pi * s["rotate_max"], zero, p_rot)
            g = _then_rotate(g, tf.cos(theta), tf.sin(theta))
        if self._enabled("aniso"):
            factor = gated("aniso", _exp2(normal("aniso") * s["aniso_std"]), one)
            g = _then_scale(g, 1.0 / factor, factor)
        if self._enabled("rotate"):
            theta = gated("rotate_post", signed("rotate_post") * math.pi * s["rotate_max"], zero, p_rot)
            g = _then_rotate(g, tf.cos(theta), tf.sin(theta))
        if self._enabled("xfrac"):
            # Both Box-Muller branches: two independent normals.
            radius = tf.sqrt(-2.0 * tf.math.log(uniform("xfrac_u1"))) * s["xfrac_std"]
            angle = 2.0 * math.pi * uniform("xfrac_u2")
            tx = gated("xfrac", radius * tf.cos(angle) * w, zero)
            ty = gated("xfrac", radius * tf.sin(angle) * h, zero)
            g = _then_translate(g, -tx, -ty)
        geometry = tf.reshape(tf.stack([*g, zero, zero, one], axis=1), [-1, 3, 3])  # [N, 3, 3]

        # Every color op maps luma (the component along v) and chroma (the
        # rest) separately, so ADA's product `C = op @ C` reduces to a luma
        # gain, a chroma gain, a chroma rotation around v and an offset along
        # (1, 1, 1), composed in ADA's order.
        luma_gain, chroma_gain, hue, offset = one, one, zero, zero
        if self._enabled("brightness"):
            offset = gated("brightness", normal("brightness") * s["brightness_std"], zero)
        if self._enabled("contrast"):
            c = gated("contrast", _exp2(normal("contrast") * s["contrast_std"]), one)
            luma_gain, chroma_gain, offset = luma_gain * c, chroma_gain * c, offset * c
        if self._enabled("lumaflip"):
            # Householder reflection across v: negates luma.
            sign = 1.0 - 2.0 * gated("lumaflip", tf.floor(uniform("lumaflip") * 2.0), zero)
            luma_gain, offset = luma_gain * sign, offset * sign
        if self._enabled("hue", rgb):
            hue = gated("hue", signed("hue") * math.pi * s["hue_max"], zero)
        if self._enabled("saturation", rgb):
            chroma_gain *= gated("saturation", _exp2(normal("saturation") * s["saturation_std"]), one)
        cos = (chroma_gain * tf.cos(hue))[:, None, None]  # [N, 1, 1]
        sin = (chroma_gain * tf.sin(hue))[:, None, None]
        # luma_gain * P + chroma_gain * (cos (I - P) + sin [v]x), written so that
        # the identity parameters give the identity exactly.
        linear = cos * tf.eye(3) + (luma_gain[:, None, None] - cos) * _LUMA_PROJECTION + sin * _LUMA_CROSS
        offset = tf.tile(offset[:, None, None], [1, 3, 1])  # [N, 3, 1]
        bottom = tf.tile(tf.constant([[[0.0, 0.0, 0.0, 1.0]]]), [batch_size, 1, 1])  # [N, 1, 4]
        color = tf.concat([tf.concat([linear, offset], axis=2), bottom], axis=1)  # [N, 4, 4]
        return geometry, color

    def call(self, images, p, seed):
        channels = images.shape[-1]
        if channels not in (1, 3):
            raise ValueError(f"AdaptiveAugment takes 1 or 3 channels, got {channels}")
        x = tf.cast(images, tf.float32)
        geometry, color = self.sample_transforms(base.batch_size_of(x), x.shape[1:], p, seed)
        if any(self._enabled(op) for op in _GEOMETRIC_OPS):
            x = warp_images(x, geometry)
        if any(self._enabled(op, channels == 3) for op in _COLOR_OPS):
            x = apply_color(x, color)
        return tf.cast(x, images.dtype)

    def compute_output_shape(self, images_shape, p_shape=None, seed_shape=None):
        return images_shape

    def get_config(self):
        return {**super().get_config(), **self.multipliers, **self.strengths}


def ada_adjust(p, real_sign_mean, batch_size, interval=4, target=0.6, ada_kimg=500):
    """ADA's update of the augmentation probability (Karras et al. 2020, sec. 3).

    `p <- clip(p + sign(r_t - target) * batch_size * interval / (ada_kimg * 1000), 0, 1)`:
    `p` moves by at most 1 per `ada_kimg` thousand real images shown, up when
    the discriminator overfits (`r_t = E[sign(D(real))]` above `target`),
    down otherwise, and stays when `r_t == target`.

    Args:
        p: current probability, scalar float (tensor or Python number).
        real_sign_mean: `r_t`, the mean of `sign(D(real))` over the real
            images of the last `interval` steps, all-reduced over
            replicas (the global mean).
        batch_size: GLOBAL number of real images per step (all replicas).
        interval: steps between two adjustments (ADA: 4).
        target: the `r_t` ADA aims for (0.6).
        ada_kimg: thousands of real images over which `p` can go from 0 to 1
            (ADA: 500).

    Returns:
        The new `p`, a float32 scalar tensor in [0, 1].

    Example:

    ```python
    # In train_step, every 4 steps, after all-reducing the sign means:
    self.ada_p.assign(ada_adjust(self.ada_p, r_t, batch_size=global_batch, interval=4))
    ```
    """
    p = tf.cast(p, tf.float32)
    direction = tf.sign(tf.cast(real_sign_mean, tf.float32) - target)
    step = tf.cast(batch_size * interval, tf.float32) / (ada_kimg * 1000.0)
    return tf.clip_by_value(p + direction * step, 0.0, 1.0)
