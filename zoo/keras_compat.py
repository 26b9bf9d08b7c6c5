"""The zoo's overrides of private Keras trainer methods, and the Keras versions they hold for.

Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585): it builds the model from the first batch
MEAN-reduced in eager mode, and reduces scalar logs along an axis they do
not have. `MultiWorkerFit`, a mixin of `zoo.base.GenerativeModel`, overrides
the two trainer methods involved, `_maybe_symbolic_build` and
`_make_function`, and acts only in multi-worker mode, so users still call
plain `model.fit`.

Private methods change between Keras releases without notice, so this module
refuses, with one line, any Keras outside the range the overrides were
written and tested with, the range pyproject.toml declares.
"""

import re

import keras
import tensorflow as tf

# keras>=3.15,<3.16 in pyproject.toml: (lowest tested, first untested) major.minor.
KERAS_RANGE = ((3, 15), (3, 16))


def check_keras_version(version):
    """Raises `RuntimeError` in one line unless `version` is in `KERAS_RANGE`.

    Example:

    ```python
    check_keras_version("3.15.0")  # passes
    check_keras_version("3.16.0")  # RuntimeError: zoo needs keras>=3.15,<3.16 (...); found keras 3.16.0
    ```
    """
    (lo_major, lo_minor), (hi_major, hi_minor) = KERAS_RANGE
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or not KERAS_RANGE[0] <= (int(found[1]), int(found[2])) < KERAS_RANGE[1]:
        raise RuntimeError(
            f"zoo needs keras>={lo_major}.{lo_minor},<{hi_major}.{hi_minor} (its multi-worker fit "
            f"overrides private Keras trainer methods); found keras {version}"
        )


check_keras_version(keras.__version__)

# The predicate Keras itself uses to pick the multi-worker reductions that
# fail (keras/src/backend/tensorflow/trainer.py); the overrides below fire
# exactly when it does.
from keras.src.backend.tensorflow.trainer import (  # noqa: E402  after the version check
    _collective_all_reduce_multi_worker as _multi_worker,
)


class MultiWorkerFit:
    """Mixin of a `keras.Model` (before it in the bases): `fit` under `MultiWorkerMirroredStrategy`.

    Changes nothing under any other strategy.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Upstream builds from the first distributed batch MEAN-reduced in
        # eager mode, which the collective strategy rejects for a structured
        # batch such as `(images, labels)` ("Attempt to convert a value
        # (PerReplica...)"). Building needs only the shapes and dtypes, so
        # any local replica's batch does.
        if iterator is not None and _multi_worker(self.distribute_strategy):
            local = self.distribute_strategy.experimental_local_results
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: local(v)[0], next(it))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _make_function(self, step_function):
        # In multi-worker mode upstream `reduce_per_replica` reduces every
        # log with `strategy.reduce("MEAN", v, axis=0)`, which fails on the
        # scalar logs a `train_step`/`test_step` returns ("Invalid reduction
        # dimension 0"). A `[1]` log reduces to the scalar mean over
        # replicas: what one device and `MirroredStrategy` log.
        if not _multi_worker(self.distribute_strategy):
            return super()._make_function(step_function)

        def rank1(value):
            value = tf.convert_to_tensor(value)
            return tf.reshape(value, [1]) if value.shape.rank == 0 else value

        def step_with_rank1_logs(data):
            return tf.nest.map_structure(rank1, step_function(data))

        return super()._make_function(step_with_rank1_logs)
