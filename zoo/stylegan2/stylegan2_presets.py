"""Named StyleGAN2 configurations: constructor arguments, a one-line description, a batch size.

Widths follow NVIDIA's rule: resolution r has min(channel_base // r,
channel_max) channels. Regularization follows stylegan2-ada-pytorch's configs:
at 32 px its "auto" config for one GPU (batch 32, R1 gamma 0.0002 * 32**2 / 32,
path length, style mixing, minibatch-stddev groups of 4, a 10-kimg EMA ramped
up over the first 5% of images, 2 mapping layers) and its "cifar" config; gamma
1 and a 20-kimg EMA for the larger presets ("paper256"). The Fashion-MNIST
presets are narrowed to train on a CPU. `stylegan2_fashion_mnist` ("auto")
won the recipe comparison in docs/stylegan2.md against `_cifar` (0.44-0.94x
its FD at equal images seen, about half from 200 kimg on). `batch_size` is the global batch
`train.py` trains a preset with unless told (`zoo.training.TrainConfig`).
"""

STYLEGAN2_PRESETS = {
    "stylegan2_fashion_mnist": {
        "description": "32x32 grayscale (Fashion-MNIST padded), w 128, channels 128..32, NVIDIA's "
                       "1-GPU 'auto' recipe at 32 px: 2 mapping layers, R1 gamma 0.0064, path length, "
                       "style mixing, mbstd groups of 4, EMA 10 kimg, batch 32; CPU-sized.",
        "batch_size": 32,
        "config": {
            "image_size": 32, "channels": 1, "latent_dim": 128, "w_dim": 128, "mapping_layers": 2,
            "channel_base": 1024, "channel_max": 128, "r1_gamma": 0.0064, "mbstd_group_size": 4,
            "ema_kimg": 10.0, "ema_rampup": 0.05,
        },
    },
    "stylegan2_fashion_mnist_cifar": {
        "description": "stylegan2_fashion_mnist's networks with NVIDIA's 'cifar' regularization (R1 "
                       "gamma 0.01 only, mbstd groups of 32, EMA 5% of images seen); batch 64.",
        "batch_size": 64,
        "config": {
            "image_size": 32, "channels": 1, "latent_dim": 128, "w_dim": 128, "mapping_layers": 2,
            "channel_base": 1024, "channel_max": 128, "r1_gamma": 0.01, "pl_weight": 0.0,
            "style_mixing_prob": 0.0, "mbstd_group_size": 32, "ema_kimg": 500.0,
            "ema_rampup": 0.05,
        },
    },
    "stylegan2_fashion_mnist_paper": {
        "description": "stylegan2_fashion_mnist's networks with the paper's regularization: 8 mapping "
                       "layers, path length, style mixing, EMA 10 kimg.",
        "config": {
            "image_size": 32, "channels": 1, "latent_dim": 128, "w_dim": 128, "mapping_layers": 8,
            "channel_base": 1024, "channel_max": 128, "r1_gamma": 0.01, "ema_kimg": 10.0,
            "ema_rampup": 0.05,
        },
    },
    "stylegan2_64_rgb": {
        "description": "64x64 RGB, w 512, channels 256..512; NVIDIA's 'paper256' recipe at 64 px.",
        "config": {
            "image_size": 64, "channels": 3, "latent_dim": 512, "w_dim": 512, "mapping_layers": 8,
            "channel_base": 16384, "channel_max": 512, "r1_gamma": 1.0, "ema_kimg": 20.0,
        },
    },
    "stylegan2_128_rgb": {
        "description": "128x128 RGB, w 512, channels 128..512.",
        "config": {
            "image_size": 128, "channels": 3, "latent_dim": 512, "w_dim": 512, "mapping_layers": 8,
            "channel_base": 16384, "channel_max": 512, "r1_gamma": 1.0, "ema_kimg": 20.0,
        },
    },
    "stylegan2_256_rgb": {
        "description": "256x256 RGB, w 512, channels 64..512; NVIDIA's 'paper256' config.",
        "config": {
            "image_size": 256, "channels": 3, "latent_dim": 512, "w_dim": 512, "mapping_layers": 8,
            "channel_base": 16384, "channel_max": 512, "r1_gamma": 1.0, "ema_kimg": 20.0,
        },
    },
    "stylegan2_tiny": {
        "description": "32x32 grayscale, w 32, channels 8..32, 2 mapping layers; for tests and smoke runs.",
        "config": {
            "image_size": 32, "channels": 1, "latent_dim": 32, "w_dim": 32, "mapping_layers": 2,
            "channel_base": 256, "channel_max": 32, "r1_gamma": 0.01, "ema_kimg": 0.5,
            "ema_rampup": 0.05,
        },
    },
}
