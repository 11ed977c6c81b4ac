"""The CPU kernel's two forward paths (STMN_MATCHTRANS_CPU_PATH) against each other,
the pure-TF twin and a NumPy reference.

The generic per-position path is the arithmetic that the standalone GPU check
compares the CUDA kernels with; the fast path is the blocked float32 one (k <= 3).
The variable is read when a kernel is constructed and TF keeps the kernels of an op
node, so every run below traces a fresh tf.function with the variable set.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from tests.ops.match_trans_reference import numpy_match_trans, numpy_memory_gradient

PATHS = ["generic", "fast"]
TOLERANCES = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-10}


def run_op(path, f, fp, m, upstream, k):
    """Aligned memory, coefficients and the memory gradient of sum(aligned * upstream)
    from the compiled op on the CPU, with STMN_MATCHTRANS_CPU_PATH=path (None: unset)."""
    library = ops.load_library()

    @tf.function  # fresh op nodes, so fresh kernels that read the variable
    def fn(f, fp, m, upstream):
        with tf.GradientTape() as tape:
            tape.watch(m)
            aligned, coef = library.stmn_match_trans(f, fp, m, k=k)
            loss = tf.reduce_sum(tf.cast(aligned, tf.float64) * tf.cast(upstream, tf.float64))
        return aligned, coef, tape.gradient(loss, m)

    old = os.environ.pop("STMN_MATCHTRANS_CPU_PATH", None)
    if path is not None:
        os.environ["STMN_MATCHTRANS_CPU_PATH"] = path
    try:
        with tf.device("/CPU:0"):
            return [t.numpy() for t in fn(f, fp, m, upstream)]
    finally:
        os.environ.pop("STMN_MATCHTRANS_CPU_PATH", None)
        if old is not None:
            os.environ["STMN_MATCHTRANS_CPU_PATH"] = old


def run_twin(f, fp, m, upstream, k):
    mv = tf.constant(m)
    with tf.GradientTape() as tape:
        tape.watch(mv)
        aligned = ops.match_trans(f, fp, mv, k=k, implementation="tf")
        loss = tf.reduce_sum(tf.cast(aligned, tf.float64) * tf.cast(upstream, tf.float64))
    coef = ops.match_trans_coefficients(f, fp, k=k, implementation="tf")
    return aligned.numpy(), coef.numpy(), tape.gradient(loss, mv).numpy()


def cases(rng, dtype):
    """(name, f, fp, m): a map with zero feature vectors, one smaller than a 7x7 window,
    and a single position; C = 13 is not a multiple of the 8-float vectors."""
    out = []
    for name, (b, h, w, c, d) in [("zeros", (2, 5, 6, 13, 5)), ("small", (1, 2, 3, 13, 4)),
                                  ("single", (1, 1, 1, 13, 3))]:
        f = rng.normal(size=(b, h, w, c))
        fp = 0.6 * np.roll(f, 1, axis=2) + 0.4 * rng.normal(size=(b, h, w, c))
        m = rng.normal(size=(b, h, w, d))
        if name == "zeros":
            f[0, 1, 2] = 0.0  # no positive affinity: identity
            fp[1, 3, 4] = 0.0  # a zero neighbour: affinity 0
            fp[1, :, :2] = 0.0
        out.append((name, f.astype(dtype), fp.astype(dtype), m.astype(dtype)))
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_paths_and_twin_agree(dtype, k, rng):
    tol = TOLERANCES[dtype]
    for name, f, fp, m in cases(rng, dtype):
        upstream = rng.normal(size=m.shape).astype(dtype)
        generic = run_op("generic", f, fp, m, upstream, k)
        fast = run_op("fast", f, fp, m, upstream, k)
        default = run_op(None, f, fp, m, upstream, k)
        twin = run_twin(f, fp, m, upstream, k)
        ref_aligned, ref_coef = numpy_match_trans(f, fp, m, k)
        ref_grad = numpy_memory_gradient(ref_coef, upstream, k)
        side = 2 * k + 1
        for label, got in [("generic", generic), ("fast", fast), ("default", default),
                           ("twin", twin)]:
            msg = f"{label} path, case {name}, {np.dtype(dtype).name}, k={k}"
            for what, value, ref in zip(("aligned", "coefficients", "memory gradient"), got,
                                        (ref_aligned, ref_coef, ref_grad)):
                assert value.dtype == dtype, f"{msg}: {what} dtype {value.dtype}"
                np.testing.assert_allclose(value.astype(np.float64), ref, rtol=tol, atol=tol,
                                           err_msg=f"{msg}: {what}")
        # The auto default is the fast path.
        for a, b in zip(default, fast):
            np.testing.assert_array_equal(a, b)
        if name == "zeros":
            np.testing.assert_array_equal(generic[1][0, 1, 2], np.eye(side * side)[k * side + k])


def test_generic_path_is_taken_for_float32(rng):
    """float32, k = 2, C = 13: the two paths sum the 13 channels in different orders,
    so bit-identical results would mean the variable had no effect."""
    f = rng.normal(size=(2, 6, 7, 13)).astype(np.float32)
    fp = rng.normal(size=(2, 6, 7, 13)).astype(np.float32)
    m = rng.normal(size=(2, 6, 7, 4)).astype(np.float32)
    upstream = np.ones_like(m)
    generic = run_op("generic", f, fp, m, upstream, 2)
    fast = run_op("fast", f, fp, m, upstream, 2)
    assert not np.array_equal(generic[1], fast[1])
    np.testing.assert_allclose(generic[1], fast[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", ["GENERIC", "slow", "1"])
def test_unknown_path_names_the_variable(value, rng):
    x = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"STMN_MATCHTRANS_CPU_PATH must be auto, generic or fast, "
                             rf"got '{value}'"):
        run_op(value, x, x, x, x, 1)


def test_auto_and_empty_are_the_default(rng):
    f, fp, m = (rng.normal(size=(1, 4, 5, 16)).astype(np.float32) for _ in range(3))
    default = run_op(None, f, fp, m, m, 2)
    for value in ("auto", ""):
        for a, b in zip(run_op(value, f, fp, m, m, 2), default):
            np.testing.assert_array_equal(a, b)
