"""zoo.metrics: metric functions against closed forms, the committed classifier, the
real-statistics cache, the InceptionV3 path, `python -m zoo.evaluate` and the callback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import trained_tiny_dcgan

from zoo.metrics import functions


def random_spd(rng, d, eigenvalues=None):
    """A random symmetric positive (semi-)definite `[d, d]` matrix and its rotation."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    values = rng.uniform(0.1, 3.0, d) if eigenvalues is None else eigenvalues
    return (q * values) @ q.T, q


# ---- Frechet distance -------------------------------------------------------------


def test_fd_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    full_rank = rng.normal(size=(500, 32)) * rng.uniform(0.1, 5, 32)
    dead_units = np.maximum(full_rank, 0) * (np.arange(32) >= 4)  # 4 features always 0
    few_rows = rng.normal(size=(20, 32))  # rank 19 < 32
    for f in (full_rank, dead_units, few_rows):
        mu, sigma = functions.mean_and_covariance(f)
        assert abs(functions.frechet_distance(mu, sigma, mu, sigma)) < 1e-12 * np.trace(sigma)


def test_fd_commuting_covariances_closed_form():
    # Same eigenvectors: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    mu1, mu2 = rng.normal(size=40), rng.normal(size=40)
    for zeros in (0, 3):
        a, b = rng.uniform(0.1, 4, 40), rng.uniform(0.1, 4, 40)
        a[:zeros] = 0.0  # a singular covariance, as dead ReLU units give
        fd = functions.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
        expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
        assert fd == pytest.approx(expected, rel=1e-12), zeros


def test_fd_non_commuting_2x2_closed_form():
    # For 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), with M = S1^1/2 S2 S1^1/2,
    # tr M = tr(S1 S2) and det M = det S1 det S2.
    rng = np.random.default_rng(2)
    for _ in range(20):
        s1, _ = random_spd(rng, 2)
        s2, _ = random_spd(rng, 2)
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        trace_root = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_root
        assert functions.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fd_random_spd_against_scipy_sqrtm():
    from scipy import linalg  # pinned in requirements.txt: this check must run, not skip

    rng = np.random.default_rng(3)
    s1, _ = random_spd(rng, 64)
    s2, _ = random_spd(rng, 64)
    mu1, mu2 = rng.normal(size=64), rng.normal(size=64)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    assert functions.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fd_of_gaussian_samples_approaches_the_moments_fd():
    rng = np.random.default_rng(4)
    s1, _ = random_spd(rng, 8)
    s2, _ = random_spd(rng, 8)
    mu2 = np.full(8, 0.5)
    exact = functions.frechet_distance(np.zeros(8), s1, mu2, s2)
    x = rng.multivariate_normal(np.zeros(8), s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    sampled = functions.frechet_distance(*functions.mean_and_covariance(x), *functions.mean_and_covariance(y))
    assert sampled == pytest.approx(exact, rel=0.02)


# ---- KID ----------------------------------------------------------------------------


def mmd2_by_loops(x, y):
    """The unbiased MMD^2 with the cubic kernel, written out element by element."""
    d, m = x.shape[1], len(x)

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_one_round_equals_the_written_out_estimator():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.0, size=(12, 5))
    kid, se = functions.kernel_inception_distance(x, y, num_subsets=1, subset_size=12)
    assert kid == pytest.approx(mmd2_by_loops(x, y), rel=1e-12)
    assert se == 0.0


def test_kid_is_unbiased_for_one_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(6)
    # Unbiased: over 400 independent pairs of samples of one distribution the estimates
    # average 0 within 4 standard errors; the biased (V-statistic) version is far off.
    estimates, biased = [], []
    for _ in range(400):
        x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
        estimates.append(functions.kernel_inception_distance(x, y, 1, 20, seed=0)[0])
        k = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    bound = 4 * np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates)) < bound
    assert np.mean(biased) > 10 * bound

    # The function's own standard error: ~0 for one distribution, clearly positive when shifted.
    x, y = rng.normal(size=(4000, 16)), rng.normal(size=(4000, 16))
    kid, se = functions.kernel_inception_distance(x, y, num_subsets=100, subset_size=100, seed=1)
    assert se > 0 and abs(kid) < 4 * se
    kid_shifted, se_shifted = functions.kernel_inception_distance(x, y + 0.5, 100, 100, seed=1)
    assert kid_shifted > 10 * se_shifted


