"""VAE priors and decoders compared (issue 14): same data, same training minutes, one table.

    python benchmarks/vae_priors.py [--variants plain flow two_stage flow_res1] [--minutes 5 20] \\
        [--long plain flow_res1] [--slice-seconds 60] [--json docs/vae_priors.json] \\
        [--grids docs/images/vae_priors]

Every variant is `--preset` (`vae_fashion_mnist`) with some constructor arguments, and
optionally the batch size or the first stage's learning rate, changed (`VARIANTS`),
trained as `train.py` trains it (`TrainConfig`'s batch, the family's XLA
default, `model.fit` on the Fashion-MNIST train split). The
variants train in turns of `--slice-seconds` in one process, so load from
elsewhere hits them alike; each variant's clock counts its own slices only
(tracing and XLA compilation included). At each of `--minutes` a variant
that is still training is evaluated (outside its clock):

* prior samples (`generate` of 10,000 fixed latents, so noise -> prior ->
  decoder): FD, KID, IS, precision/recall and class coverage against the
  Fashion-MNIST test split, features of the project's classifier;
* reconstruction FD: the decoded posterior means of the 10,000 test images;
* on the first 1,000 test images, in nats per image: the negative ELBO (one
  sample) and the IWAE NLL with k = 100 and k = 1,000, the first stage scored
  with its N(0, I) prior; for a flow prior also the IWAE NLL (k = 100) under
  the flow, the model's likelihood as it samples;
* a grid of 64 prior samples from the same latents for every variant.

Only the variants in `--long` train past the first milestone; `--save-presets
DIR` writes each of them as a preset directory (`DIR/<variant>`, metadata with
this command and its training minutes) when the last milestone is measured.
Progress goes to stderr, the Markdown table to stdout, every measurement to
`--json` as it is taken.
"""

import argparse
import json
import math
import pathlib
import shlex
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo import callbacks as zoo_callbacks
from zoo import data, device
from zoo.metrics import compare, evaluate, get_extractor, real_statistics, statistics_of
from zoo.training import TrainConfig

