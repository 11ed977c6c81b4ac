"""MatchTrans' centre_features: the compiled op and the pure-TF twin against NumPy."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from tests.ops.match_trans_reference import numpy_match_trans, numpy_memory_gradient
from tests.ops.test_match_trans_affinity_power import IMPLEMENTATIONS, TOLERANCES, relu_inputs


def centred(x):
    """Each frame minus its mean over the H x W positions, in float64."""
    x = np.asarray(x, np.float64)
    return x - x.mean(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_reference_on_centred_features(implementation, dtype, rng):
    tol = TOLERANCES[dtype]
    f, fp, m = relu_inputs(rng, dtype=dtype)
    for k, power in itertools.product(range(3), (1.0, 4.0)):
        want_aligned, want_coef = numpy_match_trans(centred(f), centred(fp), m, k, power)
        aligned = ops.match_trans(f, fp, m, k=k, implementation=implementation,
                                  affinity_power=power, centre_features=True)
        coef = ops.match_trans_coefficients(f, fp, k=k, implementation=implementation,
                                            affinity_power=power, centre_features=True)
        msg = f"k={k} power={power}"
        assert aligned.dtype == dtype and coef.dtype == dtype
        np.testing.assert_allclose(coef.numpy(), want_coef, rtol=tol, atol=tol, err_msg=msg)
        np.testing.assert_allclose(aligned.numpy(), want_aligned, rtol=tol, atol=tol,
                                   err_msg=msg)


def test_centring_sharpens_flat_relu_coefficients_and_default_is_off(rng):
    f, fp, m = relu_inputs(rng, shape=(1, 8, 8, 32))
    plain = ops.match_trans_coefficients(f, fp, k=2).numpy()
    np.testing.assert_array_equal(
        ops.match_trans_coefficients(f, fp, k=2, centre_features=False).numpy(), plain)
    centred_coef = ops.match_trans_coefficients(f, fp, k=2, centre_features=True).numpy()
    interior = (slice(None), slice(2, -2), slice(2, -2))
    # ReLU features: every cosine positive, the largest of 25 weights about 0.1; centred,
    # the dissimilar neighbours' cosines turn negative and the ReLU drops them.
    assert plain.max(-1)[interior].mean() < 0.12
    assert centred_coef.max(-1)[interior].mean() > 0.2
    assert (centred_coef[interior] == 0).mean() > 0.3 > (plain[interior] == 0).mean()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_memory_gradient_uses_the_centred_coefficients_and_none_reaches_features(
        implementation, rng):
    f, fp, m = relu_inputs(rng, dtype=np.float64)
    upstream = rng.normal(size=m.shape)
    memory, features = tf.constant(m), tf.constant(f)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([memory, features])
        out = ops.match_trans(features, fp, memory, k=1, implementation=implementation,
                              centre_features=True)
        loss = tf.reduce_sum(out * upstream)
    _, coef = numpy_match_trans(centred(f), centred(fp), m, 1)
    np.testing.assert_allclose(tape.gradient(loss, memory).numpy(),
                               numpy_memory_gradient(coef, upstream, 1), atol=1e-10)
    grad_features = tape.gradient(loss, features)
    assert grad_features is None or not np.any(grad_features.numpy())


def test_a_frame_with_a_non_finite_feature_is_nan_everywhere(rng):
    f, fp, m = relu_inputs(rng)
    f[0, 0, 0, 0] = np.nan
    out = ops.match_trans(f, fp, m, k=1, implementation="tf", centre_features=True).numpy()
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


@pytest.mark.parametrize("value", [1, "yes", None, np.bool_(True)])
def test_bad_value_is_refused_naming_it(value, rng):
    f, fp, m = relu_inputs(rng)
    with pytest.raises(ValueError, match="centre_features must be True or False"):
        ops.match_trans(f, fp, m, k=1, centre_features=value)
    with pytest.raises(ValueError, match="centre_features must be True or False"):
        ops.match_trans_coefficients(f, fp, k=1, centre_features=value)
