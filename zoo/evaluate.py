"""Sample-quality metrics of a trained model, from the command line.

    python -m zoo.evaluate SOURCE [--metrics fd,kid,is,pr,coverage[,nll]] [--num 10000]
        [--real fashion_mnist:test] [--extractor fashion_classifier|inception_v3]
        [--inception-weights PATH] [--batch-size 250] [--seed 0] [--json OUT] [--record KEY]

SOURCE is a run directory (its `model.keras`), a `.keras` file, a preset (a
shipped preset's name or a preset directory), or an exported SavedModel: a version folder (`saved_model.pb`) or a model folder of
numbered versions (the highest is used), called through `serving_default`
(`z` -> `images`). Prints one JSON line of results (see
`zoo.metrics.evaluate`); `--json` also writes it with the options used;
`--record KEY` (a preset source) stores it in the preset's `metadata.json`
under KEY with the command that reproduces it.
Exit codes: 0 done, 2 a bad option or source (one `error:` line on stderr).
"""

import json
import pathlib
import shlex
import sys

import tensorflow as tf

from zoo import data
from zoo.base import stateless_normal
from zoo.cli import OneLineParser
from zoo.loading import RUN_MODEL, is_preset, keras_file, load_model
from zoo.metrics import evaluate, get_extractor
from zoo.metrics.evaluation import DEFAULT_METRICS, check_metrics
from zoo.metrics.extractors import EXTRACTORS


def parse_args(argv):
    """Parses and checks the options (exit 2 with one `error:` line on a bad one)."""
    p = OneLineParser(prog="python -m zoo.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("source", type=pathlib.Path, help="run directory, .keras file, preset or SavedModel")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated")
    p.add_argument("--num", type=int, default=10000, help="generated (and real) images")
    p.add_argument("--real", default="fashion_mnist:test", help="data spec of the real images")
    p.add_argument("--extractor", default="fashion_classifier", choices=EXTRACTORS)
    p.add_argument("--inception-weights", type=pathlib.Path, help="InceptionV3 .h5 weights file")
    p.add_argument("--batch-size", type=int, default=250, help="images generated per call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nll-k", type=int, default=64, help="importance samples of the IWAE NLL")
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    p.add_argument("--record", metavar="KEY",
                   help="preset sources: store the results in metadata.json under KEY (e.g. quality)")
    args = p.parse_args(argv)
    try:
        args.metrics = check_metrics(args.metrics)
    except ValueError as e:
        p.error(str(e))
    for name in ("num", "batch_size", "nll_k"):
        if getattr(args, name) < (2 if name == "num" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'num' else 1}, "
                    f"got {getattr(args, name)}")
    if args.extractor == "inception_v3" and set(args.metrics) - {"nll"}:
        if args.inception_weights is None:
            p.error("--extractor inception_v3 needs --inception-weights PATH (no downloads here)")
        if not args.inception_weights.is_file():
            p.error(f"--inception-weights {args.inception_weights} does not exist")
    if not args.source.exists() and not is_preset(args.source):
        p.error(f"{args.source} does not exist and is not a preset name")
    if args.record is not None and not is_preset(args.source):
        p.error(f"--record needs a preset source; {args.source} is not one")
    return args


