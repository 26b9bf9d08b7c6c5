"""VAE family: `VAE`, its networks, loss terms, presets and latent-space tools."""

from zoo.vae.vae import VAE
from zoo.vae.vae_presets import VAE_PRESETS

__all__ = ["VAE", "VAE_PRESETS"]
