"""A Keras model zoo of generative models: DC-GAN, VAE, StyleGAN2.

Public API:
    FAMILIES: family name -> model class.
    get_model(family, preset, **overrides): a model built from a named preset.
    list_presets(): `{family: {preset: description}}`.
    load_model(source): a trained model from a run directory or a `.keras` file.
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
    """Builds `family`'s model from `preset`; `overrides` replace preset arguments.

    Example:

    ```python
    model = zoo.get_model("dcgan", "dcgan_fashion_mnist")
    ```
    """
    return _family(family).from_preset(preset, **overrides)


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
    "DCGAN", "FAMILIES", "StyleGAN2", "VAE", "__version__", "default_preset", "get_model", "list_presets",
    "load_model",
]
