"""Fashion-MNIST written as a folder of image files, for an end-to-end `folder:` run on real content.

    python benchmarks/fashion_folder.py --out /tmp/fm_folder [--num 20000] [--seed 0]

The first `--num` training images, each upscaled (bicubic) to a random square
side of 180-300 px, half of them tinted RGB and half gray, alternately PNG
and JPEG (quality 90), in one subfolder per class: what a user's photo
folder looks like to `folder:` (mixed sizes, formats and channels), with
content a 64-px model can be seen to learn in minutes:

    python train.py --preset dcgan_64_rgb --data folder:/tmp/fm_folder --steps 30 --epochs 2 --samples 64
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def write_folder(out, num, seed=0):
    """Writes the files; returns how many."""
    from zoo import data

    images, labels = data.load_arrays("fashion_mnist")  # [N, 28, 28, 1] uint8
    rng = np.random.RandomState(seed)
    out = pathlib.Path(out)
    for i in range(min(num, len(images))):
        side = int(rng.randint(180, 301))
        image = Image.fromarray(images[i][..., 0]).resize((side, side), Image.BICUBIC)
        if rng.rand() < 0.5:
            tint = rng.uniform(0.4, 1.0, 3)
            image = Image.fromarray((np.asarray(image, np.float32)[..., None] * tint).astype(np.uint8))  # [S, S, 3]
        folder = out / CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            image.save(folder / f"{i:05d}.jpg", quality=90)
        else:
            image.save(folder / f"{i:05d}.png")
    return min(num, len(images))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--num", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.num < 1:
        p.error(f"--num must be >= 1, got {args.num}")
    print(f"{write_folder(args.out, args.num, args.seed)} files in {args.out}")


if __name__ == "__main__":
    main()
