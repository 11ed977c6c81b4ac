"""MatchTrans on odd input, the compiled op and the pure-TF twin side by side: NaN and
Inf, zero feature channels, integer and mismatched dtypes."""

import os

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from stmn_tf.ops import match_trans_tf
from tests.ops.match_trans_reference import numpy_match_trans, numpy_memory_gradient

IMPLEMENTATIONS = ["custom_op", "tf"]


def poisoned(rng, shape, depth, dtype):
    """Features and memory with a NaN and an Inf each, away from and at the edges.

    W = 8 is a whole number of twin tiles (row ends meet the next row's start in its
    grid), W = 11 is not (padding columns).
    """
    f = rng.normal(size=shape)
    fp = 0.6 * np.roll(f, 1, axis=2) + 0.4 * rng.normal(size=shape)
    m = rng.normal(size=shape[:3] + (depth,))
    b, h, w, _ = shape
    f[0, 1, 2, 3] = np.nan
    fp[b - 1, h - 1, w - 1, 0] = np.inf  # a corner: its window is cut by the map's edge
    m[0, h - 2, 0, 1] = np.nan  # the first column: the twin's tile row neighbours it
    m[b - 1, 2, w - 3, 0] = -np.inf
    return [x.astype(dtype) for x in (f, fp, m)]


