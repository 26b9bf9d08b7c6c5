"""The base class every model family derives from.

A family model is a `keras.Model` whose `train_step` updates one or more
sub-networks with optimizers the model holds itself (a GAN has two). This
module owns what is easy to get wrong about that under `tf.distribute`
(see ../shared/KERAS_PITFALLS.md):

* the held optimizers are created, wrapped for mixed precision and *built*
  inside the model's strategy scope (items 1, 2, 10);
* `super().compile()` gets no optimizer, so no unused default is attached
  (item 3);
* losses are reduced over the GLOBAL batch (item 5) and noise is drawn per
  replica from a stateless seed (item 6), so one device and N replicas run
  the same arithmetic on the same numbers;
* `fit` works under `MultiWorkerMirroredStrategy` (item 8), through two
  overrides of Keras' TensorFlow trainer that act only in multi-worker mode
  (`zoo.keras_compat`, which also checks the Keras version they were tested with).
"""

import pathlib

import keras
import tensorflow as tf

from zoo import device
from zoo.keras_compat import MultiWorkerFit

# Images one request to an exported `sample` signature may ask for: without
# a bound, one request could make a server allocate any amount of memory.
MAX_SAMPLES_PER_REQUEST = 1024
# The inputs every `sample` signature starts with: how many images, from which seed.
SAMPLE_INPUTS = (tf.TensorSpec([], tf.int32, name="num"), tf.TensorSpec([], tf.int64, name="seed"))


def global_mean(per_example):
    """Mean of a per-example loss over the global batch, for gradients.

    Under a strategy each replica sees `1/N` of the batch and the optimizer
    sums the replicas' gradients, so each replica divides by the global batch.

    Args:
        per_example: `[B_local]` or `[B_local, ...]` tensor; extra axes are
            averaged first.

    Returns:
        A scalar float32 tensor.
    """
    per_example = tf.cast(per_example, tf.float32)
    if per_example.shape.rank > 1:
        per_example = tf.reduce_mean(
            per_example, axis=list(range(1, per_example.shape.rank))
        )
    return tf.nn.compute_average_loss(per_example)


def stateless_normal(shape, seed):
    """`tf.random.stateless_normal` with the Philox algorithm pinned.

    "auto_select" may pick another generator on another device. Even pinned,
    an XLA-compiled step draws a different stream for the same runtime seed
    than the TF kernel (seen on TF 2.21 CPU), so runs with and without
    `jit_compile` are each deterministic but not equal draw for draw.
    """
    return tf.random.stateless_normal(shape, seed=seed, alg="philox")


def stateless_uniform(shape, seed):
    """`tf.random.stateless_uniform` in [0, 1) with the Philox algorithm pinned."""
    return tf.random.stateless_uniform(shape, seed=seed, alg="philox")


def replica_info():
    """Returns `(replica_id, num_replicas)` in any context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: one logical replica
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def replica_normal(local_batch, shape, seed):
    """Standard normal noise for this replica's slice of the global batch.

    The noise for the whole global batch is drawn from a stateless `seed`
    and every replica keeps its own rows, so replicas differ from each other
    and the union equals what one device draws for the same global batch.

    Args:
        local_batch: this replica's batch size (Python int or scalar tensor).
        shape: per-example shape, a tuple of Python ints.
        seed: `[2]` int tensor.

    Returns:
        float32 tensor `[local_batch, *shape]`.
    """
    replica_id, num_replicas = replica_info()
    noise = stateless_normal(
        [local_batch * num_replicas, *shape], seed=seed
    )  # [B_global, *shape]
    start = replica_id * local_batch
    return noise[start : start + local_batch]


def replica_uniform(local_batch, shape, seed):
    """Uniform [0, 1) noise for this replica's slice of the global batch (see `replica_normal`)."""
    replica_id, num_replicas = replica_info()
    noise = stateless_uniform([local_batch * num_replicas, *shape], seed=seed)  # [B_global, *shape]
    start = replica_id * local_batch
    return noise[start : start + local_batch]


def cross_replica_mean(value):
    """Mean of `value` over the replicas (identity on one device).

    For statistics that must be global, such as a running mean updated from
    batch means: each replica's local batch has the same size, so the mean
    of the replicas' means is the global-batch mean.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def overflow_on_every_replica(grads):
    """`grads`, made non-finite on every replica if they are on any one.

    Under merge_call strategies (Mirrored, MultiWorkerMirrored, TPU) Keras'
    `LossScaleOptimizer` decides whether to skip a step from the first
    replica's gradients alone, assuming they are already all-reduced; in
    Keras 3 they are not (the inner optimizer all-reduces them later). An
    overflow on another replica would then be applied, and its inf would
    reach every replica's weights through the all-reduce. Multiplying by NaN
    where any replica overflowed makes every replica's check see it.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1 or not grads:
        return grads
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    overflowed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflowed > 0, float("nan"), 1.0)
    return [g * tf.cast(poison, g.dtype) for g in grads]


