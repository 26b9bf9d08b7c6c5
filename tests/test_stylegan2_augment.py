"""AdaptiveAugment (ADA for StyleGAN2): every op against a reference, identity, XLA, replicas, ada_adjust."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import last_json_line, run_python
from zoo.stylegan2 import stylegan2_augment as augment_module
from zoo.stylegan2.stylegan2_augment import (
    NUM_RANDOM_COLUMNS,
    AdaptiveAugment,
    ada_adjust,
    apply_color,
    replica_uniform,
    warp_images,
)

OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
       "brightness", "contrast", "lumaflip", "hue", "saturation")
ALL_ON = {op: 1 for op in OPS}
SEED = tf.constant([3, 11], tf.int64)


def only(*ops, **strengths):
    """A layer with just `ops` enabled."""
    return AdaptiveAugment(**{op: int(op in ops) for op in OPS}, **strengths)


def noise_images(n, h=8, w=8, c=1, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (n, h, w, c)).astype("float32")


def smooth_images(n, h=16, w=16, c=3):
    """Low-frequency images: resampling them is insensitive to sub-ulp coordinate changes."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    k = np.arange(n * c).reshape(n, 1, 1, c)
    return np.sin(0.2 * xx[None, ..., None] + 0.13 * yy[None, ..., None] * (1 + k % 3) + k).astype("float32")


def augment(layer, images, p, seed=SEED):
    return layer(tf.constant(images), tf.constant(p, tf.float32), seed).numpy()


def transforms(layer, images, p, seed=SEED):
    geometry, color = layer.sample_transforms(len(images), images.shape[1:], tf.constant(p), seed)
    return geometry.numpy(), color.numpy()


def numpy_warp(image, matrix):
    """Reference bilinear warp: numpy reflect padding, float64, pixel loops."""
    h, w, _ = image.shape
    pad = 3 * max(h, w)
    padded = np.pad(image.astype("float64"), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    out = np.zeros(image.shape)
    for y in range(h):
        for x in range(w):
            sx, sy, _ = np.asarray(matrix, "float64") @ [x - cx, y - cy, 1.0]
            sx, sy = sx + cx + pad, sy + cy + pad
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            top = (1 - fx) * padded[y0, x0] + fx * padded[y0, x0 + 1]
            bottom = (1 - fx) * padded[y0 + 1, x0] + fx * padded[y0 + 1, x0 + 1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_exact_identity(channels):
    images = noise_images(16, c=channels)
    out = augment(AdaptiveAugment(**ALL_ON), images, 0.0)
    np.testing.assert_array_equal(out, images)
    # ... and p > 0 does change them (the comparison can fail).
    assert not np.array_equal(augment(AdaptiveAugment(**ALL_ON), images, 0.5), images)


def test_xflip_at_p1_mirrors_each_image_or_keeps_it():
    """ADA's x-flip: with probability p, mirror with probability 1/2 (i = floor(2u))."""
    images = noise_images(64)
    layer = only("xflip")
    out = augment(layer, images, 1.0)
    geometry, _ = transforms(layer, images, 1.0)
    flipped = geometry[:, 0, 0] == -1.0
    np.testing.assert_array_equal(out, np.where(flipped[:, None, None, None], images[:, :, ::-1], images))
    assert 16 < flipped.sum() < 48


def test_rotate90_gives_one_of_the_four_rotations():
    images = noise_images(64)
    out = augment(only("rotate90"), images, 1.0)
    turns = []
    for image, result in zip(images, out):
        matches = [k for k in range(4) if np.array_equal(result, np.rot90(image, k, axes=(0, 1)))]
        assert len(matches) == 1
        turns.append(matches[0])
    assert set(turns) == {0, 1, 2, 3}


def test_integer_translation_matches_numpy_reflect_padding():
    images = noise_images(64, h=12, w=8)
    layer = only("xint", xint_max=0.25)  # round(U(-1/4, 1/4) * size): up to +-2 px in x, +-3 px in y
    out = augment(layer, images, 1.0)
    geometry, _ = transforms(layer, images, 1.0)
    tx, ty = -geometry[:, 0, 2], -geometry[:, 1, 2]  # output pixel x reads input x - tx
    np.testing.assert_array_equal(tx, np.round(tx))
    np.testing.assert_array_equal(ty, np.round(ty))
    assert np.abs(tx).max() == 2 and np.abs(ty).max() == 3
    pad = 4
    for image, result, dx, dy in zip(images, out, tx.astype(int), ty.astype(int)):
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        np.testing.assert_array_equal(result, padded[pad - dy : pad - dy + 12, pad - dx : pad - dx + 8])


@pytest.mark.parametrize("channels", [1, 3])
def test_warp_with_identity_matrix_returns_the_input(channels):
    images = noise_images(4, h=7, w=5, c=channels)
    out = warp_images(tf.constant(images), tf.eye(3, batch_shape=[4])).numpy()
    np.testing.assert_allclose(out, images, atol=1e-5)


def test_warp_with_rotation_matches_numpy_bilinear_reference():
    images = noise_images(2, h=9, w=7, c=2)  # not square: catches swapped axes

    def similarity(theta, scale, tx, ty):
        c, s = scale * np.cos(theta), scale * np.sin(theta)
        return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], "float32")

    # The second one reads far outside the image: reflection over several periods.
    matrices = np.stack([similarity(0.3, 1.2, 1.5, -0.7), similarity(2.5, 0.8, 9.0, -12.0)])
    out = warp_images(tf.constant(images), tf.constant(matrices)).numpy()
    for image, matrix, result in zip(images, matrices, out):
        np.testing.assert_allclose(result, numpy_warp(image, matrix), atol=1e-5)