# ---- IS, precision/recall, coverage -------------------------------------------------


def test_inception_score_of_one_hot_and_constant_predictions():
    one_hot = np.tile(np.eye(10), (50, 1))  # [500, 10]: every split holds each class 5 times
    score, spread = functions.inception_score(one_hot, splits=10)
    assert score == pytest.approx(10.0, rel=1e-12) and spread == pytest.approx(0.0, abs=1e-12)
    constant = np.tile(np.full(10, 0.1), (500, 1))
    assert functions.inception_score(constant, splits=5)[0] == pytest.approx(1.0, rel=1e-12)
    # Two classes, confidence 0.9, equally often: exp(0.9 ln 1.8 + 0.1 ln 0.2).
    soft = np.tile([[0.9, 0.1], [0.1, 0.9]], (50, 1))
    expected = np.exp(0.9 * np.log(1.8) + 0.1 * np.log(0.2))
    assert functions.inception_score(soft, splits=1)[0] == pytest.approx(expected, rel=1e-12)


def precision_recall_by_loops(real, fake, k):
    def radii(points):
        return [sorted(np.linalg.norm(points - p, axis=1))[k] for p in points]

    def share_inside(queries, points, r):
        return np.mean([any(np.linalg.norm(q - p) <= rp for p, rp in zip(points, r)) for q in queries])

    return share_inside(fake, real, radii(real)), share_inside(real, fake, radii(fake))


def test_precision_recall_identical_disjoint_and_written_out():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(300, 8))
    assert functions.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert functions.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    real, fake = rng.normal(size=(60, 3)), rng.normal(0.7, 1.3, size=(60, 3))
    precision, recall = functions.precision_recall(real, fake, k=3, batch_size=7)
    expected = precision_recall_by_loops(real, fake, 3)
    assert (precision, recall) == pytest.approx(expected, abs=1e-12)
    assert 0 < precision < 1 and 0 < recall < 1


def test_class_coverage_shares_sum_to_one():
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(10), 1000)
    probs[:, 3] = 0.0  # class 3 never predicted
    shares, covered = functions.class_coverage(probs)
    assert shares.sum() == pytest.approx(1.0) and shares[3] == 0.0
    assert covered == 9
    assert np.allclose(shares, np.bincount(probs.argmax(1), minlength=10) / 1000)


# ---- the committed classifier -------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_extractor():
    from zoo.metrics import get_extractor

    return get_extractor("fashion_classifier")


def test_committed_classifier_reaches_its_stated_accuracy(fashion_extractor, fashion_test_arrays):
    from zoo.metrics import classifier

    images, labels = fashion_test_arrays  # all 10,000 test images, 28x28: padded by the extractor
    features, probs = fashion_extractor.outputs(images / 255.0)
    assert features.shape == (10000, 128) and features.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    # Same weights and images as the stated number; only float rounding (batch size, CPU
    # kernels) differs, which can flip a few near-tie predictions: 0.1% = 10 images.
    assert accuracy >= classifier.TEST_ACCURACY - 0.001, accuracy
    assert classifier.WEIGHTS.stat().st_size < 2 * 2**20


