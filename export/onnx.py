"""ONNX export of the `serving_default` generation path.

Exported through Keras' own `export(format="onnx")` (tf2onnx under the
TensorFlow backend) from the family's `serving_model()`: a functional
`z -> images` model that includes the output mapping, so the ONNX graph
returns the same [0, 1] float32 images as the SavedModel's
`serving_default` rather than the raw network output (tanh or logits).
Only that signature is exported; `sample` (random ops) and the VAE's
`encode` / `reconstruct` stay SavedModel-only.
"""

import importlib.util
import pathlib
import warnings

INSTALL_HINT = "pip install tf2onnx onnxruntime"


def require_tf2onnx():
    """Raises a one-line `RuntimeError` if tf2onnx is not installed."""
    if importlib.util.find_spec("tf2onnx") is None:
        raise RuntimeError(f"ONNX export needs tf2onnx, which is not installed: {INSTALL_HINT}")


def export_onnx(model, path):
    """Writes `model`'s `serving_default` (`z` -> `images` in [0, 1]) as an ONNX file.

    Args:
        model: a zoo family model (`serving_model()`, `export_endpoints()`).
        path: the `.onnx` file to write; a path not ending in `.onnx` is
            a folder, and the file is `<path>/<model.name>.onnx`. Folders
            are created.

    Returns:
        `pathlib.Path` of the written file. Its one input is `z`
        (`[batch, latent_dim]` float32, batch dynamic); its one output is
        `images` (`[batch, H, W, C]` float32 in [0, 1]).

    Raises:
        RuntimeError: tf2onnx is not installed.

    Example:

    ```python
    path = export_onnx(model, "onnx/dcgan_tiny.onnx")
    session = onnxruntime.InferenceSession(str(path))
    images = session.run(["images"], {"z": z})[0]
    ```
    """
    require_tf2onnx()
    from export.saved_model import float32_model

    path = pathlib.Path(path)
    if path.suffix != ".onnx":
        path = path / f"{model.name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = float32_model(model)  # ONNX Runtime gets a float32 graph whatever the training policy
    _, signature = model.export_endpoints()["serving_default"]  # [TensorSpec([None, latent], name="z")]
    with warnings.catch_warnings():  # Keras' tf2onnx numpy-2 shim probes `np.object`
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        model.serving_model().export(str(path), format="onnx", input_signature=signature, verbose=False)
    return path