@pytest.mark.parametrize("op", ["scale", "aniso"])
def test_scalings_are_diagonal_with_log2_std_02(op):
    images = noise_images(2000, h=4, w=4)
    layer = only(op)
    geometry, _ = transforms(layer, images, 1.0)
    sx, sy = geometry[:, 0, 0], geometry[:, 1, 1]
    np.testing.assert_array_equal(geometry - geometry * np.eye(3), 0.0)  # diagonal
    np.testing.assert_array_equal(geometry[:, 2, 2], 1.0)
    if op == "scale":  # isotropic: (1/s, 1/s)
        np.testing.assert_array_equal(sx, sy)
    else:  # anisotropic: (1/s, s)
        np.testing.assert_allclose(sx * sy, 1.0, rtol=1e-6)
    assert abs(np.log2(sx).std() - 0.2) < 0.02
    np.testing.assert_allclose(augment(layer, images[:8], 1.0),
                               warp_images(tf.constant(images[:8]), geometry[:8]).numpy(), atol=1e-6)


def test_rotation_is_a_uniform_angle_before_or_after_aniso():
    images = noise_images(2000, h=4, w=4)
    layer = only("rotate")
    geometry, _ = transforms(layer, images, 1.0)
    block = geometry[:, :2, :2]
    np.testing.assert_allclose(block @ block.transpose(0, 2, 1), np.broadcast_to(np.eye(2), block.shape),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(block), 1.0, atol=1e-5)
    np.testing.assert_array_equal(geometry[:, :2, 2], 0.0)
    theta = np.arctan2(block[:, 1, 0], block[:, 0, 0])
    # p=1: both rotations (each uniform in (-pi, pi)) compose to a uniform angle.
    assert abs(np.abs(theta).mean() - np.pi / 2) < 0.1
    np.testing.assert_allclose(augment(layer, images[:8], 1.0),
                               warp_images(tf.constant(images[:8]), geometry[:8]).numpy(), atol=1e-6)


