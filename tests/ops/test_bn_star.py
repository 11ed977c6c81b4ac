"""BN* against a NumPy reference (paper Sec. 3.2, as the authors implemented it)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.ops import bn_star
from stmn_tf.ops.bn_star_op import bn_star_upper_bound
from tests.layers.numpy_reference import bn_star as bn_star_reference


def test_small_case_by_hand():
    # Positives 1, 2, 3, 10: mean 4, unbiased std sqrt(50 / 3) = 4.082; with K = 1,
    # ub = 8.082: 10 saturates at 1, negatives and zeros give 0.
    x = np.array([[-1.0, 0.0, 1.0], [2.0, 3.0, 10.0], [-5.0, -2.0, 0.0]], np.float32)
    y = bn_star(x[None, ..., None], std_multiplier=1.0).numpy()[0, ..., 0]
    ub = 4.0 + np.sqrt(50.0 / 3.0)
    expected = [[0.0, 0.0, 1 / ub], [2 / ub, 3 / ub, 1.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize("case", ["random", "all_negative", "single_positive", "outlier",
                                  "two_equal", "zeros"])
def test_matches_numpy_reference(case, rng):
    x = rng.normal(size=(2, 5, 6, 3))
    if case == "all_negative":
        x = -np.abs(x) - 0.1
    elif case == "single_positive":
        x = -np.abs(x)
        x[1, 2, 3, 1] = 0.7
    elif case == "outlier":
        x[0, 0, 0, 0] = 1e6
    elif case == "two_equal":
        x = -np.abs(x)
        x[0, 0, 0, 0] = x[1, 1, 1, 1] = 2.0  # std 0: ub = mean, both map to 1
    elif case == "zeros":
        x = np.zeros_like(x)
    for dtype in ("float32", "float64"):
        got = bn_star(tf.constant(x, dtype)).numpy()
        expected, ub = bn_star_reference(x.astype(dtype))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert got.dtype == dtype
    if case in ("all_negative", "single_positive", "zeros"):
        assert ub == 1.0
        # ub = 1: a single positive entry is clipped to [0, 1], not normalised.
        np.testing.assert_array_equal(got, np.clip(x, 0, 1))
    if case == "outlier":
        # The outlier pulls ub up: every other entry is squashed far below 1.
        assert got[0, 0, 0, 0] == pytest.approx(1.0)
        assert np.sort(got.ravel())[-2] < 0.01


def test_output_in_unit_interval_and_saturates(rng):
    x = rng.gamma(1.0, size=(3, 8, 8, 4)) * 5.0
    y = bn_star(x, std_multiplier=1.0).numpy()
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.mean(y == 1.0) > 0.01  # entries above mean + 1 std saturate


def test_non_finite_statistics_fall_back_to_one():
    x = np.array([1.0, 2.0, np.inf, -3.0], np.float32)
    assert float(bn_star_upper_bound(x)) == 1.0
    np.testing.assert_array_equal(bn_star(x).numpy(), [1.0, 1.0, 1.0, 0.0])
    # Float32 overflow of the variance of finite inputs.
    big = np.array([3e38, 1.0, 2.0], np.float32)
    assert float(bn_star_upper_bound(big)) == 1.0


def test_gradient_treats_bound_as_constant(rng):
    x = tf.constant(rng.normal(size=(2, 4, 4, 3)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bn_star(x)
    weights = tf.constant(rng.normal(size=(2, 4, 4, 3)))
    grad = tape.gradient(y, x, output_gradients=weights).numpy()
    _, ub = bn_star_reference(x.numpy())
    inside = (x.numpy() > 0) & (x.numpy() < ub)
    np.testing.assert_allclose(grad, np.where(inside, weights.numpy() / ub, 0.0), rtol=1e-10)


def test_float16_statistics_in_float32():
    # 40,000 entries of 100: their float16 sum (4e6) overflows float16 (max 65504).
    x = np.full((1, 200, 200, 1), 100.0, np.float16)
    x[0, 0, 0, 0] = 400.0
    y = bn_star(tf.constant(x))
    assert y.dtype == tf.float16
    expected, _ = bn_star_reference(x.astype(np.float64))
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, atol=2e-3)
    assert np.all(np.isfinite(y.numpy()))


def test_empty_input():
    y = bn_star(tf.zeros((0, 4, 4, 2)))
    assert y.shape == (0, 4, 4, 2)


def test_rejects_integers():
    with pytest.raises(ValueError, match="float tensor"):
        bn_star(tf.constant([1, 2, 3]))


def test_xla_matches_eager(rng):
    x = tf.constant(rng.normal(size=(2, 5, 5, 3)), tf.float32)
    compiled = tf.function(lambda v: bn_star(v, 2.0), jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), bn_star(x, 2.0).numpy(), rtol=1e-6)


def test_layer_round_trip(rng):
    from stmn_tf.layers import BNStar

    layer = BNStar(std_multiplier=2.5, name="gates")
    clone = BNStar.from_config(layer.get_config())
    x = rng.normal(size=(2, 3, 3, 2)).astype("float32")
    assert clone.std_multiplier == 2.5
    np.testing.assert_array_equal(layer(x).numpy(), clone(x).numpy())
    expected, _ = bn_star_reference(x, 2.5)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5)
    assert layer.compute_output_shape((None, 3, 3, 2)) == (None, 3, 3, 2)
    assert keras.saving.get_registered_name(BNStar) == "stmn_tf>BNStar"
