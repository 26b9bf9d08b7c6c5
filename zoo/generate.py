"""Write a sample grid from a trained model, from the command line.

    python -m zoo.generate SOURCE [--num 64] [--seed 0] [--psi 0.7] [--cols 8] --out grid.png

SOURCE is a shipped preset's name (`zoo.shipped_presets()`), a preset
directory, a run directory or a `.keras` file. The images are
`generate(sample_latents(num, seed))`: the same seed gives the same grid on
any machine (up to float rounding). `--psi` is StyleGAN2's truncation ψ.
Exit codes: 0 done, 2 a bad option or source (one `error:` line on stderr).
"""

import pathlib
import sys

from zoo.cli import OneLineParser


def parse_args(argv):
    """Parses and checks the options (exit 2 with one `error:` line on a bad one)."""
    p = OneLineParser(prog="python -m zoo.generate", description=__doc__.split("\n")[0])
    p.add_argument("source", help="preset name or directory, run directory or .keras file")
    p.add_argument("--num", type=int, default=64, help="images in the grid")
    p.add_argument("--seed", type=int, default=0, help="latent seed")
    p.add_argument("--psi", type=float, help="StyleGAN2 truncation psi (1 = none)")
    p.add_argument("--cols", type=int, help="grid columns (default: a square-ish grid)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="PNG file to write")
    args = p.parse_args(argv)
    from zoo.base import MAX_SAMPLES_PER_REQUEST

    if not 1 <= args.num <= MAX_SAMPLES_PER_REQUEST:
        p.error(f"--num must be in [1, {MAX_SAMPLES_PER_REQUEST}], got {args.num}")
    if args.cols is not None and args.cols < 1:
        p.error(f"--cols must be >= 1, got {args.cols}")
    if args.out.suffix.lower() != ".png":
        p.error(f"--out {args.out} must be a .png file")
    return args


def main(argv=None):
    """Runs the command; returns the exit code.

    Example:

    ```python
    main(["dcgan_fashion_mnist", "--num", "64", "--out", "grid.png"])
    ```
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from zoo import StyleGAN2
    from zoo.callbacks import image_grid, save_png
    from zoo.loading import load_model

    try:
        model = load_model(args.source, compile=False)
    except ValueError as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    options = ()
    if args.psi is not None:
        if not isinstance(model, StyleGAN2):
            print(f"error: --psi is StyleGAN2's truncation; {args.source} is a {type(model).__name__}",
                  file=sys.stderr)
            return 2
        options = (args.psi,)
    images = model.generate(model.sample_latents(args.num, seed=args.seed), *options)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(image_grid(images.numpy(), args.cols), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
