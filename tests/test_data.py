"""Data specs on small real data, and every bad spec's error."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from zoo import data


def _first_batch(ds):
    return next(iter(ds)).numpy()


def test_fashion_mnist_debian_files(fashion_test_arrays):
    images, labels = fashion_test_arrays
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    ds = data.make_dataset("fashion_mnist:test", 32, 1, 64, shuffle=False, arrays=(images, labels))
    batch = _first_batch(ds)
    assert batch.shape == (64, 32, 32, 1) and batch.dtype == np.float32
    # 28 -> 32 is a centered pad with black (-1); the inside is the image scaled to [-1, 1].
    np.testing.assert_array_equal(batch[:, :2], -1.0)
    np.testing.assert_array_equal(batch[:, :, -2:], -1.0)
    np.testing.assert_allclose(batch[:, 2:30, 2:30], images[:64] / 127.5 - 1.0, atol=1e-6)


def test_batches_are_global_and_drop_remainder():
    images = np.zeros((100, 8, 8, 1), np.uint8)
    ds = data.make_dataset("npz:unused", 8, 1, 32, arrays=(images, None))
    assert ds.element_spec.shape.as_list() == [32, 8, 8, 1]
    assert sum(1 for _ in ds) == 3


def test_resize_when_sizes_differ_a_lot():
    images = np.full((4, 28, 28, 1), 255, np.uint8)
    batch = _first_batch(data.make_dataset("npz:x", 64, 1, 4, arrays=(images, None)))
    assert batch.shape == (4, 64, 64, 1)
    np.testing.assert_allclose(batch, 1.0, atol=1e-5)


def test_folder_of_nested_png_and_jpeg(tmp_path, fashion_test_arrays):
    images = fashion_test_arrays[0][:12, ..., 0]
    for i, img in enumerate(images):
        sub = tmp_path / f"class{i % 3}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / (f"{i}.png" if i % 2 else f"{i}.JPG"))
    (tmp_path / "notes.txt").write_text("not an image")
    loaded, labels = data.load_arrays(f"folder:{tmp_path}")
    assert loaded.shape == (12, 28, 28, 1)
    # Labels: the first-level subfolder of each file, in sorted file order.
    files = sorted(p for p in tmp_path.rglob("*") if p.suffix in (".png", ".JPG"))
    np.testing.assert_array_equal(labels, [int(p.relative_to(tmp_path).parts[0][-1]) for p in files])
    pngs = [int(p.stem) for p in sorted(tmp_path.rglob("*.png"))]
    # PNG is lossless: the pixels come back exactly.
    by_name = {p.stem: p for p in tmp_path.rglob("*.png")}
    for i in pngs:
        np.testing.assert_array_equal(np.asarray(Image.open(by_name[str(i)])), images[i])
    batch = _first_batch(data.make_dataset(f"folder:{tmp_path}", 32, 1, 4))
    assert batch.shape == (4, 32, 32, 1) and batch.min() >= -1 and batch.max() <= 1


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz(tmp_path, dtype):
    rng = np.random.RandomState(0)
    raw = rng.randint(0, 256, (10, 16, 16, 3)).astype(np.uint8)
    stored = raw if dtype == "uint8" else raw.astype(np.float32) / 255.0
    np.savez(tmp_path / "x.npz", images=stored, labels=np.arange(10))
    images, labels = data.load_arrays(f"npz:{tmp_path / 'x.npz'}")
    np.testing.assert_array_equal(images, raw)
    np.testing.assert_array_equal(labels, np.arange(10))


class ZooTestImages(tfds.core.GeneratorBasedBuilder):
    """A tiny tfds dataset prepared locally from the Debian Fashion-MNIST files."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 40), "test": self._generate_examples(40, 60)}

    def _generate_examples(self, start, stop):
        images, labels = data.load_arrays("fashion_mnist:test")
        for i in range(start, stop):
            yield i, {"image": images[i], "label": int(labels[i])}


