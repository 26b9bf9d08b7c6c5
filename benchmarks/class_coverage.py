"""Which Fashion-MNIST classes a trained generator draws, as the project's classifier sees them.

    python benchmarks/class_coverage.py SOURCE [--num 2000] [--seed 123] [--json out.json]

SOURCE is what `python -m zoo.evaluate` takes: a run directory, a `.keras`
file or an exported SavedModel. Generates `--num` images from the model's
N(0, 1) latents (`--seed`), labels them with the committed Fashion-MNIST
classifier (`zoo.metrics.classifier`, the features of the project's FD/KID),
and prints the share of each predicted class next to its share among the real
test images, the mean confidence and the total variation distance between the
two (`zoo.metrics.evaluate(..., metrics=("coverage",))` gives the summary
numbers alone). It shows mode coverage, not fidelity.
"""

import argparse
import json
import pathlib
import sys

if __name__ == "__main__" and not __package__:
    # `python benchmarks/class_coverage.py` puts benchmarks/, not the repo root, on sys.path.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

REAL = "fashion_mnist:test"
BATCH = 500


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=pathlib.Path, help="run directory, .keras file or SavedModel")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.num < 1:
        p.error(f"--num must be >= 1, got {args.num}")

    import numpy as np

    from zoo.evaluate import load_source
    from zoo.metrics import class_coverage, classifier, get_extractor, real_statistics

    try:
        model = load_source(args.source)
        extractor = get_extractor("fashion_classifier")
        extractor.check_image_shape(model.image_shape)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    z = model.sample_latents(args.num, seed=args.seed)
    probs = np.concatenate([extractor.probabilities(model.generate(z[i : i + BATCH]))
                            for i in range(0, args.num, BATCH)])  # [num, 10]
    shares, covered = class_coverage(probs)
    real_shares, _ = class_coverage(real_statistics(REAL, None, model.image_shape, extractor).probabilities)
    result = {
        "source": str(args.source), "num": args.num, "seed": args.seed,
        "classifier_test_accuracy": classifier.TEST_ACCURACY,
        "share": dict(zip(classifier.CLASSES, shares.tolist())),
        "real_share": dict(zip(classifier.CLASSES, real_shares.tolist())),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "classes_seen": covered,
        "total_variation": float(np.abs(shares - real_shares).sum() / 2),
    }
    print(f"classifier test accuracy {classifier.TEST_ACCURACY:.1%}; {args.num} samples from "
          f"{args.source}")
    print("| class | share | real test share |\n|---|--:|--:|")
    for name, share, real in zip(classifier.CLASSES, shares, real_shares):
        print(f"| {name} | {share:.1%} | {real:.1%} |")
    print(f"mean confidence {result['mean_confidence']:.3f}; classes seen {covered}/10; "
          f"total variation from the real shares {result['total_variation']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
