"""MatchTrans' feature_gradient: the pure-TF twin differentiated through its coefficients,
against finite differences of the NumPy reference."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from tests.ops.match_trans_reference import numpy_match_trans
from tests.ops.test_match_trans_affinity_power import relu_inputs


def centred(x):
    return x - x.mean(axis=(1, 2), keepdims=True)


def numpy_feature_gradients(f, fp, m, upstream, k, power, centre, step=1e-6):
    """d sum(upstream * match_trans(f, fp, m)) / d f and / d fp by central differences
    of `numpy_match_trans`, float64."""

    def loss(f, fp):
        if centre:
            f, fp = centred(f), centred(fp)
        return float((numpy_match_trans(f, fp, m, k, power)[0] * upstream).sum())

    grads = []
    for which in range(2):
        inputs = [f.copy(), fp.copy()]
        grad = np.zeros_like(inputs[which])
        for index in np.ndindex(*grad.shape):
            saved = inputs[which][index]
            inputs[which][index] = saved + step
            up = loss(*inputs)
            inputs[which][index] = saved - step
            down = loss(*inputs)
            inputs[which][index] = saved
            grad[index] = (up - down) / (2 * step)
        grads.append(grad)
    return grads


def positive_inputs(rng, shape):
    # Strictly positive features: no zero vector, every cosine > 0, so that the loss
    # is smooth where the differences are taken (with centring some cosines are
    # negative, none within the step of 0).
    f, fp, m = relu_inputs(rng, shape=shape, depth=3, dtype=np.float64)
    return f + 0.05, fp + 0.05, m


def twin_gradients(f, fp, m, upstream, k, power, centre, jit=False, dtype=tf.float64):
    features, prev, memory = (tf.constant(x, dtype) for x in (f, fp, m))

    def gradients(features, prev, memory):
        with tf.GradientTape() as tape:
            tape.watch([features, prev, memory])
            out = ops.match_trans(features, prev, memory, k=k, implementation="tf",
                                  affinity_power=power, centre_features=centre,
                                  feature_gradient=True)
            loss = tf.reduce_sum(tf.cast(out, tf.float64) * upstream)
        return tape.gradient(loss, [features, prev, memory])

    if jit:
        gradients = tf.function(gradients, jit_compile=True)
    return [g.numpy() for g in gradients(features, prev, memory)]


@pytest.mark.parametrize("k, shape", [(0, (1, 3, 4, 4)), (1, (2, 3, 5, 3)), (2, (1, 4, 5, 3)),
                                      (3, (1, 2, 3, 3))])  # k = 3: a map smaller than the window
def test_feature_gradients_match_finite_differences_of_numpy(k, shape, rng):
    f, fp, m = positive_inputs(rng, shape)
    upstream = rng.normal(size=m.shape)
    for power, centre in itertools.product((1.0, 4.0), (False, True)):
        want_f, want_fp = numpy_feature_gradients(f, fp, m, upstream, k, power, centre)
        got_f, got_fp, got_m = twin_gradients(f, fp, m, upstream, k, power, centre)
        msg = f"k={k} power={power} centre={centre}"
        np.testing.assert_allclose(got_f, want_f, rtol=1e-6, atol=1e-7, err_msg=msg)
        np.testing.assert_allclose(got_fp, want_fp, rtol=1e-6, atol=1e-7, err_msg=msg)
        coef = numpy_match_trans(centred(f) if centre else f, centred(fp) if centre else fp,
                                 m, k, power)[1]
        # The memory gradient is the one without feature_gradient (the band transposed).
        want_m = twin_memory_gradient(f, fp, m, upstream, k, power, centre)
        np.testing.assert_allclose(got_m, want_m, rtol=1e-10, atol=1e-12, err_msg=msg)
        if k == 0:  # one coefficient per position, always 1: nothing to learn
            assert np.all(coef == 1.0)
            assert np.abs(got_f).max() < 1e-12 and np.abs(got_fp).max() < 1e-12
        else:
            assert np.abs(got_f).max() > 1e-3, msg


def twin_memory_gradient(f, fp, m, upstream, k, power, centre):
    memory = tf.constant(m)
    with tf.GradientTape() as tape:
        tape.watch(memory)
        out = ops.match_trans(f, fp, memory, k=k, implementation="tf",
                              affinity_power=power, centre_features=centre)
        loss = tf.reduce_sum(out * upstream)
    return tape.gradient(loss, memory).numpy()


def test_values_are_the_same_and_the_default_passes_no_gradient_to_features(rng):
    f, fp, m = relu_inputs(rng, dtype=np.float32)
    features, prev, memory = (tf.constant(x) for x in (f, fp, m))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, prev])
        plain = ops.match_trans(features, prev, memory, k=2, implementation="tf",
                                affinity_power=4.0)
        learnt = ops.match_trans(features, prev, memory, k=2, implementation="tf",
                                 affinity_power=4.0, feature_gradient=True)
    np.testing.assert_array_equal(learnt.numpy(), plain.numpy())
    assert tape.gradient(plain, features) is None
    assert np.abs(tape.gradient(learnt, features).numpy()).max() > 0


def test_xla_and_float32_give_the_float64_gradients(rng):
    f, fp, m = positive_inputs(rng, (2, 5, 9, 4))
    upstream = rng.normal(size=m.shape)
    want = twin_gradients(f, fp, m, upstream, 2, 4.0, False)
    for jit, dtype in ((True, tf.float64), (False, tf.float32), (True, tf.float32)):
        got = twin_gradients(f, fp, m, upstream, 2, 4.0, False, jit=jit, dtype=dtype)
        tol = 1e-10 if dtype == tf.float64 else 2e-3
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max(),
                                       err_msg=f"jit={jit} dtype={dtype.name}")


def test_float16_gradients_are_finite_and_close(rng):
    f, fp, m = positive_inputs(rng, (1, 4, 6, 4))
    upstream = rng.normal(size=m.shape)
    want = twin_gradients(f, fp, m, upstream, 1, 4.0, False)
    got = twin_gradients(f, fp, m, upstream, 1, 4.0, False, dtype=tf.float16)
    for g, w in zip(got, want):
        assert g.dtype == np.float16 and np.all(np.isfinite(g))
        np.testing.assert_allclose(g.astype(np.float64), w, rtol=5e-2, atol=5e-2 * np.abs(w).max())


def test_zero_vectors_and_powers_below_one_give_finite_gradients(rng):
    f, fp, m = relu_inputs(rng, dtype=np.float64)
    f[0, 1, 2] = 0.0  # a zero feature vector in each frame
    fp[1, 3, 4] = 0.0
    upstream = rng.normal(size=m.shape)
    for power in (0.5, 1.0, 4.0):
        for g in twin_gradients(f, fp, m, upstream, 2, power, False):
            assert np.all(np.isfinite(g)), f"power={power}"


def test_the_compiled_op_refuses_it_and_auto_takes_the_twin(rng):
    f, fp, m = relu_inputs(rng)
    with pytest.raises(ValueError, match="feature_gradient=True needs implementation='tf'"):
        ops.match_trans(f, fp, m, k=2, implementation="custom_op", feature_gradient=True)
    with pytest.raises(ValueError, match="feature_gradient must be True or False"):
        ops.match_trans(f, fp, m, k=2, feature_gradient="yes")
    with pytest.raises(ValueError, match="implementation must be one of"):
        ops.match_trans(f, fp, m, k=2, implementation="cuda", feature_gradient=True)
    features = tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = ops.match_trans(features, fp, m, k=2, implementation="auto",
                              feature_gradient=True)
    np.testing.assert_array_equal(
        out.numpy(), ops.match_trans(f, fp, m, k=2, implementation="tf").numpy())
    assert tape.gradient(out, features) is not None
