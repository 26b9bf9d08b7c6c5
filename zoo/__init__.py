"""A Keras model zoo of generative models: DC-GAN, VAE, StyleGAN2.

Public API:
    FAMILIES: family name -> model class.
    get_model(family, preset, **overrides): a model built from a named preset.
    list_presets(): `{family: {preset: description}}`.
    from_preset(name_or_dir, load_weights=True): a trained model from a preset.
    shipped_presets(): `{name: directory}` of the presets that ship weights.
    load_model(source): a trained model from a run directory, `.keras` file or preset.
    __version__: the installed distribution's version (keras-generative-zoo).
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("keras-generative-zoo")
except _metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    __version__ = "0+unknown"

from zoo.dcgan import DCGAN  # noqa: E402
from zoo.loading import load_model  # noqa: E402
from zoo.stylegan2 import StyleGAN2  # noqa: E402
from zoo.vae import VAE  # noqa: E402

FAMILIES = {"dcgan": DCGAN, "vae": VAE, "stylegan2": StyleGAN2}


def _family(family):
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[family]


def get_model(family, preset, **overrides):
    """Builds `family`'s model from `preset`, randomly initialised; `overrides` replace preset arguments.

    `from_preset` loads a preset's trained weights.

    Example:

    ```python
    model = zoo.get_model("dcgan", "dcgan_fashion_mnist")
    ```
    """
    return _family(family).from_preset(preset, load_weights=False, **overrides)


def from_preset(preset, load_weights=True, **overrides):
    """A model from a preset name or directory, with its trained weights; see `zoo.presets.from_preset`.

    Example:

    ```python
    model = zoo.from_preset("dcgan_fashion_mnist")
    images = model.generate(model.sample_latents(16, seed=0))
    ```
    """
    from zoo import presets

    return presets.from_preset(preset, load_weights=load_weights, **overrides)


def shipped_presets():
    """`{name: directory}` of the presets that ship trained weights."""
    from zoo import presets

    return presets.shipped_presets()


def list_presets():
    """`{family: {preset: one-line description}}` of every preset."""
    return {
        name: {p: spec["description"] for p, spec in cls.presets.items()}
        for name, cls in FAMILIES.items()
    }


def default_preset(family):
    """The first preset listed for `family`."""
    return next(iter(_family(family).presets))


__all__ = [
    "DCGAN", "FAMILIES", "StyleGAN2", "VAE", "__version__", "default_preset", "from_preset", "get_model",
    "list_presets", "load_model", "shipped_presets",
]
