"""Loading a trained model from a run directory (its `model.keras`), a `.keras` file or a preset.

What every command that takes a trained model reads it with (`python -m export`,
`python -m zoo.evaluate`, the explore commands); `zoo.load_model` is the same function.
"""

import pathlib

import keras

from zoo.base import GenerativeModel

# The trained model in a run directory (`zoo.training.run` writes it).
RUN_MODEL = "model.keras"


def keras_file(source, required=True):
    """The `.keras` file `source` names: a run directory's `model.keras` or the file itself.

    Raises `ValueError` when it names neither, or returns None if not `required`.
    """
    path = pathlib.Path(source)
    if path.is_dir():
        path = path / RUN_MODEL
    if path.is_file() and path.suffix == ".keras":
        return path
    if required:
        raise ValueError(f"{source} is neither a run directory with {RUN_MODEL} nor a .keras file")
    return None


def is_preset(source):
    """Whether `source` names a preset (a preset directory, or a preset name that is not a path)."""
    from zoo import presets

    path = pathlib.Path(source)
    if path.exists():
        return keras_file(path, required=False) is None and presets.is_preset_dir(path)
    return presets.family_of(str(source)) is not None


def load_model(source, expected_class=GenerativeModel, compile=True):
    """The zoo model of a run directory, a `.keras` file, or a preset (name or directory).

    Args:
        source: the run directory (its `model.keras`), `.keras` file, preset
            directory or shipped preset name.
        expected_class: what the model must be: any zoo model by default, or
            a family (`zoo.VAE`, ...).
        compile: passed to `keras.saving.load_model`; False skips restoring
            the optimizers (enough to generate). A preset holds no optimizer
            state: it loads uncompiled either way.

    Raises:
        ValueError: in one line: `source` is none of these, the file does not
            load, or it holds something other than `expected_class`.

    Example:

    ```python
    model = zoo.load_model("runs/00000-dcgan-dcgan_fashion_mnist")
    images = model.generate(model.sample_latents(16))
    ```
    """
    if is_preset(source):
        from zoo import presets

        model = presets.from_preset(str(source))  # PresetError is a ValueError with one line
        if not isinstance(model, expected_class):
            raise ValueError(f"{source} holds a {type(model).__name__}, not a {expected_class.__name__}")
        return model
    path = keras_file(source, required=False)
    if path is None:
        raise ValueError(f"{source} is neither a run directory with {RUN_MODEL}, a .keras file, "
                         "a preset directory nor a preset name")
    try:  # importing zoo registered the model classes
        model = keras.saving.load_model(path, compile=compile)
    except Exception as e:  # a corrupt or foreign file: one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"cannot load {path}: {reason}") from None
    if not isinstance(model, expected_class):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a {expected_class.__name__}")
    return model