def test_fractional_translation_has_std_one_eighth_of_the_size():
    images = noise_images(2000, h=4, w=8)
    layer = only("xfrac")
    geometry, _ = transforms(layer, images, 1.0)
    np.testing.assert_array_equal(geometry[:, :2, :2], np.broadcast_to(np.eye(2), (2000, 2, 2)))
    assert abs(geometry[:, 0, 2].std() - 0.125 * 8) < 0.08
    assert abs(geometry[:, 1, 2].std() - 0.125 * 4) < 0.04
    assert abs(np.corrcoef(geometry[:, 0, 2], geometry[:, 1, 2])[0, 1]) < 0.1
    # The layer's draws are columns of `replica_uniform`'s table (Box-Muller pair).
    u = replica_uniform(2000, NUM_RANDOM_COLUMNS, SEED).numpy()
    u1, u2 = u[:, augment_module._COLUMN["xfrac_u1"]], u[:, augment_module._COLUMN["xfrac_u2"]]
    normal = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    np.testing.assert_allclose(-geometry[:, 0, 2], normal * 0.125 * 8, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(augment(layer, images[:8], 1.0),
                               warp_images(tf.constant(images[:8]), geometry[:8]).numpy(), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_then_contrast_by_hand(channels):
    images = noise_images(2000, h=2, w=2, c=channels)
    _, color_b = transforms(only("brightness"), images, 1.0)
    _, color_c = transforms(only("contrast"), images, 1.0)
    b = color_b[:, 0, 3][:, None, None, None]
    c = color_c[:, 0, 0][:, None, None, None]
    assert abs(b.std() - 0.2) < 0.02 and abs(b.mean()) < 0.02
    assert abs(np.log2(c).std() - 0.5) < 0.04
    np.testing.assert_allclose(augment(only("brightness"), images, 1.0), images + b, atol=1e-6)
    np.testing.assert_allclose(augment(only("contrast"), images, 1.0), images * c, atol=1e-6)
    # Each op's draws do not depend on the other ops; ADA applies brightness first.
    both = augment(only("brightness", "contrast"), images, 1.0)
    np.testing.assert_allclose(both, (images + b) * c, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_lumaflip_by_hand(channels):
    images = noise_images(64, h=3, w=3, c=channels)
    out = augment(only("lumaflip"), images, 1.0)
    luma = images.mean(axis=-1, keepdims=True)
    flipped = images - 2 * luma  # Householder reflection across (1, 1, 1); gray: -x
    is_flipped = np.abs(out - flipped).max(axis=(1, 2, 3)) < 1e-5
    for image, result, was_flipped in zip(images, out, is_flipped):
        assert was_flipped or np.array_equal(result, image)
    assert 16 < is_flipped.sum() < 48


def test_hue_rotates_around_the_luma_axis():
    images = noise_images(64, h=3, w=3, c=3)
    layer = only("hue")
    out = augment(layer, images, 1.0)
    _, color = transforms(layer, images, 1.0)
    rotation = color[:, :3, :3]
    np.testing.assert_array_equal(color[:, :3, 3], 0.0)
    # Rodrigues' rotation by the angle it encodes, around v = (1, 1, 1) / sqrt(3).
    theta = np.arctan2((rotation[:, 2, 1] - rotation[:, 1, 2]) * np.sqrt(3) / 2,
                       (np.trace(rotation, axis1=1, axis2=2) - 1) / 2)
    v = np.ones(3) / np.sqrt(3)
    cross = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    for angle, matrix in zip(theta, rotation):
        expected = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(v, v)
        np.testing.assert_allclose(matrix, expected, atol=1e-5)
    assert 1.2 < np.abs(theta).mean() < 1.9 and theta.min() < -2.5 and theta.max() > 2.5  # U(-pi, pi)

    def chroma(x):
        return np.linalg.norm(x - x.mean(-1, keepdims=True), axis=-1)

    np.testing.assert_allclose(out.mean(-1), images.mean(-1), atol=1e-5)  # luma kept
    np.testing.assert_allclose(chroma(out), chroma(images), atol=1e-5)  # chroma rotated
    assert np.abs(out - images).max() > 0.5


def test_saturation_by_hand():
    images = noise_images(64, h=3, w=3, c=3)
    layer = only("saturation")
    _, color = transforms(layer, images, 1.0)
    s = ((color[:, 0, 0] - 1 / 3) * 1.5)[:, None, None, None]  # C = vv^T + s (I - vv^T)
    luma = images.mean(-1, keepdims=True)
    np.testing.assert_allclose(augment(layer, images, 1.0), luma + s * (images - luma), atol=1e-5)
    assert 0.7 < np.log2(s).std() < 1.3


def test_rgb_only_ops_are_skipped_for_gray_images():
    images = noise_images(8)
    np.testing.assert_array_equal(augment(only("hue", "saturation"), images, 1.0), images)
    rgb = noise_images(8, c=3)
    assert np.abs(augment(only("hue", "saturation"), rgb, 1.0) - rgb).max() > 0.1


def test_apply_color_matches_matrix_product():
    images = noise_images(2, h=2, w=2, c=3)
    matrix = np.array([[0.5, 0.2, 0.0, 0.1], [0.0, 1.0, 0.3, -0.2], [0.1, 0.0, 2.0, 0.0], [0, 0, 0, 1]], "float32")
    matrices = tf.constant(np.stack([matrix, np.eye(4, dtype="float32")]))
    out = apply_color(tf.constant(images), matrices).numpy()
    np.testing.assert_allclose(out[0], images[0] @ matrix[:3, :3].T + matrix[:3, 3], atol=1e-6)
    np.testing.assert_array_equal(out[1], images[1])


@pytest.mark.parametrize("op, visible", [
    # An applied op is visible unless it draws its identity: x-flip i=0 (1/2),
    # a quarter turn k=0 (1/4), a luma flip i=0 (1/2), an integer shift that
    # rounds to 0 on both axes (|t| * 16 < 0.5 with t ~ U(-1/8, 1/8): 1/16).
    ("xflip", 0.5), ("rotate90", 0.75), ("xint", 15 / 16), ("scale", 1), ("rotate", 1),
    ("aniso", 1), ("xfrac", 1), ("brightness", 1), ("contrast", 1), ("lumaflip", 0.5),
])
def test_fraction_of_augmented_images_is_p(op, visible):
    images = noise_images(2000, h=16, w=16)
    out = augment(only(op), images, 0.5)
    changed = np.abs(out - images).max(axis=(1, 2, 3)) > 1e-6
    assert abs(changed.mean() - 0.5 * visible) < 0.05, changed.mean()


def test_gradients_are_finite_and_exact_for_the_affine_map():
    images = tf.constant(noise_images(8, c=3))
    weights = tf.constant(noise_images(8, c=3, seed=1))
    layer = AdaptiveAugment(**ALL_ON)

    def objective(x, p):
        return tf.reduce_sum(layer(x, tf.constant(p), SEED) * weights)

    with tf.GradientTape() as tape:
        tape.watch(images)
        value = objective(images, 0.8)
    grad = tape.gradient(value, images)
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).max() > 0
    # With the random draws fixed the augmentation is affine in the images,
    # so f(2x) - f(x) = <grad, x> exactly (up to rounding).
    np.testing.assert_allclose(float(objective(2 * images, 0.8) - value),
                               float(tf.reduce_sum(grad * images)), rtol=1e-4)
    with tf.GradientTape() as tape:
        tape.watch(images)
        value = objective(images, 0.0)
    np.testing.assert_array_equal(tape.gradient(value, images).numpy(), weights.numpy())


def test_xla_matches_eager_for_the_same_runtime_seed():
    """The hash RNG gives XLA the same bits as the TF kernels (TF's stateless RNG does not)."""
    images = tf.constant(smooth_images(16))
    layer = AdaptiveAugment(**ALL_ON)
    seed = tf.constant([5, 123456789012], tf.int64)
    p = tf.constant(0.7)

    def step(x, p, s):
        return layer(x, p, s), replica_uniform(16, NUM_RANDOM_COLUMNS, s)

    xla_out, xla_uniform = tf.function(step, jit_compile=True)(images, p, seed)
    eager_out, eager_uniform = step(images, p, seed)
    np.testing.assert_array_equal(xla_uniform.numpy(), eager_uniform.numpy())
    np.testing.assert_allclose(xla_out.numpy(), eager_out.numpy(), atol=1e-5)
    assert np.abs(xla_out.numpy() - images.numpy()).max() > 0.1


def test_same_seed_same_output_other_seed_other_output():
    images = noise_images(16, c=3)
    a = augment(AdaptiveAugment(**ALL_ON), images, 0.5, tf.constant([1, 2]))
    b = augment(AdaptiveAugment(**ALL_ON), images, 0.5, tf.constant([1, 2]))
    c = augment(AdaptiveAugment(**ALL_ON), images, 0.5, tf.constant([1, 3]))
    d = augment(AdaptiveAugment(**ALL_ON), images, 0.5, tf.constant([2**33 + 1, 2]))  # high bits count
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


MIRRORED = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from zoo.stylegan2.stylegan2_augment import NUM_RANDOM_COLUMNS, AdaptiveAugment, replica_uniform

layer = AdaptiveAugment(lumaflip=1, hue=1, saturation=1)
images = np.random.RandomState(0).uniform(-1, 1, (16, 8, 8, 3)).astype("float32")
p, seed = tf.constant(0.6), tf.constant([7, 9], tf.int64)

def step(x):
    return layer(x, p, seed), replica_uniform(x.shape[0], NUM_RANDOM_COLUMNS, seed)

one, one_u = step(tf.constant(images))
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
halves = strategy.experimental_distribute_values_from_function(
    lambda ctx: tf.constant(images[8 * ctx.replica_id_in_sync_group :][:8]))
out, u = (strategy.experimental_local_results(t) for t in strategy.run(step, args=(halves,)))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "shapes": [list(t.shape) for t in out],
                  "max_diff": float(np.abs(np.concatenate(out) - one).max()),
                  "uniforms_equal": bool(np.array_equal(np.concatenate(u), one_u)),
                  "changed": float(np.abs(one - images).max()),
                  "halves_differ": float(np.abs(one[:8] - one[8:]).max())}))
