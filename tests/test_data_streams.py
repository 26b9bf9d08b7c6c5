"""Streamed specs (folder:, tfrecord:, tfds:) on small generated folders: decoding, order, seeking,
bad files, sharding across workers, packing."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo import data, training
from zoo.cli import train
from zoo.data import __main__ as data_cli
from zoo.data import streams


def _gray_folder(root, n, size=8, suffix="png"):
    """`n` solid gray images whose value is their index (0..n-1): every element says who it is."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), i, np.uint8)).save(root / f"{i:03d}.{suffix}")
    return root


def _values(batches):
    """float [-1, 1] batches of solid images -> the index each image holds (its center), per batch."""
    return [np.round((b.numpy()[:, b.shape[1] // 2, b.shape[2] // 2, 0] + 1.0) * 127.5).astype(int).tolist()
            for b in batches]


def _take(stream, steps, start=0):
    return _values(stream.dataset(start).take(steps))


def test_any_mix_of_formats_sizes_and_channels(tmp_path):
    rgb = (200, 100, 50)
    luma = round(0.2989 * 200 + 0.587 * 100 + 0.114 * 50)  # tf.image.rgb_to_grayscale's weights
    Image.fromarray(np.full((30, 30, 3), rgb, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 20, 3), rgb, np.uint8)).save(tmp_path / "b.bmp")
    Image.fromarray(np.full((12, 50, 4), (*rgb, 128), np.uint8)).save(tmp_path / "c.webp", lossless=True, exact=True)
    Image.fromarray(np.full((17, 17, 3), rgb, np.uint8)).save(tmp_path / "d.gif")  # palette: exact for one color
    Image.fromarray(np.full((9, 9, 2), (77, 255), np.uint8), "LA").save(tmp_path / "e.png")
    Image.fromarray(np.full((64, 48), 77, np.uint8)).save(tmp_path / "f.jpg", quality=100)
    source = data.open_source(f"folder:{tmp_path}")
    by_name = {}
    for image, _, ok, name in data.in_source_order(source, 16, 3).as_numpy_iterator():
        assert ok and image.shape == (16, 16, 3)
        by_name[name.decode().rsplit("/", 1)[-1]] = image
    for name in ("a.png", "b.bmp", "c.webp", "d.gif"):  # RGB(A) at 30, 40x20, 12x50 (alpha dropped), 17
        np.testing.assert_array_equal(by_name[name], np.full((16, 16, 3), rgb), err_msg=name)
    for name in ("e.png", "f.jpg"):  # gray (+ alpha) repeated to RGB
        np.testing.assert_allclose(by_name[name], 77, atol=1, err_msg=name)
    gray = {name.decode().rsplit("/", 1)[-1]: image
            for image, _, _, name in data.in_source_order(source, 16, 1).as_numpy_iterator()}
    np.testing.assert_array_equal(gray["a.png"], np.full((16, 16, 1), luma))
    np.testing.assert_array_equal(gray["e.png"], np.full((16, 16, 1), 77))


def test_center_crop_then_resize(tmp_path):
    # 20 x 40: a 10-px red band each side of a 20-px green square; the crop keeps the green.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10], image[:, 10:30], image[:, 30:] = (255, 0, 0), (0, 255, 0), (255, 0, 0)
    Image.fromarray(image).save(tmp_path / "wide.png")
    [(fitted, _, ok, _)] = data.in_source_order(data.open_source(f"folder:{tmp_path}"), 8, 3).as_numpy_iterator()
    np.testing.assert_array_equal(fitted, np.broadcast_to(np.array([0, 255, 0], np.uint8), (8, 8, 3)))


def test_folder_and_in_memory_data_agree_on_padding_28_to_32(tmp_path, fashion_test_arrays):
    images = fashion_test_arrays[0][:8]
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(tmp_path / f"{i}.png")
    streamed = next(iter(data.make_dataset(f"folder:{tmp_path}", 32, 1, 8, shuffle=False))).numpy()
    in_memory = next(iter(data.make_dataset("npz:x", 32, 1, 8, shuffle=False, arrays=(images, None)))).numpy()
    np.testing.assert_array_equal(streamed, in_memory)
    np.testing.assert_array_equal(streamed[:, :2], -1.0)  # the black border


def test_every_pass_is_a_seeded_permutation(tmp_path):
    source = data.open_source(f"folder:{_gray_folder(tmp_path, 23)}")
    stream = streams.Stream(source, 8, 1, 5, seed=3)
    assert (stream.steps_per_pass, stream.pass_length) == (4, 20)  # 23 // 5 steps; 3 files left out per pass
    passes = [sum(_take(stream, 12)[p * 4:(p + 1) * 4], []) for p in range(3)]
    for values in passes:
        assert len(set(values)) == 20 and set(values) <= set(range(23))
    assert len({tuple(v) for v in passes}) == 3  # reshuffled every pass
    assert _take(streams.Stream(source, 8, 1, 5, seed=3), 12) == _take(stream, 12)
    assert _take(streams.Stream(source, 8, 1, 5, seed=4), 4) != _take(stream, 4)
    in_order = streams.Stream(source, 8, 1, 5, shuffle=False)
    assert sum(_take(in_order, 4), []) == list(range(20))
    # --steps: a pass is every file, and epochs run across pass boundaries.
    endless = sum(_take(streams.Stream(source, 8, 1, 5, seed=3, passes_are_epochs=False), 9), [])
    assert sorted(endless[:23]) == list(range(23)) and sorted(endless[23:]) == sorted(set(endless[23:]))


@pytest.mark.parametrize("passes_are_epochs", [True, False])
def test_a_stream_started_mid_way_continues_the_uninterrupted_one(tmp_path, passes_are_epochs):
    folder = _gray_folder(tmp_path, 23)
    (folder / "010.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    stream = streams.Stream(data.open_source(f"folder:{folder}"), 8, 1, 5, seed=1,
                            passes_are_epochs=passes_are_epochs)
    whole = _take(stream, 14)
    for start in (1, 4, 6, 9):  # inside a pass, at a pass boundary, in later passes
        assert _take(stream, 14 - start, start=start) == whole[start:], start


def test_a_bad_file_is_reported_and_its_slot_takes_the_next_good_image(tmp_path, capfd):
    folder = _gray_folder(tmp_path, 12)
    (folder / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "005.png").write_bytes(b"")  # two in a row: both slots take 6
    source = data.open_source(f"folder:{folder}")
    (folder / "009.png").unlink()  # listed, then deleted: a read error
    assert len(source.files) == 12
    stream = streams.Stream(source, 8, 1, 4, shuffle=False)
    assert stream.steps_per_pass == 3  # from the file count, bad files included
    assert _take(stream, 3) == [[0, 1, 2, 3], [6, 6, 6, 7], [8, 10, 10, 11]]
    err = capfd.readouterr().err
    for name in ("004.png", "005.png", "009.png"):
        assert re.search(rf"data: skipped undecodable image .*{name}", err), err
    assert "data: epoch 1 skipped 3 undecodable file(s)" in err


def test_strict_data_stops_the_run_with_one_line(tmp_path, capsys):
    folder = _gray_folder(tmp_path / "images", 16)
    (folder / "003.png").write_bytes(b"not an image")
    code = train.main(["--preset", "dcgan_tiny", "--batch-size", "8", "--samples", "4", "--no-jit", "--no-export",
                       "--data", f"folder:{folder}", "--steps", "2", "--outdir", str(tmp_path / "runs"),
                       "--strict-data"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: undecodable image {folder / '003.png'} (--strict-data)\n" in err, err


def test_a_folder_of_only_bad_files_fails_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setattr(streams, "MAX_CONSECUTIVE_BAD", 5)
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        next(iter(streams.Stream(data.open_source(f"folder:{tmp_path}"), 8, 1, 2).dataset()))
    message = str(streams.stream_failure(caught.value))
    assert re.match(r"5 files in a row could not be decoded, the last .*\.png$", message), message


@pytest.mark.parametrize("files, by_file", [(23, True), (1, False)])
def test_workers_split_by_file_or_by_data_into_equal_steps(tmp_path, files, by_file):
    if by_file:
        spec = f"folder:{_gray_folder(tmp_path, files)}"
    else:  # one shard for two workers
        data_cli.pack(f"folder:{_gray_folder(tmp_path / 'images', 22)}", tmp_path / "packed", shards=1)
        spec = f"tfrecord:{tmp_path / 'packed' / '*.tfrecord'}"
    source = data.open_source(spec)
    workers = [streams.Stream(source, 8, 1, 4, seed=2, worker=w, workers=2, shuffle_buffer=1) for w in (0, 1)]
    assert [w.by_file for w in workers] == [by_file] * 2
    assert "sharded by file" in workers[0].sharding() if by_file else "sharded by data" in workers[0].sharding()
    # 23 files: 12 and 11 per worker, 5 steps of 2 each; one shard of 22 records: 5 global steps.
    assert [w.steps_per_pass for w in workers] == [5, 5]
    batches = [_take(w, 10) for w in workers]  # two passes
    assert [len(b) for b in batches] == [10, 10] and all(len(x) == 2 for b in batches for x in b)
    first_pass = [sum(b[:5], []) for b in batches]
    assert not set(first_pass[0]) & set(first_pass[1])  # the workers see different images
    if by_file:
        assert set(first_pass[0]) <= set(range(0, 23, 2)) and set(first_pass[1]) <= set(range(1, 23, 2))
    else:
        # Each worker's half of every global batch of the one-worker stream.
        one = _take(streams.Stream(source, 8, 1, 4, seed=2, shuffle_buffer=1), 10)
        assert [b0 + b1 for b0, b1 in zip(*batches)] == one


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_a_cached_stream_decodes_once_and_stays_seekable(tmp_path, cache):
    folder = _gray_folder(tmp_path / "images", 20)
    source = data.open_source(f"folder:{folder}")
    stream = streams.Stream(source, 8, 1, 5, seed=0, shuffle_buffer=8,
                            cache="memory" if cache == "memory" else str(tmp_path / "cache"))
    iterator = iter(stream.dataset())
    whole = _values(next(iterator) for _ in range(4))  # the first pass fills the cache
    for path in folder.iterdir():
        path.unlink()
    whole += _values(next(iterator) for _ in range(8))  # later passes read only the cache
    passes = [sorted(sum(whole[p * 4:(p + 1) * 4], [])) for p in range(3)]
    assert passes == [list(range(20))] * 3 and whole[4:8] != whole[8:]
    if cache == "file":  # a new process's stream: the cache files, seeked
        assert _take(stream, 6, start=6) == whole[6:]


def test_pack_writes_shards_that_stream_like_the_folder(tmp_path, capsys):
    folder = tmp_path / "images"
    for label, name in enumerate(("cats", "dogs")):
        _gray_folder(folder / name, 5 + label, size=28)
    (folder / "dogs" / "junk.png").write_bytes(b"junk")
    code = data_cli.main(["pack", f"folder:{folder}", str(tmp_path / "out"), "--shards", "3", "--size", "32"])
    assert code == 0
    assert "wrote 11 images to 3 shards" in capsys.readouterr().out
    spec = f"tfrecord:{tmp_path / 'out' / '*.tfrecord'}"
    assert data.open_source(spec).counts.tolist() == [4, 4, 3]  # round robin
    # Unshuffled, a stream interleaves the shards one record each: the folder's order again.
    images, labels = data.load_arrays(spec)
    values, classes = list(range(5)) + list(range(6)), [0] * 5 + [1] * 6  # of the 11 good files, sorted
    # Fitted once to 32 (28 -> 32: padded black, as training would); labels from the subfolders.
    assert images.shape == (11, 32, 32, 1)
    np.testing.assert_array_equal(images[:, :2], 0)
    assert images[:, 16, 16, 0].tolist() == values and labels.tolist() == classes
    assert _values(data.make_dataset(spec, 32, 1, 11, shuffle=False)) == [values]


def test_tfrecord_without_the_image_feature_fails_before_training(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as writer:
        feature = {"pixels": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    config = training.TrainConfig(preset="dcgan_tiny", data=f"tfrecord:{tmp_path}/*.tfrecord").resolved()
    with pytest.raises(training.ConfigError, match=r"has no bytes feature 'image' \(has \['pixels'\]\)"):
        training.validate(config)


def test_tfds_streams_from_the_prepared_files(tmp_path, fashion_test_arrays):
    from test_data import ZooTestImages

    ZooTestImages(data_dir=str(tmp_path)).download_and_prepare()
    source = data.open_source("tfds:zoo_test_images:test", data_dir=str(tmp_path))
    assert isinstance(source, streams.RecordSource) and source.num_examples == 20
    batch = next(iter(data.make_dataset("tfds:zoo_test_images:test", 32, 1, 20, data_dir=str(tmp_path)))).numpy()
    # Padded 28 -> 32; the same 20 images (tfds may reorder them).
    np.testing.assert_array_equal(batch[:, :2], -1.0)
    streamed = np.round((batch[:, 2:30, 2:30, 0] + 1.0) * 127.5).astype(np.uint8)
    assert sorted(map(bytes, streamed)) == sorted(map(bytes, fashion_test_arrays[0][40:60, ..., 0]))
    sliced = data.open_source("tfds:zoo_test_images:train[:10]", data_dir=str(tmp_path))
    assert sliced.num_examples == 10
    with pytest.raises(data.DataError, match="has no split 'validation'"):
        data.open_source("tfds:zoo_test_images:validation", data_dir=str(tmp_path))


def test_a_run_keeps_its_file_list_for_resuming(tmp_path):
    folder = _gray_folder(tmp_path / "images", 16)
    config = training.TrainConfig(preset="dcgan_tiny", data=f"folder:{folder}", epochs=1, batch_size=8,
                                  samples=0, jit=False, export=False, outdir=str(tmp_path / "runs"))
    result = training.run(config, verbose=0)
    index = json.loads((result.run_dir / data.INDEX_FILE).read_text())
    assert index["files"] == [str(folder / f"{i:03d}.png") for i in range(16)]
    _gray_folder(folder, 20)  # files added after the run began
    assert len(data.training_data(config.data, index_dir=result.run_dir).files) == 16
    assert len(data.training_data(config.data).files) == 20


def test_data_stream_seeks_a_streamed_folder(tmp_path):
    import zoo

    folder = _gray_folder(tmp_path, 21)
    config = training.TrainConfig(data=f"folder:{folder}", batch_size=4, seed=5)
    model = zoo.get_model("dcgan", "dcgan_tiny")
    stream = training.DataStream(config, model, data.training_data(config.data))
    assert stream.steps_per_epoch == 5
    iterator = iter(stream.dataset())
    whole = _values(next(iterator) for _ in range(8))
    stream.seek(6)
    assert _values(stream.dataset().take(2)) == whole[6:]


def test_streamed_options_are_validated(tmp_path):
    folder = _gray_folder(tmp_path, 4)
    for changes, message in [
        ({"shuffle_buffer": 0}, "--shuffle-buffer must be a positive integer"),
        ({"cache": "memory", "data": "fashion_mnist"}, "--cache goes with streamed data"),
        ({"strict_data": "yes"}, "--strict-data is a flag"),
    ]:
        config = training.TrainConfig(**{"preset": "dcgan_tiny", "data": f"folder:{folder}", **changes}).resolved()
        with pytest.raises(training.ConfigError, match=re.escape(message)):
            training.validate(config)


@pytest.mark.slow  # two worker processes (about 40 s here)
def test_two_workers_stream_a_folder_by_file_in_equal_steps(tmp_path):
    from test_multiworker import run_cluster
    from test_training import saved_state

    # 17 files: 9 for worker 0, 8 for worker 1 (odd indices, a bad one among them); local batch 4.
    folder = _gray_folder(tmp_path / "images", 17)
    (folder / "005.png").write_bytes(b"junk")
    logs = run_cluster(["--strategy", "multiworker", "--preset", "dcgan_tiny", "--batch-size", "8", "--samples", "4",
                        "--no-jit", "--no-export", "--data", f"folder:{folder}", "--epochs", "2",
                        "--outdir", tmp_path / "runs"], tmp_path, "worker")
    for log in logs:
        assert f"data: folder:{folder}: 17 files over 2 workers, sharded by file" in log, log[-3000:]
    assert "005.png" in logs[1] and "005.png" not in logs[0]  # skipped where it was streamed
    assert "data: epoch 2 skipped 1 undecodable file(s)" in logs[1]
    # Both workers ran 2 steps an epoch (8 files each per pass), the bad one's slot filled.
    _, iterations = saved_state(next((tmp_path / "runs").iterdir()) / "model.keras")
    assert iterations == [4, 4]