def assert_same(got, want, tol, msg=""):
    """NaN at the same places, the finite values close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=msg)
    assert not np.any(np.isinf(got)), msg
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=msg)  # NaN == NaN


@pytest.mark.parametrize("shape", [(2, 5, 8, 6), (1, 6, 11, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_non_finite_values_give_nan_in_their_windows_only(k, dtype, shape, rng):
    tol = 2e-5 if dtype == np.float32 else 1e-10
    f, fp, m = poisoned(rng, shape, 4, dtype)
    want_aligned, want_coef = numpy_match_trans(f, fp, m, k, 2.0)
    got = {}
    for implementation in IMPLEMENTATIONS:
        aligned = ops.match_trans(f, fp, m, k=k, implementation=implementation,
                                  affinity_power=2.0).numpy()
        coef = ops.match_trans_coefficients(f, fp, k=k, implementation=implementation,
                                            affinity_power=2.0).numpy()
        msg = f"{implementation} k={k}"
        assert_same(aligned, want_aligned, tol, msg)
        assert_same(coef, want_coef, tol, msg)
        got[implementation] = aligned
    # Hand-checked corners of the rule: the NaN feature's own position, a position
    # whose window holds the memory's NaN only, and a far position that stays finite.
    assert np.all(np.isnan(got["tf"][0, 1, 2]))
    assert np.all(np.isnan(got["tf"][0, shape[1] - 2, k]))
    assert np.all(np.isfinite(got["tf"][0, shape[1] - 2, k + 1]))
    np.testing.assert_array_equal(np.isnan(got["custom_op"]), np.isnan(got["tf"]))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_non_finite_memory_gradient(implementation, rng):
    f, fp, m = poisoned(rng, (2, 5, 8, 6), 4, np.float64)
    m = np.nan_to_num(m)  # NaN features only: NaN coefficients, a NaN memory gradient
    upstream = rng.normal(size=m.shape)
    memory = tf.constant(m)
    with tf.GradientTape() as tape:
        tape.watch(memory)
        out = ops.match_trans(f, fp, memory, k=1, implementation=implementation)
        loss = tf.reduce_sum(tf.where(tf.math.is_nan(out), tf.zeros_like(out), out) * upstream)
    _, coef = numpy_match_trans(f, fp, m, 1)
    want = numpy_memory_gradient(coef, upstream, 1)
    got = tape.gradient(loss, memory).numpy()
    # The NaN-free loss still carries the NaN coefficients' gradient (0 * NaN).
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("path", ["generic", "fast"])
def test_both_cpu_paths_follow_the_rule(path, monkeypatch, rng):
    f, fp, m = poisoned(rng, (2, 5, 8, 6), 4, np.float32)
    want_aligned, want_coef = numpy_match_trans(f, fp, m, 2, 4.0)
    library = ops.load_library()
    monkeypatch.setenv("STMN_MATCHTRANS_CPU_PATH", path)

    @tf.function  # a fresh kernel, which reads the variable
    def run(f, fp, m):
        return library.stmn_match_trans(f, fp, m, k=2, affinity_power=4.0)

    with tf.device("/CPU:0"):
        aligned, coef = run(f, fp, m)
    os.environ.pop("STMN_MATCHTRANS_CPU_PATH", None)
    assert_same(aligned.numpy(), want_aligned, 2e-5, path)
    assert_same(coef.numpy(), want_coef, 2e-5, path)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_channels_keep_the_memory(implementation, rng):
    features = np.zeros((2, 4, 5, 0), np.float32)
    memory = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    aligned = ops.match_trans(features, features, memory, k=2, implementation=implementation)
    np.testing.assert_array_equal(aligned.numpy(), memory)
    coef = ops.match_trans_coefficients(features, features, k=1, implementation=implementation)
    np.testing.assert_array_equal(coef.numpy(), np.broadcast_to(np.eye(9)[4], (2, 4, 5, 9)))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_memory_channels(implementation, rng):
    features = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    memory = np.zeros((1, 3, 4, 0), np.float32)
    aligned = ops.match_trans(features, features, memory, k=1, implementation=implementation)
    assert aligned.shape == (1, 3, 4, 0)


BAD_DTYPES = [
    ("int32", "float32", "float32",
     "MatchTrans: features must be float16, float32 or float64, got int32"),
    ("bool", "bool", "bool", "MatchTrans: features must be float16, float32 or float64, got bool"),
    ("float32", "float64", "float32",
     r"MatchTrans: prev_features must have the dtype of features \(float32\), got float64"),
    ("float32", "float32", "int64",
     r"MatchTrans: prev_memory must have the dtype of features \(float32\), got int64"),
    ("float64", "float64", "float16",
     r"MatchTrans: prev_memory must have the dtype of features \(float64\), got float16"),
]


@pytest.mark.parametrize("f_dtype, fp_dtype, m_dtype, message", BAD_DTYPES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_bad_dtypes_are_refused_alike(implementation, f_dtype, fp_dtype, m_dtype, message):
    f, fp, m = (np.ones((1, 3, 3, 2), d) for d in (f_dtype, fp_dtype, m_dtype))
    with pytest.raises(TypeError, match=message):
        ops.match_trans(f, fp, m, k=1, implementation=implementation)
    if m_dtype == f_dtype:
        with pytest.raises(TypeError, match=message):
            ops.match_trans_coefficients(f, fp, k=1, implementation=implementation)


@pytest.mark.parametrize("f_dtype, fp_dtype, m_dtype, message", BAD_DTYPES)
def test_twin_called_directly_refuses_them_too(f_dtype, fp_dtype, m_dtype, message):
    f, fp, m = (tf.ones((1, 3, 3, 2), d) for d in (f_dtype, fp_dtype, m_dtype))
    with pytest.raises(TypeError, match=message):
        match_trans_tf.match_trans(f, fp, m, 1)


def test_kernel_attr_refuses_integers():
    f = tf.ones((1, 3, 3, 2), tf.int32)
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError),
                       match="int32"):
        ops.load_library().stmn_match_trans(f, f, f, k=1)


@pytest.mark.parametrize("bad", ["first_cell", "all_cells"])
def test_twin_reads_a_finite_cell_in_place_of_a_bad_one(bad, rng):
    """The twin's neighbour tiles read the first finite memory cell in place of a
    non-finite one (and cell 0 outside the map): a NaN in cell 0 must not reach the
    positions whose window misses it, and all-NaN memory gives NaN everywhere."""
    f, fp, m = make_finite(rng, (2, 4, 5, 3), 2)
    if bad == "first_cell":
        m[0, 0, 0, 1] = np.nan
    else:
        m[..., 0] = np.inf
    want, _ = numpy_match_trans(f, fp, m, 1)
    got = match_trans_tf.match_trans(f, fp, m, 1, tile=4).numpy()
    assert_same(got, want, 2e-5)
    assert np.isnan(got).all() == (bad == "all_cells")


def make_finite(rng, shape, depth):
    f = rng.normal(size=shape)
    fp = 0.6 * np.roll(f, 1, axis=2) + 0.4 * rng.normal(size=shape)
    return [x.astype(np.float32) for x in (f, fp, rng.normal(size=shape[:3] + (depth,)))]
