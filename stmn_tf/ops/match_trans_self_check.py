"""A check of the compiled MatchTrans op the first time it runs on a GPU in a process.

The CUDA kernels cannot be tested on the machines that build them, and a wrong
alignment would train silently. So, before the op's first use in a process, each GPU
that TensorFlow sees runs the op and the pure-TF twin (`implementation="tf"`) on a
small random input (float32 and float16, k = 2, a zero feature vector, a map edge on
every side, C not a multiple of 32) and compares the aligned memory and the memory
gradient. A mismatch raises `MatchTransSelfCheckError`, naming the device and the
difference; the op is never silently replaced by the twin.

`STMN_MATCHTRANS_SELF_CHECK=0` skips the check (`1`, the default, runs it).
"""

import os
import threading

import numpy as np
import tensorflow as tf

ENV_VAR = "STMN_MATCHTRANS_SELF_CHECK"
# Max |op - twin| / (1 + |twin|) allowed, per dtype.
TOLERANCES = {tf.float32: 1e-4, tf.float16: 2e-2}
SHAPE = (2, 6, 9, 40, 24)  # B, H, W, C, D
K = 2

_lock = threading.Lock()
_results = {}  # device name -> None (passed) or the error it raised
_all_gpus_passed = False  # every GPU checked and passed (run_op=None only)


class MatchTransSelfCheckError(RuntimeError):
    """The compiled op disagrees with the pure-TF twin on a device."""


def enabled():
    """Whether the check runs: STMN_MATCHTRANS_SELF_CHECK is unset, `1` or `0`."""
    value = os.environ.get(ENV_VAR, "1").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"The environment variable {ENV_VAR} must be 0 or 1, got {value!r}")
    return value != "0"


def _inputs(dtype):
    rng = np.random.default_rng(20180908)
    b, h, w, c, d = SHAPE
    f = rng.normal(size=(b, h, w, c))
    # Correlated frames, so that most windows have several positive affinities.
    fp = 0.7 * np.roll(f, 1, axis=2) + 0.3 * rng.normal(size=(b, h, w, c))
    f[0, 2, 3] = 0.0  # no positive affinity: the identity fallback
    m = rng.normal(size=(b, h, w, d))
    upstream = rng.normal(size=(b, h, w, d))
    return [tf.constant(x, dtype) for x in (f, fp, m, upstream)]


def _run_op(features, prev_features, memory, upstream, k):
    """Aligned memory `[B, H, W, D]` and the memory gradient of sum(aligned * upstream)
    from the op's two kernels (no gradient tape: tf.init_scope pauses tapes)."""
    from stmn_tf.ops import match_trans_op

    library = match_trans_op.load_library()
    aligned, coefficients = library.stmn_match_trans(features, prev_features, memory, k=k)
    return aligned, library.stmn_match_trans_grad(coefficients, upstream, k=k)


def _run_twin(features, prev_features, memory, upstream, k):
    """The same from the pure-TF twin; its memory gradient is the transpose of the
    weighted sum: grad(q) = sum_o coef(q - o)[o] * upstream(q - o)."""
    from stmn_tf import ops

    aligned = ops.match_trans(features, prev_features, memory, k=k, implementation="tf")
    coef = tf.cast(ops.match_trans_coefficients(features, prev_features, k=k,
                                                implementation="tf"), tf.float32)
    up = tf.cast(upstream, tf.float32)
    h, w, side = up.shape[1], up.shape[2], 2 * k + 1
    grad = tf.zeros_like(tf.pad(up, [[0, 0], [k, k], [k, k], [0, 0]]))
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            # Position p sends coef(p)[o] * upstream(p) to q = p + o.
            term = coef[..., (dy + k) * side + dx + k, None] * up
            grad += tf.pad(term, [[0, 0], [k + dy, k - dy], [k + dx, k - dx], [0, 0]])
    return aligned, tf.cast(grad[:, k : k + h, k : k + w], memory.dtype)


def _difference(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want) / (1.0 + np.abs(want))))


def check_device(device, run_op=None):
    """Compares the op with the twin on `device`; returns the differences.

    Args:
      device: str. A TensorFlow device name, e.g. `"/device:GPU:0"` or `"/CPU:0"`.
      run_op: the function under test, `(features, prev_features, memory, upstream, k)
        -> (aligned, memory gradient)`. Defaults to the compiled op.

    Returns:
      A dict `{"float32": {"aligned": d, "memory_gradient": d}, "float16": {...}}` of
      max |op - twin| / (1 + |twin|).

    Raises:
      MatchTransSelfCheckError: if a difference exceeds its tolerance (1e-4 in
        float32, 2e-2 in float16), or the op fails on the device.
    """
    run_op = run_op or _run_op
    differences = {}
    with tf.init_scope(), tf.device(device):  # eager, even when called while tracing
        for dtype, tolerance in TOLERANCES.items():
            args = _inputs(dtype)
            try:
                got = run_op(*args, K)
            except (tf.errors.OpError, RuntimeError) as e:
                raise MatchTransSelfCheckError(
                    f"MatchTrans self-check: the compiled op failed on {device} "
                    f"({dtype.name}): {e}. Pass implementation='tf' to use the pure-TF "
                    f"implementation instead of the op, or set {ENV_VAR}=0 to skip this "
                    "check."
                ) from e
            want = _run_twin(*args, K)
            diffs = {name: _difference(g, w)
                     for name, g, w in zip(("aligned", "memory_gradient"), got, want)}
            differences[dtype.name] = diffs
            bad = {name: d for name, d in diffs.items() if not d <= tolerance}
            if bad:
                detail = ", ".join(f"{name} differs by {d:.3g}" for name, d in bad.items())
                raise MatchTransSelfCheckError(
                    f"MatchTrans self-check failed on {device}: the compiled op and the "
                    f"pure-TF twin disagree in {dtype.name} ({detail}; max |op - twin| / "
                    f"(1 + |twin|), tolerance {tolerance:g}) on a {'x'.join(map(str, SHAPE))} "
                    f"(B x H x W x C x D) input with k={K}. Its kernels are wrong on this "
                    "device: pass implementation='tf' to use the pure-TF implementation "
                    f"instead of the op (set {ENV_VAR}=0 to skip this check)."
                )
    return differences


def _gpu_devices():
    return [d.name for d in tf.config.list_logical_devices("GPU")]


def ensure_checked(devices=None, run_op=None):
    """Runs `check_device` once per process on each device (default: every GPU).

    Called by the op's wrapper before the op is used. A device that failed raises its
    error again on every later call. Does nothing when STMN_MATCHTRANS_SELF_CHECK=0.
    """
    global _all_gpus_passed
    if not enabled() or (devices is None and run_op is None and _all_gpus_passed):
        return  # the op's wrapper calls this on every use: the common case is cheap
    for device in _gpu_devices() if devices is None else devices:
        with _lock:
            if device not in _results:
                try:
                    check_device(device, run_op=run_op)
                    _results[device] = None
                except MatchTransSelfCheckError as e:
                    _results[device] = e
            error = _results[device]
        if error is not None:
            raise error
    if devices is None and run_op is None:
        _all_gpus_passed = True