def run_every(step, interval, fn, *args):
    """Runs `fn(*args)` on every replica when `step % interval == 0`.

    For lazy regularization: `fn` may apply an optimizer update. Under
    strategies that synchronize through `merge_call` (`MirroredStrategy`,
    TPU), a `tf.cond` in replica context must not contain one ("merge_call
    called while defining a new graph"), so the condition is taken in
    cross-replica context and `fn` re-enters every replica, the way Keras'
    `LossScaleOptimizer` skips a step. Per-replica tensors must be passed
    in `args` (a closure would give every replica the first replica's).

    Args:
        step: scalar integer tensor, the same on every replica.
        interval: Python int; 1 runs `fn` every step without a condition.
        fn: function of `args` returning nothing.
        *args: tensors, per replica.
    """
    if interval == 1:
        fn(*args)
        return

    def then_true(call):
        def branch():
            call()
            return tf.constant(True)
        return branch

    pred = tf.equal(tf.math.floormod(step, interval), 0)
    ctx = tf.distribute.get_replica_context()
    if (ctx is None or not tf.distribute.has_strategy()
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(pred, then_true(lambda: fn(*args)), lambda: tf.constant(False))
        return

    def cross_replica(distribution, pred, *per_replica):
        pred = distribution.experimental_local_results(pred)[0]
        run_on_replicas = lambda: distribution.extended.call_for_each_replica(fn, args=per_replica)
        tf.cond(pred, then_true(run_on_replicas), lambda: tf.constant(False))

    ctx.merge_call(cross_replica, args=(pred, *args))


def request_latents(num, seed, latent_shape):
    """The `sample` signature's latents: `[num, *latent_shape]` N(0, 1) from the stateless seed `[seed, 0]`.

    `num` is checked when the graph runs, so a SavedModel (and TF Serving)
    answers a request outside [0, `MAX_SAMPLES_PER_REQUEST`] with an
    `InvalidArgumentError` that says so instead of allocating it.

    Args:
        num: int32 scalar tensor, images requested.
        seed: int64 scalar tensor.
        latent_shape: per-example shape, a tuple of Python ints.
    """
    num = tf.convert_to_tensor(num)
    checks = [
        tf.debugging.assert_non_negative(num, message="sample: num must be >= 0"),
        tf.debugging.assert_less_equal(
            num, tf.constant(MAX_SAMPLES_PER_REQUEST, num.dtype),
            message=f"sample: num must be at most {MAX_SAMPLES_PER_REQUEST} images per request "
                    "(MAX_SAMPLES_PER_REQUEST); ask in several requests",
        ),
    ]
    with tf.control_dependencies(checks):
        return stateless_normal(
            tf.stack([num, *latent_shape]), seed=tf.stack([seed, tf.constant(0, tf.int64)])
        )


def finite_latents(z):
    """`z`, failing the request when it holds a NaN or Inf (an `InvalidArgumentError` naming `z`).

    For exported signatures: a non-finite latent would otherwise come back
    as an all-NaN image. LiteRT's converter removes the check (it keeps
    builtin ops only and drops `CheckNumerics`), so a `.tflite` file passes
    NaN through; the SavedModel, and TF Serving, reject it.
    """
    return tf.debugging.assert_all_finite(z, "z (latents) must be finite: got NaN or Inf")


def batch_size_of(images):
    """Static batch size when known (XLA, TPU), else the dynamic one."""
    static = images.shape[0]
    return static if static is not None else tf.shape(images)[0]


class GenerativeModel(MultiWorkerFit, keras.Model):
    """Base class of the zoo's family models.

    Subclasses define `optimizer_targets()` (which sub-network each held
    optimizer trains), `default_optimizers()`, `train_step`, `generate(z)`
    (images in [0, 1]), `latent_shape` and `export_endpoints()`.

    Args:
        seed: base seed of the training noise; with the step counter it
            fixes every random draw of `train_step`.
        **kwargs: passed to `keras.Model` (`name`, ...).
    """

    # Random draws per training step; `noise_seed(step, stream)` needs stream < this.
    streams_per_step = 8
    # Whether `train.py` compiles the step with XLA unless told (`--jit/--no-jit`), per
    # `zoo.device.device_kind()`: chosen by measurement (docs/results.md, "XLA by device").
    xla_by_device = {"gpu": True, "cpu-amx": False, "cpu": False}

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    @classmethod
    def xla_by_default(cls, kind=None):
        """Whether training compiles the step with XLA unless told, on a device of `kind`.

        Args:
            kind: one of `zoo.device.DEVICE_KINDS`; default: this machine's.
        """
        return cls.xla_by_device[kind or device.device_kind()]

    # ---- what a family provides ------------------------------------------
    def optimizer_targets(self):
        """Maps each optimizer attribute name to the sub-network it trains."""
        raise NotImplementedError

    def default_optimizers(self):
        """Fresh optimizers, by attribute name, used when none are given."""
        raise NotImplementedError

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """The model of a preset of this family: a name in `cls.presets` or a preset directory.

        Args:
            preset: a preset name or a directory written by `save_to_preset`.
            load_weights: True loads the preset's trained weights (the preset
                must ship them: `zoo.shipped_presets()`); False builds its
                architecture with a random initialisation.
            **overrides: constructor arguments that replace the preset's.

        Raises:
            ValueError (`zoo.presets.PresetError` for directories and weights):
                one line naming the problem.

        Example:

        ```python
        trained = zoo.DCGAN.from_preset("dcgan_fashion_mnist")
        untrained = zoo.DCGAN.from_preset("dcgan_tiny", load_weights=False)
        ```
        """
        from zoo import presets

        if not pathlib.Path(preset).is_dir() and preset not in cls.presets:
            raise ValueError(
                f"unknown {cls.__name__} preset {preset!r}; choose from {sorted(cls.presets)}"
            )
        model = presets.from_preset(preset, load_weights=load_weights, **overrides)
        if not isinstance(model, cls):
            raise presets.PresetError(f"{preset} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def save_to_preset(self, directory, metadata=None, samples=64):
        """Writes this model as a preset directory; see `zoo.presets.save_to_preset`."""
        from zoo import presets

        return presets.save_to_preset(self, directory, metadata=metadata, samples=samples)

    def reset_training_progress(self):
        """Restarts step-driven schedules kept in weights, for fine-tuning from a preset.

        The DC-GAN and VAE count steps with their optimizers, which start
        fresh; a family that keeps a step counter in its weights resets it.
        """

    @property
    def latent_shape(self):
        """Per-example shape of the generator input `z`."""
        return (self.latent_dim,)

    @property
    def image_shape(self):
        """`(H, W, C)` of the images the model takes and makes."""
        return (self.image_size, self.image_size, self.channels)

    def generate(self, z):
        """Images in [0, 1], float32 `[N, H, W, C]`, from latents `z`."""
        raise NotImplementedError

    def export_endpoints(self):
        """`{name: (fn, input_signature)}` of the serving signatures."""
        raise NotImplementedError

    def export_networks(self):
        """The sub-networks whose variables the exported signatures use."""
        raise NotImplementedError

    def sample_images(self, num, seed, *options):
        """The `sample` signature's images: `generate(z, *options)` of `num` latents from seed `[seed, 0]`.

        `request_latents` draws them: deterministic for a seed, at most
        `MAX_SAMPLES_PER_REQUEST`.
        """
        return self.generate(request_latents(num, seed, self.latent_shape), *options)

    def sample_endpoint(self):
        """The `sample` serving signature, `(fn, input_signature)` for `export_endpoints()`.

        A family whose `generate` takes more inputs (StyleGAN2's ψ) builds its
        own from `sample_images`, naming them after `SAMPLE_INPUTS`.
        """

        def sample(num, seed):
            return {"images": self.sample_images(num, seed)}

        return sample, list(SAMPLE_INPUTS)

    def tflite_signatures(self):
        """Signatures converted to LiteRT files (random ops stay SavedModel-only)."""
        return ("serving_default",)

    def serving_model(self):
        """`serving_default` as a functional `keras.Model`, for formats that export a model (ONNX).

        Input `z` `[N, *latent_shape]` float32; output `{"images": [N, H, W, C]}`
        float32 in [0, 1], what `generate(z)` returns. This default wraps
        `generate` in one layer that holds `export_networks()`; a family
        may override it with its networks and output mapping as layers.
        """

        class Generate(keras.layers.Layer):
            def __init__(self, model, **kwargs):
                super().__init__(dtype="float32", **kwargs)
                self.generate_fn = model.generate
                self.networks = list(model.export_networks())  # tracked: their weights are the wrapper's
                self.built = True

            def call(self, z):
                return self.generate_fn(z)

        z = keras.Input(self.latent_shape, name="z")
        images = Generate(self, name="generate")(z)
        return keras.Model(z, {"images": images}, name=f"{self.name}_serving")

    # ---- shared machinery -------------------------------------------------
    @property
    def train_steps(self):
        """Training steps taken (Python int): the first held optimizer's `iterations`."""
        iterations = getattr(self, next(iter(self.optimizer_targets()))).iterations
        return int(keras.ops.convert_to_numpy(iterations))

    def compile(self, jit_compile=False, steps_per_execution=1, **optimizers):
        """Configures the held optimizers.

        Args:
            jit_compile: compile `train_step` with XLA. Set it explicitly:
                Keras' `"auto"` resolves to False on CPU and under a strategy.
            steps_per_execution: steps run per `tf.function` call.
            **optimizers: by name (see `optimizer_targets()`), an optimizer
                instance, identifier or config dict; missing ones get the
                family's defaults.
        """
        targets = self.optimizer_targets()
        unknown = sorted(set(optimizers) - set(targets))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.compile() got unknown optimizer "
                f"argument(s) {unknown}; expected {sorted(targets)}"
            )
        super().compile(
            optimizer=None,
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        defaults = self.default_optimizers()
        policy = keras.mixed_precision.global_policy().name
        with self.distribute_strategy.scope():
            for name, network in targets.items():
                opt = optimizers.get(name)
                opt = defaults[name] if opt is None else keras.optimizers.get(opt)
                if policy == "mixed_float16" and not isinstance(
                    opt, keras.optimizers.LossScaleOptimizer
                ):
                    opt = keras.optimizers.LossScaleOptimizer(opt)
                opt.build(network.trainable_variables)
                setattr(self, name, opt)

    def get_compile_config(self):
        config = {
            "jit_compile": bool(self.jit_compile),
            "steps_per_execution": self.steps_per_execution,
        }
        for name in self.optimizer_targets():
            opt = getattr(self, name, None)
            if opt is not None:
                config[name] = keras.optimizers.serialize(opt)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        for name in self.optimizer_targets():
            if name in config:
                config[name] = keras.optimizers.deserialize(config[name])
        self.compile(**config)

    def apply_loss(self, optimizer, tape, loss, network):
        """Scales `loss` (mixed precision), differentiates, applies."""
        with tape:  # re-enter: the scaling must be on the tape too
            scaled = optimizer.scale_loss(loss)
        variables = network.trainable_variables
        grads = tape.gradient(scaled, variables)
        # A regularizer may not depend on some variables (R1 on D's last bias):
        # skip them, as PyTorch's Adam skips parameters without a gradient.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads = [g for g, _ in pairs]
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            grads = overflow_on_every_replica(grads)
        optimizer.apply(grads, [v for _, v in pairs])

    def noise_seed(self, step, stream):
        """Stateless `[2]` seed for draw `stream` of training step `step`.

        Derived from the model seed and an optimizer's `iterations`, which a
        backup restores, so a resumed run continues the same noise sequence.
        """
        if not 0 <= stream < self.streams_per_step:
            raise ValueError(f"noise stream {stream} outside [0, {self.streams_per_step})")
        step = tf.cast(step, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), step * self.streams_per_step + stream])

    def representative_inputs(self, signature="serving_default", num_batches=16, batch=8):
        """Batches of a signature's inputs drawn from the model itself, for int8 calibration.

        `z` inputs get N(0, 1) latents; `images` inputs get the model's own
        generated images, in the [0, 1] range the signature takes.
        """
        _, specs = self.export_endpoints()[signature]
        for i in range(num_batches):
            z = self.sample_latents(batch, seed=1000 + i)
            sources = {"z": lambda: z, "images": lambda: self.generate(z)}
            unknown = [s.name for s in specs if s.name not in sources]
            if unknown:
                raise ValueError(f"no representative data for {signature!r} inputs {unknown}")
            yield {s.name: sources[s.name]().numpy() for s in specs}

    def sample_latents(self, num, seed=0):
        """Deterministic standard-normal latents, `[num, *latent_shape]`."""
        return stateless_normal(
            [num, *self.latent_shape], seed=[seed, 0]
        )

    def get_config(self):
        return {"seed": self.seed, "name": self.name}
