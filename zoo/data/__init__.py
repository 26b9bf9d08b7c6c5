"""Data specs -> `tf.data` pipelines of images in [-1, 1].

A spec names where images come from:

* `fashion_mnist[:SPLIT]` -- the Debian `dataset-fashion-mnist` IDX files
  (`$FASHION_MNIST_DIR`, default /usr/share/datasets/fashion-mnist) when
  present, else `tensorflow_datasets`' `fashion_mnist`.
* `tfds:NAME[:SPLIT]` -- any `tensorflow_datasets` image dataset, read from
  `data_dir` (or `$TFDS_DATA_DIR`); downloaded when it is absent and a
  network is there. `SPLIT` as tfds takes it (`train`, `test[:10%]`).
* `folder:PATH` -- PNG/JPEG/BMP/GIF/WebP files anywhere below PATH, of any
  sizes; labels from first-level subfolder names.
* `tfrecord:GLOB` -- TFRecord shards of `tf.train.Example`s with a bytes
  feature `image` (an encoded image) and optionally an int64 `label`, as
  `python -m zoo.data pack SRC OUT --shards N [--size S]` writes them.
* `npz:PATH` -- an `.npz` with `images` (`[N, H, W]` or `[N, H, W, C]`, uint8
  0..255 or float 0..1) and optionally `labels`.

Every problem with a spec raises `DataError` with one line that names it,
before any training starts.

`fashion_mnist` and `npz:` are held in memory as uint8 and converted per
batch. `folder:`, `tfds:` and `tfrecord:` stream: files are decoded inside
the `tf.data` graph as batches are needed (`zoo.data.streams`), converted to
the model's channels (RGB <-> gray, alpha dropped). Either way batches are
NHWC float32 in [-1, 1] at the model's resolution: padded with black,
centered, when the model is a few pixels larger (28 -> 32, `pads_to`), else
(center-cropped to a square and) resized, area filter down, bilinear up.
"""

import dataclasses
import gzip
import os
import pathlib

import numpy as np
import tensorflow as tf

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")
STREAMED_SCHEMES = ("folder", "tfds", "tfrecord")
INDEX_FILE = "data_index.json"  # a run directory's list of a streamed spec's files


