"""What the golden scripts (`golden_step.py`, `multiworker_worker.py`) train with."""

import time

import keras

# Loss scale of the golden runs under mixed_float16. Keras' default, 2**15,
# overflows float16 in some of the first steps, and whether it does depends
# on how many examples one replica's reduction sums (16 on one device, 8 per
# replica): one device then skips a step that 2 replicas take, which is
# inherent to dynamic loss scaling, not a distribution error. 2**10 does not
# overflow in these runs, so they compare the same steps.
GOLDEN_LOSS_SCALE = 2.0**10
# SGD learning rates. The VAE's loss is a per-image sum over its pixels
# (nats), so its gradients are ~2 orders larger than the GANs' mean losses:
# at 0.05 three steps moved its weights by twice their norm (loss 709 -> ~1260,
# diverging), and float16 then overflowed at steps that depend on rounding.
LEARNING_RATE = {"vae": 0.005}
DEFAULT_LEARNING_RATE = 0.05


def golden_optimizers(model, family):
    """SGD (`LEARNING_RATE`) for every held optimizer of `model`.

    SGD's update is linear in the gradient, so summation-order noise stays at
    float rounding; Adam divides by sqrt(v) and blows up the rounding of
    near-zero gradients to a visible fraction of its step. Under
    mixed_float16 each is wrapped with `GOLDEN_LOSS_SCALE`.
    """
    def make():
        sgd = keras.optimizers.SGD(LEARNING_RATE.get(family, DEFAULT_LEARNING_RATE))
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            return keras.optimizers.LossScaleOptimizer(sgd, initial_scale=GOLDEN_LOSS_SCALE)
        return sgd

    return {name: make() for name in model.optimizer_targets()}


class StepTimer(keras.callbacks.Callback):
    """Wall time of each `fit` step, from its batch begin to its batch end."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
