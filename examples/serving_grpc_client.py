"""Generate images with a model served by TensorFlow Serving, over gRPC.

Needs `tensorflow-serving-api` (it brings TensorFlow and grpcio) and Pillow:

    python examples/serving_grpc_client.py --host localhost --port 8500 \\
        --model dcgan_fashion_mnist --signature sample --num 16 --seed 7 --out grid.png

The signature's inputs are read from the server (`GetModelMetadata`) and
filled in: float latents `[-1, d]` with N(0, 1) draws from `--seed`, float
images `[-1, H, W, C]` with uniform pixels, the integer scalars `num` and
`seed` with `--num` and `--seed`.

Grid layout: image `i` at row `i // cols`, column `i % cols`, with
`cols = ceil(sqrt(N))`; pixels `round(255 * clip(x, 0, 1))`.
"""

import argparse
import math
import sys

import grpc
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)


def fetch_signature_def(stub, model, signature, timeout=30):
    """The `SignatureDef` proto of `model`'s `signature`, from the server."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=model), metadata_field=["signature_def"]
    )
    response = stub.GetModelMetadata(request, timeout=timeout)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    if signature not in signatures.signature_def:
        raise ValueError(
            f"the model has no signature {signature!r}; it has {sorted(signatures.signature_def)}"
        )
    return signatures.signature_def[signature]


def make_inputs(signature_def, num, seed):
    """Inputs for a signature, the batch dimension set to `num`.

    Args:
        signature_def: a `SignatureDef` proto (`fetch_signature_def`).
        num: examples to generate.
        seed: seed of the random latents or pixels, and of a `seed` input.

    Returns:
        `{name: np.ndarray}` of the signature's dtypes.

    Example:

    ```python
    make_inputs(fetch_signature_def(stub, "gan", "sample"), 16, 7)
    # {"num": array(16, dtype=int32), "seed": array(7)}
    ```
    """
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, info in signature_def.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        shape = [d.size for d in info.tensor_shape.dim]
        if dtype.is_integer and not shape:
            value = seed if name == "seed" else num
        elif dtype.is_floating and len(shape) == 2:
            value = rng.standard_normal((num, shape[1]))
        elif dtype.is_floating and len(shape) == 4:
            value = rng.random((num, *shape[1:]))
        else:
            raise ValueError(f"don't know how to fill input {name!r} ({dtype.name}, shape {shape})")
        inputs[name] = np.asarray(value, dtype.as_numpy_dtype)
    return inputs


def build_request(model, signature, inputs):
    """A `PredictRequest` for `model`'s `signature` with `inputs` (`{name: np.ndarray}`).

    Example:

    ```python
    request = build_request("gan", "sample", {"num": np.int32(4), "seed": np.int64(7)})
    response = stub.Predict(request, timeout=60)
    ```
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model, signature_name=signature)
    )
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def predict(stub, request, timeout=60):
    """Sends `request`; returns `{output_name: np.ndarray}`."""
    response = stub.Predict(request, timeout=timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def write_grid(images, path):
    """Writes `[N, H, W, C]` images in [0, 1] as one PNG grid."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = np.round(255 * np.clip(images, 0.0, 1.0)).astype(np.uint8)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, image in enumerate(pixels):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = image
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--model", required=True, help="the model's name in models.config")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--num", type=int, default=16, help="images to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="grid.png")
    args = p.parse_args(argv)
    with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        signature_def = fetch_signature_def(stub, args.model, args.signature)
        request = build_request(args.model, args.signature, make_inputs(signature_def, args.num, args.seed))
        try:
            outputs = predict(stub, request)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    if "images" not in outputs:  # not an image signature (a VAE's `encode`): show the numbers
        print({name: value.tolist() for name, value in outputs.items()})
        return 0
    print(write_grid(outputs["images"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