class SavedModelGenerator:
    """An exported SavedModel's `serving_default` (`z` -> `images`) as a generator.

    Has what `zoo.metrics.evaluate` reads from a model: `generate`,
    `latent_shape`, `image_shape` and `sample_latents` (the draw
    `GenerativeModel.sample_latents` makes, so a SavedModel and its Keras
    model are judged on the same latents).

    Example:

    ```python
    generator = SavedModelGenerator("serving/dcgan_fashion_mnist/1")
    zoo.metrics.evaluate(generator, metrics=("fd",), num=2000)
    ```
    """

    def __init__(self, path):
        self._loaded = tf.saved_model.load(str(path))  # the signature needs its variables alive
        signature = self._loaded.signatures.get("serving_default")
        if signature is None:
            raise ValueError(f"{path} has no serving_default signature")
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
        if set(inputs) != {"z"} or "images" not in outputs:
            raise ValueError(f"{path}: serving_default maps {sorted(inputs)} -> {sorted(outputs)}, "
                             "not z -> images")
        self._signature = signature
        self.latent_shape = tuple(inputs["z"].shape[1:])
        self.image_shape = tuple(outputs["images"].shape[1:])
        if None in self.latent_shape + self.image_shape:
            raise ValueError(f"{path}: serving_default shapes are not static "
                             f"(z {self.latent_shape}, images {self.image_shape})")

    def generate(self, z):
        return self._signature(z=tf.convert_to_tensor(z, tf.float32))["images"]

    def sample_latents(self, num, seed=0):
        return stateless_normal([num, *self.latent_shape], seed=[seed, 0])


def saved_model_dir(path):
    """The SavedModel folder of `path` (itself, or its highest numbered version), or None.

    Example:

    ```python
    saved_model_dir(pathlib.Path("serving/dcgan_fashion_mnist"))  # .../dcgan_fashion_mnist/3
    ```
    """
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def load_source(source):
    """A zoo model (`.keras`, run directory, preset) or a `SavedModelGenerator`; `ValueError` otherwise.

    Example:

    ```python
    model = load_source(pathlib.Path("runs/00000-dcgan-dcgan_fashion_mnist"))  # its model.keras
    ```
    """
    if keras_file(source, required=False) is not None or is_preset(source):
        return load_model(source)
    saved = saved_model_dir(source) if source.is_dir() else None
    if saved is None:
        raise ValueError(f"{source} is neither a run directory with {RUN_MODEL}, a .keras file, "
                         "a preset nor a SavedModel")
    return SavedModelGenerator(saved)


def record(args, argv, results):
    """Stores `results` in the preset's metadata.json under `args.record`, with the command."""
    from zoo import presets

    directory, _ = presets.resolve(str(args.source))
    shipped = presets.shipped_presets()
    name = next((n for n, d in shipped.items() if d.resolve() == directory.resolve()), str(args.source))
    options, items = [], iter(argv)
    for item in items:  # the command minus the source and --record
        if item == "--record":
            next(items, None)
        elif not item.startswith("--record=") and item != str(args.source):
            options.append(item)
    metadata = presets.read_metadata(directory)
    metadata[args.record] = {
        "metrics": results, "num": args.num, "seed": args.seed, "real": args.real,
        "extractor": args.extractor, "command": shlex.join(["python", "-m", "zoo.evaluate", name, *options]),
    }
    path = pathlib.Path(directory) / presets.METADATA_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    tmp.replace(path)


def main(argv=None):
    """Runs the command; returns the exit code.

    Example:

    ```python
    main(["runs/00000-dcgan-dcgan_fashion_mnist", "--metrics", "fd", "--num", "2000"])  # prints JSON
    ```
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        data.check_spec(args.real)
        model = load_source(args.source)
        if "nll" in args.metrics and not hasattr(model, "iwae_nll"):
            raise ValueError(f"--metrics nll needs a VAE saved as .keras; {args.source} is not one")
        extractor = None
        if set(args.metrics) - {"nll"}:
            extractor = get_extractor(args.extractor, args.inception_weights)
            extractor.check_image_shape(model.image_shape)
        results = evaluate(
            model, args.metrics, num=args.num, real=args.real, extractor=extractor,
            batch_size=args.batch_size, seed=args.seed, nll_k=args.nll_k,
        )
    except (ValueError, OSError) as e:  # DataError is a ValueError
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(results))
    if args.record:
        record(args, sys.argv[1:] if argv is None else argv, results)
    if args.json:
        options = {k: v if isinstance(v, (int, float, type(None))) else str(v)
                   for k, v in vars(args).items()}
        options["metrics"] = list(args.metrics)
        args.json.write_text(json.dumps({"options": options, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
