"""Export of trained zoo models: SavedModel repositories for TF Serving,
LiteRT flatbuffers for on-device generation and ONNX files for ONNX Runtime.

`export_model` is what a training run calls at its end and what
`python -m export` calls on a run directory or a `.keras` file.
"""

import pathlib
import tempfile

from export.onnx import export_onnx, require_tf2onnx
from export.saved_model import DEFAULT_SERVING_BASE_PATH, export_saved_model, versions, write_models_config
from export.tflite import Quantize, builtin_ops, convert, custom_ops


FORMATS = ("saved_model", "tflite", "onnx")


def export_model(model, out_dir, name, formats=("saved_model", "tflite"),
                 quantize=Quantize.NONE, int8_io=False, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """Writes the model's exports under `out_dir`.

    Args:
        model: a zoo family model.
        out_dir: export root; SavedModels go to `<out_dir>/saved_model/<name>/<v>/`,
            LiteRT files to `<out_dir>/tflite/<name>[.<mode>].tflite`, ONNX
            to `<out_dir>/onnx/<name>.onnx`.
        name: model name in the repository.
        formats: any of "saved_model", "tflite", "onnx" (needs tf2onnx).
        quantize: LiteRT quantization mode.
        int8_io: for int8, integer inputs and outputs.
        serving_base_path: where TF Serving sees `<out_dir>/saved_model`
            (the model's `models.config` base path is `<it>/<name>`).

    Returns:
        `{format: path}` of what was written.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; use {', '.join(FORMATS)}")
    out_dir = pathlib.Path(out_dir)
    written = {}
    if "onnx" in formats:
        require_tf2onnx()  # a missing tf2onnx fails before anything is written
    if {"saved_model", "tflite"} & set(formats):
        with tempfile.TemporaryDirectory() as tmp:
            # LiteRT converts from a SavedModel: the repository's, or a temporary one.
            repository = out_dir / "saved_model" if "saved_model" in formats else pathlib.Path(tmp)
            saved = export_saved_model(model, repository, name, serving_base_path=serving_base_path)
            if "saved_model" in formats:
                written["saved_model"] = saved
            if "tflite" in formats:
                paths = write_tflite(model, saved, out_dir / "tflite", name, quantize, int8_io)
                written.update({
                    "tflite" if sig == "serving_default" else f"tflite_{sig}": path
                    for sig, path in paths.items()
                })
    if "onnx" in formats:
        written["onnx"] = export_onnx(model, out_dir / "onnx" / f"{name}.onnx")
    return written


def write_tflite(model, saved_model_dir, out_dir, name, quantize=Quantize.NONE, int8_io=False):
    """Converts each of `model.tflite_signatures()` of `saved_model_dir`.

    Returns:
        `{signature: path}`: `serving_default` goes to
        `<out_dir>/<name>[.<mode>].tflite`, any other signature to
        `<out_dir>/<name>.<signature>[.<mode>].tflite`.
    """
    quantize = Quantize(quantize)
    suffix = "" if quantize is Quantize.NONE else f".{quantize.value}"
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for signature in model.tflite_signatures():
        flatbuffer = convert(
            saved_model_dir, signature, quantize,
            representative_data=lambda: model.representative_inputs(signature), int8_io=int8_io,
        )
        infix = "" if signature == "serving_default" else f".{signature}"
        path = out_dir / f"{name}{infix}{suffix}.tflite"
        path.write_bytes(flatbuffer)
        written[signature] = path
    return written


__all__ = [
    "DEFAULT_SERVING_BASE_PATH", "FORMATS", "Quantize", "builtin_ops", "convert", "custom_ops", "export_model",
    "export_onnx", "export_saved_model", "versions", "write_models_config", "write_tflite",
]
