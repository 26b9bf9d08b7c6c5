"""Named VAE configurations: constructor arguments plus a one-line description."""

VAE_PRESETS = {
    "vae_fashion_mnist": {
        "description": "32x32 grayscale (Fashion-MNIST padded), 32-d z, Bernoulli likelihood, RealNVP flow prior; "
                       "the default.",
        "config": {"latent_dim": 32, "image_size": 32, "channels": 1, "base_filters": 32, "prior": "flow"},
    },
    "vae_fashion_mnist_2d": {
        "description": "32x32 grayscale with a 2-d z, for manifold and latent scatter plots.",
        "config": {"latent_dim": 2, "image_size": 32, "channels": 1, "base_filters": 32},
    },
    "vae_64_rgb": {
        "description": "64x64 RGB, 128-d z, Gaussian likelihood (sigma 0.1 on [0, 1] pixels).",
        "config": {
            "latent_dim": 128, "image_size": 64, "channels": 3, "base_filters": 64,
            "likelihood": "gaussian", "gaussian_sigma": 0.1,
        },
    },
    "vae_tiny": {
        "description": "32x32 grayscale, 8-d z, 8 base filters; for tests and smoke runs.",
        "config": {"latent_dim": 8, "image_size": 32, "channels": 1, "base_filters": 8},
    },
}
