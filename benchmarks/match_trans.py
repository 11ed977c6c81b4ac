"""Benchmark of MatchTrans: the compiled op against the pure-TF twin, in one run.

For 11 frames of a 22x38 map (the paper's 337x600 frame at stride 16) and of a 38x63
map, C = 1024, D = 512, k = 2: forward and forward + backward (gradient for the
memory) of the custom op, the twin (banded matmuls) in graph mode and under XLA, and
the previous twin (25 shifted elementwise products, kept as a reference row); plus the
FLOP rate of a 2048x2048 float32 matmul in the same run as the machine's practical
peak. The implementations are timed interleaved (one call of each per round), so that
load from other processes falls on all of them alike.

    python benchmarks/match_trans.py [--repeats 7] [--quick] [--onednn default|on|off]

The twin's batched matmuls and gathers depend on TensorFlow's oneDNN kernels, which
TensorFlow turns on by default only on some x86 CPUs (recent Intel ones; not on the
AMD EPYC with AVX2 of this project's machines, where the twin is several times slower
without them). The setting is read once per process (`TF_ENABLE_ONEDNN_OPTS`), so
when this process runs without oneDNN the op and the twin are timed again in a child
process with `TF_ENABLE_ONEDNN_OPTS=1`: extra rows marked "oneDNN on", with their own
ratios, taken side by side in that child. `--onednn` sets the variable for this
process (`default` leaves it as it is).

Prints a table, then one JSON line with ms per frame, the ratios of the faster twin
(and of the faster shifted twin) to the op, the op's FLOP rate as a fraction of the
matmul's, and whether oneDNN was on. Timing is noisy on shared machines: compare the
ratios, which are taken side by side.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ONEDNN_CHOICES = ("default", "on", "off")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="only the 22x38 case, 3 repeats")
    parser.add_argument("--onednn", default="default", choices=ONEDNN_CHOICES,
                        help="TF_ENABLE_ONEDNN_OPTS for this process (default: as it is)")
    parser.add_argument("--twin-only", action="store_true",
                        help="time only the op and the new twin, print only the JSON line "
                             "(the child run)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # Before TensorFlow is imported: it reads the variable once, at start-up.
    _onednn = parse_args().onednn
    if _onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if _onednn == "on" else "0"

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
# What the child run with oneDNN on times: the op and the new twin.
TWIN_ONLY = tuple(i for i in IMPLEMENTATIONS if i[0] in ("custom_op", "tf_graph", "tf_xla"))


def onednn_enabled():
    """Whether TensorFlow's oneDNN kernels are on in this process (None: unknown)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a private module: it may move
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_child(args):
    """The op and the twin timed in a child process with oneDNN on: its JSON, or None
    with the reason on stderr when it failed."""
    command = [sys.executable, os.path.abspath(__file__), "--onednn", "on", "--twin-only",
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    print("  timing the op and the twin again with oneDNN on (a child process)",
          file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"  the oneDNN run failed (exit {done.returncode}): {done.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(lines[-1])


def run_case(h, w, repeats, implementations=IMPLEMENTATIONS):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(FRAMES + 1, h, w, CHANNELS)).astype(np.float32)
    features = tf.constant(feats[1:])
    prev_features = tf.constant(feats[:-1])  # each frame against the one before it
    memory = tf.constant(rng.normal(size=(FRAMES, h, w, DEPTH)).astype(np.float32))
    calls = {}
    for name, match_trans, jit in implementations:
        forward, forward_backward = make_fns(match_trans, features, prev_features, memory, jit)
        calls[(name, "forward")] = lambda fn=forward: fn().numpy()
        calls[(name, "forward_backward")] = lambda fn=forward_backward: fn().numpy()
    seconds = interleaved_medians(calls, repeats)
    return {name: {f"{kind}_ms_per_frame": 1e3 * seconds[(name, kind)] / FRAMES
                   for kind in ("forward", "forward_backward")}
            for name, _, _ in implementations}


def best(rows, names, key):
    return min(rows[name][key] for name in names)


def time_cases(cases, repeats, peak, implementations):
    """`{"HxW": case}` for each map, printing a row per implementation."""
    result = {}
    for h, w in cases:
        print(f"  timing {h}x{w} ({len(implementations)} implementations, {repeats} rounds)",
              file=sys.stderr, flush=True)
        rows = run_case(h, w, repeats, implementations)
        result[f"{h}x{w}"] = summarise(rows, match_trans_flops(h, w), peak)
    return result


def summarise(rows, flops, peak):
    """The JSON of one map: each row's figures, the best twin over the op, the op's
    FLOP rate over the matmul's."""
    op = rows["custom_op"]
    for row in rows.values():
        row["forward_gflops"] = flops / (row["forward_ms_per_frame"] / 1e3) / 1e9
    case = {f"{name}_{key}": round(value, 3) for name, row in rows.items()
            for key, value in row.items()}
    for label, names in (("twin", ("tf_graph", "tf_xla")),
                         ("shifted_twin", ("tf_shifted_graph", "tf_shifted_xla"))):
        if not all(name in rows for name in names):
            continue
        for kind in ("forward", "forward_backward"):
            key = f"{kind}_ms_per_frame"
            case[f"best_{label}_{kind}_over_op"] = round(best(rows, names, key) / op[key], 2)
    case["op_fraction_of_matmul_flops"] = round(op["forward_gflops"] / peak, 3)
    return case


def print_rows(cases, implementations, suffix=""):
    for size, case in cases.items():
        for name, _, _ in implementations:
            print(f"{size:>7} {name + suffix:>24} "
                  f"{case[f'{name}_forward_ms_per_frame']:>13.2f} "
                  f"{case[f'{name}_forward_backward_ms_per_frame']:>17.2f} "
                  f"{case[f'{name}_forward_gflops']:>12.1f}")


def main(argv=None):
    args = parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    cases = [(22, 38)] if args.quick else [(22, 38), (38, 63)]
    implementations = TWIN_ONLY if args.twin_only else IMPLEMENTATIONS

    ops.load_library()  # fail loudly here rather than fall back silently
    peak = matmul_gflops(repeats)
    onednn = onednn_enabled()
    result = {"matmul_gflops": round(peak, 1), "threads": os.cpu_count(), "onednn": onednn,
              "cases": time_cases(cases, repeats, peak, implementations)}
    if args.twin_only:
        print(json.dumps(result))
        return
    # Without oneDNN (TensorFlow's default on some CPUs) the twin is timed again with
    # it, in a child process, since the setting cannot change inside a process.
    child = onednn_child(args) if onednn is False else None
    if child is not None:
        result["onednn_on"] = child
    header = (f"{'map':>7} {'implementation':>24} {'fwd ms/frame':>13} "
              f"{'fwd+bwd ms/frame':>17} {'fwd GFLOP/s':>12}")
    print(f"MatchTrans, {FRAMES} frames, C={CHANNELS}, D={DEPTH}, k={K}; "
          f"2048^2 matmul: {peak:.1f} GFLOP/s; oneDNN "
          f"{ {True: 'on', False: 'off', None: 'unknown'}[onednn] }")
    print(header)
    print("-" * len(header))
    print_rows(result["cases"], implementations)
    if child is not None:
        print_rows(child["cases"], TWIN_ONLY, " (oneDNN on)")
    print()
    for size, case in result["cases"].items():
        line = (f"{size}: op forward {case['custom_op_forward_ms_per_frame']:.2f} ms/frame, "
                f"the faster twin {case['best_twin_forward_over_op']:.1f}x the op forward "
                f"and {case['best_twin_forward_backward_over_op']:.1f}x forward+backward (the "
                f"shifted twin {case['best_shifted_twin_forward_over_op']:.1f}x), op at "
                f"{100 * case['op_fraction_of_matmul_flops']:.0f}% of the matmul's FLOP rate")
        if child is not None:
            other = child["cases"][size]
            line += (f"; with oneDNN on, the twin {other['best_twin_forward_over_op']:.1f}x "
                     f"/ {other['best_twin_forward_backward_over_op']:.1f}x")
        print(line)
    print(f"(paper, Titan X: MatchTrans {PAPER_MS_PER_FRAME} ms per 337x600 frame)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