def test_tfds_prepared_locally(tmp_path, fashion_test_arrays):
    ZooTestImages(data_dir=str(tmp_path)).download_and_prepare()
    images, labels = data.load_arrays("tfds:zoo_test_images:test", data_dir=str(tmp_path))
    assert images.shape == (20, 28, 28, 1)
    # tfds may reorder examples: compare (image, label) pairs as sets.
    expected = zip(map(bytes, fashion_test_arrays[0][40:60]), fashion_test_arrays[1][40:60])
    assert sorted(zip(map(bytes, images), labels)) == sorted(expected)
    batch = _first_batch(data.make_dataset("tfds:zoo_test_images", 32, 1, 8, data_dir=str(tmp_path)))
    assert batch.shape == (8, 32, 32, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mnist", "unknown data scheme 'mnist'"),
        ("fashion_mnist:validation", "unknown split 'validation'"),
        ("tfds:", "tfds needs a dataset name"),
        ("folder:/nonexistent/images", "image folder /nonexistent/images does not exist"),
        ("npz:/nonexistent/x.npz", "npz file /nonexistent/x.npz does not exist"),
        ("tfrecord:/nonexistent/*.tfrecord", "tfrecord:/nonexistent/*.tfrecord matches no files"),
        ("tfds:no_such_dataset_xyz", "tfds has no dataset 'no_such_dataset_xyz'"),
    ],
)
def test_bad_specs_fail_before_loading(spec, message):
    with pytest.raises(data.DataError, match=re.escape(message)):
        data.check_spec(spec)


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("x")
    with pytest.raises(data.DataError, match=r"has no \.png/\.jpg/\.jpeg/\.bmp/\.gif/\.webp files"):
        data.check_spec(f"folder:{tmp_path}")


def test_load_arrays_names_an_unreadable_image(tmp_path):
    # Training skips it (test_data_streams); loading a folder into memory is all or nothing.
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(data.DataError, match=r"cannot decode image .*bad\.png"):
        data.load_arrays(f"folder:{tmp_path}")


def test_in_memory_data_with_the_wrong_channel_count():
    # Streamed specs convert channels (test_data_streams); arrays in memory are taken as they are.
    with pytest.raises(data.DataError, match=r"has 3 channel\(s\) but the model expects 1"):
        data.make_dataset("npz:x", 32, 1, 2, arrays=(np.zeros((4, 32, 32, 3), np.uint8), None))


def test_mixed_image_shapes_stream_but_do_not_load_into_one_array(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "b.png")
    assert _first_batch(data.make_dataset(f"folder:{tmp_path}", 8, 1, 2)).shape == (2, 8, 8, 1)
    with pytest.raises(data.DataError, match="differ in size or channels"):
        data.load_arrays(f"folder:{tmp_path}")


def test_npz_problems(tmp_path):
    np.savez(tmp_path / "nokey.npz", x=np.zeros((2, 4, 4)))
    with pytest.raises(data.DataError, match="has no 'images' array"):
        data.load_arrays(f"npz:{tmp_path / 'nokey.npz'}")
    np.savez(tmp_path / "range.npz", images=np.full((2, 4, 4), 3.0))
    with pytest.raises(data.DataError, match=r"finite and in \[0, 1\]"):
        data.load_arrays(f"npz:{tmp_path / 'range.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="cannot read npz file"):
        data.load_arrays(f"npz:{tmp_path / 'junk.npz'}")


def test_fewer_images_than_a_batch():
    with pytest.raises(data.DataError, match="fewer than one batch of 64"):
        data.make_dataset("npz:x", 8, 1, 64, arrays=(np.zeros((10, 8, 8, 1), np.uint8), None))


def test_tfds_absent_and_not_downloadable(tmp_path):
    with pytest.raises(data.DataError, match="'mnist' is not prepared in .* and downloading is off"):
        data.load_arrays("tfds:mnist", data_dir=str(tmp_path), download=False)


def test_fashion_mnist_missing_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(data.DataError, match=r"apt-get install dataset-fashion-mnist"):
        data.load_arrays("fashion_mnist", data_dir=str(tmp_path), download=False)


def test_corrupt_idx_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DataError, match="cannot read IDX file"):
        data.load_arrays("fashion_mnist")


def test_pipeline_is_shuffled_per_epoch_and_seeded():
    images = np.arange(64, dtype=np.uint8).reshape(64, 1, 1, 1)
    ds = data.make_dataset("npz:x", 1, 1, 64, seed=3, arrays=(images, None))
    first, second = (next(iter(ds)).numpy().ravel() for _ in range(2))
    assert not np.array_equal(first, second)
    again = next(iter(data.make_dataset("npz:x", 1, 1, 64, seed=3, arrays=(images, None))))
    np.testing.assert_array_equal(first, again.numpy().ravel())
    assert isinstance(ds, tf.data.Dataset)
