"""MatchTrans' offset_prior: a log-weight per window offset that multiplies the
affinities, against a NumPy loop reference written here, and its gradient."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops


def numpy_prior_match_trans(f, fp, m, k, prior, power=1.0):
    """Aligned memory and coefficients with c(p, o) = a(p, o) e^{b_o} / sum, float64
    (finite input only; identity where that sum is below 1e-7)."""
    f, fp, m = (x.astype(np.float64) for x in (f, fp, m))
    b, h, w, _ = f.shape
    side = 2 * k + 1
    nf = np.sqrt((f * f).sum(-1)) + 1e-8
    nfp = np.sqrt((fp * fp).sum(-1)) + 1e-8
    coef = np.zeros((b, h, w, side * side))
    out = np.zeros(m.shape)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                a = np.zeros(side * side)
                for dy in range(-k, k + 1):
                    for dx in range(-k, k + 1):
                        if 0 <= y + dy < h and 0 <= x + dx < w:
                            o = (dy + k) * side + dx + k
                            cos = f[n, y, x] @ fp[n, y + dy, x + dx] / (
                                nf[n, y, x] * nfp[n, y + dy, x + dx])
                            a[o] = max(cos, 0.0) ** power * np.exp(prior[o])
                if a.sum() < 1e-7:
                    a = np.eye(side * side)[k * side + k]
                else:
                    a = a / a.sum()
                coef[n, y, x] = a
                for dy in range(-k, k + 1):
                    for dx in range(-k, k + 1):
                        if 0 <= y + dy < h and 0 <= x + dx < w:
                            out[n, y, x] += a[(dy + k) * side + dx + k] * m[n, y + dy, x + dx]
    return out, coef


def inputs(rng, shape, depth=3):
    f = np.maximum(rng.normal(size=shape), 0.0)
    fp = np.maximum(rng.normal(size=shape), 0.0)
    m = rng.normal(size=shape[:3] + (depth,))
    return f, fp, m


@pytest.mark.parametrize("k, shape, power", [(0, (1, 3, 4, 4), 1.0), (1, (2, 3, 5, 3), 4.0),
                                             (2, (1, 5, 6, 4), 1.0), (2, (2, 4, 9, 5), 4.0),
                                             (3, (1, 2, 3, 3), 2.0)])  # k 3: map < window
def test_values_match_numpy(k, shape, power, rng):
    f, fp, m = inputs(rng, shape)
    f[0, 1, 1] = 0.0  # a zero vector: its window has no mass, the identity
    prior = rng.normal(size=(2 * k + 1) ** 2) * 2.0
    want, want_coef = numpy_prior_match_trans(f, fp, m, k, prior, power)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-5)):
        cast = [x.astype(dtype) for x in (f, fp, m)]
        got = ops.match_trans(*cast, k=k, implementation="tf", affinity_power=power,
                              offset_prior=prior.astype(dtype))
        np.testing.assert_allclose(got.numpy(), want, atol=tol, rtol=tol)
        coef = ops.match_trans_coefficients(cast[0], cast[1], k=k, affinity_power=power,
                                            offset_prior=prior)
        np.testing.assert_allclose(coef.numpy(), want_coef, atol=tol, rtol=tol)


def test_zero_prior_is_the_authors_formula_bit_for_bit(rng):
    f, fp, m = (x.astype(np.float32) for x in inputs(rng, (2, 6, 7, 5)))
    plain = ops.match_trans(f, fp, m, k=2, implementation="tf", affinity_power=4.0)
    zero = ops.match_trans(f, fp, m, k=2, implementation="tf", affinity_power=4.0,
                           offset_prior=np.zeros(25, np.float32))
    np.testing.assert_array_equal(plain.numpy(), zero.numpy())


def test_a_strong_centre_prior_keeps_the_memory_in_place(rng):
    f, fp, m = inputs(rng, (1, 5, 5, 4))
    prior = np.full(25, -30.0)
    prior[12] = 0.0
    out = ops.match_trans(f + 0.1, fp + 0.1, m, k=2, implementation="tf", offset_prior=prior)
    np.testing.assert_allclose(out.numpy(), m, atol=1e-9)


def test_gradient_to_the_prior_and_memory_match_finite_differences(rng):
    f, fp, m = inputs(rng, (1, 4, 5, 3))
    f, fp = f + 0.05, fp + 0.05
    prior = tf.constant(rng.normal(size=9) * 0.5)

    def aligned(prior, memory):
        return ops.match_trans(f, fp, memory, k=1, implementation="tf", offset_prior=prior)

    for jit in (False, True):
        function = tf.function(aligned, jit_compile=True) if jit else aligned
        theoretical, numerical = tf.test.compute_gradient(function, [prior, tf.constant(m)])
        for t, n in zip(theoretical, numerical):
            np.testing.assert_allclose(t, n, atol=1e-6, rtol=1e-6)


def test_no_gradient_reaches_the_features_without_feature_gradient(rng):
    f, fp, m = (tf.constant(x) for x in inputs(rng, (1, 4, 5, 3)))
    prior = tf.Variable(tf.zeros(25, tf.float64))
    with tf.GradientTape() as tape:
        tape.watch([f, fp])
        out = ops.match_trans(f, fp, m, k=2, implementation="tf", offset_prior=prior)
        loss = tf.reduce_sum(out * rng.normal(size=(1, 4, 5, 3)))
    g_f, g_fp, g_prior = tape.gradient(loss, [f, fp, prior])
    assert g_f is None and g_fp is None
    assert np.abs(g_prior.numpy()).max() > 0


def test_bad_priors_and_the_compiled_op_are_refused(rng):
    f, fp, m = inputs(rng, (1, 4, 5, 3))
    with pytest.raises(ValueError, match=r"offset_prior must have shape \[\(2k\+1\)\^2\] = \[9\]"):
        ops.match_trans(f, fp, m, k=1, implementation="tf", offset_prior=np.zeros(25))
    with pytest.raises(TypeError, match="offset_prior must be float"):
        ops.match_trans(f, fp, m, k=1, implementation="tf", offset_prior=np.zeros(9, np.int32))
    with pytest.raises(ValueError, match="offset_prior needs implementation='tf' or 'auto'"):
        ops.match_trans(f, fp, m, k=1, implementation="custom_op", offset_prior=np.zeros(9))
    prior = rng.normal(size=9)
    auto = ops.match_trans(f, fp, m, k=1, implementation="auto", offset_prior=prior)
    twin = ops.match_trans(f, fp, m, k=1, implementation="tf", offset_prior=prior)
    np.testing.assert_array_equal(auto.numpy(), twin.numpy())
