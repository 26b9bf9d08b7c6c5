"""Preset directories: a trained model as files, in keras-hub's layout.

    <preset>/
        config.json        the model's registered Keras class and constructor arguments
        model.weights.h5   every weight needed to generate and to keep training
                           (networks, EMA generator, batch-norm statistics, running
                           state such as StyleGAN2's w average); no optimizer state
        metadata.json      versions, parameter counts, sha256 of the weights, and what
                           the writer adds: data, training command, minutes, machine,
                           measured quality with the command that measured it
        samples.png        an 8 x 8 grid of `sample_latents(64, seed=0)`

Shipped presets live in `zoo/<family>/presets/<name>/`. Loading reads JSON and
HDF5 only: the class comes from Keras' registry of serializable classes (no
pickles, no code in the files), and must be a `zoo.base.GenerativeModel`.
"""

import hashlib
import json
import pathlib
import sys
import tempfile

import h5py
import keras
import tensorflow as tf

import zoo
from zoo.base import GenerativeModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
SAMPLES_FILE = "samples.png"
# Bumped when the layout changes incompatibly; a reader refuses newer formats.
FORMAT_VERSION = 1


class PresetError(ValueError):
    """A preset that cannot be loaded; the message is one line naming the problem."""


def _family_preset_root(cls):
    return pathlib.Path(sys.modules[cls.__module__].__file__).parent / "presets"


def shipped_presets():
    """`{name: directory}` of every preset that ships trained weights."""
    found = {}
    for cls in zoo.FAMILIES.values():
        root = _family_preset_root(cls)
        for name in cls.presets:
            if (root / name / CONFIG_FILE).is_file():
                found[name] = root / name
    return found


def family_of(name):
    """The family class whose presets table holds `name`, or None."""
    return next((cls for cls in zoo.FAMILIES.values() if name in cls.presets), None)


def family_name(name):
    """The `zoo.FAMILIES` key of the family whose presets table holds `name`; PresetError if none."""
    found = next((key for key, cls in zoo.FAMILIES.items() if name in cls.presets), None)
    if found is None:
        raise PresetError(f"{name!r} is not a preset name")
    return found


def is_preset_dir(path):
    """Whether `path` is a directory holding a preset's `config.json` and weights."""
    path = pathlib.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).exists()


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_tuple(version):
    parts = []
    for part in str(version).split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits or digits != part:
            break
        parts.append(int(digits))
    return tuple(parts)


def _datasets(path):
    """`{dataset path: shape}` of an HDF5 weights file, in file order."""
    found = {}

    def visit(name, obj):  # returns None: a value would stop the walk
        if isinstance(obj, h5py.Dataset):
            found[name] = obj.shape

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def parameter_counts(model):
    """`{"total": n, <sub-network name>: n, ...}` of `model`'s weights."""
    counts = {layer.name: int(layer.count_params()) for layer in model.layers if layer.weights}
    return {"total": int(model.count_params()), **counts}


def _weights_only(model):
    """A copy of `model` without optimizers, holding the same weight values."""
    config = keras.saving.serialize_keras_object(model)
    # No compile config: deserializing it would create (and save) optimizers.
    config.pop("compile_config", None)
    config.pop("build_config", None)
    clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(model.get_weights())
    return clone, config


