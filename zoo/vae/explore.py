"""Latent-space tools for a trained VAE, and a CLI that writes their pictures.

    python -m zoo.vae.explore runs/00000-vae-vae_fashion_mnist --interpolate 10 --attribute shirt:coat
    python -m zoo.vae.explore model.keras --manifold --scatter --out pictures/

Images here are float32 `[N, H, W, C]` in [0, 1] at the model's resolution
(what the encoder takes and `decode` returns); latents are numpy
`[N, latent_dim]` codes in the encoder's space, decoded with `decode` (not
`generate`, which first maps prior noise through a learned prior).
Pictures are PNGs drawn with PIL only.
"""

import argparse
import pathlib
import statistics
import sys

import numpy as np
from PIL import Image, ImageDraw

from zoo import data
from zoo.callbacks import image_grid, save_png
from zoo.loading import load_model
from zoo.vae.vae import VAE

FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
# matplotlib's tab10: ten classes that stay distinguishable.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def encode(encoder, images, batch_size=500):
    """Posterior means of `images`.

    Args:
        encoder: the VAE's encoder (input `images` in [0, 1]).
        images: `[N, H, W, C]` in [0, 1].
        batch_size: images per encoder call.

    Returns:
        numpy float32 `[N, latent_dim]`.

    Example:

    ```python
    z = encode(model.encoder, images)
    ```
    """
    means = [
        np.asarray(encoder(images[i : i + batch_size], training=False)["z_mean"])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(means)


def attribute_vector(encoder, images_with, images_without):
    """Mean latent difference between images with and without a feature.

    Adding the vector to an image's latent adds the feature when decoded
    (White 2016, "Sampling generative networks").

    Args:
        encoder: the VAE's encoder.
        images_with: `[N, H, W, C]` in [0, 1] showing the feature.
        images_without: `[M, H, W, C]` in [0, 1] without it.

    Returns:
        numpy float32 `[latent_dim]`.

    Example:

    ```python
    to_coat = attribute_vector(model.encoder, coats, shirts)
    more_coat = model.decode(encode(model.encoder, shirts) + to_coat)
    ```
    """
    return encode(encoder, images_with).mean(axis=0) - encode(encoder, images_without).mean(axis=0)


def lerp(z0, z1, t):
    """Linear interpolation: `[T, L]` points `(1 - t) z0 + t z1` for `t` `[T]`.

    Example:

    ```python
    path = lerp(z0, z1, np.linspace(0, 1, 8))  # [8, L]
    ```
    """
    t = np.asarray(t, np.float32)[:, None]  # [T, 1]
    return (1.0 - t) * np.asarray(z0, np.float32) + t * np.asarray(z1, np.float32)


def slerp(z0, z1, t):
    """Spherical interpolation (Shoemake 1985): `[T, L]` points for `t` `[T]`.

    Follows the great circle between the directions of `z0` and `z1` with
    the norm interpolated along it, which keeps the path where a Gaussian
    prior puts its mass (a straight line passes near the unlikely origin).

    Example:

    ```python
    path = slerp(z0, z1, np.linspace(0, 1, 8))  # [8, L]
    ```
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    cos = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:  # (anti)parallel: the circle is undefined
        return lerp(z0, z1, t)
    t = np.asarray(t, np.float64)[:, None]  # [T, 1]
    path = (np.sin((1.0 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)
    return path.astype(np.float32)


def _decode(model, z):
    return np.asarray(model.decode(np.asarray(z, np.float32)))


def interpolation_grid(model, starts, ends, steps=10, method="slerp"):
    """Decoded interpolations, one row per `(start, end)` pair.

    Args:
        model: a VAE (`decode(z)` -> images in [0, 1]).
        starts: `[R, L]` latents of the left column.
        ends: `[R, L]` latents of the right column.
        steps: images per row, both ends included.
        method: "slerp" or "lerp".

    Returns:
        uint8 grid `[R * H, steps * W, C]`.

    Example:

    ```python
    z = encode(model.encoder, images[:16])
    save_png(interpolation_grid(model, z[:8], z[8:]), "interpolate.png")
    ```
    """
    interpolate = {"slerp": slerp, "lerp": lerp}[method]
    t = np.linspace(0.0, 1.0, steps)
    z = np.concatenate([interpolate(a, b, t) for a, b in zip(starts, ends)])  # [R * steps, L]
    return image_grid(_decode(model, z), cols=steps)


def attribute_grid(model, z, vector, alphas=(0.0, 0.5, 1.0, 1.5, 2.0)):
    """Decodes `z + alpha * vector`: one row per latent, one column per alpha.

    Args:
        model: a VAE.
        z: `[R, L]` latents.
        vector: `[L]` attribute vector.
        alphas: strengths; 0 is the plain reconstruction.

    Returns:
        uint8 grid `[R * H, len(alphas) * W, C]`.

    Example:

    ```python
    grid = attribute_grid(model, encode(model.encoder, shirts[:8]), to_coat)
    ```
    """
    alphas = np.asarray(alphas, np.float32)
    shifted = z[:, None, :] + alphas[None, :, None] * vector  # [R, A, L]
    return image_grid(_decode(model, shifted.reshape(-1, z.shape[-1])), cols=len(alphas))


def manifold_grid(model, n=20, coverage=0.95):
    """The decoded 2-D latent manifold (Kingma & Welling 2014, figure 4).

    Latents sit at the prior's quantiles, so each cell holds equal prior
    mass; `z[0]` grows to the right, `z[1]` upward.

    Args:
        model: a VAE with `latent_dim == 2`.
        n: cells per side.
        coverage: central prior mass spanned per axis.

    Returns:
        uint8 grid `[n * H, n * W, C]`.

    Example:

    ```python
    save_png(manifold_grid(zoo.from_preset("vae_fashion_mnist_2d")), "manifold.png")
    ```
    """
    if model.latent_dim != 2:
        raise ValueError(f"the manifold plot needs a 2-d latent, this model has {model.latent_dim}")
    lo = (1.0 - coverage) / 2.0
    q = np.array([statistics.NormalDist().inv_cdf(p) for p in np.linspace(lo, 1.0 - lo, n)])
    z1, z0 = np.meshgrid(q[::-1], q, indexing="ij")  # row 0 = largest z[1]
    z = np.stack([z0.ravel(), z1.ravel()], axis=1)  # [n * n, 2]
    return image_grid(_decode(model, z), cols=n)


def latent_scatter(z, labels, class_names=FASHION_MNIST_CLASSES, size=640):
    """Latent means as dots colored by class, with a legend.

    Latents with more than two dimensions are projected on their two
    principal axes.

    Args:
        z: `[N, L]` latent means.
        labels: `[N]` integer classes.
        class_names: name of each class, for the legend.
        size: side of the square plot area in pixels.

    Returns:
        uint8 RGB image `[size, size + legend width, 3]`.

    Example:

    ```python
    save_png(latent_scatter(encode(model.encoder, images), labels), "scatter.png")
    ```
    """
    z = np.asarray(z, np.float64)
    if z.shape[1] > 2:
        centered = z - z.mean(axis=0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        z = centered @ vt[:2].T  # [N, 2]
    margin, legend = 16, 120
    lo, hi = np.percentile(z, 0.5, axis=0), np.percentile(z, 99.5, axis=0)
    xy = (z - lo) / np.maximum(hi - lo, 1e-9) * (size - 2 * margin) + margin
    xy[:, 1] = size - xy[:, 1]  # image rows grow downward
    canvas = Image.new("RGB", (size + legend, size), "white")
    draw = ImageDraw.Draw(canvas)
    for (x, y), label in zip(xy, labels):
        color = PALETTE[int(label) % len(PALETTE)]
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=color)
    for i in sorted(set(int(c) for c in labels)):
        y = margin + 18 * i
        draw.rectangle([size + 4, y, size + 14, y + 10], fill=PALETTE[i % len(PALETTE)])
        name = class_names[i] if i < len(class_names) else str(i)
        draw.text((size + 20, y - 1), name, fill="black")
    return np.asarray(canvas)


# ---- CLI --------------------------------------------------------------------


def load_images(spec, model, data_dir=None):
    """A data spec's images in [0, 1] at the model's resolution, and labels.

    Returns:
        `(images [N, H, W, C] float32, labels [N] int or None)`.
    """
    images, labels = data.load_arrays(spec, data_dir)
    batch = min(len(images), 250)
    ds = data.make_dataset(
        spec, model.image_size, model.channels, batch, shuffle=False, arrays=(images, labels)
    )
    # make_dataset yields [-1, 1] in order and drops a short tail batch.
    images01 = np.concatenate([(np.asarray(b) + 1.0) / 2.0 for b in ds])
    return images01, None if labels is None else labels[: len(images01)]


def _class_index(name, class_names):
    if name.isdigit():
        return int(name)
    lowered = [c.lower() for c in class_names]
    if name.lower() not in lowered:
        raise ValueError(f"unknown class {name!r}; use an index or one of {', '.join(class_names)}")
    return lowered.index(name.lower())


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m zoo.vae.explore",
        description="Write latent-space pictures of a trained VAE.",
    )
    p.add_argument("source", help="run directory or .keras file")
    p.add_argument("--data", default="fashion_mnist:test", help="data spec of the images (default fashion_mnist:test)")
    p.add_argument("--data-dir", help="tfds data directory")
    p.add_argument("--out", help="output folder (default <run>/explore)")
    p.add_argument("--interpolate", type=int, metavar="STEPS", help="interpolation grid with STEPS images per row")
    p.add_argument("--method", choices=("slerp", "lerp"), default="slerp", help="interpolation (default slerp)")
    p.add_argument("--attribute", metavar="FROM:TO",
                   help="class shift: Fashion-MNIST names or label indices, e.g. shirt:coat or 6:4")
    p.add_argument("--alphas", default="0,0.5,1,1.5,2", help="attribute strengths (default 0,0.5,1,1.5,2)")
    p.add_argument("--manifold", action="store_true", help="decoded manifold (2-d latent only)")
    p.add_argument("--scatter", action="store_true", help="latent means colored by class (needs labels)")
    p.add_argument("--rows", type=int, default=8, help="rows of the interpolation/attribute grids")
    p.add_argument("--seed", type=int, default=0, help="which images are picked")
    args = p.parse_args(argv)
    if not (args.interpolate or args.attribute or args.manifold or args.scatter):
        p.error("nothing to draw: give --interpolate, --attribute, --manifold and/or --scatter")
    return args


def main(argv=None):
    """Runs the CLI; returns the exit code (0 ok, 2 bad argument)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        model = load_model(args.source, expected_class=VAE, compile=False)
        source = pathlib.Path(args.source)
        out = pathlib.Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "explore"
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if args.manifold:
            save_png(manifold_grid(model), out / "manifold.png")
            written.append(out / "manifold.png")
        if args.interpolate or args.attribute or args.scatter:
            images, labels = load_images(args.data, model, args.data_dir)
            rng = np.random.default_rng(args.seed)
        if args.interpolate:
            pick = rng.choice(len(images), 2 * args.rows, replace=False)
            z = encode(model.encoder, images[pick])
            path = out / f"interpolate-{args.method}.png"
            save_png(interpolation_grid(model, z[: args.rows], z[args.rows :], args.interpolate, args.method), path)
            written.append(path)
        if (args.attribute or args.scatter) and labels is None:
            raise ValueError(f"--attribute and --scatter need labels; {args.data} has none")
        if args.attribute:
            src_name, _, dst_name = args.attribute.partition(":")
            src = _class_index(src_name, FASHION_MNIST_CLASSES)
            dst = _class_index(dst_name, FASHION_MNIST_CLASSES)
            src_idx = rng.permutation(np.flatnonzero(labels == src))
            if len(src_idx) <= args.rows or not np.any(labels == dst):
                raise ValueError(f"--attribute {args.attribute}: too few images of these classes in {args.data}")
            shown, rest = src_idx[: args.rows], src_idx[args.rows :]
            # The vector comes from images other than the ones shown.
            vector = attribute_vector(model.encoder, images[labels == dst], images[rest])
            alphas = [float(a) for a in args.alphas.split(",")]
            path = out / f"attribute-{src_name}-to-{dst_name}.png"
            save_png(attribute_grid(model, encode(model.encoder, images[shown]), vector, alphas), path)
            written.append(path)
        if args.scatter:
            path = out / "scatter.png"
            save_png(latent_scatter(encode(model.encoder, images), labels), path)
            written.append(path)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
