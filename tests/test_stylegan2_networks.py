"""StyleGAN2 mapping, synthesis and discriminator: structure, noise modes, XLA, TFLite, precision."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.stylegan2.stylegan2_layers import upsample_2d
from zoo.stylegan2.stylegan2_networks import Discriminator, MappingNetwork, SynthesisNetwork

TINY = {"channel_base": 256, "channel_max": 32}  # channels 32 (4..8), 16 (16), 8 (32)
W_DIM = 32


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype("float32")


def synthesis(image_size=16, **kwargs):
    keras.utils.set_random_seed(0)
    return SynthesisNetwork(image_size=image_size, channels=1, w_dim=W_DIM, **TINY, **kwargs)


def discriminator(image_size=16, **kwargs):
    keras.utils.set_random_seed(0)
    return Discriminator(image_size=image_size, channels=1, **TINY, **kwargs)


def with_noise_strengths(net, seed=0):
    """Non-zero noise strengths: at init (0) the noise has no effect."""
    rng = np.random.RandomState(seed)
    for layer in net.synthesis_layers:
        layer.noise_strength.assign(rng.uniform(0.5, 1.0, layer.noise_strength.shape))
    return net


def round_trip(net, *args):
    clone = type(net).from_config(net.get_config())
    clone.set_weights(net.get_weights())
    assert clone.get_config() == net.get_config()
    np.testing.assert_array_equal(clone(*args).numpy(), net(*args).numpy())


# ---- mapping -----------------------------------------------------------------
def test_mapping_normalizes_z_and_stacks_equalized_layers():
    mapping = MappingNetwork(latent_dim=16, w_dim=W_DIM, num_layers=2)
    z = rand(5, 16)
    w = mapping(z).numpy()
    assert w.shape == (5, W_DIM) and w.dtype == np.float32
    # 2nd-moment normalization: any positive per-sample scale of z gives the same w.
    scale = np.array([[0.1], [1.0], [3.0], [10.0], [100.0]], "float32")
    np.testing.assert_allclose(mapping(z * scale).numpy(), w, rtol=1e-5, atol=1e-6)
    x = z / np.sqrt((z**2).mean(axis=1, keepdims=True) + 1e-8)
    for layer, fan_in in zip(mapping.dense_layers, (16, W_DIM)):
        assert layer.lr_multiplier == 0.01 and layer.activation == "lrelu"
        x = x @ (layer.kernel.numpy() * 0.01 / math.sqrt(fan_in)) + layer.bias.numpy() * 0.01
        x = np.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
    np.testing.assert_allclose(w, x, rtol=1e-4, atol=1e-5)
    round_trip(mapping, z)


def test_mapping_w_avg_truncation_and_update():
    mapping = MappingNetwork(latent_dim=16, w_dim=W_DIM, num_layers=2, w_avg_beta=0.9)
    w_avg = mapping.w_avg
    assert not w_avg.trainable and all(v is not w_avg for v in mapping.trainable_weights)
    assert w_avg.aggregation == "only_first_replica"
    np.testing.assert_array_equal(w_avg.numpy(), np.zeros(W_DIM))
    mean = rand(W_DIM)
    mapping.update_w_avg(mean)
    np.testing.assert_allclose(w_avg.numpy(), 0.1 * mean, rtol=1e-6)
    mapping.update_w_avg(2 * mean)  # float32 arithmetic: a few ulps from the float64 reference
    np.testing.assert_allclose(w_avg.numpy(), 0.9 * 0.1 * mean + 0.1 * 2 * mean, rtol=1e-5)

    avg = w_avg.numpy()
    for shape in [(4, W_DIM), (4, 6, W_DIM)]:
        w = rand(*shape, seed=1)
        np.testing.assert_array_equal(mapping.truncate(w, 0.0).numpy(), np.broadcast_to(avg, shape))
        np.testing.assert_array_equal(mapping.truncate(w, 1.0).numpy(), w)
        np.testing.assert_allclose(mapping.truncate(w, tf.constant(0.5)).numpy(), (w + avg) / 2,
                                   rtol=1e-5, atol=1e-6)


# ---- synthesis ---------------------------------------------------------------
@pytest.mark.parametrize("image_size,num_ws", [(4, 2), (16, 6), (32, 8)])
def test_synthesis_structure(image_size, num_ws):
    net = synthesis(image_size)
    assert net.num_ws == num_ws == 2 * int(math.log2(image_size)) - 2
    sizes = [4] + [r for r in (8, 16, 32) if r <= image_size for _ in range(2)]
    assert net.noise_shapes == [(r, r) for r in sizes]
    ws = rand(2, num_ws, W_DIM)
    images = net(ws)
    assert images.shape == (2, image_size, image_size, 1) and images.dtype == tf.float32
    ups = [layer.up for layer in net.synthesis_layers]
    assert ups == [False] + [True, False] * (len(sizes) // 2)
    filters = [layer.filters for layer in net.synthesis_layers]
    assert filters == [min(256 // r, 32) for r in sizes]  # channel_base // r, capped
    assert [v.shape for v in net.noise_buffers] == [(1, r, r, 1) for r in sizes]
    assert all(not v.trainable for v in net.noise_buffers)


def test_synthesis_is_the_skip_architecture_with_shared_ws_indices():
    """The forward pass written out: layer i takes ws[:, i]; a ToRGB takes the next block's first index."""
    net = with_noise_strengths(synthesis(16))
    ws = tf.constant(rand(2, net.num_ws, W_DIM))
    noise = [tf.constant(rand(2, h, w, 1, seed=i)) for i, (h, w) in enumerate(net.noise_shapes)]
    conv, torgb = net.synthesis_layers, net.torgb_layers
    x = conv[0](net.const, ws[:, 0], noise[0])  # 4x4
    img = torgb[0](x, ws[:, 1])
    x = conv[2](conv[1](x, ws[:, 1], noise[1]), ws[:, 2], noise[2])  # 8x8
    img = upsample_2d(img) + torgb[1](x, ws[:, 3])
    x = conv[4](conv[3](x, ws[:, 3], noise[3]), ws[:, 4], noise[4])  # 16x16
    img = upsample_2d(img) + torgb[2](x, ws[:, 5])
    np.testing.assert_allclose(net(ws, noise=noise).numpy(), img.numpy(), rtol=1e-5, atol=1e-6)


