"""Sample-quality metrics: FD, KID, IS, precision/recall, class coverage, VAE NLL.

Three ways in:

* `evaluate(model, metrics=("fd", "kid", "is", "pr", "coverage"), num=10000)`
  -> `{name: float}`;
* `MetricsCallback(every_n_epochs=1, num=2000, metrics=("fd",))` during `fit`;
* `python -m zoo.evaluate RUN_DIR|MODEL.keras|SAVED_MODEL --metrics fd,kid`.

The features come from an extractor (`get_extractor`): by default the
project's committed Fashion-MNIST classifier (`zoo.metrics.classifier`), or
`keras.applications.InceptionV3` with a weights file you supply. The metric
functions themselves (`frechet_distance`, `kernel_inception_distance`,
`inception_score`, `precision_recall`, `class_coverage`) are plain numpy.
The real data's features are cached on disk (`zoo.metrics.stats`).
"""

from zoo.metrics.callback import MetricsCallback
from zoo.metrics.evaluation import DEFAULT_METRICS, METRICS, compare, evaluate
from zoo.metrics.extractors import EXTRACTORS, Extractor, FashionClassifier, InceptionV3, get_extractor
from zoo.metrics.functions import (
    class_coverage,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mean_and_covariance,
    precision_recall,
)
from zoo.metrics.stats import Statistics, cache_dir, real_statistics, statistics_of

__all__ = [
    "DEFAULT_METRICS", "EXTRACTORS", "METRICS", "Extractor", "FashionClassifier", "InceptionV3",
    "MetricsCallback", "Statistics", "cache_dir", "class_coverage", "compare", "evaluate",
    "frechet_distance", "get_extractor", "inception_score", "kernel_inception_distance",
    "mean_and_covariance", "precision_recall", "real_statistics", "statistics_of",
]
