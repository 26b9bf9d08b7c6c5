"""Generate images with a model served by TensorFlow Serving, over REST.

Standard library only; Pillow, if installed, turns the result into a PNG grid
(without it the images are written as a float32 `.npy` file):

    python examples/serving_rest_client.py --host localhost --port 8501 \\
        --model dcgan_fashion_mnist --signature sample --num 16 --seed 7 --out grid.png
    python examples/serving_rest_client.py --model dcgan_fashion_mnist \\
        --signature serving_default --num 16 --seed 7 --columnar --out grid.png

The signature's inputs are read from the server's metadata endpoint
(`GET /v1/models/<model>/metadata`) and filled in: float latents `[-1, d]`
with N(0, 1) draws from `--seed`, float images `[-1, H, W, C]` with uniform
pixels, the integer scalars `num` and `seed` with `--num` and `--seed`.

The request is either TF Serving's row format, `{"instances": [{name: value
of one example}, ...]}`, or with `--columnar` its columnar format,
`{"inputs": {name: value of the whole batch}}`. Scalar inputs (`sample`'s
`num` and `seed`) have no batch dimension, so they need the columnar format.

Grid layout: image `i` at row `i // cols`, column `i % cols`, with
`cols = ceil(sqrt(N))`; pixels `round(255 * clip(x, 0, 1))`.
"""

import argparse
import array
import json
import math
import random
import sys
import urllib.error
import urllib.request


def fetch_metadata(host, port, model, timeout=30):
    """The server's `GetModelMetadataResponse` for `model`, as JSON."""
    url = f"http://{host}:{port}/v1/models/{model}/metadata"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _field(message, name):
    """A JSON proto field by its proto name, or by its camelCase JSON name."""
    head, *rest = name.split("_")
    camel = head + "".join(part.title() for part in rest)
    return message.get(name, message.get(camel))


def signature_inputs(metadata, signature):
    """`{input_name: (dtype, shape)}` of one signature in a metadata response.

    Args:
        metadata: the JSON of `fetch_metadata`.
        signature: the signature's name.

    Returns:
        dtype as TF names it (`"DT_FLOAT"`), shape a list with -1 for a
        dimension of any size.

    Example:

    ```python
    signature_inputs(fetch_metadata("localhost", 8501, "gan"), "serving_default")
    # {"z": ("DT_FLOAT", [-1, 64])}
    ```
    """
    signatures = _field(_field(metadata["metadata"], "signature_def"), "signature_def")
    if signature not in signatures:
        raise ValueError(f"the model has no signature {signature!r}; it has {sorted(signatures)}")
    inputs = {}
    for name, info in signatures[signature]["inputs"].items():
        shape = _field(info, "tensor_shape") or {}
        inputs[name] = (info["dtype"], [int(d.get("size", 0)) for d in shape.get("dim", [])])
    return inputs


def make_inputs(specs, num, seed):
    """Request inputs for `specs`, the batch dimension set to `num`.

    Args:
        specs: `{name: (dtype, shape)}` of `signature_inputs`.
        num: examples to generate.
        seed: seed of the random latents or pixels, and of a `seed` input.

    Returns:
        `{name: value}` of nested lists (or a number for a scalar input).

    Example:

    ```python
    make_inputs({"num": ("DT_INT32", []), "seed": ("DT_INT64", [])}, 16, 7)
    # {"num": 16, "seed": 7}
    ```
    """
    rng = random.Random(seed)
    inputs = {}
    for name, (dtype, shape) in specs.items():
        floating = dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16")
        if not shape and not floating:
            inputs[name] = seed if name == "seed" else num
        elif floating and len(shape) == 2:
            inputs[name] = [[rng.gauss(0.0, 1.0) for _ in range(shape[1])] for _ in range(num)]
        elif floating and len(shape) == 4:
            _, h, w, c = shape
            inputs[name] = [
                [[[rng.random() for _ in range(c)] for _ in range(w)] for _ in range(h)]
                for _ in range(num)
            ]
        else:
            raise ValueError(f"don't know how to fill input {name!r} ({dtype}, shape {shape})")
    return inputs


