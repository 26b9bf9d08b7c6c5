"""`evaluate`: sample-quality metrics of a generator against real data."""

import time

import keras
import numpy as np

from zoo import data
from zoo.base import stateless_normal
from zoo.metrics import functions
from zoo.metrics.extractors import get_extractor
from zoo.metrics.stats import Statistics, real_statistics, statistics_of

METRICS = ("fd", "kid", "is", "pr", "coverage", "nll")
DEFAULT_METRICS = ("fd", "kid", "is", "pr", "coverage")
PROBABILITY_METRICS = {"is", "coverage"}
NLL_BATCH = 100  # images per `iwae_nll` call (it decodes batch * k images in passes of 4096)


def check_metrics(metrics):
    """The metric names as a tuple; `ValueError` for an unknown or missing one.

    Example:

    ```python
    check_metrics("fd,kid")  # ("fd", "kid")
    ```
    """
    metrics = tuple(metrics.split(",")) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown or metrics}; choose from {', '.join(METRICS)}")
    return metrics


def compare(real, fake, metrics=DEFAULT_METRICS, seed=0, kid_subsets=100, kid_subset_size=1000,
            is_splits=10, pr_k=3):
    """Metrics of one set of `Statistics` (`fake`) against another (`real`).

    Args:
        real: `Statistics` of the reference images.
        fake: `Statistics` of the images judged.
        metrics: any of "fd", "kid", "is", "pr", "coverage".
        seed: seed of KID's subset draws.
        kid_subsets: KID rounds.
        kid_subset_size: images per set in a KID round.
        is_splits: parts the IS is computed on.
        pr_k: neighbour defining the precision/recall radii.

    Returns:
        `{name: float}`: `fd`; `kid`, `kid_se` (unbiased MMD^2 and its
        standard error over rounds); `is`, `is_std` (of `fake`); `precision`,
        `recall` (on the first `min(len(real), len(fake))` of each set);
        `coverage` (classes `fake` covers), `coverage_min_share` (share of
        its rarest class) and `coverage_tvd` (total variation distance of the
        predicted-class shares from `real`'s, 0 to 1).

    Example:

    ```python
    floor = compare(real_statistics("fashion_mnist:test", 10000, (32, 32, 1), extractor),
                    real_statistics("fashion_mnist:train", 10000, (32, 32, 1), extractor))
    ```
    """
    metrics = check_metrics(metrics)
    if PROBABILITY_METRICS & set(metrics) and (real.probabilities is None or fake.probabilities is None):
        raise ValueError("metrics is/coverage need class probabilities; the extractor has no "
                         "classification head")
    results = {}
    if "fd" in metrics:
        results["fd"] = functions.frechet_distance(*real.moments, *fake.moments)
    if "kid" in metrics:
        results["kid"], results["kid_se"] = functions.kernel_inception_distance(
            real.features, fake.features, kid_subsets, kid_subset_size, seed)
    if "is" in metrics:
        results["is"], results["is_std"] = functions.inception_score(
            fake.probabilities, min(is_splits, len(fake)))
    if "pr" in metrics:
        n = min(len(real), len(fake))  # equal sizes: the k-NN radii depend on the set size
        results["precision"], results["recall"] = functions.precision_recall(
            real.features[:n], fake.features[:n], pr_k)
    if "coverage" in metrics:
        shares, covered = functions.class_coverage(fake.probabilities)
        real_shares, _ = functions.class_coverage(real.probabilities)
        results["coverage"] = float(covered)
        results["coverage_min_share"] = float(shares.min())
        results["coverage_tvd"] = float(np.abs(shares - real_shares).sum() / 2)
    return results


