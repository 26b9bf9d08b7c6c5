"""`MetricsCallback`: sample-quality metrics during `fit`."""

import keras

from zoo.metrics.evaluation import check_metrics, evaluate


class MetricsCallback(keras.callbacks.Callback):
    """Evaluates the model being trained every N epochs and adds the numbers to `logs`.

    At the end of epochs N, 2N, ... and of the last epoch `fit` runs, it calls
    `zoo.metrics.evaluate(self.model, ...)` and writes each result (`fd`,
    `kid`, ...) into the epoch's `logs`, then prints them. Keras passes one
    `logs` dict to the callbacks in list order, so callbacks placed AFTER this
    one see the values: put it BEFORE `keras.callbacks.TensorBoard` and
    `CSVLogger` (History and the progress bar always come after it). Epochs
    that are not evaluated get no key at all (a NaN placeholder would read
    as a diverged value and is not valid strict JSON in a saved history), so
    History lists hold only the evaluated epochs (`self.evaluated_epochs`
    says which) and a `CSVLogger`, which fixes its columns at the first
    epoch, needs `every_n_epochs=1`.

    The extractor is built at the first evaluation and reused (see
    `get_extractor`); the real data's statistics come from the disk cache
    after the first run.

    Args:
        real: data spec of the real images.
        every_n_epochs: evaluate after every N-th epoch (and the last).
        num: generated (and real) images per evaluation.
        metrics: names accepted by `evaluate` (tuple or comma-separated).
        extractor: extractor name or instance.
        inception_weights: weights file of the `inception_v3` extractor.
        batch_size: images generated per call.
        seed: latent seed: the same latents every evaluation.
        cache_dir: real-statistics cache (see `evaluate`).
        verbose: print the values after each evaluation.
        **evaluate_kwargs: further `evaluate` arguments (`nll_k`, `kid_subsets`, ...).

    Example:

    ```python
    model.fit(ds, epochs=20, callbacks=[
        zoo.metrics.MetricsCallback(every_n_epochs=5, num=2000, metrics=("fd", "kid")),
        keras.callbacks.TensorBoard("logs"),  # after the metrics: it logs fd and kid
    ])
    model.history.history["fd"]  # one value per evaluated epoch
    ```
    """

    def __init__(self, real="fashion_mnist:test", every_n_epochs=1, num=2000, metrics=("fd",),
                 extractor="fashion_classifier", inception_weights=None, batch_size=250, seed=0,
                 cache_dir=None, verbose=True, **evaluate_kwargs):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.real = real
        self.every_n_epochs = int(every_n_epochs)
        self.num = int(num)
        self.metrics = check_metrics(metrics)
        self.extractor = extractor
        self.inception_weights = inception_weights
        self.batch_size = batch_size
        self.seed = seed
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.evaluate_kwargs = evaluate_kwargs
        self.evaluated_epochs = []

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        results = evaluate(
            self.model, self.metrics, num=self.num, real=self.real, extractor=self.extractor,
            inception_weights=self.inception_weights, batch_size=self.batch_size, seed=self.seed,
            cache_dir=self.cache_dir, **self.evaluate_kwargs,
        )
        if logs is not None:
            logs.update(results)
        self.evaluated_epochs.append(epoch)
        if self.verbose:
            values = ", ".join(f"{k}={v:.4g}" for k, v in results.items())
            print(f"epoch {epoch + 1}: {values}", flush=True)
