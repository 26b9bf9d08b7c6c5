"""Re-export a trained model.

    python -m export SOURCE --format saved_model --output serving
    python -m export SOURCE --format saved_model --output serving --serving-base-path /srv/models
    python -m export SOURCE --format tflite --quantize float16 --output tflite
    python -m export SOURCE --format onnx --output onnx

SOURCE is a run directory (read through its `model.keras`; the model name
defaults to the run's preset), a `.keras` file (name: its stem), or a preset:
a shipped preset's name or a preset directory (name: the preset's). ONNX
writes `<output>/<name>.onnx` (`serving_default` only; needs tf2onnx).
A SavedModel export adds or updates its entry in `<output>/models.config`
(other entries are kept) with base path `<serving base path>/<name>`.
Exit codes: 0 done, 1 tf2onnx missing for --format onnx, 2 bad arguments
or source.
"""

import argparse
import json
import pathlib
import sys
import tempfile

FORMATS = ("saved_model", "tflite", "onnx")


def parse_args(argv):
    from export.tflite import Quantize

    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    p.add_argument("source", help="a run directory, a .keras file, a preset name or a preset directory")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, help="model repository (saved_model) or folder (tflite, onnx)")
    p.add_argument("--name", help="model name (default: the run's preset or the file stem)")
    p.add_argument("--quantize", default="none", choices=[m.value for m in Quantize],
                   help="tflite only")
    p.add_argument("--int8-io", action="store_true", help="with --quantize int8: int8 inputs/outputs")
    p.add_argument("--serving-base-path",
                   help="saved_model only: where TF Serving sees --output, for models.config (default /models)")
    args = p.parse_args(argv)
    if args.format == "onnx" and (args.quantize != "none" or args.int8_io):
        p.error("--quantize and --int8-io apply to --format tflite, not onnx")
    if args.serving_base_path is not None and args.format != "saved_model":
        p.error("--serving-base-path applies to --format saved_model")
    if args.serving_base_path == "":
        p.error("--serving-base-path must not be empty")
    if args.format == "onnx" and "://" in args.output:
        p.error("--format onnx writes a local folder; copy the file to remote storage afterwards")
    return args


def resolve_source(source):
    """`(source, default_name)` of a run directory, `.keras` file or preset; ValueError if none."""
    from zoo.loading import is_preset, keras_file

    if is_preset(source):
        path = pathlib.Path(source)
        return source, path.name if path.is_dir() else str(source)
    path = pathlib.Path(source)
    keras_path = keras_file(path)
    if not path.is_dir():
        return keras_path, path.stem
    config = path / "config.json"
    return keras_path, json.loads(config.read_text())["preset"] if config.is_file() else path.name


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        source, name = resolve_source(args.source)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "onnx":
        from export.onnx import require_tf2onnx

        try:
            require_tf2onnx()  # before the slow model load
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    from export import export_onnx, export_saved_model, write_tflite
    from zoo.loading import load_model

    try:
        model = load_model(source)
    except ValueError as e:  # a corrupt or foreign file
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.name or name
    from export.saved_model import storage_path

    output = storage_path(args.output)  # a str for gs://..., which pathlib would turn into gs:/...
    if args.format == "saved_model":
        from export import DEFAULT_SERVING_BASE_PATH

        try:
            print(export_saved_model(model, output, name,
                                     serving_base_path=args.serving_base_path or DEFAULT_SERVING_BASE_PATH))
        except ValueError as e:  # an unreadable models.config, a bad --name
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.format == "onnx":
        print(export_onnx(model, pathlib.Path(args.output) / f"{name}.onnx"))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(model, tmp, name)
        for path in write_tflite(model, saved, output, name, args.quantize, args.int8_io).values():
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
