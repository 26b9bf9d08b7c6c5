"""Feature statistics of image sets, and the on-disk cache of the real data's.

The real data's statistics are computed once per (data, extractor) and kept
as `.npz` files (read with `allow_pickle=False`) under `cache_dir()`. A file's
name is a hash of everything its numbers depend on: the data spec, the
number of images, the image shape they are converted to, the sha256 of those
images' bytes, the extractor's name and the sha256 of its weights file. Any
change of data or extractor gives a new name, so stale statistics are never
read; old files are simply left behind.
"""

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np

from zoo import data
from zoo.metrics.functions import mean_and_covariance

CACHE_VERSION = 1  # bump when what a cache file holds changes
CONVERT_CHUNK = 1000  # images converted to the model's shape per step


@dataclasses.dataclass(eq=False)
class Statistics:
    """Features (and class probabilities) of a set of images.

    Attributes:
        features: float64 `[N, D]`.
        probabilities: float64 `[N, classes]`, or None (extractor without a head).

    Example:

    ```python
    stats = Statistics(*extractor.outputs(images))
    mu, sigma = stats.moments
    ```
    """

    features: np.ndarray
    probabilities: np.ndarray = None

    @functools.cached_property
    def moments(self):
        """`(mu [D], sigma [D, D])` of the features, float64."""
        return mean_and_covariance(self.features)

    def __len__(self):
        return len(self.features)


def statistics_of(images, extractor):
    """`Statistics` of images in [0, 1] `[N, H, W, C]` under an `Extractor`.

    Example:

    ```python
    stats = statistics_of(model.generate(model.sample_latents(1000)), get_extractor())
    ```
    """
    return Statistics(*extractor.outputs(images))


def cache_dir(path=None):
    """Where real statistics are cached: `path`, else `$ZOO_CACHE_DIR`, else `~/.cache/zoo/metrics`.

    Example:

    ```python
    sorted(cache_dir().glob("real-*.npz"))  # the cached real statistics
    ```
    """
    if path is not None:
        return pathlib.Path(path)
    if os.environ.get("ZOO_CACHE_DIR"):
        return pathlib.Path(os.environ["ZOO_CACHE_DIR"])
    return pathlib.Path.home() / ".cache" / "zoo" / "metrics"


def real_images(spec, num, image_shape, data_dir=None, arrays=None):
    """The first `num` images of a data spec at a model's shape, float32 in [0, 1].

    Conversion is `zoo.data.make_dataset`'s (padding 28 -> 32, resizing
    otherwise), i.e. what the model was trained on.

    Args:
        spec: data spec string.
        num: number of images; None or more than the data has means all.
        image_shape: `(H, W, C)`, square.
        data_dir: tfds data directory.
        arrays: already loaded `(images, labels)` of `spec`.

    Returns:
        float32 `[min(num, N), H, W, C]` in [0, 1].

    Example:

    ```python
    images = real_images("fashion_mnist:test", 100, (32, 32, 1))  # [100, 32, 32, 1], padded
    ```
    """
    images, _ = arrays if arrays is not None else data.load_arrays(spec, data_dir)
    images = images[:num]
    size, _, channels = image_shape
    out = []
    for start in range(0, len(images), CONVERT_CHUNK):
        chunk = images[start : start + CONVERT_CHUNK]
        # One batch holding the whole chunk: the model's own input conversion.
        ds = data.make_dataset(spec, size, channels, len(chunk), shuffle=False, arrays=(chunk, None))
        out.append((next(iter(ds)).numpy() + 1.0) / 2.0)  # [n, H, W, C] in [0, 1]
    return np.concatenate(out)


def real_statistics(spec, num, image_shape, extractor, cache=None, data_dir=None, verbose=False):
    """Statistics of a data spec's first `num` images, from the cache when present.

    Args:
        spec: data spec string (see `zoo.data`).
        num: number of images (None: all).
        image_shape: `(H, W, C)` the images are converted to (the model's).
        extractor: an `Extractor`.
        cache: cache directory (see `cache_dir`); `False` disables caching.
            Random-weight extractors are never cached.
        data_dir: tfds data directory.
        verbose: print whether the cache was hit.

    Returns:
        `Statistics`.

    Example:

    ```python
    real = real_statistics("fashion_mnist:test", 10000, (32, 32, 1), get_extractor())
    ```
    """
    extractor.check_image_shape(tuple(image_shape))
    arrays = data.load_arrays(spec, data_dir)
    images = arrays[0][:num]
    path = None
    if cache is not False and extractor.weights_sha256 is not None:
        key = {
            "version": CACHE_VERSION, "spec": spec, "num": len(images),
            "image_shape": [int(d) for d in image_shape],
            "data_sha256": hashlib.sha256(np.ascontiguousarray(images).data).hexdigest(),
            "extractor": extractor.name, "weights_sha256": extractor.weights_sha256,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        path = cache_dir(cache) / f"real-{extractor.name}-{digest}.npz"
        if path.is_file():
            if verbose:
                print(f"[metrics] real statistics from {path}")
            return _load(path)
    stats = statistics_of(real_images(spec, num, image_shape, data_dir, arrays), extractor)
    if path is not None:
        _save(path, stats, key)
        if verbose:
            print(f"[metrics] real statistics written to {path}")
    return stats


def _save(path, stats, key):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"features": stats.features.astype(np.float32), "key": np.array(json.dumps(key))}
    if stats.probabilities is not None:
        arrays["probabilities"] = stats.probabilities.astype(np.float32)
    # The networks compute in float32: storing their outputs as float32 loses nothing.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path):
    with np.load(path, allow_pickle=False) as f:
        probabilities = f["probabilities"].astype(np.float64) if "probabilities" in f.files else None
        return Statistics(f["features"].astype(np.float64), probabilities)