# Each variant: "model" = constructor arguments over the preset's (explicit, so "plain" stays the N(0, I) VAE
# whatever the preset's default prior is); optional "batch_size" and "learning_rate" (the first stage's Adam)
# replace the preset's training recipe; optional "cooldown" anneals every rate to 0 over that last fraction of
# the variant's training time (`zoo.callbacks.Cooldown`; its last milestone: with --long, the last --minutes).
VARIANTS = {
    "plain": {"model": {"prior": "normal", "decoder_blocks": 0}},
    "flow": {"model": {"prior": "flow", "decoder_blocks": 0}},
    "two_stage": {"model": {"prior": "two_stage", "decoder_blocks": 0}},
    "res1": {"model": {"prior": "normal", "decoder_blocks": 1}},
    "flow_res1": {"model": {"prior": "flow", "decoder_blocks": 1}},
    "flow_head32": {"model": {"prior": "flow", "decoder_head_filters": 32}},
    "flow_wide48": {"model": {"prior": "flow", "base_filters": 48}},
    "flow_kl2k": {"model": {"prior": "flow", "kl_warmup_steps": 2000}},
    "flow_lr2e-3": {"model": {"prior": "flow"}, "learning_rate": 2e-3},
    "flow_batch64": {"model": {"prior": "flow"}, "batch_size": 64},
    "flow_lr2e-3_batch64": {"model": {"prior": "flow"}, "learning_rate": 2e-3, "batch_size": 64},
    "flow_lr3e-3": {"model": {"prior": "flow"}, "learning_rate": 3e-3},
    "flow_lr2e-3_kl500": {"model": {"prior": "flow", "kl_warmup_steps": 500}, "learning_rate": 2e-3},
    "flow_lr2e-3_cool": {"model": {"prior": "flow"}, "learning_rate": 2e-3, "cooldown": 0.2},
    "flow_lr3e-3_cool": {"model": {"prior": "flow"}, "learning_rate": 3e-3, "cooldown": 0.2},
    "flow_lr2e-3_batch64_cool": {"model": {"prior": "flow"}, "learning_rate": 2e-3, "batch_size": 64, "cooldown": 0.2},
    "flow_lr2e-3_batch32_cool": {"model": {"prior": "flow"}, "learning_rate": 2e-3, "batch_size": 32, "cooldown": 0.2},
}
SLICE_STEP_CAP = 1_000_000  # steps_per_epoch of a slice: the time budget ends it first


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="vae_fashion_mnist", help="the VAE preset every variant starts from")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["plain", "flow", "two_stage", "flow_res1"])
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0], help="training minutes evaluated")
    p.add_argument("--long", nargs="*", choices=VARIANTS, default=["plain", "flow_res1"],
                   help="variants that train past the first milestone")
    p.add_argument("--slice-seconds", type=float, default=60.0)
    p.add_argument("--num", type=int, default=10_000, help="samples (and test images) for the image metrics")
    p.add_argument("--nll-images", type=int, default=1000, help="first test images of the likelihoods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=pathlib.Path, help="write the measurements here as they are taken")
    p.add_argument("--grids", type=pathlib.Path, help="write each variant's sample grid here")
    p.add_argument("--save-presets", type=pathlib.Path, metavar="DIR",
                   help="write the --long variants as preset directories at the end")
    args = p.parse_args(argv)
    if sorted(args.minutes) != args.minutes or args.minutes[0] <= 0:
        p.error(f"--minutes must be positive and increasing, got {args.minutes}")
    if args.nll_images < 100 or args.nll_images % 100:
        p.error(f"--nll-images must be a positive multiple of 100, got {args.nll_images}")
    if not set(args.long) <= set(args.variants):
        p.error(f"--long {args.long} must be among --variants {args.variants}")
    return args


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Variant:
    """One model, its dataset and its own training clock."""

    def __init__(self, name, preset, arrays, seed, minutes):
        self.name = name
        spec = VARIANTS[name]
        self.cooldown = zoo_callbacks.Cooldown(minutes, spec["cooldown"]) if "cooldown" in spec else None
        config = TrainConfig(model="vae", preset=preset, seed=seed, batch_size=spec.get("batch_size")).resolved()
        self.batch_size = config.batch_size
        self.data = config.data
        keras.utils.set_random_seed(seed)  # initial weights, as `training.run` seeds them
        self.model = zoo.get_model("vae", preset, seed=seed, **spec["model"])
        if self.model.image_shape != (32, 32, 1):
            raise SystemExit(f"error: {preset} makes {self.model.image_shape} images; "
                             "this benchmark is Fashion-MNIST's 32x32x1")
        optimizers = self.model.default_optimizers()  # the family's recipe; a variant may change its rate
        if "learning_rate" in spec:
            optimizers["vae_optimizer"].learning_rate = spec["learning_rate"]
        self.learning_rate = float(optimizers["vae_optimizer"].learning_rate.numpy())
        self.model.compile(jit_compile=zoo.VAE.xla_by_default(), **optimizers)
        self.dataset = data.make_dataset("fashion_mnist", 32, 1, self.batch_size, repeat=True, seed=seed,
                                         arrays=arrays)
        self.seconds = 0.0

    def train(self, seconds):
        start = time.perf_counter()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=SLICE_STEP_CAP, verbose=0,
                       callbacks=[zoo_callbacks.TimeBudget(seconds / 60.0), *filter(None, [self.cooldown])])
        self.model.train_steps  # noqa: B018 -- reading it waits for the last step
        self.seconds += time.perf_counter() - start


def likelihoods(model, test_images, num, seed):
    """Negative ELBO and IWAE NLLs (nats per image) on the first `num` test images (a multiple of 100)."""
    batches = data.make_dataset("fashion_mnist:test", 32, 1, 100, shuffle=False, arrays=(test_images[:num], None))
    estimates = {"neg_elbo": (1, "normal"), "iwae_k100": (100, "normal"), "iwae_k1000": (1000, "normal")}
    if hasattr(model.prior, "log_prob"):
        estimates["iwae_k100_flow_prior"] = (100, "learned")
    results = {}
    for key, (k, prior) in estimates.items():
        values = [model.iwae_nll(x, k=k, seed=seed * 100_000 + i, prior=prior).numpy() for i, x in enumerate(batches)]
        results[key] = float(np.concatenate(values).mean())
    return results


def reconstruction_fd(model, test_images, extractor, num):
    # Whole batches only (make_dataset drops a partial one): a batch size that divides `num`.
    images = data.make_dataset("fashion_mnist:test", 32, 1, math.gcd(num, 250), shuffle=False,
                               arrays=(test_images[:num], None))
    recon = np.concatenate([model.reconstruct((x + 1.0) / 2.0).numpy() for x in images])  # [num, 32, 32, 1]
    real = real_statistics("fashion_mnist:test", num, model.image_shape, extractor)
    return compare(real, statistics_of(recon, extractor), ("fd",))["fd"]


