"""Data specs -> `tf.data` pipelines of images in [-1, 1].

A spec names where images come from:

* `fashion_mnist[:SPLIT]` -- the Debian `dataset-fashion-mnist` IDX files
  (`$FASHION_MNIST_DIR`, default /usr/share/datasets/fashion-mnist) when
  present, else `tensorflow_datasets`' `fashion_mnist`.
* `tfds:NAME[:SPLIT]` -- any `tensorflow_datasets` image dataset, read from
  `data_dir` (or `$TFDS_DATA_DIR`); downloaded when it is absent and a
  network is there.
* `folder:PATH` -- PNG/JPEG files anywhere below PATH.
* `npz:PATH` -- an `.npz` with `images` (`[N, H, W]` or `[N, H, W, C]`, uint8
  0..255 or float 0..1) and optionally `labels`.

`SPLIT` is `train` (default) or `test`. Every problem with a spec raises
`DataError` with one line that names it, before any training starts.

Images are held in memory as uint8 and converted per batch: NHWC float32 in
[-1, 1] at the model's resolution: padded with black, centered, when the
model is a few pixels larger (28 -> 32), else resized (area filter down,
bilinear up).
"""

import dataclasses
import gzip
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


class DataError(ValueError):
    """A data spec cannot give the images a model needs."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A parsed spec: `scheme` in {fashion_mnist, tfds, folder, npz}."""

    scheme: str
    target: str = ""  # tfds name or file-system path
    split: str = "train"


def parse_spec(spec):
    """Parses a spec string into a `DataSpec`, checking its syntax only."""
    if not isinstance(spec, str) or not spec:
        raise DataError(f"data spec must be a non-empty string, got {spec!r}")
    scheme, _, rest = spec.partition(":")
    if scheme == "fashion_mnist":
        split = rest or "train"
        _check_split(split, spec)
        return DataSpec("fashion_mnist", "fashion_mnist", split)
    if scheme == "tfds":
        name, _, split = rest.partition(":")
        if not name:
            raise DataError(f"data spec {spec!r}: tfds needs a dataset name, as in tfds:mnist")
        return DataSpec("tfds", name, split or "train")
    if scheme in ("folder", "npz"):
        if not rest:
            raise DataError(f"data spec {spec!r}: {scheme} needs a path, as in {scheme}:/data/x")
        return DataSpec(scheme, rest, "train")
    raise DataError(
        f"unknown data scheme {scheme!r} in {spec!r}; use fashion_mnist, tfds:NAME, "
        "folder:PATH or npz:PATH"
    )


def _check_split(split, spec):
    if split not in SPLITS:
        raise DataError(f"data spec {spec!r}: unknown split {split!r}; use one of {SPLITS}")


def check_spec(spec, data_dir=None):
    """Validates a spec cheaply (syntax and paths, no decoding).

    Returns:
        The parsed `DataSpec`.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.scheme == "folder":
        root = pathlib.Path(parsed.target)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        if not _image_files(root):
            raise DataError(f"image folder {root} has no {'/'.join(IMAGE_SUFFIXES)} files")
    elif parsed.scheme == "npz":
        if not pathlib.Path(parsed.target).is_file():
            raise DataError(f"npz file {parsed.target} does not exist")
    elif parsed.scheme == "tfds":
        _tfds_builder(parsed.target, data_dir)
    return parsed


def load_arrays(spec, data_dir=None, download=True):
    """Loads a spec's images (uint8 `[N, H, W, C]`) and labels (int or None).

    Args:
        spec: data spec string or `DataSpec`.
        data_dir: tfds data directory.
        download: let tfds download a dataset that is not prepared. Without a
            network tfds retries for minutes before it gives up.
    """
    parsed = check_spec(spec, data_dir)
    loader = {
        "fashion_mnist": _load_fashion_mnist,
        "tfds": _load_tfds,
        "folder": _load_folder,
        "npz": _load_npz,
    }[parsed.scheme]
    images, labels = loader(parsed, data_dir, download)
    if images.ndim == 3:
        images = images[..., None]  # [N, H, W] -> [N, H, W, 1]
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"{_describe(parsed)} gave no images of shape [N, H, W, C] (got {images.shape})")
    return images, labels


def make_dataset(
    spec,
    image_size,
    channels,
    batch_size,
    *,
    shuffle=True,
    repeat=False,
    seed=0,
    data_dir=None,
    arrays=None,
):
    """Builds the training pipeline for a model.

    Args:
        spec: data spec string or `DataSpec`.
        image_size: the model's square resolution.
        channels: the model's channel count; the data must have as many.
        batch_size: GLOBAL batch size (a strategy splits it across replicas).
        shuffle: reshuffle every epoch.
        repeat: repeat forever (for `fit(steps_per_epoch=...)`).
        seed: shuffle seed.
        data_dir: tfds data directory.
        arrays: already loaded `(images, labels)` from `load_arrays`.

    Returns:
        `tf.data.Dataset` of float32 `[batch_size, image_size, image_size,
        channels]` in [-1, 1], `drop_remainder=True`, prefetched.

    Example:

    ```python
    ds = make_dataset("fashion_mnist", image_size=32, channels=1, batch_size=128)
    ```
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    images, _ = arrays if arrays is not None else load_arrays(parsed, data_dir)
    if images.shape[-1] != channels:
        raise DataError(
            f"{_describe(parsed)} has {images.shape[-1]} channel(s) but the model expects "
            f"{channels}; choose a preset with channels={images.shape[-1]} or convert the data"
        )
    if len(images) < batch_size:
        raise DataError(
            f"{_describe(parsed)} has {len(images)} images, fewer than one batch of {batch_size}"
        )
    ds = tf.data.Dataset.from_tensor_slices(images)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    resize = _resizer(images.shape[1:3], image_size)
    ds = ds.map(lambda x: resize(to_model_range(x)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def to_model_range(images_uint8):
    """uint8 0..255 -> float32 [-1, 1]."""
    return tf.cast(images_uint8, tf.float32) / 127.5 - 1.0


def to_unit_range(images):
    """[-1, 1] images (data or network output) -> float32 [0, 1]."""
    return tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) * 0.5, 0.0, 1.0)


