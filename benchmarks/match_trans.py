"""Benchmark of MatchTrans: the compiled op against the pure-TF twin, in one run.

For 11 frames of a 22x38 map (the paper's 337x600 frame at stride 16) and of a 38x63
map, C = 1024, D = 512, k = 2: forward and forward + backward (gradient for the
memory) of the custom op, the twin (banded matmuls) in graph mode and under XLA, and
the previous twin (25 shifted elementwise products, kept as a reference row); plus the
FLOP rate of a 2048x2048 float32 matmul in the same run as the machine's practical
peak. The implementations are timed interleaved (one call of each per round), so that
load from other processes falls on all of them alike.

    python benchmarks/match_trans.py [--repeats 7] [--quick]

Prints a table, then one JSON line with ms per frame, the ratios of the faster twin
(and of the faster shifted twin) to the op, and the op's FLOP rate as a fraction of
the matmul's. Timing is noisy on shared machines: compare the ratios, which are taken
side by side.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import ops  # noqa: E402
from stmn_tf.ops import match_trans_tf  # noqa: E402

FRAMES, CHANNELS, DEPTH, K = 11, 1024, 512, 2
PAPER_MS_PER_FRAME = 2.9  # Titan X, 337x600 frame (paper Sec. 3.3)


def median_seconds(fn, repeats, warmup=2):
    return interleaved_medians({"fn": fn}, repeats, warmup)["fn"]


def interleaved_medians(fns, repeats, warmup=2):
    """`{name: median seconds}`, calling each function once per round, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


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


def make_fns(match_trans, features, prev_features, memory, jit):
    def forward():
        return match_trans(features, prev_features, memory)

    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(memory)
            aligned = match_trans(features, prev_features, memory)
        return tape.gradient(aligned, memory, output_gradients=aligned)

    return (tf.function(forward, jit_compile=jit), tf.function(forward_backward, jit_compile=jit))


IMPLEMENTATIONS = (
    # (row name, function, XLA)
    ("custom_op", lambda f, fp, m: ops.match_trans(f, fp, m, k=K, implementation="custom_op"),
     False),
    ("tf_graph", lambda f, fp, m: ops.match_trans(f, fp, m, k=K, implementation="tf"), False),
    ("tf_xla", lambda f, fp, m: ops.match_trans(f, fp, m, k=K, implementation="tf"), True),
    ("tf_shifted_graph", lambda f, fp, m: match_trans_tf.match_trans_shifted(f, fp, m, K), False),
    ("tf_shifted_xla", lambda f, fp, m: match_trans_tf.match_trans_shifted(f, fp, m, K), True),
)


def run_case(h, w, repeats):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(FRAMES + 1, h, w, CHANNELS)).astype(np.float32)
    features = tf.constant(feats[1:])
    prev_features = tf.constant(feats[:-1])  # each frame against the one before it
    memory = tf.constant(rng.normal(size=(FRAMES, h, w, DEPTH)).astype(np.float32))
    calls = {}
    for name, match_trans, jit in IMPLEMENTATIONS:
        forward, forward_backward = make_fns(match_trans, features, prev_features, memory, jit)
        calls[(name, "forward")] = lambda fn=forward: fn().numpy()
        calls[(name, "forward_backward")] = lambda fn=forward_backward: fn().numpy()
    seconds = interleaved_medians(calls, repeats)
    return {name: {f"{kind}_ms_per_frame": 1e3 * seconds[(name, kind)] / FRAMES
                   for kind in ("forward", "forward_backward")}
            for name, _, _ in IMPLEMENTATIONS}


def best(rows, names, key):
    return min(rows[name][key] for name in names)


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
    header = (f"{'map':>7} {'implementation':>16} {'fwd ms/frame':>13} {'fwd+bwd ms/frame':>17}"
              f" {'fwd GFLOP/s':>12}")
    print(f"MatchTrans, {FRAMES} frames, C={CHANNELS}, D={DEPTH}, k={K}; "
          f"2048^2 matmul: {peak:.1f} GFLOP/s")
    print(header)
    print("-" * len(header))
    for h, w in cases:
        print(f"  timing {h}x{w} ({len(IMPLEMENTATIONS)} implementations, {repeats} rounds)",
              file=sys.stderr, flush=True)
        rows = run_case(h, w, repeats)
        flops = match_trans_flops(h, w)
        for name, row in rows.items():
            gflops = flops / (row["forward_ms_per_frame"] / 1e3) / 1e9
            row["forward_gflops"] = gflops
            print(f"{f'{h}x{w}':>7} {name:>16} {row['forward_ms_per_frame']:>13.2f} "
                  f"{row['forward_backward_ms_per_frame']:>17.2f} {gflops:>12.1f}")
        op = rows["custom_op"]
        case = {f"{name}_{key}": round(value, 3) for name, row in rows.items()
                for key, value in row.items()}
        for label, names in (("twin", ("tf_graph", "tf_xla")),
                             ("shifted_twin", ("tf_shifted_graph", "tf_shifted_xla"))):
            for kind in ("forward", "forward_backward"):
                key = f"{kind}_ms_per_frame"
                case[f"best_{label}_{kind}_over_op"] = round(
                    best(rows, names, key) / op[key], 2)
        case["op_fraction_of_matmul_flops"] = round(op["forward_gflops"] / peak, 3)
        result["cases"][f"{h}x{w}"] = case
    main_case = result["cases"]["22x38"]
    print()
    print(f"22x38: op forward {main_case['custom_op_forward_ms_per_frame']:.2f} ms/frame "
          f"(paper, Titan X: {PAPER_MS_PER_FRAME} ms), "
          f"the faster twin {main_case['best_twin_forward_over_op']:.1f}x the op forward "
          f"and {main_case['best_twin_forward_backward_over_op']:.1f}x forward+backward (the "
          f"shifted twin {main_case['best_shifted_twin_forward_over_op']:.1f}x), op at "
          f"{100 * main_case['op_fraction_of_matmul_flops']:.0f}% of the matmul's FLOP rate")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
