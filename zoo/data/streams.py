"""Streamed data specs (`folder:`, `tfrecord:`, `tfds:`): files decoded inside the `tf.data` graph.

A streamed source is an ordered list of elements: image files (`folder:`)
or records in shard files (`tfrecord:`, `tfds:`). Nothing is decoded before
training starts, and memory stays bounded by the shuffle buffer, the
prefetch and an optional `cache`.

A `Stream` is one worker's endless training stream: passes over the
elements, one after another. Pass `p` orders them by the seed and `p` alone
(image files: a full random permutation, `index_shuffle`; records: the shard
order permuted, the shards interleaved, then shuffled in blocks of the
bounded shuffle buffer), so every pass is reproducible on its own. Step `s` of a run consumes stream
elements `[s * rate, (s + 1) * rate)`: a resumed run finds its pass and its
offset in it by arithmetic and skips undecoded paths or records only.

A file that cannot be decoded is reported by path and its slot takes the
next good image of the stream, so the steps per epoch (from the file
count), the resume position and every worker's step count stay what they
would be without it. `strict` makes it an error instead.
"""

import json
import re
import sys

import numpy as np
import tensorflow as tf

from zoo.data import DataError, pads_to, to_model_range

RECORD_IMAGE = "image"  # tf.train.Example bytes feature: an encoded image (PNG from `pack`)
RECORD_LABEL = "label"  # optional int64 feature
STRICT_MARKER = "zoo.data:"  # starts every assertion message a stream can fail with
DEFAULT_SHUFFLE_BUFFER = 10_000  # records (encoded) held to shuffle a pass of TFRecords
# Consecutive undecodable files after which a stream fails instead of looking for a good one.
MAX_CONSECUTIVE_BAD = 1000


# ---- decoding: encoded bytes -> uint8 images ---------------------------------


def decode_native(encoded):
    """Encoded PNG/JPEG/BMP/GIF/WebP -> uint8 `[h, w, 1 or 3]`: alpha dropped, a GIF's first frame."""
    image = tf.io.decode_image(encoded, expand_animations=False)  # [h, w, 1..4]
    # 1: gray, 2: gray + alpha, 3: RGB, 4: RGBA.
    return tf.cond(tf.shape(image)[2] < 3, lambda: image[..., :1], lambda: image[..., :3])


def to_channels(image, channels):
    """uint8 `[h, w, 1 or 3]` -> `[h, w, channels]`: gray repeated to RGB, RGB to luma."""
    gray = tf.shape(image)[2] == 1
    if channels == 1:
        luma = lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image[..., :3], tf.float32))), tf.uint8)
        out = tf.cond(gray, lambda: image[..., :1], luma)
    else:
        out = tf.cond(gray, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    return tf.ensure_shape(out, [None, None, channels])


def fit_image(image, size):
    """uint8 `[h, w, c]` -> `[size, size, c]`, the rule of `zoo.data.make_dataset`.

    Padded with black, centered, when `pads_to` (28 -> 32); else the
    centered square crop, resized (area filter down, bilinear up).
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]

    def pad():
        margin = (size - h) // 2
        return tf.pad(image, [[margin, margin], [margin, margin], [0, 0]])

    def crop_and_resize():
        side = tf.minimum(h, w)
        square = tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)
        resized = tf.cond(
            side > size,
            lambda: tf.image.resize(square, [size, size], method="area"),
            lambda: tf.image.resize(square, [size, size], method="bilinear"),
        )
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)

    return tf.ensure_shape(tf.cond(pads_to(h, w, size), pad, crop_and_resize), [size, size, image.shape[-1]])


def _permutation(position, seed, pass_index, last):
    """Where `position` goes in pass `pass_index`'s permutation of `[0, last]` (stateless)."""
    return tf.random.experimental.index_shuffle(position, tf.stack([tf.cast(seed, tf.int64), pass_index]), last)


def block_shuffle(elements, block, seed, pass_index):
    """Shuffles within consecutive blocks of `block` elements, by the seed and pass alone.

    The bounded shuffle buffer of a pass of records. Not `Dataset.shuffle`:
    its seed cannot be a tensor (the pass) when the global seed is 0 (TF
    2.21 compares the seed pair with `(0, 0)` in Python).
    """
    def permute(index, batch):
        n = tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]
        order = tf.random.experimental.index_shuffle(
            tf.range(n), tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + pass_index, index]), n - 1)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

    return elements.batch(block).enumerate().map(permute).unbatch()