def test_synthesis_uses_every_w_and_broadcasts_a_single_w():
    net = synthesis(16)
    w = rand(2, W_DIM)
    tiled = np.repeat(w[:, None], net.num_ws, axis=1)
    base = net(tiled).numpy()
    np.testing.assert_array_equal(net(w).numpy(), base)
    # Style mixing: another w at any one index changes the images (one batch, samples are independent).
    mixed = np.concatenate([tiled] * net.num_ws)  # [num_ws * 2, num_ws, w_dim]
    for i in range(net.num_ws):
        mixed[2 * i : 2 * i + 2, i] = rand(2, W_DIM, seed=10 + i)
    changes = np.abs(net(mixed).numpy() - np.concatenate([base] * net.num_ws)).reshape(net.num_ws, -1)
    assert (changes.max(axis=1) > 1e-3).all(), f"unused ws indices: {np.flatnonzero(changes.max(axis=1) <= 1e-3)}"
    with pytest.raises(ValueError, match="ws must be"):
        net(tiled[:, :-1])


def test_synthesis_noise_modes():
    net = with_noise_strengths(synthesis(16, noise_seed=3))
    ws = rand(2, net.num_ws, W_DIM)
    const = net(ws).numpy()
    np.testing.assert_array_equal(net(ws).numpy(), const)  # fixed buffers: deterministic
    buffers = [v.numpy() for v in net.noise_buffers]
    same_seed = synthesis(16, noise_seed=3)
    for a, b in zip(buffers, same_seed.noise_buffers):
        np.testing.assert_array_equal(a, b.numpy())
    assert all(np.abs(a - b.numpy()).max() > 0.1
               for a, b in zip(buffers, synthesis(16, noise_seed=4).noise_buffers))
    # The const mode is the buffers broadcast over the batch.
    as_list = [np.repeat(b, 2, axis=0) for b in buffers]
    np.testing.assert_allclose(net(ws, noise=as_list).numpy(), const, rtol=1e-6, atol=1e-6)

    noise = [rand(2, h, w, 1, seed=i) for i, (h, w) in enumerate(net.noise_shapes)]
    drawn = net(ws, noise=noise).numpy()
    assert np.abs(drawn - const).max() > 1e-2
    zeros = [np.zeros_like(n) for n in noise]
    none = net(ws, noise="none").numpy()
    np.testing.assert_allclose(none, net(ws, noise=zeros).numpy(), rtol=1e-6, atol=1e-6)
    assert np.abs(none - const).max() > 1e-2
    with pytest.raises(ValueError, match="noise"):
        net(ws, noise=noise[:-1])
    with pytest.raises(ValueError, match="noise"):
        net(ws, noise="random")


def test_synthesis_config_round_trip_and_initial_scale():
    net = with_noise_strengths(synthesis(16, noise_seed=7))
    ws = rand(4, net.num_ws, W_DIM)
    round_trip(net, ws)
    images = net(ws).numpy()
    assert 0.05 < images.std() < 5.0  # roughly unit scale, no tanh
    assert net.count_params() == sum(int(np.prod(v.shape)) for v in net.weights)


# ---- discriminator ---------------------------------------------------------
def test_discriminator_structure_and_residual_blocks():
    net = discriminator(16)
    images = rand(4, 16, 16, 1)
    logits = net(images)
    assert logits.shape == (4, 1) and logits.dtype == tf.float32
    assert [c.filters for c in net.block_conv0] == [16, 32]  # 16x16, 8x8 blocks
    assert [c.filters for c in net.block_conv1] == [32, 32]
    assert all(s.kernel_size == 1 and s.down and not s.use_bias and s.activation == "linear"
               for s in net.block_skip)
    assert all(c.down and c.kernel_size == 3 for c in net.block_conv1)
    # The forward pass written out.
    x = net.from_rgb(images)
    for conv0, conv1, skip in zip(net.block_conv0, net.block_conv1, net.block_skip):
        x = (skip(x) + conv1(conv0(x))) * np.sqrt(0.5)
    x = net.epilogue_conv(net.mbstd(x))
    x = net.epilogue_out(net.epilogue_fc(tf.reshape(x, (4, -1))))
    np.testing.assert_allclose(logits.numpy(), x.numpy(), rtol=1e-5, atol=1e-6)
    round_trip(net, images)


