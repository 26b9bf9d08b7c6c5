"""SavedModel export into a TF Serving model repository.

Layout (what `tensorflow_model_server --model_config_file` reads):

    <base>/models.config
    <base>/<name>/<version>/saved_model.pb, variables/, assets.extra/

Versions are integers; a new export takes the next one and never touches
an older one. On a local file system it is written to a hidden temporary
folder (TF Serving loads only numeric folders) and renamed into place, so a
crash never leaves a half-written version for the server.

The repository may be remote (`gs://bucket/models`, any `tf.io.gfile` URL).
Object stores have no atomic rename (renaming a folder copies and deletes
each object), so there the version is written locally first and then
uploaded straight into its numeric folder, `saved_model.pb` last: a version
folder that has `saved_model.pb` is complete, one without it is an upload
cut short. The folder is visible from its first file on; TF Serving, which
looks only for numeric folders, may try to load it early, fail, and retry
(`--max_num_load_retries`, 5 by default, a minute apart), and keeps
serving the previous version meanwhile. An upload cut short is never
overwritten: the next export takes the next version.

`models.config` is TF Serving's `ModelServerConfig` in text format. Each
export adds or updates its model's entry, with the base path the server
sees (`<serving_base_path>/<name>`; the README's Docker command mounts the
repository at `/models`), and keeps every other entry of the file. It is
replaced whole: written under a temporary name and renamed, a single
object that an object store replaces atomically.
"""

import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.warmup import write_warmup

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Where TF Serving sees the repository (the README's Docker command mounts it there).
DEFAULT_SERVING_BASE_PATH = "/models"


def is_url(path):
    """True for a URL such as `gs://bucket/models` (pathlib would turn it into `gs:/bucket/models`)."""
    return "://" in str(path)


def storage_path(path):
    """`path` as a `pathlib.Path`, or as a str if it is a URL."""
    return str(path) if is_url(path) else pathlib.Path(path)


def _folders(path):
    """Names of the folders in `path` (GCS lists them as `<name>/`)."""
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(path))
    return [name for name in names if tf.io.gfile.isdir(tf.io.gfile.join(path, name))]


def versions(model_dir):
    """Sorted integer versions present under `<base>/<name>` (local or remote)."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    return sorted(int(name) for name in _folders(model_dir) if name.isdigit())


def float32_model(model):
    """`model`, or a float32 rebuild with its weights if it computes in lower precision.

    Serving and LiteRT get float32 graphs whatever the training policy:
    LiteRT's builtin kernels do not take bfloat16, and clients send float32.
    """
    if all(net.compute_dtype == "float32" for net in model.export_networks()):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = type(model).from_config(model.get_config())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights(model.get_weights())
    return clone


def build_archive(model):
    """A `keras.export.ExportArchive` with the model's serving signatures (float32)."""
    model = float32_model(model)
    archive = keras.export.ExportArchive()
    for network in model.export_networks():
        archive.track(network)
    for name, (fn, signature) in model.export_endpoints().items():
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def export_saved_model(model, base_dir, name, version=None, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """Exports `model`'s serving signatures as `<base_dir>/<name>/<version>/`.

    Args:
        model: a zoo family model (`export_endpoints()`, `export_networks()`).
        base_dir: the model repository root.
        name: model name in the repository (TF Serving's `name`).
        version: integer version; default one above the highest present.
        serving_base_path: where the server sees `base_dir`; the model's
            `models.config` entry gets `<serving_base_path>/<name>`.

    Returns:
        The written version folder: a `pathlib.Path`, or a str for a URL
        `base_dir` (see the module docstring for what a remote export
        guarantees).

    Example:

    ```python
    path = export_saved_model(model, "serving", "dcgan_fashion_mnist")
    # serving/dcgan_fashion_mnist/1/ and serving/models.config
    ```
    """
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r} must be letters, digits, '_', '-' or '.'")
    model_dir = tf.io.gfile.join(base_dir, name)
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if not serving_base_path:
        raise ValueError("serving_base_path must not be empty")
    read_models_config(base_dir)  # an unreadable models.config fails before anything is written
    final = tf.io.gfile.join(model_dir, str(version))
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} exists; versions are never overwritten")
    tf.io.gfile.makedirs(model_dir)
    # A local version is staged next to its final place (one file system: an atomic rename),
    # a remote one in a local folder.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=None if is_url(final) else model_dir))
    try:
        build_archive(model).write_out(str(tmp), verbose=False)
        write_warmup(model, tmp, name=name)  # inside the version before it is visible
        if is_url(final):
            _upload(tmp, final)
        else:
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_models_config(base_dir, name, serving_base_path)
    return storage_path(final)