# ---- sources -------------------------------------------------------------------


class Source:
    """A streamed spec's elements: `files`, each holding `counts[i]` elements.

    Attributes:
        description: the spec, for messages.
        files: image files (`counts` all 1) or record shard files.
        counts: elements in each file.
        labels: int64 per image file from first-level subfolder names, or
            None (records carry their own `label` feature, if any).
        class_names: the subfolder names `labels` index.
    """

    def __init__(self, description, files, counts, labels=None, class_names=()):
        self.description = description
        self.files = list(files)
        self.counts = np.asarray(counts, np.int64)
        self.labels = labels
        self.class_names = tuple(class_names)

    @property
    def num_examples(self):
        return int(self.counts.sum())

    def elements(self, subset, seed, pass_index, shuffle, shuffle_buffer):
        """One pass over the files at `subset` (indices): `(raw, name, label)`, not decoded."""
        raise NotImplementedError

    def read(self, raw, label):
        """`(raw, label)` of `elements` -> `(encoded image bytes, label)`."""
        raise NotImplementedError


class FileSource(Source):
    """Image files; an element's raw value is its path."""

    def elements(self, subset, seed, pass_index, shuffle, shuffle_buffer):
        paths = tf.constant([self.files[i] for i in subset])
        labels = tf.constant(-np.ones(len(subset), np.int64) if self.labels is None else self.labels[subset])
        last = tf.constant(len(subset) - 1, tf.int64)

        def at(position):
            i = _permutation(position, seed, pass_index, last) if shuffle else position
            return paths[i], paths[i], labels[i]

        return tf.data.Dataset.range(len(subset)).map(at)

    def read(self, raw, label):
        return tf.io.read_file(raw), label


class RecordSource(Source):
    """`tf.train.Example` records in TFRecord shards (`tfrecord:` and tfds' prepared files).

    Args:
        description, files, counts: as `Source`.
        skips: records skipped at the start of each file (tfds split slices).
        parse: serialized record -> `(encoded image, int64 label or -1)`.
    """

    def __init__(self, description, files, counts, skips, parse):
        super().__init__(description, files, counts)
        self.skips = np.asarray(skips, np.int64)
        self.parse = parse

    def elements(self, subset, seed, pass_index, shuffle, shuffle_buffer):
        paths = tf.constant([self.files[i] for i in subset])
        skips = tf.constant(self.skips[subset])
        takes = tf.constant(self.counts[subset])
        last = tf.constant(len(subset) - 1, tf.int64)

        def shard(position):
            i = _permutation(position, seed, pass_index, last) if shuffle else position
            records = tf.data.TFRecordDataset(paths[i]).skip(skips[i]).take(takes[i])
            # Named `shard#record` in messages; the label comes from the record itself (`read`).
            name = lambda n: tf.strings.join([paths[i], tf.strings.as_string(n)], "#")
            return records.enumerate(skips[i]).map(lambda n, raw: (raw, name(n), tf.constant(-1, tf.int64)))

        records = tf.data.Dataset.range(len(subset)).interleave(
            shard, cycle_length=min(len(subset), 8), block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
        if shuffle and shuffle_buffer > 1:
            records = block_shuffle(records, shuffle_buffer, seed, pass_index)
        return records

    def read(self, raw, label):
        return self.parse(raw)


def parse_zoo_record(raw):
    """A `pack` record -> `(encoded image, label or -1)`."""
    parsed = tf.io.parse_single_example(raw, {
        RECORD_IMAGE: tf.io.FixedLenFeature([], tf.string),
        RECORD_LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    })
    return parsed[RECORD_IMAGE], parsed[RECORD_LABEL]


def count_records(path):
    """Records in a TFRecord file, from their length headers (no payload is read)."""
    count = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        while f.tell() < size:
            header = f.read(8)
            if len(header) < 8:
                raise DataError(f"tfrecord file {path} is truncated")
            # uint64 length, 4-byte length CRC, payload, 4-byte payload CRC.
            f.seek(int.from_bytes(header, "little") + 8, 1)
            count += 1
    return count


def check_record(path):
    """Raises `DataError` unless the first record of `path` has a bytes feature `image`."""
    try:
        raw = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f"cannot read tfrecord file {path}: {e.message.splitlines()[0]}") from None
    if raw is None:
        return
    try:
        features = tf.train.Example.FromString(raw.numpy()).features.feature
    except Exception:  # protobuf's DecodeError is not exported under one name
        raise DataError(f"tfrecord file {path} does not hold tf.train.Example records") from None
    if RECORD_IMAGE not in features or features[RECORD_IMAGE].WhichOneof("kind") != "bytes_list":
        raise DataError(
            f"tfrecord file {path} has no bytes feature {RECORD_IMAGE!r} (has {sorted(features)}); "
            "write shards with `python -m zoo.data pack`"
        )


