"""Export of trained zoo models: SavedModel repositories for TF Serving and
LiteRT flatbuffers for on-device generation.

`export_model` is what a training run calls at its end and what
`python -m export` calls on a run directory or a `.keras` file.
"""

import pathlib
import tempfile

from export.saved_model import export_saved_model, versions, write_models_config
from export.tflite import Quantize, builtin_ops, convert, custom_ops


def export_model(model, out_dir, name, formats=("saved_model", "tflite"),
                 quantize=Quantize.NONE, int8_io=False):
    """Writes the model's exports under `out_dir`.

    Args:
        model: a zoo family model.
        out_dir: export root; SavedModels go to `<out_dir>/saved_model/<name>/<v>/`,
            LiteRT files to `<out_dir>/tflite/<name>[.<mode>].tflite`.
        name: model name in the repository.
        formats: any of "saved_model", "tflite".
        quantize: LiteRT quantization mode.
        int8_io: for int8, integer inputs and outputs.

    Returns:
        `{format: path}` of what was written.
    """
    unknown = set(formats) - {"saved_model", "tflite"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; use saved_model, tflite")
    out_dir = pathlib.Path(out_dir)
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        # LiteRT converts from a SavedModel: the repository's, or a temporary one.
        repository = out_dir / "saved_model" if "saved_model" in formats else pathlib.Path(tmp)
        saved = export_saved_model(model, repository, name)
        if "saved_model" in formats:
            written["saved_model"] = saved
        if "tflite" in formats:
            written["tflite"] = write_tflite(model, saved, out_dir / "tflite", name, quantize, int8_io)
    return written


def write_tflite(model, saved_model_dir, out_dir, name, quantize=Quantize.NONE, int8_io=False):
    """Converts `serving_default` of `saved_model_dir` to `<out_dir>/<name>[.<mode>].tflite`."""
    quantize = Quantize(quantize)
    flatbuffer = convert(
        saved_model_dir, "serving_default", quantize,
        representative_data=lambda: model.representative_inputs(), int8_io=int8_io,
    )
    suffix = "" if quantize is Quantize.NONE else f".{quantize.value}"
    path = pathlib.Path(out_dir) / f"{name}{suffix}.tflite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


__all__ = [
    "Quantize", "builtin_ops", "convert", "custom_ops", "export_model",
    "export_saved_model", "versions", "write_models_config", "write_tflite",
]
