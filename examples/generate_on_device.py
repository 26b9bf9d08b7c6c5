"""Generate a PNG grid with a LiteRT generator: no TensorFlow, no zoo.

Depends on `ai-edge-litert`, numpy and Pillow only; it is what a mobile
developer ports. It takes a `.tflite` from `python -m export ... --format
tflite` (any quantization mode, float or int8 inputs and outputs):

    python examples/generate_on_device.py runs/.../export/tflite/dcgan_fashion_mnist.tflite \\
        --num 16 --seed 0 --threads 2 --out grid.png

Latents are N(0, 1) from `numpy.random.default_rng(seed).standard_normal(
(num, latent_size), dtype=float32)`, the latent size read from the model.
The file's signature (`serving_default`, or StyleGAN2's `generate`, which
also takes the truncation `--psi`) maps them to images in [0, 1], `--batch`
at a time (1, as on a phone, by default).

Grid layout: image `i` at row `i // cols`, column `i % cols`, with
`cols = ceil(sqrt(N))`; pixels `round(255 * clip(x, 0, 1))`.
"""

import argparse
import math
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

SIGNATURE = "serving_default"


def load_runner(model_path, threads=1):
    """The generator's signature runner of a `.tflite` file.

    `serving_default` if the file has it, else its only signature (the
    exporter writes one signature per file, e.g. StyleGAN2's `generate`).

    Example:

    ```python
    runner = load_runner("dcgan.tflite", threads=2)
    ```
    """
    interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
    signatures = list(interpreter.get_signature_list())
    if SIGNATURE not in signatures and len(signatures) != 1:
        raise ValueError(f"{model_path}: no {SIGNATURE!r} signature among {signatures}")
    return interpreter.get_signature_runner(SIGNATURE if SIGNATURE in signatures else signatures[0])


def latents(runner, num, seed):
    """`[num, latent_size]` float32 N(0, 1) latents for the runner's model.

    Example:

    ```python
    z = latents(runner, 16, seed=0)  # z.shape == (16, latent_size)
    ```
    """
    latent_size = int(runner.get_input_details()["z"]["shape_signature"][-1])
    return np.random.default_rng(seed).standard_normal((num, latent_size), dtype=np.float32)


def _quantize(x, details):
    """float32 -> the input's dtype (int8 models take quantized inputs)."""
    x = np.asarray(x, np.float32)
    if details["dtype"] == np.float32:
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])


def generate(runner, z, batch=1, truncation_psi=1.0):
    """Images `[N, H, W, C]` float32 in [0, 1] from latents `z`.

    Full-integer models take and return int8: the inputs are quantized with
    their scale and zero point, the images dequantized with the output's.

    Args:
        runner: a signature runner (`load_runner`).
        z: float32 latents `[N, latent_size]`.
        batch: latents per call; the runner resizes its input to fit.
        truncation_psi: StyleGAN2's ψ, for signatures that take it.

    Returns:
        A float32 array.

    Example:

    ```python
    images = generate(runner, latents(runner, 16, seed=0), batch=4)
    ```
    """
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    out_name = "images" if "images" in outputs else next(iter(outputs))
    out = outputs[out_name]
    chunks = []
    for start in range(0, len(z), batch):
        feed = {"z": _quantize(z[start : start + batch], inputs["z"])}
        if "truncation_psi" in inputs:
            feed["truncation_psi"] = _quantize(truncation_psi, inputs["truncation_psi"])
        y = runner(**feed)[out_name]
        if out["dtype"] != np.float32:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        chunks.append(y)
    return np.concatenate(chunks)


def grid(images):
    """`[N, H, W, C]` images in [0, 1] -> one uint8 grid `[rows * H, cols * W, C]`."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = np.round(255 * np.clip(images, 0.0, 1.0)).astype(np.uint8)
    out = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, image in enumerate(pixels):
        out[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = image
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .tflite file")
    p.add_argument("--num", type=int, default=16, help="images to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="latents per interpreter call")
    p.add_argument("--threads", type=int, default=1, help="interpreter CPU threads")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi (StyleGAN2 `generate` files)")
    p.add_argument("--out", default="grid.png")
    args = p.parse_args(argv)
    if args.num < 1 or args.batch < 1 or args.threads < 1:
        p.error("--num, --batch and --threads must be positive")
    runner = load_runner(args.model, args.threads)
    z = latents(runner, args.num, args.seed)
    pixels = grid(generate(runner, z, args.batch, truncation_psi=args.psi))
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
