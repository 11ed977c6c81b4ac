"""MatchTrans' affinity_power: the compiled op and the pure-TF twin against NumPy."""

import importlib
import itertools

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from stmn_tf.ops import match_trans_tf
from tests.ops.match_trans_reference import numpy_match_trans, numpy_memory_gradient

match_trans_module = importlib.import_module("stmn_tf.ops.match_trans_op")

IMPLEMENTATIONS = ["custom_op", "tf"]
TOLERANCES = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-10}


def relu_inputs(rng, shape=(2, 5, 9, 8), depth=6, dtype=np.float32):
    """Non-negative features (as after a ReLU) with correlated frames, and a memory."""
    f = np.maximum(rng.normal(size=shape), 0)
    fp = np.maximum(0.6 * np.roll(f, 1, axis=2) + 0.4 * rng.normal(size=shape), 0)
    m = rng.normal(size=shape[:3] + (depth,))
    return [x.astype(dtype) for x in (f, fp, m)]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_reference(implementation, dtype, rng):
    tol = TOLERANCES[dtype]
    f, fp, m = relu_inputs(rng, dtype=dtype)
    for k, power in itertools.product(range(3), (1.0, 2.0, 4.0)):
        want_aligned, want_coef = numpy_match_trans(f, fp, m, k, power)
        aligned = ops.match_trans(f, fp, m, k=k, implementation=implementation,
                                  affinity_power=power)
        coef = ops.match_trans_coefficients(f, fp, k=k, implementation=implementation,
                                            affinity_power=power)
        msg = f"k={k} power={power}"
        assert aligned.dtype == dtype and coef.dtype == dtype
        np.testing.assert_allclose(coef.numpy(), want_coef, rtol=tol, atol=tol, err_msg=msg)
        np.testing.assert_allclose(aligned.numpy(), want_aligned, rtol=tol, atol=tol,
                                   err_msg=msg)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_float16_with_a_power(implementation, rng):
    f, fp, m = relu_inputs(rng, dtype=np.float16)
    want_aligned, want_coef = numpy_match_trans(f, fp, m, 2, 4.0)
    aligned = ops.match_trans(f, fp, m, k=2, implementation=implementation, affinity_power=4.0)
    coef = ops.match_trans_coefficients(f, fp, k=2, implementation=implementation,
                                        affinity_power=4.0)
    np.testing.assert_allclose(coef.numpy(), want_coef, atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(aligned.numpy(), want_aligned, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_power_one_is_the_authors_formula_bit_for_bit(implementation, rng):
    f, fp, m = relu_inputs(rng)
    default = ops.match_trans(f, fp, m, k=2, implementation=implementation).numpy()
    for power in (1.0, 1, np.float32(1.0)):
        explicit = ops.match_trans(f, fp, m, k=2, implementation=implementation,
                                   affinity_power=power).numpy()
        np.testing.assert_array_equal(explicit.view(np.uint32), default.view(np.uint32))
    # And the default is the authors' ReLU'd cosine (NumPy, no power).
    np.testing.assert_allclose(default, numpy_match_trans(f, fp, m, 2)[0], atol=1e-5)


def test_a_power_sharpens_flat_relu_coefficients(rng):
    f, fp, _ = relu_inputs(rng, shape=(1, 8, 8, 32))
    largest = [ops.match_trans_coefficients(f, fp, k=2, affinity_power=p).numpy().max(-1)
               [:, 2:-2, 2:-2].mean() for p in (1.0, 4.0, 16.0)]
    # ReLU features, frame t-1 one cell off plus noise: the largest of 25 weights is
    # about 0.09 at p = 1 (uniform: 0.04), about 0.4 at p = 4, about 0.9 at p = 16.
    assert largest[0] < 0.12 and 0.25 < largest[1] < 0.6 and largest[2] > 0.8


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_memory_gradient_uses_the_powered_coefficients(implementation, rng):
    f, fp, m = relu_inputs(rng, dtype=np.float64)
    upstream = rng.normal(size=m.shape)
    memory = tf.constant(m)
    with tf.GradientTape() as tape:
        tape.watch(memory)
        out = ops.match_trans(f, fp, memory, k=1, implementation=implementation,
                              affinity_power=3.0)
        loss = tf.reduce_sum(out * upstream)
    _, coef = numpy_match_trans(f, fp, m, 1, 3.0)
    np.testing.assert_allclose(tape.gradient(loss, memory).numpy(),
                               numpy_memory_gradient(coef, upstream, 1), atol=1e-10)


def test_op_and_twin_read_the_power_as_float32(rng):
    # The op's attr is a float: the Python entry rounds the power to float32 for both.
    f, fp, m = relu_inputs(rng, dtype=np.float64)
    got = [ops.match_trans(f, fp, m, k=1, implementation=i, affinity_power=0.3).numpy()
           for i in IMPLEMENTATIONS]
    np.testing.assert_allclose(got[0], got[1], atol=1e-12)
    want = numpy_match_trans(f, fp, m, 1, float(np.float32(0.3)))[0]
    np.testing.assert_allclose(got[0], want, atol=1e-12)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("power", [0.0, -1.0, float("nan"), float("inf"), True, "4", None])
def test_bad_power_is_refused_naming_it(implementation, power, rng):
    f, fp, m = relu_inputs(rng)
    with pytest.raises(ValueError, match="affinity_power must be a finite number > 0"):
        ops.match_trans(f, fp, m, k=1, implementation=implementation, affinity_power=power)
    with pytest.raises(ValueError, match="affinity_power must be a finite number > 0"):
        ops.match_trans_coefficients(f, fp, k=1, implementation=implementation,
                                     affinity_power=power)


@pytest.mark.parametrize("power", [0.0, -2.0, float("inf")])
def test_kernel_checks_the_power_attr(power, rng):
    f, fp, m = relu_inputs(rng)
    library = match_trans_module.load_library()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="affinity_power must be a finite number > 0"):
        library.stmn_match_trans(f, fp, m, k=1, affinity_power=power)


def test_twin_direct_call_checks_the_power(rng):
    f, fp, m = (tf.constant(x) for x in relu_inputs(rng))
    with pytest.raises(ValueError, match="affinity_power must be a finite number > 0, got 0"):
        match_trans_tf.match_trans(f, fp, m, 1, affinity_power=0)


def test_shifted_formulation_takes_the_power(rng):
    f, fp, m = relu_inputs(rng, dtype=np.float64)
    got = match_trans_tf.match_trans_shifted(tf.constant(f), tf.constant(fp), tf.constant(m),
                                             2, affinity_power=4.0)
    np.testing.assert_allclose(got.numpy(), numpy_match_trans(f, fp, m, 2, 4.0)[0],
                               atol=1e-10)