class DataError(ValueError):
    """A data spec cannot give the images a model needs."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A parsed spec: `scheme` in {fashion_mnist, tfds, folder, tfrecord, npz}."""

    scheme: str
    target: str = ""  # tfds name, file-system path or glob
    split: str = "train"

    @property
    def streamed(self):
        """Decoded as batches are needed, not held in memory."""
        return self.scheme in STREAMED_SCHEMES


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
    if scheme in ("folder", "npz", "tfrecord"):
        if not rest:
            raise DataError(f"data spec {spec!r}: {scheme} needs a path, as in {scheme}:/data/x")
        return DataSpec(scheme, rest, "train")
    raise DataError(
        f"unknown data scheme {scheme!r} in {spec!r}; use fashion_mnist, tfds:NAME, "
        "folder:PATH, tfrecord:GLOB or npz:PATH"
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
        if next(_iter_image_files(root), None) is None:
            raise DataError(f"image folder {root} has no {'/'.join(IMAGE_SUFFIXES)} files")
    elif parsed.scheme == "tfrecord":
        from zoo.data import streams

        streams.check_record(_tfrecord_files(parsed)[0])
    elif parsed.scheme == "npz":
        if not pathlib.Path(parsed.target).is_file():
            raise DataError(f"npz file {parsed.target} does not exist")
    elif parsed.scheme == "tfds":
        _tfds_builder(parsed.target, data_dir)
    return parsed


def load_arrays(spec, data_dir=None, download=True):
    """Loads a spec's images (uint8 `[N, H, W, C]`) and labels (int or None) into memory.

    A streamed spec is decoded whole here, so its images must share one
    shape and every file must decode; training streams any mix instead.

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
        "folder": _load_streamed,
        "tfrecord": _load_streamed,
        "npz": _load_npz,
    }[parsed.scheme]
    images, labels = loader(parsed, data_dir, download)
    if images.ndim == 3:
        images = images[..., None]  # [N, H, W] -> [N, H, W, 1]
    if images.ndim != 4 or len(images) == 0:
        raise DataError(f"{_describe(parsed)} gave no images of shape [N, H, W, C] (got {images.shape})")
    return images, labels


def training_data(spec, data_dir=None, index_dir=None, write_index=False):
    """What a training run reads: in-memory `(images, labels)`, or a streamed spec's `Source`.

    Args:
        spec: data spec string.
        data_dir: tfds data directory.
        index_dir: the run directory, where a streamed spec's file list is
            kept (`INDEX_FILE`) so that a resumed run streams the same files.
        write_index: this process writes that list (the chief).
    """
    parsed = parse_spec(spec)
    if not parsed.streamed:
        return load_arrays(parsed, data_dir)
    index_path = tf.io.gfile.join(str(index_dir), INDEX_FILE) if index_dir is not None else None
    return open_source(parsed, data_dir, index_path=index_path, write_index=write_index)


def open_source(spec, data_dir=None, download=True, index_path=None, write_index=False):
    """A streamed spec's `zoo.data.streams.Source`: its files listed (and counted), nothing decoded.

    Args:
        spec: a `folder:`, `tfrecord:` or `tfds:` spec string or `DataSpec`.
        data_dir: tfds data directory.
        download: let tfds download a dataset that is not prepared.
        index_path: a JSON file list (a run directory's): read when it is
            there and names this spec, so a resumed run streams the files
            it started with in the same order without listing them again.
        write_index: write the list to `index_path` when it was made here.
    """
    from zoo.data import streams

    parsed = check_spec(spec, data_dir)
    description = _describe(parsed)
    if parsed.scheme == "tfds":
        return _tfds_source(parsed, data_dir, download)
    cached = streams.load_index(index_path, description)
    if cached is not None:
        files, counts = cached
    elif parsed.scheme == "folder":
        files = [str(p) for p in _image_files(pathlib.Path(parsed.target))]
        counts = [1] * len(files)
    else:
        files = _tfrecord_files(parsed)
        counts = [streams.count_records(f) for f in files]
        if not sum(counts):
            raise DataError(f"{description} matches {len(files)} file(s) holding no records")
    if cached is None and index_path and write_index:
        streams.save_index(index_path, description, files, counts)
    if parsed.scheme == "tfrecord":
        return streams.RecordSource(description, files, counts, [0] * len(files), streams.parse_zoo_record)
    # Labels from first-level subfolder names, when every file is in one.
    parts = [pathlib.Path(f).relative_to(parsed.target).parts for f in files]
    if all(len(p) > 1 for p in parts):
        names = sorted({p[0] for p in parts})
        labels = np.array([names.index(p[0]) for p in parts], np.int64)
        return streams.FileSource(description, files, counts, labels, names)
    return streams.FileSource(description, files, counts)


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
        arrays: already loaded `(images, labels)` from `load_arrays`; a
            streamed spec without them streams (reshuffled per pass by the
            seed, converted to `channels`).

    Returns:
        `tf.data.Dataset` of float32 `[batch_size, image_size, image_size,
        channels]` in [-1, 1], `drop_remainder=True`, prefetched.

    Example:

    ```python
    ds = make_dataset("fashion_mnist", image_size=32, channels=1, batch_size=128)
    ```
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.streamed and arrays is None:
        from zoo.data import streams

        stream = streams.Stream(open_source(parsed, data_dir), image_size, channels, batch_size,
                                seed=seed, shuffle=shuffle)
        batches = stream.dataset()
        return batches if repeat else batches.take(stream.steps_per_pass)
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


def pads_to(h, w, size):
    """Whether an `h` x `w` image is padded to `size` rather than resized (ints or int tensors).

    A square a few pixels smaller by an even margin (28 -> 32): black
    borders keep the digits and garments of 28-px data pixel-exact.
    """
    return (h == w) & (h < size) & (size <= h + h // 7 + 1) & ((size - h) % 2 == 0)


def _resizer(source_hw, size):
    h, w = int(source_hw[0]), int(source_hw[1])
    if (h, w) == (size, size):
        return lambda x: x
    if pads_to(h, w, size):
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


def _tfrecord_files(parsed):
    files = sorted(tf.io.gfile.glob(parsed.target))
    if not files:
        raise DataError(f"tfrecord:{parsed.target} matches no files")
    return files


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


def _prepared_tfds(parsed, data_dir, download):
    """`(builder, image feature key)` of a prepared tfds dataset."""
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
    return builder, image_key


def _tfds_source(parsed, data_dir, download):
    """The prepared split's TFRecord shards, records decoded as the stream reads them."""
    import tensorflow_datasets as tfds

    from zoo.data import streams

    builder, image_key = _prepared_tfds(parsed, data_dir, download)
    if builder.info.file_format.value != "tfrecord":
        raise DataError(f"tfds dataset {parsed.target!r} is stored as {builder.info.file_format.value}; "
                        "streaming reads tfrecord files")
    try:
        instructions = builder.info.splits[parsed.split].file_instructions
    except (KeyError, ValueError) as e:
        raise DataError(f"tfds dataset {parsed.target!r} has no split {parsed.split!r}: {e}") from None
    features = builder.info.features
    has_label = "label" in features

    def parse(raw):
        # The stored bytes as they are: the stream decodes them like a file's.
        example = features.deserialize_example(raw, decoders={image_key: tfds.decode.SkipDecoding()})
        label = tf.cast(example["label"], tf.int64) if has_label else tf.constant(-1, tf.int64)
        return example[image_key], label

    return streams.RecordSource(
        _describe(parsed), [i.filename for i in instructions], [i.take for i in instructions],
        [i.skip for i in instructions], parse,
    )


def _load_tfds(parsed, data_dir, download):
    builder, image_key = _prepared_tfds(parsed, data_dir, download)
    features = builder.info.features
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


def _iter_image_files(root):
    return (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _image_files(root):
    return sorted(_iter_image_files(root))


def in_source_order(source, size=None, channels=None):
    """A streamed source's `(image, label, ok, name)` in file order, decoded in parallel.

    `image` is at the file's own size and channels (1 or 3) when `size` is
    None; `ok` is False (and `image` empty) for a file that cannot be decoded.
    """
    from zoo.data import streams

    elements = source.elements(np.arange(len(source.files)), 0, tf.constant(0, tf.int64), False, 0)
    return elements.interleave(streams.decoder(source, size, channels), cycle_length=tf.data.AUTOTUNE,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _load_streamed(parsed, data_dir, download):
    source = open_source(parsed, data_dir, download)
    images, labels = [], []
    for image, label, ok, name in in_source_order(source).as_numpy_iterator():
        if not ok:
            raise DataError(f"cannot decode image {name.decode()}")
        if images and image.shape != images[0].shape:
            raise DataError(
                f"images in {parsed.target} differ in size or channels ({images[0].shape} vs {image.shape}): "
                "they stream into training (make_dataset, zoo-train), but load_arrays needs one shape"
            )
        images.append(image)
        labels.append(label)
    # Records without a `label` feature read as -1.
    labels = source.labels if parsed.scheme == "folder" else np.array(labels, np.int64)
    return np.stack(images), None if labels is None or (labels < 0).any() else labels


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