def test_fashion_extractor_pads_28_like_zoo_data(fashion_extractor, fashion_test_arrays):
    from zoo import data

    images, _ = fashion_test_arrays
    padded = next(iter(data.make_dataset("fashion_mnist:test", 32, 1, 64, shuffle=False,
                                         arrays=(images[:64], None))))
    direct = fashion_extractor.features(images[:64] / 255.0)
    via_data = fashion_extractor.features((padded.numpy() + 1) / 2)
    np.testing.assert_allclose(direct, via_data, atol=1e-4)
    with pytest.raises(ValueError, match="28x28 or 32x32 grayscale"):
        fashion_extractor.features(np.zeros((2, 64, 64, 3), np.float32))


# ---- real statistics cache ----------------------------------------------------------


def test_real_statistics_cache_hit_and_invalidation(tmp_path, fashion_extractor, monkeypatch):
    from zoo.metrics import classifier, stats
    from zoo.metrics.extractors import FashionClassifier

    rng = np.random.default_rng(9)
    npz = tmp_path / "real.npz"
    np.savez(npz, images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    cache = tmp_path / "cache"
    first = stats.real_statistics(f"npz:{npz}", 32, (32, 32, 1), fashion_extractor, cache)
    files = sorted(cache.glob("*.npz"))
    assert len(first) == 32 and len(files) == 1

    # A hit must not run the network.
    def fail(*args, **kwargs):
        raise AssertionError("the network ran on a cache hit")

    with monkeypatch.context() as m:
        m.setattr(fashion_extractor, "outputs", fail)
        again = stats.real_statistics(f"npz:{npz}", 32, (32, 32, 1), fashion_extractor, cache)
        with np.load(files[0], allow_pickle=False) as f:
            assert json.loads(str(f["key"]))["num"] == 32
    np.testing.assert_array_equal(again.features, first.features.astype(np.float32))
    np.testing.assert_array_equal(again.probabilities, first.probabilities.astype(np.float32))

    # Each change gives a new file: fewer images, another shape, other data, other weights.
    stats.real_statistics(f"npz:{npz}", 31, (32, 32, 1), fashion_extractor, cache)
    stats.real_statistics(f"npz:{npz}", 32, (28, 28, 1), fashion_extractor, cache)
    images = np.load(npz)["images"]
    images[0, 0, 0] ^= 1
    np.savez(npz, images=images)
    changed = stats.real_statistics(f"npz:{npz}", 32, (32, 32, 1), fashion_extractor, cache)
    assert len(list(cache.glob("*.npz"))) == 4
    assert not np.array_equal(changed.features[0], first.features[0])
    other_weights = tmp_path / "other.weights.h5"
    other_weights.write_bytes(classifier.WEIGHTS.read_bytes() + b"\0")  # h5 ignores trailing bytes
    stats.real_statistics(f"npz:{npz}", 32, (32, 32, 1), FashionClassifier(other_weights), cache)
    assert len(list(cache.glob("*.npz"))) == 5


# ---- InceptionV3 ---------------------------------------------------------------------


def test_inception_v3_path_with_random_weights():
    """The FID protocol on 4 images with random weights (one InceptionV3 build)."""
    import keras

    from zoo.metrics import InceptionV3

    keras.utils.set_random_seed(0)
    extractor = InceptionV3(None, batch_size=3)
    images = np.random.default_rng(10).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    features, probs = extractor.outputs(images)
    assert features.shape == (4, 2048) and probs.shape == (4, 1000)
    assert np.isfinite(features).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert not np.allclose(features[0], features[1])
    # Resized to 299, in [-1, 1], grayscale repeated: the RGB image with equal channels is the same input.
    prepared = keras.ops.convert_to_numpy(extractor._prepare(images))
    assert prepared.shape == (4, 299, 299, 3) and -1 <= prepared.min() < prepared.max() <= 1
    rgb = keras.ops.convert_to_numpy(extractor._prepare(np.repeat(images, 3, -1)))
    np.testing.assert_array_equal(prepared, rgb)


@pytest.mark.slow
def test_inception_v3_weights_files(tmp_path):
    """A weights file without the top, a missing and a foreign file (two builds: about 30 s)."""
    import keras

    from zoo.metrics import InceptionV3, evaluate

    notop = tmp_path / "notop.weights.h5"
    keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg").save_weights(notop)
    headless = InceptionV3(notop)
    images = np.random.default_rng(11).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    assert headless.features(images).shape == (2, 2048) and headless.num_classes is None
    with pytest.raises(ValueError, match="no classification head"):
        headless.probabilities(images)

    def gray(z):
        return np.full((len(z), 28, 28, 1), 0.5, np.float32)

    with pytest.raises(ValueError, match="need class probabilities"):
        evaluate(gray, ("fd", "is"), num=4, extractor=headless, latent_shape=(2,), cache_dir=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InceptionV3(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(ValueError, match="not an HDF5"):
        InceptionV3(tmp_path / "text.h5")


# ---- evaluate(), python -m zoo.evaluate, the callback --------------------------------


@pytest.fixture(scope="module")
def tiny_dcgan(fashion_test_arrays):
    return trained_tiny_dcgan(fashion_test_arrays, steps=100)


def test_evaluate_on_real_images_and_a_function(tmp_path, fashion_extractor, fashion_test_arrays):
    from zoo.metrics import evaluate

    images, _ = fashion_test_arrays
    batches = iter(np.split((images[:400] / 255.0).astype(np.float32), 4))  # [100, 28, 28, 1] each

    # A "generator" that replays the first 400 real test images: every metric at its best.
    results = evaluate(lambda z: next(batches), num=400, batch_size=100, latent_shape=(1,),
                       cache_dir=tmp_path, extractor=fashion_extractor, kid_subsets=10, kid_subset_size=100)
    assert abs(results["fd"]) < 1e-6 and results["kid"] < 4 * results["kid_se"]
    assert results["precision"] == 1.0 and results["recall"] == 1.0
    assert results["coverage"] == 10 and results["coverage_tvd"] == 0.0
    assert results["is"] > 3


def test_evaluate_command_on_keras_file_and_saved_model(tmp_path, tiny_dcgan, capsys, monkeypatch):
    from export import export_model
    from zoo import evaluate as command

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    keras_path = tmp_path / "tiny.keras"
    tiny_dcgan.save(keras_path)
    saved = export_model(tiny_dcgan, tmp_path / "export", "tiny", formats=("saved_model",))["saved_model"]
    args = ["--num", "300", "--batch-size", "128", "--seed", "3"]

    assert command.main([str(keras_path), *args, "--json", str(tmp_path / "r.json")]) == 0
    from_keras = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((tmp_path / "r.json").read_text())["results"] == from_keras
    assert set(from_keras) == {"fd", "kid", "kid_se", "is", "is_std", "precision", "recall",
                               "coverage", "coverage_min_share", "coverage_tvd"}
    assert from_keras["fd"] > 1.0  # 100 steps of a tiny GAN is far from the data

    # The SavedModel's model folder (its highest version is used): same latents, same images,
    # same numbers up to float32 rounding of the exported graph.
    assert command.saved_model_dir(saved.parent) == saved
    assert command.main([str(saved.parent), *args]) == 0
    from_saved = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_saved == pytest.approx(from_keras, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_python_m_zoo_evaluate_in_a_fresh_process(tmp_path, tiny_dcgan):
    """The module as a command (a fresh TensorFlow process: about 30 s)."""
    keras_path = tmp_path / "tiny.keras"
    tiny_dcgan.save(keras_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "ZOO_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-P", "-m", "zoo.evaluate", str(keras_path), "--num", "200",
                           "--metrics", "fd,coverage"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {"fd", "coverage", "coverage_min_share", "coverage_tvd"}
    proc = subprocess.run([sys.executable, "-P", "-m", "zoo.evaluate", str(tmp_path / "missing.keras")],
                          capture_output=True, text=True, timeout=600, env=env)
    # TensorFlow's C++ start-up lines come first on this CUDA build; ours is the last line.
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_evaluate_command_errors(tmp_path, capsys):
    import zoo
    from zoo import evaluate as command

    model = zoo.get_model("dcgan", "dcgan_tiny", image_size=16)
    model.compile()  # saved with built optimizers: loading has their variables to restore
    small = tmp_path / "small.keras"
    model.save(small)
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "nothing")], "does not exist"),
        ([str(tmp_path / "empty")], "neither a run directory"),
        ([str(small), "--metrics", "fd,sharpness"], "unknown metric"),
        ([str(small), "--num", "1"], "--num must be >= 2"),
        ([str(small), "--extractor", "inception_v3"], "needs --inception-weights"),
        ([str(small), "--extractor", "inception_v3", "--inception-weights", str(tmp_path / "x.h5")],
         "does not exist"),
        ([str(small), "--real", "folder:/no/such/dir"], "does not exist"),
        ([str(small)], "takes 28x28 or 32x32 grayscale images, not 16x16x1"),
        ([str(small), "--metrics", "nll"], "needs a VAE"),
    ]
    for argv, message in cases:
        try:
            code = command.main(argv)
        except SystemExit as e:  # argparse-level errors
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert err.startswith("error:") and message in err and "\n" not in err, (argv, err)


def test_metrics_callback_writes_fd_into_history(tmp_path, tiny_dcgan, fashion_test_arrays):
    """On the shared tiny DC-GAN (its train step is traced already): 3 more steps."""
    import keras

    from zoo import data
    from zoo.metrics import MetricsCallback

    seen = []

    class Probe(keras.callbacks.Callback):  # a later callback, as TensorBoard would be
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    metrics = MetricsCallback(every_n_epochs=2, num=200, metrics=("fd", "coverage"),
                              cache_dir=tmp_path, verbose=False)
    history = tiny_dcgan.fit(data.make_dataset("fashion_mnist:test", 32, 1, 32, arrays=fashion_test_arrays),
                             steps_per_epoch=1, epochs=3, verbose=0, callbacks=[metrics, Probe()])
    assert metrics.evaluated_epochs == [1, 2]  # every 2nd epoch, and the last
    assert len(history.history["fd"]) == 2 and len(history.history["d_loss"]) == 3
    assert all(np.isfinite(v) and v > 0 for v in history.history["fd"])
    assert "fd" not in seen[0] and "fd" in seen[1] and "coverage_tvd" in seen[2]


def test_vae_nll(fashion_test_arrays):
    import keras

    import zoo
    from zoo import data
    from zoo.metrics import evaluate
    from zoo.vae.vae_losses import bernoulli_nll, gaussian_kl

    keras.utils.set_random_seed(0)
    model = zoo.get_model("vae", "vae_tiny")
    model.compile()
    model.fit(data.make_dataset("fashion_mnist:test", 32, 1, 64, arrays=fashion_test_arrays),
              steps_per_epoch=20, epochs=1, verbose=0)
    results = evaluate(model, ("nll",), num=250, nll_k=16)  # 2 batches of 100 and one of 50
    # The negative ELBO written out (analytic KL, other noise) on the same 250 images.
    images = fashion_test_arrays[0][:250]
    x = next(iter(data.make_dataset("fashion_mnist:test", 32, 1, 250, shuffle=False,
                                    arrays=(images, None))))
    x = (x + 1) / 2  # [250, 32, 32, 1] in [0, 1]
    stats = model.encoder(x)
    eps = np.random.default_rng(12).normal(size=stats["z_mean"].shape).astype(np.float32)
    z = stats["z_mean"] + eps * keras.ops.exp(stats["z_log_var"] / 2)
    neg_elbo = bernoulli_nll(x, model.decoder(z)) + gaussian_kl(stats["z_mean"], stats["z_log_var"])
    assert results["nll_elbo"] == pytest.approx(float(keras.ops.mean(neg_elbo)), rel=0.01)
    assert results["nll_iwae"] < results["nll_elbo"]  # the importance-weighted bound is tighter