def _upload(local_dir, url):
    """Copies the SavedModel folder `local_dir` to `url`, `saved_model.pb` last.

    Loaders find a SavedModel by its `saved_model.pb`: written last, it
    marks a complete upload.
    """
    files = []
    for root, _, names in os.walk(local_dir):
        relative = os.path.relpath(root, local_dir)
        target = url if relative == "." else tf.io.gfile.join(url, *relative.split(os.sep))
        tf.io.gfile.makedirs(target)
        files += [(os.path.join(root, n), tf.io.gfile.join(target, n)) for n in names]
    files.sort(key=lambda pair: pair[0] == os.path.join(local_dir, "saved_model.pb"))
    for source, target in files:
        tf.io.gfile.copy(source, target)


def write_models_config(base_dir, name, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """Adds or updates `name`'s entry in `<base_dir>/models.config`, keeping the others.

    The entry gets base path `<serving_base_path>/<name>` and platform
    `tensorflow`; its other settings (a version policy, labels) are kept.
    Model folders of `base_dir` the file does not list yet are added with
    the same base path; entries of models that are not in `base_dir` stay.

    Args:
        base_dir: the model repository root.
        name: the model just exported.
        serving_base_path: where the server sees `base_dir` (a local or
            remote path, e.g. `gs://bucket/models`).

    Returns:
        The path of `models.config`: a `pathlib.Path`, or a str for a URL
        `base_dir`.

    Raises:
        ValueError: the existing file is not a `ModelServerConfig` with a
            `model_config_list`; it is left as it is.
    """
    if not serving_base_path:
        raise ValueError("serving_base_path must not be empty")
    config = read_models_config(base_dir)
    entries = {entry.name: entry for entry in config.model_config_list.config}
    folders = sorted(f for f in _folders(base_dir) if versions(tf.io.gfile.join(base_dir, f)))
    for model_name in [name] + [f for f in folders if f not in entries and f != name]:
        entry = entries[model_name] if model_name in entries else config.model_config_list.config.add(name=model_name)
        entry.base_path = f"{serving_base_path.rstrip('/')}/{model_name}"
        entry.model_platform = "tensorflow"
    path = tf.io.gfile.join(base_dir, "models.config")
    tmp = tf.io.gfile.join(base_dir, ".models.config.tmp")
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text_format.MessageToString(config))
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return storage_path(path)


def read_models_config(base_dir):
    """The `ModelServerConfig` of `<base_dir>/models.config` (empty when there is none).

    Raises:
        ValueError: the file is not a `ModelServerConfig` with a `model_config_list`.
    """
    path = tf.io.gfile.join(base_dir, "models.config")
    config = model_server_config_pb2.ModelServerConfig()
    if tf.io.gfile.exists(path):
        try:
            with tf.io.gfile.GFile(path) as f:
                text_format.Parse(f.read(), config)
        except text_format.ParseError as e:
            raise ValueError(f"{path} is not a TF Serving model config ({e}); fix or remove it") from None
        if config.WhichOneof("config") == "custom_model_config":
            raise ValueError(f"{path} has a custom_model_config, not a model_config_list; add the model by hand")
    return config