def save_to_preset(model, directory, metadata=None, samples=64):
    """Writes `model` as a preset directory (see the module docstring).

    Args:
        model: a built zoo model (trained or not).
        directory: where to write; created, and its preset files replaced.
            A remote URL (`gs://...`) is written locally first and copied
            with `tf.io.gfile`.
        metadata: extra JSON-serializable entries for `metadata.json`
            (data, images seen, training command and minutes, quality).
        samples: images in `samples.png` (0: none).

    Returns:
        The directory, as a string.

    Example:

    ```python
    model.fit(dataset, epochs=5)
    model.save_to_preset("my_dcgan")  # same as zoo.presets.save_to_preset(model, "my_dcgan")
    zoo.from_preset("my_dcgan")
    ```
    """
    directory = str(directory)
    if "://" in directory:
        with tempfile.TemporaryDirectory() as tmp:
            save_to_preset(model, tmp, metadata, samples)
            tf.io.gfile.makedirs(directory)
            for name in tf.io.gfile.listdir(tmp):
                tf.io.gfile.copy(f"{tmp}/{name}", f"{directory.rstrip('/')}/{name}", overwrite=True)
        return directory
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    clone, config = _weights_only(model)
    clone.save_weights(path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if samples:
        from zoo.callbacks import image_grid, save_png

        images = keras.ops.convert_to_numpy(model.generate(model.sample_latents(samples, seed=0)))
        save_png(image_grid(images), path / SAMPLES_FILE)
    info = {
        "format_version": FORMAT_VERSION,
        "zoo_version": zoo.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "class_name": config["registered_name"] or config["class_name"],
        "image_shape": list(model.image_shape),
        "latent_shape": list(model.latent_shape),
        "parameters": parameter_counts(model),
        "weights_sha256": sha256(path / WEIGHTS_FILE),
        "weights_bytes": (path / WEIGHTS_FILE).stat().st_size,
        **(metadata or {}),
    }
    (path / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return directory


def _read_json(directory, name):
    path = pathlib.Path(directory) / name
    if not path.is_file():
        raise PresetError(f"{directory}: no {name} (not a preset directory?)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise PresetError(f"{path} is not valid JSON ({e})") from None


def read_metadata(directory):
    """`metadata.json` of a preset directory as a dict (PresetError if missing or unreadable)."""
    return _read_json(directory, METADATA_FILE)


def resolve(preset):
    """`(directory or None, family class or None)` of a preset name or directory.

    A name of a shipped preset gives its directory; a name of a config-only
    preset gives `(None, family)`; a path gives `(path, None)`.
    """
    path = pathlib.Path(preset)
    if path.is_dir():
        return path, None
    shipped = shipped_presets()
    if str(preset) in shipped:
        return shipped[str(preset)], family_of(str(preset))
    family = family_of(str(preset))
    if family is not None:
        return None, family
    names = sorted(name for cls in zoo.FAMILIES.values() for name in cls.presets)
    raise PresetError(f"{preset!r} is neither a preset directory nor a preset name; names: {', '.join(names)}")


def read_config(directory):
    """`config.json` of a preset directory as a dict (PresetError if missing or unreadable)."""
    return _read_json(directory, CONFIG_FILE)


def model_class(directory):
    """The registered zoo model class a preset directory's `config.json` names."""
    return _model_class(directory, read_config(directory))


def _model_class(directory, config):
    if not isinstance(config, dict) or "config" not in config:
        raise PresetError(f"{directory}/{CONFIG_FILE} is not a serialized Keras model")
    name = config.get("registered_name") or config.get("class_name")
    cls = keras.saving.get_registered_object(name)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise PresetError(f"{directory}/{CONFIG_FILE} names {name!r}, which is not a registered zoo model "
                          "class (import the module that registers it first)")
    return cls


def load_preset_dir(directory, load_weights=True, **overrides):
    """The model of a preset directory; checks version, sha256 and weight shapes first.

    Raises:
        PresetError: one line naming the problem.
    """
    directory = pathlib.Path(directory)
    config_path = directory / CONFIG_FILE
    config = read_config(directory)
    cls = _model_class(directory, config)
    metadata = read_metadata(directory)
    if metadata.get("format_version", FORMAT_VERSION) > FORMAT_VERSION or (
            _version_tuple(zoo.__version__)
            and _version_tuple(metadata.get("zoo_version", "0")) > _version_tuple(zoo.__version__)):
        raise PresetError(f"{directory} was written by zoo {metadata.get('zoo_version')}, newer than this "
                          f"zoo {zoo.__version__}: upgrade keras-generative-zoo")
    try:
        model = cls.from_config({**config["config"], **overrides})
    except (TypeError, ValueError) as e:
        raise PresetError(f"{config_path}: cannot build {cls.__name__} ({e})") from None
    if load_weights:
        load_weights_into(model, directory, metadata)
    return model


def load_weights_into(model, directory, metadata):
    """Loads `directory`'s weights into `model` after checking their file and shapes."""
    weights = pathlib.Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise PresetError(f"{directory}: no {WEIGHTS_FILE}")
    expected = metadata.get("weights_sha256")
    if expected is None:
        raise PresetError(f"{directory}/{METADATA_FILE} has no weights_sha256")
    if sha256(weights) != expected:
        raise PresetError(f"{weights}: sha256 differs from metadata.json's (a truncated or altered file)")
    try:
        found = _datasets(weights)
    except OSError as e:
        raise PresetError(f"{weights} is not a readable HDF5 file ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(pathlib.Path(tmp) / WEIGHTS_FILE)
        wanted = _datasets(pathlib.Path(tmp) / WEIGHTS_FILE)
    for name, shape in wanted.items():
        if name not in found:
            raise PresetError(f"{weights} does not fit the config: weight {name} {shape} is missing")
        if found[name] != shape:
            raise PresetError(f"{weights} does not fit the config: weight {name} is {found[name]}, "
                              f"the model's is {shape}")
    extra = next((name for name in found if name not in wanted), None)
    if extra is not None:
        raise PresetError(f"{weights} does not fit the config: it has weight {extra}, the model has not")
    model.load_weights(weights)


def from_preset(preset, load_weights=True, **overrides):
    """A zoo model from a preset name or a preset directory.

    Args:
        preset: a preset name (`zoo.list_presets()`; `zoo.shipped_presets()`
            ship weights) or a directory written by `save_to_preset`.
        load_weights: False gives the preset's architecture with a random
            initialisation. True needs a preset with weights.
        **overrides: constructor arguments to replace (ones that change a
            weight's shape then fail to load, naming the weight).

    Raises:
        PresetError: unknown name, missing/truncated/altered weights, weights
            that do not fit, or a preset from a newer zoo.

    Example:

    ```python
    model = zoo.from_preset("dcgan_fashion_mnist")
    images = model.generate(model.sample_latents(16, seed=0))  # [16, 32, 32, 1] in [0, 1]
    ```
    """
    directory, family = resolve(preset)
    if directory is None and load_weights:
        shipped = ", ".join(sorted(shipped_presets()))
        raise PresetError(f"preset {preset!r} ships no weights (presets with weights: {shipped}); "
                          "pass load_weights=False for a random initialisation")
    if family is not None and not load_weights:
        # A name's architecture is its presets-table entry, shipped or config-only.
        return family(**{**family.presets[str(preset)]["config"], **overrides})
    return load_preset_dir(directory, load_weights=load_weights, **overrides)
