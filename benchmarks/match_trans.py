"""Benchmark of MatchTrans: the compiled op against the pure-TF twin, in one run.

For 11 frames of a 22x38 map (the paper's 337x600 frame at stride 16) and of a 38x63
map, C = 1024, D = 512, k = 2: forward and forward + backward (gradient for the
memory) of the custom op, the twin in graph mode and the twin under XLA; plus the FLOP
rate of a 2048x2048 float32 matmul in the same run as the machine's practical peak.

    python benchmarks/match_trans.py [--repeats 7] [--quick]

Prints a table, then one JSON line with ms per frame, the op's speedups over the faster
twin, and the op's FLOP rate as a fraction of the matmul's. Timing is noisy on shared
machines: compare the ratios, which are taken side by side.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import ops  # noqa: E402

FRAMES, CHANNELS, DEPTH, K = 11, 1024, 512, 2
PAPER_MS_PER_FRAME = 2.9  # Titan X, 337x600 frame (paper Sec. 3.3)


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_gflops(repeats):
    n = 2048
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda: tf.matmul(a, b))
    seconds = median_seconds(lambda: f().numpy(), repeats)
    return 2 * n**3 / seconds / 1e9


def match_trans_flops(h, w, c=CHANNELS, d=DEPTH, k=K):
    """Multiply-adds x 2 per frame: window dots, both norms, and the weighted sum."""
    window = (2 * k + 1) ** 2
    return h * w * (2 * c * (window + 2) + 2 * d * window)


def make_fns(implementation, features, prev_features, memory, jit):
    def forward():
        return ops.match_trans(features, prev_features, memory, k=K, implementation=implementation)

    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(memory)
            aligned = ops.match_trans(features, prev_features, memory, k=K,
                                      implementation=implementation)
        return tape.gradient(aligned, memory, output_gradients=aligned)

    return (tf.function(forward, jit_compile=jit), tf.function(forward_backward, jit_compile=jit))


def run_case(h, w, repeats):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(FRAMES + 1, h, w, CHANNELS)).astype(np.float32)
    features = tf.constant(feats[1:])
    prev_features = tf.constant(feats[:-1])  # each frame against the one before it
    memory = tf.constant(rng.normal(size=(FRAMES, h, w, DEPTH)).astype(np.float32))
    rows = {}
    for name, implementation, jit in (("custom_op", "custom_op", False),
                                      ("tf_graph", "tf", False),
                                      ("tf_xla", "tf", True)):
        forward, forward_backward = make_fns(implementation, features, prev_features, memory, jit)
        fwd = median_seconds(lambda: forward().numpy(), repeats)
        bwd = median_seconds(lambda: forward_backward().numpy(), repeats)
        rows[name] = {"forward_ms_per_frame": 1e3 * fwd / FRAMES,
                      "forward_backward_ms_per_frame": 1e3 * bwd / FRAMES}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="only the 22x38 case, 3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    cases = [(22, 38)] if args.quick else [(22, 38), (38, 63)]

    ops.load_library()  # fail loudly here rather than fall back silently
    peak = matmul_gflops(repeats)
    result = {"matmul_gflops": round(peak, 1), "threads": os.cpu_count(), "cases": {}}
    header = (f"{'map':>7} {'implementation':>14} {'fwd ms/frame':>13} {'fwd+bwd ms/frame':>17}"
              f" {'fwd GFLOP/s':>12}")
    print(f"MatchTrans, {FRAMES} frames, C={CHANNELS}, D={DEPTH}, k={K}; "
          f"2048^2 matmul: {peak:.1f} GFLOP/s")
    print(header)
    print("-" * len(header))
    for h, w in cases:
        rows = run_case(h, w, repeats)
        flops = match_trans_flops(h, w)
        for name, row in rows.items():
            gflops = flops / (row["forward_ms_per_frame"] / 1e3) / 1e9
            row["forward_gflops"] = gflops
            print(f"{f'{h}x{w}':>7} {name:>14} {row['forward_ms_per_frame']:>13.2f} "
                  f"{row['forward_backward_ms_per_frame']:>17.2f} {gflops:>12.1f}")
        op = rows["custom_op"]
        best_fwd = min(rows["tf_graph"]["forward_ms_per_frame"], rows["tf_xla"]["forward_ms_per_frame"])
        best_bwd = min(rows["tf_graph"]["forward_backward_ms_per_frame"],
                       rows["tf_xla"]["forward_backward_ms_per_frame"])
        result["cases"][f"{h}x{w}"] = {
            **{f"{name}_{key}": round(value, 3) for name, row in rows.items()
               for key, value in row.items()},
            "speedup_forward_vs_best_twin": round(best_fwd / op["forward_ms_per_frame"], 2),
            "speedup_forward_backward_vs_best_twin": round(
                best_bwd / op["forward_backward_ms_per_frame"], 2),
            "op_fraction_of_matmul_flops": round(op["forward_gflops"] / peak, 3),
        }
    main_case = result["cases"]["22x38"]
    print()
    print(f"22x38: op forward {main_case['custom_op_forward_ms_per_frame']:.2f} ms/frame "
          f"(paper, Titan X: {PAPER_MS_PER_FRAME} ms), "
          f"{main_case['speedup_forward_vs_best_twin']:.1f}x the faster twin forward, "
          f"{main_case['speedup_forward_backward_vs_best_twin']:.1f}x forward+backward, "
          f"{100 * main_case['op_fraction_of_matmul_flops']:.0f}% of the matmul's FLOP rate")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