def build_body(signature, inputs, columnar=False):
    """The JSON body of a `:predict` request.

    Args:
        signature: the signature's name.
        inputs: `{name: value}` with the batch first in every value.
        columnar: TF Serving's columnar format (`inputs`) instead of rows
            (`instances`).

    Returns:
        A dict to send as JSON.

    Example:

    ```python
    build_body("serving_default", {"z": [[0.1, -0.3], [1.2, 0.4]]})
    # {"signature_name": "serving_default",
    #  "instances": [{"z": [0.1, -0.3]}, {"z": [1.2, 0.4]}]}
    ```
    """
    if columnar:
        return {"signature_name": signature, "inputs": inputs}
    scalars = sorted(name for name, value in inputs.items() if not isinstance(value, list))
    if scalars:
        raise ValueError(
            f"inputs {scalars} have no batch dimension: send them in the columnar format"
        )
    rows = len(next(iter(inputs.values())))
    return {
        "signature_name": signature,
        "instances": [{name: value[i] for name, value in inputs.items()} for i in range(rows)],
    }


def predict(host, port, model, body, timeout=60):
    """POSTs `body` to `:predict`; returns the response JSON.

    Raises:
        RuntimeError: with the server's own error message.
    """
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/models/{model}:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError):
            message = text
        raise RuntimeError(f"HTTP {e.code}: {message}") from None


def outputs_of(response):
    """`{output_name: value}` of a response, in either format.

    A response names its outputs only when there are several; a single one
    is returned here as `{"output": value}`.
    """
    if "outputs" in response:  # columnar
        out = response["outputs"]
        return out if isinstance(out, dict) else {"output": out}
    rows = response["predictions"]
    if rows and isinstance(rows[0], dict):
        return {name: [row[name] for row in rows] for name in rows[0]}
    return {"output": rows}


def _shape(value):
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0]
    return shape


def _flat(value):
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


def write_npy(images, path):
    """Writes nested lists of numbers as a little-endian float32 `.npy` file."""
    data = array.array("f", _flat(images))
    if sys.byteorder == "big":
        data.byteswap()
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple(_shape(images))}, }}"
    # Magic, version 1.0, header length, header padded so the data starts at a multiple of 64.
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))
        f.write(data.tobytes())


def write_grid(images, path):
    """Writes `[N, H, W, C]` images in [0, 1] as a PNG grid, or as `.npy` without Pillow.

    Returns:
        The path written (its suffix is `.npy` when Pillow is missing).
    """
    try:
        from PIL import Image
    except ImportError:
        path = str(path).rsplit(".", 1)[0] + ".npy"
        write_npy(images, path)
        return path
    n, h, w, c = _shape(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mode = {1: "L", 3: "RGB"}[c]
    grid = Image.new(mode, (cols * w, rows * h))
    for i, image in enumerate(images):
        pixels = [
            tuple(round(255 * min(max(v, 0.0), 1.0)) for v in pixel)
            for row in image
            for pixel in row
        ]
        tile = Image.new(mode, (w, h))
        tile.putdata([p[0] for p in pixels] if c == 1 else pixels)
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    grid.save(path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--model", required=True, help="the model's name in models.config")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--num", type=int, default=16, help="images to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--columnar", action="store_true", help='send {"inputs": ...}, not "instances"')
    p.add_argument("--out", default="grid.png")
    args = p.parse_args(argv)
    specs = signature_inputs(fetch_metadata(args.host, args.port, args.model), args.signature)
    body = build_body(args.signature, make_inputs(specs, args.num, args.seed), args.columnar)
    try:
        outputs = outputs_of(predict(args.host, args.port, args.model, body))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images = outputs.get("images", outputs.get("output"))
    if len(_shape(images)) != 4:  # not an image signature (a VAE's `encode`): show the numbers
        print(json.dumps(outputs))
        return 0
    print(write_grid(images, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
