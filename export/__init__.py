"""Export of trained zoo models: SavedModel repositories for TF Serving,
LiteRT flatbuffers for on-device generation and ONNX files for ONNX Runtime.

`export_model` is what a training run calls at its end and what
`python -m export` calls on a run directory or a `.keras` file. Its
output folder may be remote (`gs://bucket/run/export`); see
`export.saved_model` for what a remote SavedModel export guarantees.
"""

import os
import tempfile

import tensorflow as tf

from export.onnx import export_onnx, require_tf2onnx
from export.saved_model import (
    DEFAULT_SERVING_BASE_PATH, export_saved_model, is_url, storage_path, versions, write_models_config,
)
from export.tflite import Quantize, builtin_ops, convert, custom_ops


FORMATS = ("saved_model", "tflite", "onnx")


def export_model(model, out_dir, name, formats=("saved_model", "tflite"),
                 quantize=Quantize.NONE, int8_io=False, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """Writes the model's exports under `out_dir`.

    Args:
        model: a zoo family model.
        out_dir: export root, local or remote; SavedModels go to `<out_dir>/saved_model/<name>/<v>/`,
            LiteRT files to `<out_dir>/tflite/<name>[.<mode>].tflite`, ONNX
            to `<out_dir>/onnx/<name>.onnx`.
        name: model name in the repository.
        formats: any of "saved_model", "tflite", "onnx" (needs tf2onnx).
        quantize: LiteRT quantization mode.
        int8_io: for int8, integer inputs and outputs.
        serving_base_path: where TF Serving sees `<out_dir>/saved_model`
            (the model's `models.config` base path is `<it>/<name>`).

    Returns:
        `{format: path}` of what was written: `pathlib.Path`s, or strs
        for a URL `out_dir`.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; use {', '.join(FORMATS)}")
    out_dir = str(out_dir)
    written = {}
    if "onnx" in formats:
        require_tf2onnx()  # a missing tf2onnx fails before anything is written
    if {"saved_model", "tflite"} & set(formats):
        with tempfile.TemporaryDirectory() as tmp:
            # LiteRT converts from a SavedModel: the repository's, or a temporary one.
            repository = tf.io.gfile.join(out_dir, "saved_model") if "saved_model" in formats else tmp
            saved = export_saved_model(model, repository, name, serving_base_path=serving_base_path)
            if "saved_model" in formats:
                written["saved_model"] = saved
            if "tflite" in formats:
                tflite_dir = tf.io.gfile.join(out_dir, "tflite")
                paths = write_tflite(model, saved, tflite_dir, name, quantize, int8_io)
                written.update({
                    "tflite" if sig == "serving_default" else f"tflite_{sig}": path
                    for sig, path in paths.items()
                })
    if "onnx" in formats:
        path = tf.io.gfile.join(out_dir, "onnx", f"{name}.onnx")
        if is_url(path):
            # Keras' ONNX export writes local files only: upload its file.
            with tempfile.TemporaryDirectory() as tmp:
                local = export_onnx(model, os.path.join(tmp, f"{name}.onnx"))
                tf.io.gfile.makedirs(tf.io.gfile.join(out_dir, "onnx"))
                tf.io.gfile.copy(str(local), path, overwrite=True)
            written["onnx"] = path
        else:
            written["onnx"] = export_onnx(model, path)
    return written


def write_tflite(model, saved_model_dir, out_dir, name, quantize=Quantize.NONE, int8_io=False):
    """Converts each of `model.tflite_signatures()` of `saved_model_dir`.

    Returns:
        `{signature: path}`: `serving_default` goes to
        `<out_dir>/<name>[.<mode>].tflite`, any other signature to
        `<out_dir>/<name>.<signature>[.<mode>].tflite`. `out_dir` may be
        remote: the paths are then strs, else `pathlib.Path`s.
    """
    quantize = Quantize(quantize)
    suffix = "" if quantize is Quantize.NONE else f".{quantize.value}"
    out_dir = str(out_dir)
    tf.io.gfile.makedirs(out_dir)
    written = {}
    for signature in model.tflite_signatures():
        flatbuffer = convert(
            saved_model_dir, signature, quantize,
            representative_data=lambda: model.representative_inputs(signature), int8_io=int8_io,
        )
        infix = "" if signature == "serving_default" else f".{signature}"
        path = tf.io.gfile.join(out_dir, f"{name}{infix}{suffix}.tflite")
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(flatbuffer)
        written[signature] = storage_path(path)
    return written


__all__ = [
    "DEFAULT_SERVING_BASE_PATH", "FORMATS", "Quantize", "builtin_ops", "convert", "custom_ops", "export_model",
    "export_onnx", "export_saved_model", "versions", "write_models_config", "write_tflite",
]