"""


def test_two_replicas_together_equal_one_device():
    """Each replica draws its own rows of the global batch's random table (2 logical CPUs)."""
    result = last_json_line(run_python(MIRRORED).stdout)
    assert result["replicas"] == 2 and result["shapes"] == [[8, 8, 8, 3]] * 2
    assert result["changed"] > 0.1 and result["halves_differ"] > 0.1
    assert result["uniforms_equal"], result  # the random numbers: bit for bit
    # The images: up to float rounding (Eigen's vectorized cos/log depend on
    # where an element falls in a packet, i.e. on the batch size).
    assert result["max_diff"] < 1e-5, result


def test_ada_adjust_direction_step_and_clipping():
    step = 32 * 4 / 500_000
    assert float(ada_adjust(0.5, 0.7, batch_size=32)) == pytest.approx(0.5 + step)
    assert float(ada_adjust(0.5, 0.1, batch_size=32)) == pytest.approx(0.5 - step)
    assert float(ada_adjust(0.5, 0.6, batch_size=32)) == pytest.approx(0.5)
    assert float(ada_adjust(0.5, 0.9, batch_size=64, interval=2, target=0.95, ada_kimg=100)) \
        == pytest.approx(0.5 - 64 * 2 / 100_000)
    assert float(ada_adjust(1.0, 1.0, batch_size=32)) == 1.0
    assert float(ada_adjust(0.0, -1.0, batch_size=32)) == 0.0
    compiled = tf.function(ada_adjust, jit_compile=True)
    assert float(compiled(tf.constant(0.99999), tf.constant(0.8), 4096)) == 1.0