def evaluate(generate_fn_or_model, metrics=DEFAULT_METRICS, num=10000, real="fashion_mnist:test",
             extractor="fashion_classifier", inception_weights=None, batch_size=250, seed=0,
             cache_dir=None, latent_shape=None, nll_k=64, data_dir=None, verbose=False,
             **compare_kwargs):
    """Sample-quality metrics of a generator against real data.

    `num` latents are drawn from N(0, 1) with `seed` (`model.sample_latents`
    when the model has it, else the same stateless draw), turned into images
    in batches, and their features compared with those of the first `num`
    real images (converted to the model's image shape as `zoo.data` converts
    training data; their statistics are cached on disk, see
    `zoo.metrics.stats`).

    Args:
        generate_fn_or_model: a zoo model (`generate`, `latent_shape`,
            `image_shape`) or a function `z -> images in [0, 1] [N, H, W, C]`
            (then pass `latent_shape`).
        metrics: names from `METRICS` (tuple or comma-separated string);
            "nll" needs a VAE (`iwae_nll`).
        num: generated images, and real images compared (capped at the data's size).
        real: data spec of the real images (see `zoo.data`).
        extractor: "fashion_classifier", "inception_v3" or an `Extractor`.
        inception_weights: weights file of the `inception_v3` extractor.
        batch_size: images generated per call.
        seed: seed of the latents, of KID's subsets and of the NLL samples.
        cache_dir: real-statistics cache (default `$ZOO_CACHE_DIR` or
            `~/.cache/zoo/metrics`); `False` disables it.
        latent_shape: per-example latent shape, for a plain function.
        nll_k: importance samples of the IWAE NLL.
        data_dir: tfds data directory.
        verbose: print progress.
        **compare_kwargs: `kid_subsets`, `kid_subset_size`, `is_splits`,
            `pr_k` (see `compare`).

    Returns:
        `{name: float}`: what `compare` returns for the metrics asked, plus
        for "nll" `nll_elbo` (one-sample negative ELBO) and `nll_iwae`
        (importance-weighted NLL with `nll_k` samples), in nats per image
        averaged over the first `num` real images.

    Example:

    ```python
    results = zoo.metrics.evaluate(model, metrics=("fd", "kid"), num=10000)
    results["fd"], results["kid"]
    ```
    """
    metrics = check_metrics(metrics)
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = generate_fn_or_model
    generate = getattr(model, "generate", model)
    if not callable(generate):
        raise TypeError(f"expected a model with generate() or a function, got {type(model).__name__}")
    if "nll" in metrics and not hasattr(model, "iwae_nll"):
        raise ValueError("metric nll needs a VAE (a model with iwae_nll); "
                         f"{type(model).__name__} has none")
    latent_shape = tuple(getattr(model, "latent_shape", latent_shape) or ())
    if not latent_shape:
        raise ValueError("pass latent_shape= with a plain generate function")
    start = time.perf_counter()
    results = {}
    image_metrics = [m for m in metrics if m != "nll"]
    if image_metrics:
        z = _latents(model, num, latent_shape, seed)  # [num, *latent_shape]
        first = _images(generate, z[:batch_size])
        image_shape = tuple(getattr(model, "image_shape", first.shape[1:]))
        extractor = get_extractor(extractor, inception_weights)
        extractor.check_image_shape(image_shape)
        if PROBABILITY_METRICS & set(metrics) and extractor.num_classes is None:
            raise ValueError(f"metrics is/coverage need class probabilities; "
                             f"{extractor.description()} has no classification head")
        real_stats = real_statistics(real, num, image_shape, extractor, cache_dir, data_dir, verbose)
        fake = [statistics_of(first, extractor)]
        for i in range(batch_size, num, batch_size):
            fake.append(statistics_of(_images(generate, z[i : i + batch_size]), extractor))
        fake = Statistics(
            np.concatenate([s.features for s in fake]),  # [num, D]
            None if fake[0].probabilities is None else np.concatenate([s.probabilities for s in fake]),
        )
        results.update(compare(real_stats, fake, image_metrics, seed=seed, **compare_kwargs))
    if "nll" in metrics:
        results.update(_nll(model, real, num, nll_k, seed, data_dir))
    if verbose:
        print(f"[metrics] {', '.join(metrics)} on {num} images in {time.perf_counter() - start:.1f} s")
    return results


def _latents(model, num, latent_shape, seed):
    if hasattr(model, "sample_latents"):
        return model.sample_latents(num, seed=seed)
    return stateless_normal([num, *latent_shape], seed=[seed, 0])  # what GenerativeModel draws


def _images(generate, z):
    images = keras.ops.convert_to_numpy(generate(z)).astype(np.float32)
    if images.ndim != 4:
        raise ValueError(f"the generator returned shape {images.shape}, not [N, H, W, C]")
    return images


def _nll(model, real, num, k, seed, data_dir):
    """Negative ELBO and IWAE NLL of a VAE, nats per image, on `real`'s first `num` images."""
    size, _, channels = model.image_shape
    images, _ = data.load_arrays(real, data_dir)
    images = images[:num]
    # make_dataset drops a last partial batch: the images that fill whole batches, then the rest.
    whole = len(images) - len(images) % NLL_BATCH
    parts = [(images[:whole], NLL_BATCH), (images[whole:], len(images) - whole)]
    batches = [x for part, batch in parts if batch
               for x in data.make_dataset(real, size, channels, batch, shuffle=False, arrays=(part, None))]
    elbo, iwae = [], []
    for i, x in enumerate(batches):  # x: [batch, H, W, C] in [-1, 1]
        batch_seed = seed * 100_000 + i  # fresh noise per batch, fixed by `seed`
        elbo.append(keras.ops.convert_to_numpy(model.iwae_nll(x, k=1, seed=batch_seed)))
        iwae.append(keras.ops.convert_to_numpy(model.iwae_nll(x, k=k, seed=batch_seed)))
    return {"nll_elbo": float(np.concatenate(elbo).mean()), "nll_iwae": float(np.concatenate(iwae).mean())}
