"""Feature extractors: images in [0, 1] -> features and class probabilities.

Two extractors, by name (`get_extractor`):

* `fashion_classifier` (the default for 28- and 32-pixel grayscale data): the
  project's committed Fashion-MNIST CNN (`zoo.metrics.classifier`); features
  are its 128-d penultimate layer, probabilities its softmax over 10 classes.
* `inception_v3`: `keras.applications.InceptionV3` with a weights file the
  user supplies, under the standard FID protocol (bilinear resize to 299x299,
  grayscale repeated to 3 channels, inputs scaled to [-1, 1]); features are
  the 2048-d average pool, probabilities the 1000-way softmax top when the
  file has one.

Building an extractor loads its network; importing this module does not.
"""

import functools
import hashlib
import pathlib

import keras
import numpy as np

from zoo.metrics import classifier

EXTRACTORS = ("fashion_classifier", "inception_v3")


class Extractor:
    """Base class: batches images through a network giving `(features, probabilities)`.

    Subclasses set `name`, `feature_dim`, `num_classes` (None without a
    classification head), `class_names`, `weights_path` (None for random
    weights) and `_network` (a Keras model: prepared images -> `[features,
    probabilities]`, or features alone without a head), and define
    `check_image_shape` and `_prepare`.

    Args:
        batch_size: images per network call.

    Example:

    ```python
    class Flat(Extractor):  # raw pixels as features: a sanity baseline
        name, feature_dim = "flat", 32 * 32

        def __init__(self):
            super().__init__(batch_size=1000)
            images = keras.Input((32, 32, 1))
            self._network = keras.Model(images, keras.layers.Flatten()(images))

        def check_image_shape(self, image_shape):
            assert tuple(image_shape) == (32, 32, 1)

        def _prepare(self, images):
            return images
    ```
    """

    name = ""
    feature_dim = 0
    num_classes = None
    class_names = None
    weights_path = None

    def __init__(self, batch_size):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._weights_sha256 = None

    def check_image_shape(self, image_shape):
        """Raises `ValueError` (one line) if images of `(H, W, C)` cannot be taken."""
        raise NotImplementedError

    def _prepare(self, images):
        """A batch `[n, H, W, C]` in [0, 1] -> the network's input tensor."""
        raise NotImplementedError

    @property
    def weights_sha256(self):
        """sha256 hex digest of the weights file, or None for random weights."""
        if self.weights_path is not None and self._weights_sha256 is None:
            digest = hashlib.sha256()
            with open(self.weights_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def outputs(self, images):
        """Features and probabilities of images in one pass.

        Args:
            images: `[N, H, W, C]` in [0, 1] (numpy or tensor).

        Returns:
            `(features [N, feature_dim], probabilities [N, num_classes] or
            None)`, float64 numpy.
        """
        images = _as_batch(images)
        self.check_image_shape(tuple(images.shape[1:]))
        features, probabilities = [], []
        for start in range(0, len(images), self.batch_size):
            out = self._network(self._prepare(images[start : start + self.batch_size]), training=False)
            f, p = (out[0], out[1]) if self.num_classes else (out, None)
            features.append(keras.ops.convert_to_numpy(f).astype(np.float64))
            if p is not None:
                probabilities.append(keras.ops.convert_to_numpy(p).astype(np.float64))
        features = np.concatenate(features) if features else np.zeros((0, self.feature_dim))
        if self.num_classes is None:
            return features, None
        return features, (np.concatenate(probabilities) if probabilities else np.zeros((0, self.num_classes)))

    def features(self, images):
        """`[N, H, W, C]` images in [0, 1] -> float64 features `[N, feature_dim]`."""
        return self.outputs(images)[0]

    def probabilities(self, images):
        """`[N, H, W, C]` images in [0, 1] -> float64 class probabilities `[N, num_classes]`."""
        if self.num_classes is None:
            raise ValueError(f"{self.description()} has no classification head: "
                             "no probabilities (IS and coverage need them)")
        return self.outputs(images)[1]

    def description(self):
        """Name and weights, for messages."""
        return f"{self.name} ({self.weights_path or 'random weights'})"


class FashionClassifier(Extractor):
    """The committed Fashion-MNIST CNN (`zoo.metrics.classifier`) as an extractor.

    Takes 28x28 and 32x32 grayscale images in [0, 1]; 28x28 ones are padded
    with 2 black pixels per side, as `zoo.data` pads them for the models.
    Features: the 128-d penultimate (ReLU) layer; probabilities: softmax over
    `classifier.CLASSES`.

    Args:
        weights: a `.weights.h5` file of `classifier.build_classifier()`;
            default the committed one.
        batch_size: images per network call.

    Example:

    ```python
    extractor = FashionClassifier()
    features = extractor.features(model.generate(model.sample_latents(500)))  # [500, 128]
    ```
    """

    name = "fashion_classifier"
    feature_dim = classifier.FEATURES
    num_classes = len(classifier.CLASSES)
    class_names = classifier.CLASSES

    def __init__(self, weights=None, batch_size=500):
        super().__init__(batch_size)
        self.weights_path = _existing_file(weights or classifier.WEIGHTS, self.name)
        model = classifier.build_classifier()
        try:
            model.load_weights(self.weights_path)
        except Exception as e:  # h5py/Keras raise many types for a foreign file
            raise ValueError(f"cannot load {self.name} weights from {self.weights_path}: "
                             f"{_first_line(e)}") from None
        probabilities = keras.layers.Softmax(name="probabilities")(model.output)
        self._network = keras.Model(model.input, [model.get_layer("features").output, probabilities])

    def check_image_shape(self, image_shape):
        if tuple(image_shape) not in ((28, 28, 1), (32, 32, 1)):
            raise ValueError(
                f"{self.name} takes 28x28 or 32x32 grayscale images, not "
                f"{'x'.join(map(str, image_shape))}; use the inception_v3 extractor"
            )

    def _prepare(self, images):
        return classifier.pad_to_32(images)


class InceptionV3(Extractor):
    """`keras.applications.InceptionV3` under the standard FID protocol.

    Images in [0, 1] of any size and 1 or 3 channels are resized (bilinear)
    to 299x299, grayscale repeated to 3 channels and scaled to [-1, 1]
    (what Keras' InceptionV3 weights expect). Features: the 2048-d global
    average pool. Probabilities: the 1000-way softmax, when the weights file
    has the classification top (`predictions` layer); else there are none.

    Weights cannot be downloaded by this project: pass Keras' own
    `inception_v3_weights_tf_dim_ordering_tf_kernels[_notop].h5` or any
    file `load_weights` reads into the same architecture. Note that
    published FIDs use the TF-slim Inception graph (`pt_inception` /
    `inception-2015-12-05`), whose numbers differ from Keras' weights.

    Args:
        weights: path of the weights file; None builds random weights, for
            testing the code path only (the numbers mean nothing).
        batch_size: images per network call.

    Example:

    ```python
    extractor = InceptionV3("inception_v3_weights_tf_dim_ordering_tf_kernels.h5")
    features, probabilities = extractor.outputs(images)  # [N, 2048], [N, 1000]
    ```
    """

    name = "inception_v3"
    feature_dim = 2048
    size = 299

    def __init__(self, weights, batch_size=32):
        super().__init__(batch_size)
        if weights is not None:
            self.weights_path = _existing_file(weights, self.name)
        has_top = weights is None or _h5_has_layer(self.weights_path, "predictions")
        apps = keras.applications
        model = apps.InceptionV3(weights=None, include_top=has_top, pooling=None if has_top else "avg")
        if weights is not None:
            try:
                model.load_weights(self.weights_path)
            except Exception as e:
                raise ValueError(f"cannot load InceptionV3 weights from {self.weights_path}: "
                                 f"{_first_line(e)}") from None
        if has_top:
            self.num_classes = 1000
            outputs = [model.get_layer("avg_pool").output, model.get_layer("predictions").output]
        else:
            outputs = model.output  # the "avg" pooling: [N, 2048]
        self._network = keras.Model(model.input, outputs)

    def check_image_shape(self, image_shape):
        if len(image_shape) != 3 or image_shape[-1] not in (1, 3) or min(image_shape[:2]) < 1:
            raise ValueError(f"{self.name} takes [H, W, 1 or 3] images, not {image_shape}")

    def _prepare(self, images):
        images = keras.ops.convert_to_tensor(images, "float32")
        images = keras.ops.image.resize(images, (self.size, self.size), interpolation="bilinear")
        if images.shape[-1] == 1:
            images = keras.ops.repeat(images, 3, axis=-1)  # [n, 299, 299, 3]
        return images * 2.0 - 1.0


def get_extractor(name="fashion_classifier", inception_weights=None, batch_size=None):
    """Builds an extractor by name.

    A named extractor is built once per process and `(name, weights,
    batch_size)`, then reused.

    Args:
        name: one of `EXTRACTORS`, or an `Extractor` (returned as is).
        inception_weights: weights file for `inception_v3` (required).
        batch_size: images per network call; default per extractor.

    Returns:
        An `Extractor`.

    Example:

    ```python
    extractor = get_extractor("inception_v3", inception_weights="inception_v3.h5")
    ```
    """
    if isinstance(name, Extractor):
        return name
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose from {EXTRACTORS}")
    if name == "inception_v3" and inception_weights is None:
        raise ValueError("the inception_v3 extractor needs a weights file (--inception-weights "
                         "PATH); they cannot be downloaded here")
    weights = None if inception_weights is None else str(pathlib.Path(inception_weights).resolve())
    return _named_extractor(name, weights if name == "inception_v3" else None, batch_size)


@functools.lru_cache(maxsize=4)
def _named_extractor(name, inception_weights, batch_size):
    # Built once per process: callers such as a training callback evaluate again and again.
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    if name == "fashion_classifier":
        return FashionClassifier(**kwargs)
    return InceptionV3(inception_weights, **kwargs)


def _existing_file(path, name):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} weights file {path} does not exist")
    return path


def _h5_has_layer(path, layer):
    """Whether an HDF5 weights file holds a group named `layer` (any depth)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            found = []
            f.visit(lambda key: found.append(key) if layer in key.split("/") else None)
    except OSError as e:
        raise ValueError(f"{path} is not an HDF5 weights file ({_first_line(e)})") from None
    return bool(found)


def _as_batch(images):
    images = images if hasattr(images, "shape") else np.asarray(images)
    if len(images.shape) != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {tuple(images.shape)}")
    return images


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
