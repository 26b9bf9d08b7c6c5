"""TF Serving warmup requests for an exported model version.

TF Serving replays `<version>/assets.extra/tf_serving_warmup_requests` (a
TFRecord of `PredictionLog` protos, at most 1000) when it loads a version,
so the first real request does not pay for graph initialisation. Every
signature gets a few requests with batch sizes 1 and 2, built from the
signature's `tf.TensorSpec`s:

* float `[None, *latent_shape]` inputs: `model.sample_latents`;
* float image inputs `[None, H, W, C]`: uniform pixels in [0, 1];
* float scalars (StyleGAN2's `truncation_psi`): 1.0 and 0.7;
* `w` (StyleGAN2's per-layer ws): the model's own mapping of latents;
* integer scalars: `seed` gets the request index, any other (`num`) the
  batch size.

An input that fits none of these is an error, so a new family with a new
kind of input extends the rules here instead of shipping a warmup file
that fails on load.
"""

import pathlib

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving reads no more than this many


def warmup_inputs(model, signature_name, specs, index):
    """The inputs of warmup request `index` for one signature.

    Args:
        model: a zoo family model (`latent_shape`, `sample_latents`).
        signature_name: the signature's name, for error messages.
        specs: the signature's input `tf.TensorSpec`s (each named).
        index: the request's index; fixes its batch size (1 or 2) and seed.

    Returns:
        `{input_name: np.ndarray}` of the specs' dtypes and shapes.

    Example:

    ```python
    fn, specs = model.export_endpoints()["sample"]
    warmup_inputs(model, "sample", specs, 1)  # {"num": 2, "seed": 1}
    ```
    """
    batch = 1 + index % 2
    inputs = {}
    for spec in specs:
        shape = [batch if d is None else d for d in spec.shape.as_list()]
        if spec.dtype.is_floating and tuple(shape[1:]) == tuple(model.latent_shape):
            value = model.sample_latents(batch, seed=index)
        elif spec.dtype.is_floating and len(shape) == 4:
            value = tf.random.stateless_uniform(shape, seed=[index, 1])
        elif spec.dtype.is_floating and not shape:  # truncation psi
            value = 1.0 if index % 2 == 0 else 0.7
        elif spec.dtype.is_floating and spec.name == "w":  # StyleGAN2 ws
            value = model.mapping(model.sample_latents(batch, seed=index))
        elif spec.dtype.is_integer and not shape:
            value = index if spec.name == "seed" else batch
        else:
            raise ValueError(
                f"no warmup input rule for {signature_name!r} input {spec.name!r} "
                f"({spec.dtype.name}, shape {spec.shape}); extend export/warmup.py"
            )
        inputs[spec.name] = tf.cast(value, spec.dtype).numpy()
    return inputs


def warmup_logs(model, name, requests_per_signature=2):
    """`PredictionLog` protos for every signature of `model.export_endpoints()`.

    Args:
        model: a zoo family model.
        name: the model's name in the repository (`model_spec.name`).
        requests_per_signature: requests per signature (batch sizes alternate 1, 2).

    Returns:
        A list of `prediction_log_pb2.PredictionLog`.

    Example:

    ```python
    logs = warmup_logs(model, "dcgan_fashion_mnist")
    logs[0].predict_log.request.model_spec.signature_name  # "serving_default"
    ```
    """
    endpoints = model.export_endpoints()
    if not 1 <= requests_per_signature * len(endpoints) <= MAX_RECORDS:
        raise ValueError(
            f"{requests_per_signature} requests for each of {len(endpoints)} signatures; "
            f"TF Serving reads 1 to {MAX_RECORDS} warmup records"
        )
    logs = []
    for signature_name, (_, specs) in endpoints.items():
        for index in range(requests_per_signature):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name=signature_name)
            )
            for key, value in warmup_inputs(model, signature_name, specs, index).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            logs.append(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
            )
    return logs


def write_warmup(model, version_dir, requests_per_signature=2, name=None):
    """Writes `<version_dir>/assets.extra/tf_serving_warmup_requests`.

    Args:
        model: a zoo family model.
        version_dir: the SavedModel version folder (or its temporary stand-in).
        requests_per_signature: requests per signature.
        name: `model_spec.name`; default the name of `version_dir`'s parent,
            the model folder of a repository.

    Returns:
        `pathlib.Path` of the written file.

    Example:

    ```python
    write_warmup(model, "serving/dcgan_fashion_mnist/1")
    # serving/dcgan_fashion_mnist/1/assets.extra/tf_serving_warmup_requests
    ```
    """
    version_dir = pathlib.Path(version_dir)
    logs = warmup_logs(model, name or version_dir.resolve().parent.name, requests_per_signature)
    path = version_dir / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
