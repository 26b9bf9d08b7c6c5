"""Sample, truncation and style-mixing grids of a trained StyleGAN2.

    python -m zoo.stylegan2.explore RUN_DIR_OR_KERAS_FILE --out docs/images/stylegan2

writes `<out>_samples.png` and `<out>_samples_psi<ψ>.png` (`--samples`
images from fixed latents at ψ = 1 and at `--samples-psi`),
`<out>_truncation.png` (a row per seed, a column per ψ) and `<out>_mixing.png`
(NVIDIA's figure: top row "source B" images, left column "source A" images;
cell (i, j) takes the coarse styles, layers below `--crossover`, from A_i and
the rest from B_j).
"""

import argparse
import pathlib
import sys

import numpy as np
import tensorflow as tf

from zoo.callbacks import image_grid, save_png
from zoo.loading import load_model
from zoo.stylegan2.stylegan2 import StyleGAN2


def truncation_grid(model, seeds, psis):
    """`[len(seeds) * len(psis), H, W, C]` images: row = seed, column = ψ."""
    z = tf.concat([model.sample_latents(1, seed=s) for s in seeds], axis=0)  # [S, latent]
    columns = [model.generate(z, psi) for psi in psis]  # each [S, H, W, C]
    return tf.reshape(tf.stack(columns, axis=1), [-1, *model.image_shape]).numpy()


def mixing_grid(model, rows, cols, crossover, psi=1.0):
    """NVIDIA's style-mixing figure as `[(1 + R) * (1 + C), H, W, C]` images (corner blank).

    Args:
        model: a StyleGAN2.
        rows: seeds of the "A" images (coarse styles).
        cols: seeds of the "B" images (fine styles).
        crossover: the first layer that takes B's w.
        psi: truncation of both.
    """
    z_a = tf.concat([model.sample_latents(1, seed=s) for s in rows], axis=0)
    z_b = tf.concat([model.sample_latents(1, seed=s) for s in cols], axis=0)
    ws_a, ws_b = model.mapping(z_a, psi), model.mapping(z_b, psi)  # [R|C, num_ws, w_dim]
    blank = np.ones([1, *model.image_shape], np.float32)
    cells = [blank, model.synthesis(ws_b).numpy()]
    images_a = model.synthesis(ws_a).numpy()
    for i in range(len(rows)):
        mixed = tf.concat([tf.repeat(ws_a[i : i + 1, :crossover], len(cols), axis=0),
                           ws_b[:, crossover:]], axis=1)  # [C, num_ws, w_dim]
        cells += [images_a[i : i + 1], model.synthesis(mixed).numpy()]
    return np.concatenate(cells)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="a run directory or a .keras file")
    p.add_argument("--out", default="stylegan2", help="output prefix")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--psis", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    p.add_argument("--crossover", type=int, default=4, help="first layer taking B's styles")
    p.add_argument("--samples", type=int, default=64, help="images per sample grid (0: none)")
    p.add_argument("--samples-psi", type=float, default=0.7, help="ψ of the second sample grid")
    args = p.parse_args(argv)
    try:
        model = load_model(args.source, expected_class=StyleGAN2, compile=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not 0 < args.crossover < model.num_ws:
        print(f"error: --crossover must be in 1..{model.num_ws - 1}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if args.samples:
        z = model.sample_latents(args.samples, seed=0)
        for psi, suffix in ((1.0, "samples"), (args.samples_psi, f"samples_psi{args.samples_psi:g}")):
            save_png(image_grid(model.generate(z, psi).numpy()), f"{out}_{suffix}.png")
            written.append(f"{out}_{suffix}.png")
    grid = truncation_grid(model, args.seeds, args.psis)
    save_png(image_grid(grid, cols=len(args.psis)), f"{out}_truncation.png")
    half = len(args.seeds) // 2
    rows, cols = args.seeds[:half], args.seeds[half:]
    grid = mixing_grid(model, rows, cols, args.crossover)
    save_png(image_grid(grid, cols=1 + len(cols)), f"{out}_mixing.png")
    print(" ".join([*written, f"{out}_truncation.png", f"{out}_mixing.png"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
