"""StyleGAN2 (Karras et al. 2020) with optional ADA: networks, losses, augmentation, presets."""

from zoo.stylegan2.stylegan2 import StyleGAN2

__all__ = ["StyleGAN2"]