def test_config_round_trip():
    layer = AdaptiveAugment(xflip=0.5, rotate90=0, hue=1, scale_std=0.3, contrast_std=0.25, name="aug")
    clone = AdaptiveAugment.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.get_config()["scale_std"] == 0.3 and clone.get_config()["rotate90"] == 0.0
    images = noise_images(8, c=3)
    np.testing.assert_array_equal(augment(clone, images, 0.7), augment(layer, images, 0.7))


def test_mixed_precision_keeps_the_dtype_and_p_in_float32():
    images = noise_images(8, c=3)
    layer = AdaptiveAugment(**ALL_ON, dtype="mixed_float16")
    half = layer(tf.constant(images, tf.float16), tf.constant(0.6), SEED)
    assert half.dtype == tf.float16
    full = augment(AdaptiveAugment(**ALL_ON), images.astype("float16").astype("float32"), 0.6)
    np.testing.assert_allclose(half.numpy().astype("float32"), full, atol=2e-2)
    zero = layer(tf.constant(images, tf.float16), tf.constant(0.0), SEED).numpy()
    np.testing.assert_array_equal(zero, images.astype("float16"))


def test_rejects_other_channel_counts_and_negative_multipliers():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        AdaptiveAugment()(tf.zeros([2, 4, 4, 2]), tf.constant(0.5), SEED)
    with pytest.raises(ValueError, match="negative"):
        AdaptiveAugment(scale=-1)
