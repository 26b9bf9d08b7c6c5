"""DC-GAN family: `DCGAN`, its networks and presets."""

from zoo.dcgan.dcgan import DCGAN
from zoo.dcgan.dcgan_presets import DCGAN_PRESETS

__all__ = ["DCGAN", "DCGAN_PRESETS"]