def load_index(path, description):
    """A cached `(files, counts)` for `description` from `path`, or None."""
    if not path or not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    if saved.get("spec") != description:
        return None
    return saved["files"], saved["counts"]


def save_index(path, description, files, counts):
    """Writes the file list a resumed run reads instead of listing (and counting) again."""
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump({"spec": description, "files": list(files), "counts": [int(c) for c in counts]}, f)


# ---- the stream ------------------------------------------------------------------


class Stream:
    """One worker's endless batches of a streamed `Source`.

    Under several workers the elements are split by file when there are at
    least as many files (image files or shards) as workers: each worker
    streams its own files, `files[worker::workers]`. Otherwise every worker
    walks the same global stream and keeps its slice of each global batch
    (by data). Either way every worker has the same number of steps per
    epoch: passes are cut to the smallest worker's share.

    Args:
        source: the `Source`.
        image_size: the model's square resolution.
        channels: the model's channels (images are converted to them).
        batch_size: GLOBAL batch size.
        seed: shuffle seed.
        shuffle: reorder every pass (else source order).
        passes_are_epochs: a pass is cut to whole steps (one epoch); else a
            pass uses every element (`--steps` epochs span passes).
        worker: this worker's index.
        workers: the number of workers (input pipelines).
        replica_batch: the batches yielded: the per-replica batch under a
            strategy, else `batch_size`.
        shuffle_buffer: records held to shuffle a pass of records (in
            blocks of this size) or, with `cache`, of cached images.
        cache: "" (none), "memory", or a file path prefix: keep the decoded
            images of the first pass, in its order; later passes shuffle
            them in blocks of `shuffle_buffer`.
        strict: an undecodable file is an error, not skipped.

    Raises:
        DataError: a worker's share is smaller than one step.
    """

    def __init__(self, source, image_size, channels, batch_size, *, seed=0, shuffle=True,
                 passes_are_epochs=True, worker=0, workers=1, replica_batch=None,
                 shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, cache="", strict=False):
        self.source = source
        self.image_size, self.channels = image_size, channels
        self.seed, self.shuffle, self.strict = seed, shuffle, strict
        self.shuffle_buffer, self.cache = shuffle_buffer, cache
        self.worker, self.workers = worker, workers
        files = len(source.files)
        self.by_file = workers > 1 and files >= workers
        self.local_batch = batch_size // workers  # elements this worker trains on per step
        self.batch_size, self.replica_batch = batch_size, replica_batch or self.local_batch
        # Elements of the stream one step consumes: this worker's, or every worker's.
        self.rate = self.local_batch if self.by_file else batch_size
        subsets = [np.arange(i, files, workers) for i in range(workers)] if self.by_file else [np.arange(files)]
        self.subset = subsets[worker] if self.by_file else subsets[0]
        shares = [int(source.counts[s].sum()) for s in subsets]
        self.steps_per_pass = min(shares) // self.rate
        if self.steps_per_pass == 0:
            where = f" per worker ({min(shares)} for one of {workers})" if self.by_file else ""
            raise DataError(f"{source.description} has {source.num_examples} images, fewer than one batch "
                            f"of {batch_size}{where}")
        own = shares[worker] if self.by_file else shares[0]
        self.pass_length = self.steps_per_pass * self.rate if passes_are_epochs else own

    def sharding(self):
        """One line on how the workers split the data."""
        what = "shards" if isinstance(self.source, RecordSource) else "files"
        how = "by file" if self.by_file else "by data (fewer files than workers: every worker reads all)"
        return f"{self.source.description}: {len(self.source.files)} {what} over {self.workers} workers, sharded {how}"

    def dataset(self, start=0, epoch_steps=None):
        """Batches from run step `start`: uint8 images become float32 `[replica_batch, S, S, C]` in [-1, 1].

        Args:
            start: the step (an int, or an int64 scalar tensor read when an
                iterator is created).
            epoch_steps: steps per epoch, to report the skipped files of each
                epoch (default: a pass).
        """
        start = tf.cast(start, tf.int64)
        first = start * self.rate
        length = self.pass_length
        if self.cache:
            # Pass 0's order, decoded once: what the cache holds; every pass reshuffles it in blocks.
            order = self.source.elements(self.subset, self.seed, tf.constant(0, tf.int64), self.shuffle,
                                         self.shuffle_buffer)
            decoded = self._decode(order).cache(self._cache_path())
            passes = tf.data.Dataset.range(first // length, tf.int64.max).flat_map(
                lambda p: self._cut(self._shuffled(decoded, p), length))
        else:
            one_pass = lambda p: self.source.elements(self.subset, self.seed, p, self.shuffle, self.shuffle_buffer)
            passes = tf.data.Dataset.range(first // length, tf.int64.max).flat_map(lambda p: one_pass(p).take(length))
        elements = passes.skip(first % length)
        if not self.by_file and self.workers > 1:
            # Keep this worker's contiguous slice of every global batch (upstream's DATA auto-shard).
            mine = lambda k, _: (k % self.batch_size) // self.local_batch == self.worker
            elements = elements.enumerate(first).filter(mine).map(lambda k, element: element)
        if not self.cache:
            elements = self._decode(elements)
        epoch = (epoch_steps or self.steps_per_pass) * self.local_batch
        images = fill_bad_slots(elements, start * self.local_batch, epoch, self.strict)
        return (images.batch(self.replica_batch, drop_remainder=True)
                .map(to_model_range, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    def _shuffled(self, decoded, pass_index):
        if not self.shuffle:
            return decoded
        return block_shuffle(decoded, self.shuffle_buffer, self.seed, pass_index)

    @staticmethod
    def _cut(elements, length):
        # `take` would stop reading early and leave the cache unfinished: read the remainder, drop it.
        return elements.enumerate().filter(lambda i, _: i < length).map(lambda i, element: element)

    def _cache_path(self):
        if self.cache == "memory":
            return ""
        return f"{self.cache}-worker{self.worker}" if self.workers > 1 else self.cache

    def _decode(self, elements):
        return elements.interleave(
            decoder(self.source, self.image_size, self.channels), cycle_length=tf.data.AUTOTUNE,
            block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )


def decoder(source, size=None, channels=None):
    """`(raw, name, label)` -> a dataset of one `(image, label, ok, name)`.

    `image` is uint8 `[size, size, channels]`; the file's own size, or
    channels (1 or 3), where those are None; zeros with `ok` False when the file
    cannot be read or decoded. Each element goes through its own one-element
    dataset: `ignore_errors` turns a decoding error into "no element", and
    the fallback then fills in, so the order and count of elements hold.
    """
    def decode(raw, name, label):
        encoded, label = source.read(raw, label)
        image = decode_native(encoded)
        if channels is not None:
            image = to_channels(image, channels)
        if size is not None:
            image = fit_image(image, size)
        return image, label, True, name

    failed_shape = [size or 0, size or 0, channels or 1]

    def safe(raw, name, label):
        good = tf.data.Dataset.from_tensors((raw, name, label)).map(decode).ignore_errors()
        bad = tf.data.Dataset.from_tensors((tf.zeros(failed_shape, tf.uint8), tf.constant(-1, tf.int64), False, name))
        return good.concatenate(bad).take(1)

    return safe


def fill_bad_slots(elements, first, epoch_elements, strict):
    """`(image, label, ok, name)` elements -> images, a bad one's slot taken by the next good image.

    The output has as many elements as the input (the next good image is
    repeated), and element `k` depends only on input elements `k, k+1, ...`:
    a stream started mid-way agrees with one that ran from the start.
    Each skipped file is printed to stderr, and each epoch's count at its end.

    Args:
        elements: decoded elements.
        first: the stream index of the first element (for epoch ends).
        epoch_elements: elements per epoch.
        strict: fail at the first bad element (its message starts with
            `STRICT_MARKER`).
    """
    def step(state, element):
        pending, bad, k = state
        image, _, ok, name = element
        checks = [tf.debugging.Assert(pending < MAX_CONSECUTIVE_BAD, [
            f"{STRICT_MARKER} {MAX_CONSECUTIVE_BAD} files in a row could not be decoded, the last", name])]
        if strict:
            checks.append(tf.debugging.Assert(ok, [f"{STRICT_MARKER} undecodable image", name, "(--strict-data)"]))
        with tf.control_dependencies(checks):
            failed = tf.logical_not(ok)
        bad += tf.cast(failed, tf.int64)
        reported = _print_if(failed, "data: skipped undecodable image", name, "(its slot takes the next good image)")
        epoch_end = (k + 1) % epoch_elements == 0
        summed_up = _print_if(epoch_end & (bad > 0),
                              "data: epoch", (k + 1) // epoch_elements, "skipped", bad, "undecodable file(s)")
        zero = tf.zeros_like(pending)
        with tf.control_dependencies([reported, summed_up]):
            repeats = tf.where(ok, pending + 1, zero)
            state = (tf.where(ok, zero, pending + 1), tf.where(epoch_end, zero, bad), k + 1)
        return state, (image, repeats)

    zero = tf.constant(0, tf.int64)
    return elements.scan((zero, zero, first), step).flat_map(
        lambda image, repeats: tf.data.Dataset.from_tensors(image).repeat(repeats))


def stream_failure(error):
    """The `DataError` that a stream's failed assertion (`tf.errors.InvalidArgumentError`) stands for, or None."""
    for line in error.message.splitlines():
        _, found, rest = line.partition("assertion failed: ")
        if found and rest.startswith(f"[{STRICT_MARKER}"):
            # "[zoo.data: undecodable image] [/x/bad.png] [(--strict-data)]" -> one line.
            message = " ".join(re.findall(r"\[([^\]]*)\]", rest))
            return DataError(message.removeprefix(STRICT_MARKER).strip())
    return None


def _print_if(condition, *values):
    """Prints `values` to stderr when `condition` holds; a tensor to depend on."""
    def emit():
        with tf.control_dependencies([tf.print(*values, output_stream=sys.stderr)]):
            return tf.constant(True)

    return tf.cond(condition, emit, lambda: tf.constant(False))