def measure(variant, test_images, extractor, args):
    model = variant.model
    start = time.perf_counter()
    results = {
        "variant": variant.name, "config": VARIANTS[variant.name], "minutes": variant.seconds / 60.0,
        "steps": model.train_steps, "images_seen": model.train_steps * variant.batch_size,
        # What trained, as the optimizer and dataset saw it (a variant may override the preset's recipe).
        # The first stage's rate as compiled, and the factor on every rate at the last step (1: no cooldown).
        "batch_size": variant.batch_size, "learning_rate": variant.learning_rate,
        "final_rate_factor": variant.cooldown.factor(variant.cooldown.seconds_before) if variant.cooldown else 1.0,
        "parameters": {"total": model.count_params(), "decoder": model.decoder.count_params(),
                       "prior": model.prior.count_params() if model.prior is not None else 0},
    }
    results["samples"] = evaluate(model, num=args.num, extractor=extractor, seed=args.seed)
    results["reconstruction_fd"] = reconstruction_fd(model, test_images, extractor, args.num)
    results["likelihood"] = likelihoods(model, test_images, args.nll_images, args.seed)
    results["evaluation_s"] = time.perf_counter() - start
    return results


def save_grid(model, path):
    images = model.generate(model.sample_latents(64, seed=0)).numpy()
    zoo_callbacks.save_png(zoo_callbacks.image_grid(images), path)


def format_table(rows):
    lines = ["| variant | minutes | kimg | FD | KID x1e3 | IS | precision | recall | min class share | "
             "recon FD | -ELBO | IWAE k=100 | IWAE k=1000 | IWAE k=100, flow prior |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, nll = r["samples"], r["likelihood"]
        flow = nll.get("iwae_k100_flow_prior")
        lines.append(
            f"| {r['variant']} | {r['minutes']:.1f} | {r['images_seen'] / 1000:.0f} | {s['fd']:.1f} | {s['kid']:.1f} "
            f"| {s['is']:.2f} | {s['precision']:.3f} | {s['recall']:.3f} | {100 * s['coverage_min_share']:.1f} % "
            f"| {r['reconstruction_fd']:.1f} | {nll['neg_elbo']:.1f} | {nll['iwae_k100']:.1f} "
            f"| {nll['iwae_k1000']:.1f} | {'' if flow is None else f'{flow:.1f}'} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    arrays = data.load_arrays("fashion_mnist")
    test_images, _ = data.load_arrays("fashion_mnist:test")
    extractor = get_extractor("fashion_classifier")
    variants = [Variant(name, args.preset, arrays, args.seed,
                        minutes=args.minutes[-1] if name in args.long else args.minutes[0])
                for name in args.variants]
    rows = []
    output = {"machine": device.machine(),
              "preset": args.preset, "variants": {v.name: VARIANTS[v.name] for v in variants}, "rows": rows}
    for i, milestone in enumerate(args.minutes):
        active = [v for v in variants if i == 0 or v.name in args.long]
        while any(v.seconds < milestone * 60 for v in active):
            for v in active:
                left = milestone * 60 - v.seconds
                if left > 0:
                    v.train(min(args.slice_seconds, left))
                    progress(f"{v.name}: {v.seconds / 60:.2f} min, {v.model.train_steps} steps")
        for v in active:
            progress(f"{v.name}: evaluating at {milestone:g} min")
            rows.append({**measure(v, test_images, extractor, args), "milestone": milestone})
            if args.grids:
                args.grids.mkdir(parents=True, exist_ok=True)
                save_grid(v.model, args.grids / f"{v.name}-{milestone:g}min.png")
            if args.json:
                args.json.write_text(json.dumps(output, indent=2) + "\n")
    if args.save_presets:
        command = shlex.join(["python", "benchmarks/vae_priors.py", *(sys.argv[1:] if argv is None else argv)])
        for v in variants:
            if v.name in args.long:
                v.model.save_to_preset(args.save_presets / v.name, metadata={
                    "preset": args.preset, "data": v.data, "images_seen": v.model.train_steps * v.batch_size,
                    "training": {"command": command, "minutes": round(v.seconds / 60.0, 2), "resumed": False,
                                 "machine": device.machine(), "variant": v.name, "overrides": VARIANTS[v.name]},
                })
    print(format_table(rows))
    return output


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    main()
