"""Train a zoo model and export it.

    zoo-train --model dcgan --preset dcgan_fashion_mnist --epochs 5
    zoo-train --resume runs/00000-dcgan-dcgan_fashion_mnist --epochs 10
    zoo-train --init-from dcgan_fashion_mnist --data folder:my_images --minutes 10
    zoo-train --list-presets

(`python train.py ...` in a checkout is the same command.)

Every option is validated before anything heavy runs; `--dry-run` prints the
resolved config and stops. Exit codes: 0 done, 2 invalid option, data or
unreadable backup, 3 non-finite loss or weight (the last backup is kept),
4 a multi-worker run lost a worker or a collective op timed out (the chief's
last backup is kept; restart every worker with --resume).
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model family: dcgan | vae | stylegan2")
    p.add_argument("--preset", help="named configuration; see --list-presets")
    p.add_argument("--data", help="fashion_mnist | tfds:NAME[:SPLIT] | folder:PATH | tfrecord:GLOB | npz:PATH")
    p.add_argument("--data-dir", help="tfds data directory")
    p.add_argument("--shuffle-buffer", type=int,
                   help="streamed data: records (or cached images) shuffled within a pass (default 10000)")
    p.add_argument("--cache", metavar="memory|PATH",
                   help="streamed data: keep the decoded images after the first pass, in memory or files at PATH")
    p.add_argument("--strict-data", action=argparse.BooleanOptionalAction,
                   help="stop at an undecodable image file (default: report it and skip it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="steps per epoch (default: one pass over the data)")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch size (default: the preset's, else 128)")
    p.add_argument("--strategy", help="auto | one | mirrored | multiworker | tpu")
    p.add_argument("--cpu-replicas", type=int, help="with mirrored: split the CPU into N devices")
    p.add_argument("--precision", help="float32 | mixed_float16 | mixed_bfloat16")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction,
                   help="XLA-compile the train step (default: the family's measured choice for this "
                        "device kind, zoo.device; off for stylegan2 everywhere)")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="deterministic TF ops (tf.config.experimental.enable_op_determinism): same seed, "
                        "same result on GPUs too; slower")
    p.add_argument("--outdir", help="where numbered run directories go (default runs)")
    p.add_argument("--minutes", type=float, help="stop after this much wall time")
    p.add_argument("--cooldown", type=float, metavar="F",
                   help="with --minutes: every learning rate falls linearly to 0 over the last F of them (0 < F <= 1)")
    p.add_argument("--collective-timeout", type=float, metavar="SECONDS",
                   help="multiworker: fail when a collective op waits longer (default: no limit)")
    p.add_argument("--backup-every", type=int, help="steps between backups (default: each epoch)")
    p.add_argument("--samples", type=int, help="images in the per-epoch sample grid")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="score samples every N epochs and at the end (Fashion-MNIST; default: never)")
    p.add_argument("--eval-num", type=int, help="generated images per evaluation (default 2000)")
    p.add_argument("--eval-metrics", help="comma-separated, from fd,kid,is,pr,coverage,nll (default fd,kid)")
    p.add_argument("--plateau-minutes", type=float, metavar="M",
                   help="stop when the evaluated FD improved by less than --plateau-improvement over M minutes")
    p.add_argument("--plateau-improvement", type=float, metavar="F", help="relative FD improvement (default 0.05)")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, help="export at the end")
    p.add_argument("--quantize", help="LiteRT mode: none | float16 | dynamic | int8")
    p.add_argument("--serving-base-path",
                   help="where TF Serving sees the run's export/saved_model, for models.config (default /models)")
    p.add_argument("--init-from", metavar="PRESET",
                   help="fine-tune: start from a preset's trained weights (name or directory); fixes --model/--preset")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its backup")
    p.add_argument("--dry-run", action="store_true", help="validate, print the config, stop")
    p.add_argument("--list-presets", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import zoo
    from zoo import training
    from zoo.callbacks import NonFiniteLossError
    from zoo.data import DataError

    if args.list_presets:
        for family, presets in zoo.list_presets().items():
            for name, description in presets.items():
                print(f"{family:10s} {name:28s} {description}")
        return 0
    given = {
        k: v for k, v in vars(args).items()
        if v is not None and k not in ("resume", "dry_run", "list_presets")
    }
    if args.init_from and ({"model", "preset"} & given.keys()):
        print("error: --init-from fixes the architecture: drop --model/--preset", file=sys.stderr)
        return 2
    try:
        if args.resume:
            config = training.load_run_config(args.resume, given)
        else:
            config = training.TrainConfig(**given)
        config = config.resolved()
        training.validate(config)
        if args.dry_run:
            print(json.dumps(dataclasses.asdict(config), indent=2))
            return 0
        # `train.py ...` or `zoo-train ...` as typed; a call from Python reads as `zoo-train ...`.
        prog = os.path.basename(sys.argv[0])
        prog = ["python", prog] if prog.endswith(".py") else [prog]
        command = shlex.join([*prog, *sys.argv[1:]] if argv is None else ["zoo-train", *argv])
        result = training.run(config, resume_dir=args.resume, command=command)
    except (training.ConfigError, DataError, training.BackupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except training.ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    if result.run_dir is not None:  # None on a worker other than the chief
        print(f"run directory: {result.run_dir}")
    for fmt, path in result.exports.items():
        print(f"{fmt}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