def _resizer(source_hw, size):
    h, w = int(source_hw[0]), int(source_hw[1])
    if (h, w) == (size, size):
        return lambda x: x
    if h == w and h < size <= h + h // 7 + 1 and (size - h) % 2 == 0:
        pad = (size - h) // 2
        # Pad with the background value -1 (black), centered: 28 -> 32.
        return lambda x: tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=-1.0)
    method = "area" if max(h, w) > size else "bilinear"
    return lambda x: tf.image.resize(x, (size, size), method=method)


def _describe(parsed):
    return {
        "fashion_mnist": f"fashion_mnist:{parsed.split}",
        "tfds": f"tfds:{parsed.target}:{parsed.split}",
    }.get(parsed.scheme, f"{parsed.scheme}:{parsed.target}")


# ---- loaders ----------------------------------------------------------------


def _read_idx(path):
    """Reads an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"IDX file {path} is truncated: {body.size} of {int(np.prod(dims))} values")
    return body.reshape(dims)


def fashion_mnist_dir():
    """Directory of the Debian Fashion-MNIST files (`$FASHION_MNIST_DIR` overrides)."""
    return pathlib.Path(os.environ.get("FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST))


def _load_fashion_mnist(parsed, data_dir, download):
    root = fashion_mnist_dir()
    prefix = "train" if parsed.split == "train" else "t10k"
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    if images_path.is_file() and labels_path.is_file():
        return _read_idx(images_path), _read_idx(labels_path).astype(np.int64)
    try:
        return _load_tfds(DataSpec("tfds", "fashion_mnist", parsed.split), data_dir, download)
    except DataError as e:
        raise DataError(
            f"Fashion-MNIST not found in {root} (apt-get install dataset-fashion-mnist) "
            f"and tfds failed: {e}"
        ) from None


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds  # heavy; only when asked for

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises its own DatasetNotFoundError family
        raise DataError(f"tfds has no dataset {name!r}: {str(e).splitlines()[0]}") from None
    return builder


def _load_tfds(parsed, data_dir, download):
    builder = _tfds_builder(parsed.target, data_dir)
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"tfds dataset {parsed.target!r} is not prepared in {builder.data_dir} "
                "and downloading is off"
            )
        try:
            builder.download_and_prepare()
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"tfds dataset {parsed.target!r} is not prepared in {builder.data_dir} and "
                f"could not be downloaded ({first})"
            ) from None
    features = builder.info.features
    image_key = next(
        (k for k in ("image", "images") if k in features),
        next((k for k, f in features.items() if type(f).__name__ == "Image"), None),
    )
    if image_key is None:
        raise DataError(f"tfds dataset {parsed.target!r} has no image feature")
    try:
        ds = builder.as_dataset(split=parsed.split)
    except Exception as e:
        raise DataError(f"tfds dataset {parsed.target!r} has no split {parsed.split!r}: {e}") from None
    label_key = "label" if "label" in features else None
    images, labels = [], []
    for ex in ds.batch(4096).as_numpy_iterator():
        images.append(ex[image_key])
        if label_key:
            labels.append(ex[label_key])
    images = np.concatenate(images).astype(np.uint8)
    return images, (np.concatenate(labels).astype(np.int64) if label_key else None)


def _image_files(root):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _decode(path):
    from PIL import Image  # only needed for folders

    try:
        with Image.open(path) as img:
            img.load()
            mode = "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            return np.asarray(img.convert(mode))
    except Exception as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def _load_folder(parsed, data_dir, download):
    files = _image_files(pathlib.Path(parsed.target))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(_decode, files))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first, other = sorted(shapes)[:2]
        raise DataError(
            f"images in {parsed.target} differ in size or channels ({first} vs {other}); "
            "resize them to one shape first"
        )
    return np.stack(arrays), None


def _load_npz(parsed, data_dir, download):
    try:
        with np.load(parsed.target, allow_pickle=False) as f:
            if "images" not in f.files:
                raise DataError(f"npz file {parsed.target} has no 'images' array (has {f.files})")
            images = f["images"]
            labels = f["labels"].astype(np.int64) if "labels" in f.files else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read npz file {parsed.target}: {e}") from None
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"npz images must be uint8 or float in [0, 1], got {images.dtype}")
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"npz float images must be finite and in [0, 1] ({parsed.target})")
        images = np.round(images * 255).astype(np.uint8)
    return images, labels
