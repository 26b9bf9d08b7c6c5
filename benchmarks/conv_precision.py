"""float32 against bfloat16 convolutions on this CPU, at the shapes the 32-px models use.

    python benchmarks/conv_precision.py [--batch-size 64] [--repeats 7] [--json out.json]

Each case is one 3x3 "same" convolution, forward and both backward passes
(input and filter gradients: what a training step runs), as a `tf.function`
on random data, in float32 and in bfloat16, the two run in turns for
`--repeats` rounds. Reported: medians of milliseconds, GFLOP/s (3 x 2 x N x H
x W x C_in x C_out x 9 per call) and the bfloat16 speed-up, with the CPU's
bfloat16 instruction flags (`amx_bf16`, `avx512_bf16`): oneDNN runs bfloat16
convolutions on AMX tiles where they exist, and is slower than float32 on
AVX-512 alone.
"""

import argparse
import json
import pathlib
import platform
import statistics
import time

import tensorflow as tf

# (channels, resolution) of the 32-px presets' layers: StyleGAN2 128@4..8, 64@16, 32@32.
CASES = ((32, 32), (64, 16), (128, 8), (128, 4))


def cpu_flags():
    """The bfloat16-related flags of /proc/cpuinfo (empty where it does not exist)."""
    try:
        words = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(w for w in words if w in ("amx_bf16", "amx_tile", "avx512_bf16", "amx_int8"))


def make_case(dtype, channels, size, batch):
    x = tf.cast(tf.random.stateless_normal([batch, size, size, channels], [0, 1]), dtype)
    k = tf.cast(tf.random.stateless_normal([3, 3, channels, channels], [0, 2]), dtype)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"), tf.float32))
        return tape.gradient(loss, [x, k])

    step()  # trace and warm oneDNN's primitive cache
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=5, help="calls per timing")
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)
    rows = []
    for channels, size in CASES:
        steps = {d: make_case(d, channels, size, args.batch_size) for d in (tf.float32, tf.bfloat16)}
        times = {d: [] for d in steps}
        for _ in range(args.repeats):
            for dtype, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    grads = step()
                grads[0].numpy()
                times[dtype].append((time.perf_counter() - start) / args.calls)
        flops = 3 * 2 * args.batch_size * size * size * channels * channels * 9
        f32, bf16 = (statistics.median(times[d]) for d in (tf.float32, tf.bfloat16))
        ratio = statistics.median(a / b for a, b in zip(times[tf.float32], times[tf.bfloat16]))
        rows.append({"channels": channels, "size": size, "float32_ms": f32 * 1e3, "bfloat16_ms": bf16 * 1e3,
                     "float32_gflops": flops / f32 / 1e9, "bfloat16_gflops": flops / bf16 / 1e9,
                     "bfloat16_speedup": ratio})
    flags = cpu_flags()
    print(f"CPU bfloat16 flags: {', '.join(flags) or 'none'}; batch {args.batch_size}; TF {tf.__version__}")
    print("| conv 3x3, C x HxW | float32 ms | bfloat16 ms | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 speed-up |")
    print("|---|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['channels']} x {r['size']}x{r['size']} | {r['float32_ms']:.2f} | {r['bfloat16_ms']:.2f} "
              f"| {r['float32_gflops']:.0f} | {r['bfloat16_gflops']:.0f} | {r['bfloat16_speedup']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu_flags": flags, "batch_size": args.batch_size,
                                         "tensorflow": tf.__version__, "python": platform.python_version(),
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
