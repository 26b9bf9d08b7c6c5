"""`python -m zoo.data pack SRC OUT --shards N [--size S]`: any data spec -> TFRecord shards.

    python -m zoo.data pack folder:photos packed --shards 64 --size 64
    zoo-train --preset dcgan_64_rgb --data 'tfrecord:packed/*.tfrecord'

Writes `OUT/images-00000-of-0000N.tfrecord` ...: `tf.train.Example`s with
`image` (bytes: PNG) and, when the source has labels, `label` (int64).
With `--size`, images are fitted once (the training rule: padded 28 -> 32,
else center-cropped and resized), so training decodes small PNGs; without,
they keep their size. Images go round-robin over the shards, in source
order; an undecodable file is reported and left out.
"""

import argparse
import sys

import numpy as np
import tensorflow as tf

from zoo import data
from zoo.data import streams


def _feature(values):
    if isinstance(values, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[values]))


def pack(spec, out, shards, size=None, data_dir=None):
    """Writes a spec's images as `shards` TFRecord files in the folder `out`.

    Args:
        spec: any data spec.
        out: output folder (local or a `tf.io.gfile` URL), created if needed.
        shards: number of files.
        size: fit every image to `size` x `size`; None keeps each one's size.
        data_dir: tfds data directory.

    Returns:
        `(paths, written, skipped)`: the shard files, images written,
        undecodable files left out.
    """
    parsed = data.check_spec(spec, data_dir)
    if parsed.streamed:
        elements = data.in_source_order(data.open_source(parsed, data_dir), size)
    else:
        images, labels = data.load_arrays(parsed, data_dir)
        labels = np.full(len(images), -1, np.int64) if labels is None else labels
        fit = (lambda image: streams.fit_image(image, size)) if size else tf.identity
        elements = tf.data.Dataset.from_tensor_slices((images, labels)).map(
            lambda image, label: (fit(image), label, True, ""))

    def encode(image, label, ok, name):
        png = tf.cond(ok, lambda: tf.io.encode_png(image), lambda: tf.constant(b""))
        return png, label, ok, name

    tf.io.gfile.makedirs(out)
    paths = [tf.io.gfile.join(out, f"images-{i:05d}-of-{shards:05d}.tfrecord") for i in range(shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    written = skipped = 0
    try:
        batches = elements.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for png, label, ok, name in batches.as_numpy_iterator():
            if not ok:
                print(f"pack: skipped undecodable image {name.decode()}", file=sys.stderr)
                skipped += 1
                continue
            feature = {streams.RECORD_IMAGE: _feature(png)}
            if label >= 0:
                feature[streams.RECORD_LABEL] = _feature(int(label))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[written % shards].write(example.SerializeToString())
            written += 1
    finally:
        for writer in writers:
            writer.close()
    return paths, written, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="write a data spec's images as TFRecord shards")
    p.add_argument("src", help="data spec: folder:PATH, tfds:NAME[:SPLIT], npz:PATH, fashion_mnist[:SPLIT], ...")
    p.add_argument("out", help="output folder")
    p.add_argument("--shards", type=int, default=16, help="number of TFRecord files (default 16)")
    p.add_argument("--size", type=int, help="fit every image to SIZE x SIZE once (default: keep sizes)")
    p.add_argument("--data-dir", help="tfds data directory")
    args = parser.parse_args(argv)
    if args.shards < 1 or (args.size is not None and args.size < 1):
        parser.error("--shards and --size must be positive")
    try:
        paths, written, skipped = pack(args.src, args.out, args.shards, args.size, args.data_dir)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {written} images to {len(paths)} shards in {args.out} ({skipped} undecodable skipped); "
          f"train with --data 'tfrecord:{tf.io.gfile.join(args.out, '*.tfrecord')}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
