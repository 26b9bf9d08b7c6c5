"""Named DC-GAN configurations: constructor arguments plus a one-line description."""

DCGAN_PRESETS = {
    "dcgan_fashion_mnist": {
        "description": "32x32 grayscale (Fashion-MNIST padded), 64-d z; the default.",
        "config": {"latent_dim": 64, "image_size": 32, "channels": 1, "base_filters": 32},
    },
    "dcgan_fashion_mnist_wide": {
        "description": "32x32 grayscale with twice the filters: sharper, ~4x slower.",
        "config": {"latent_dim": 100, "image_size": 32, "channels": 1, "base_filters": 64},
    },
    "dcgan_64_rgb": {
        "description": "64x64 RGB, the Radford et al. architecture (1024->128 filters, 100-d z).",
        "config": {"latent_dim": 100, "image_size": 64, "channels": 3, "base_filters": 128},
    },
    "dcgan_tiny": {
        "description": "32x32 grayscale with 8 base filters; for tests and smoke runs.",
        "config": {"latent_dim": 16, "image_size": 32, "channels": 1, "base_filters": 8},
    },
}