def test_discriminator_minibatch_groups_are_consecutive():
    """Group size 2 on 4 images: groups {0, 1} and {2, 3}, so a replica's groups are one device's."""
    net = discriminator(8, mbstd_group_size=2)
    images = rand(4, 8, 8, 1)
    base = net(images).numpy()
    changed = images.copy()
    changed[0] += 1.0
    delta = np.abs(net(changed).numpy() - base)[:, 0]
    assert delta[0] > 0 and delta[1] > 0
    np.testing.assert_array_equal(delta[[2, 3]], 0.0)


# ---- compilation and export --------------------------------------------------
def test_xla_matches_eager():
    # 8x8 has every kind of layer (const, up, skip, resnet block, epilogue) and compiles fast.
    syn = with_noise_strengths(synthesis(8))
    disc = discriminator(8)
    ws = tf.constant(rand(4, syn.num_ws, W_DIM))
    noise = [tf.constant(rand(4, h, w, 1, seed=i)) for i, (h, w) in enumerate(syn.noise_shapes)]
    images = tf.constant(rand(4, 8, 8, 1))

    @tf.function(jit_compile=True)
    def compiled(ws, noise, images):
        return syn(ws, noise=noise), disc(images)

    for got, want in zip(compiled(ws, noise, images), (syn(ws, noise=noise), disc(images))):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tflite_synthesis_with_const_noise_is_builtin_and_matches(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from export import convert, custom_ops

    net = with_noise_strengths(synthesis(8))
    # As export/saved_model.py does: an ExportArchive freezes the variables for the converter.
    archive = keras.export.ExportArchive()
    archive.track(net)
    archive.add_endpoint(
        "serving_default", lambda ws: {"images": net(ws)},
        input_signature=[tf.TensorSpec([None, net.num_ws, W_DIM], tf.float32, name="ws")],
    )
    archive.write_out(str(tmp_path), verbose=False)
    flatbuffer = convert(tmp_path)
    assert custom_ops(flatbuffer) == []
    ws = rand(3, net.num_ws, W_DIM)
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    got = runner(ws=ws)["images"]
    np.testing.assert_allclose(got, net(ws).numpy(), atol=1e-4)


# ---- precision and gradients -------------------------------------------------
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_networks_under_mixed_precision(policy):
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    syn32, disc32 = synthesis(16), discriminator(16)
    syn = SynthesisNetwork(image_size=16, channels=1, w_dim=W_DIM, dtype=policy, **TINY)
    disc = Discriminator(image_size=16, channels=1, dtype=policy, **TINY)
    syn.set_weights(syn32.get_weights())
    disc.set_weights(disc32.get_weights())
    assert all(layer.compute_dtype == compute for layer in syn.synthesis_layers + disc.block_conv1)
    assert all(v.dtype == "float32" for v in syn.weights + disc.weights)
    ws = rand(4, syn.num_ws, W_DIM)
    images, logits = syn(ws), disc(syn32(ws))
    assert images.dtype == tf.float32 and logits.dtype == tf.float32
    # Half precision: ~3 (bfloat16) / ~4 (float16) significant digits, over a dozen layers.
    tol = 0.1 if policy == "mixed_bfloat16" else 0.02
    ref_images, ref_logits = syn32(ws).numpy(), disc32(syn32(ws)).numpy()
    np.testing.assert_allclose(images.numpy(), ref_images, atol=tol * np.abs(ref_images).max())
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=tol * np.abs(ref_logits).max())


def test_second_order_gradients_for_r1_and_path_length():
    """R1 (d/dθ of |dD/dx|²) and path length (d/dθ of |d(G·y)/dws|²) run and are finite."""
    syn, disc = synthesis(16), discriminator(16)
    images = tf.constant(rand(4, 16, 16, 1))
    ws = tf.constant(rand(4, syn.num_ws, W_DIM))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(images)
            logits = tf.reduce_sum(disc(images, training=True))
        r1 = tf.reduce_sum(tf.square(inner.gradient(logits, images)))
    grads = dict(zip((v.path for v in disc.trainable_weights), outer.gradient(r1, disc.trainable_weights)))
    assert grads.pop(disc.epilogue_out.bias.path) is None  # dD/dx does not depend on the last bias
    assert all(np.isfinite(g.numpy()).all() for g in grads.values())
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for path, g in grads.items() if path.endswith("kernel"))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(ws)
            out = tf.reduce_sum(syn(ws, noise="none", training=True) * images)
        pl = tf.reduce_sum(tf.square(inner.gradient(out, ws)))
    grads = outer.gradient(pl, syn.trainable_weights)
    assert sum(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads) > len(grads) // 2
    assert all(g is None or np.isfinite(g.numpy()).all() for g in grads)
