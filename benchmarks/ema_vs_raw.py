"""Sample quality of a StyleGAN2's EMA generator against its raw (trained) generator, same latents.

    python benchmarks/ema_vs_raw.py SOURCE [--num 5000] [--metrics fd,kid] [--seed 0] [--json OUT]

SOURCE is anything `zoo.load_model` opens (a run directory, a `.keras` file,
a preset). Both generators turn the same `--num` latents into images (ψ = 1,
fixed noise) and `zoo.metrics.evaluate` scores them against the test split.
An EMA that scores worse than the raw generator lags behind training (its
half-life is too long for the run); one that scores better is averaging out
the optimizer's noise, as intended.
"""

import argparse
import json
import pathlib
import sys

import zoo
from zoo import metrics
from zoo.data import to_unit_range


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="run directory, .keras file or preset")
    p.add_argument("--num", type=int, default=5000, help="generated images per generator")
    p.add_argument("--metrics", default="fd,kid", help="zoo.metrics names")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents")
    p.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.num < 2:
        p.error("--num must be >= 2")
    model = zoo.load_model(args.source)
    if not isinstance(model, zoo.StyleGAN2):
        p.error(f"{args.source} is a {type(model).__name__}, not a StyleGAN2")
    results = {}
    for name, generator in (("ema", model.generator_ema), ("raw", model.generator)):
        def generate(z, generator=generator):
            return to_unit_range(generator(z, training=False))

        results[name] = metrics.evaluate(generate, metrics=args.metrics, num=args.num,
                                         latent_shape=(model.latent_dim,), seed=args.seed)
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[name].items()), flush=True)
    output = {"source": str(args.source), "num": args.num, "seed": args.seed, "results": results}
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return output


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
