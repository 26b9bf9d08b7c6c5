"""SavedModel export into a TF Serving model repository.

Layout (what `tensorflow_model_server --model_config_file` reads):

    <base>/models.config
    <base>/<name>/<version>/saved_model.pb, variables/, assets.extra/

Versions are integers; a new export takes the next one and never touches
an older one. It is written to a hidden temporary folder first and renamed
into place, so a crash never leaves a half-written version for the server.
"""

import os
import pathlib
import re
import shutil
import tempfile

import keras

from export.warmup import write_warmup

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def versions(model_dir):
    """Sorted integer versions present under `<base>/<name>`."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


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


def export_saved_model(model, base_dir, name, version=None):
    """Exports `model`'s serving signatures as `<base_dir>/<name>/<version>/`.

    Args:
        model: a zoo family model (`export_endpoints()`, `export_networks()`).
        base_dir: the model repository root.
        name: model name in the repository (TF Serving's `name`).
        version: integer version; default one above the highest present.

    Returns:
        `pathlib.Path` of the written version folder.

    Example:

    ```python
    path = export_saved_model(model, "serving", "dcgan_fashion_mnist")
    # serving/dcgan_fashion_mnist/1/ and serving/models.config
    ```
    """
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r} must be letters, digits, '_', '-' or '.'")
    model_dir = pathlib.Path(base_dir) / name
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists; versions are never overwritten")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        build_archive(model).write_out(str(tmp), verbose=False)
        write_warmup(model, tmp, name=name)  # inside the version before it is visible
        os.rename(tmp, final)  # atomic within one file system
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_models_config(base_dir)
    return final


def write_models_config(base_dir):
    """Writes `<base_dir>/models.config` listing every model folder in it."""
    base_dir = pathlib.Path(base_dir)
    entries = []
    for model_dir in sorted(p for p in base_dir.iterdir() if p.is_dir() and versions(p)):
        entries.append(
            "  config {\n"
            f"    name: '{model_dir.name}'\n"
            f"    base_path: '/models/{model_dir.name}'\n"
            "    model_platform: 'tensorflow'\n"
            "  }\n"
        )
    text = "model_config_list {\n" + "".join(entries) + "}\n"
    tmp = base_dir / ".models.config.tmp"
    tmp.write_text(text)
    os.replace(tmp, base_dir / "models.config")
    return base_dir / "models.config"
