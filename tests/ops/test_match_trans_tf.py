"""The pure-TF MatchTrans (banded matmuls) against a NumPy reference written here."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.ops import match_trans_tf


def reference(features, prev_features, prev_memory, k):
    """(coefficients [B, H, W, (2k+1)^2], aligned [B, H, W, D]), in float64, by loops."""
    b, h, w, _ = features.shape
    side = 2 * k + 1
    coef = np.zeros((b, h, w, side * side))
    out = np.zeros(prev_memory.shape[:3] + prev_memory.shape[3:])
    f = features.astype(np.float64)
    g = prev_features.astype(np.float64)
    m = prev_memory.astype(np.float64)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                a = np.zeros(side * side)
                for dy in range(-k, k + 1):
                    for dx in range(-k, k + 1):
                        qy, qx = y + dy, x + dx
                        if 0 <= qy < h and 0 <= qx < w:  # out-of-map neighbours skipped
                            cos = f[n, y, x] @ g[n, qy, qx] / (
                                (np.linalg.norm(f[n, y, x]) + 1e-8)
                                * (np.linalg.norm(g[n, qy, qx]) + 1e-8))
                            a[(dy + k) * side + dx + k] = max(0.0, cos)
                if a.sum() >= 1e-7:
                    coef[n, y, x] = a / a.sum()
                else:
                    coef[n, y, x, k * side + k] = 1.0
                for dy in range(-k, k + 1):
                    for dx in range(-k, k + 1):
                        qy, qx = y + dy, x + dx
                        if 0 <= qy < h and 0 <= qx < w:
                            out[n, y, x] += coef[n, y, x, (dy + k) * side + dx + k] * m[n, qy, qx]
    return coef, out


def make_inputs(rng, b, h, w, c, d, dtype=np.float32, zero_fraction=0.0):
    f = rng.normal(size=(b, h, w, c))
    # Correlated with a shifted copy, so that many affinities are positive.
    fp = 0.7 * np.roll(f, 1, axis=2) + 0.3 * rng.normal(size=f.shape)
    m = rng.normal(size=(b, h, w, d))
    if zero_fraction:
        f[rng.random(f.shape[:3]) < zero_fraction] = 0.0
        fp[rng.random(fp.shape[:3]) < zero_fraction] = 0.0
    return f.astype(dtype), fp.astype(dtype), m.astype(dtype)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_against_reference(seed):
    rng = np.random.default_rng(seed)
    k = seed % 4  # 0..3
    b, h, w = rng.integers(1, 3), rng.integers(1, 9), rng.integers(1, 11)
    c, d = rng.integers(1, 7), rng.integers(1, 5)
    tile = [None, 1, 3, 4, 8, 16][seed]
    f, fp, m = make_inputs(rng, b, h, w, c, d, zero_fraction=0.2)
    coef, out = reference(f, fp, m, k)
    got = match_trans_tf.match_trans(tf.constant(f), tf.constant(fp), tf.constant(m), k, tile)
    np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-5)
    got_coef = match_trans_tf.coefficients(tf.constant(f), tf.constant(fp), k, tile)
    np.testing.assert_allclose(got_coef, coef, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k, shape",
                         [(2, (1, 2, 3)), (3, (2, 1, 4)), (3, (1, 5, 1)), (2, (1, 1, 1))])
def test_maps_smaller_than_the_window(k, shape):
    rng = np.random.default_rng(7)
    f, fp, m = make_inputs(rng, *shape, 5, 3)
    coef, out = reference(f, fp, m, k)
    np.testing.assert_allclose(match_trans_tf.match_trans(f, fp, m, k), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(match_trans_tf.coefficients(f, fp, k), coef, rtol=1e-5, atol=1e-6)


def test_zero_vectors_fall_back_to_identity():
    rng = np.random.default_rng(3)
    f, fp, m = make_inputs(rng, 2, 4, 6, 4, 3)
    f[0, 1, 2] = 0.0  # a zero feature: every cosine is 0
    fp[1] = 0.0  # a whole zero frame
    got = match_trans_tf.match_trans(f, fp, m, 2).numpy()
    np.testing.assert_array_equal(got[0, 1, 2], m[0, 1, 2])
    np.testing.assert_array_equal(got[1], m[1])
    coef = match_trans_tf.coefficients(f, fp, 2).numpy()
    np.testing.assert_array_equal(coef[0, 1, 2], np.eye(25)[12])


def test_matches_the_shifted_formulation():
    rng = np.random.default_rng(5)
    f, fp, m = make_inputs(rng, 2, 7, 13, 16, 6)
    np.testing.assert_allclose(match_trans_tf.match_trans(f, fp, m, 2),
                               match_trans_tf.match_trans_shifted(f, fp, m, 2),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_memory_gradient_is_exact_float64(k):
    rng = np.random.default_rng(11 + k)
    f, fp, m = make_inputs(rng, 2, 3, 5, 3, 2, dtype=np.float64, zero_fraction=0.1)

    @tf.function  # compute_gradient calls it once per input element and direction
    def fn(memory):
        return match_trans_tf.match_trans(f, fp, memory, k, tile=4)

    theoretical, numerical = tf.test.compute_gradient(fn, [tf.constant(m)])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-7, atol=1e-9)
    # The Jacobian is the coefficients: d out(p) / d memory(q) = c(p, q - p).
    coef, _ = reference(f, fp, m, k)
    b, h, w, d = m.shape
    side = 2 * k + 1
    jacobian = np.zeros((b, h, w, d, b, h, w, d))
    for n, y, x in np.ndindex(b, h, w):
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    jacobian[n, y, x, :, n, y + dy, x + dx, :] += (
                        coef[n, y, x, (dy + k) * side + dx + k] * np.eye(d))
    np.testing.assert_allclose(theoretical[0], jacobian.reshape(m.size, m.size), atol=1e-12)


def test_no_gradient_to_the_features():
    rng = np.random.default_rng(2)
    f, fp, m = (tf.Variable(x) for x in make_inputs(rng, 1, 3, 4, 3, 2))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(match_trans_tf.match_trans(f, fp, m, 1) ** 2)
    gf, gfp, gm = tape.gradient(y, [f, fp, m])
    assert gf is None and gfp is None
    assert np.abs(gm.numpy()).sum() > 0


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dynamic_shapes_with_and_without_xla(jit):
    rng = np.random.default_rng(4)
    spec = [tf.TensorSpec([None, None, None, 6]), tf.TensorSpec([None, None, None, 6]),
            tf.TensorSpec([None, None, None, 3])]

    def run(f, fp, m):
        with tf.GradientTape() as tape:
            tape.watch(m)
            out = match_trans_tf.match_trans(f, fp, m, 2)
        return out, tape.gradient(out, m, output_gradients=out)

    fn = tf.function(run, input_signature=spec, jit_compile=jit)
    for shape in [(2, 5, 9), (1, 3, 2), (3, 4, 17)]:  # one trace, several shapes
        f, fp, m = make_inputs(rng, *shape, 6, 3)
        out, grad = fn(f, fp, m)
        coef, expected = reference(f, fp, m, 2)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        # The gradient for upstream `out`: the transposed window applied to `out`.
        b, h, w, _ = f.shape
        want = np.zeros_like(expected)
        for n, y, x in np.ndindex(b, h, w):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        weight = coef[n, y, x, (dy + 2) * 5 + dx + 2]
                        want[n, y + dy, x + dx] += weight * expected[n, y, x]
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)
    if not jit:
        graph = fn.get_concrete_function().graph.as_graph_def()
        op_types = {node.op for node in graph.node}
        op_types |= {node.op for fn_def in graph.library.function for node in fn_def.node_def}
        assert not [t for t in op_types if t.startswith("Stmn>")]
        assert "BatchMatMulV2" in op_types  # the banded products


@pytest.mark.parametrize("dtype, tolerance", [(np.float16, 2e-2), (np.float64, 1e-10)])
def test_dtypes(dtype, tolerance):
    rng = np.random.default_rng(6)
    f, fp, m = make_inputs(rng, 1, 5, 6, 8, 3)
    _, expected = reference(f.astype(dtype), fp.astype(dtype), m.astype(dtype), 2)
    got = match_trans_tf.match_trans(f.astype(dtype), fp.astype(dtype), m.astype(dtype), 2)
    assert got.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected, rtol=tolerance,
                               atol=tolerance)


def test_band_tables_by_hand():
    """Tiles of 1 x 2 cells, k 1: query ix meets offset (dy, dx) at cell (dy + 1,
    ix + dx + 1) of the 3 x 4 neighbour tile; 2 x 1 cells, k 0: each meets itself."""
    read, write = match_trans_tf._band_tables(1, 2, 1)
    np.testing.assert_array_equal(read, [[0, 1, 2, 4, 5, 6, 8, 9, 10],
                                         [13, 14, 15, 17, 18, 19, 21, 22, 23]])
    np.testing.assert_array_equal(write, [[0, 1, 2, 18, 3, 4, 5, 18, 6, 7, 8, 18],
                                          [18, 9, 10, 11, 18, 12, 13, 14, 18, 15, 16, 17]])
    read, write = match_trans_tf._band_tables(2, 1, 0)
    np.testing.assert_array_equal(read, [[0], [3]])
    np.testing.assert_array_equal(write, [[0, 2], [2, 1]])


@pytest.mark.parametrize("tile", [0, -2, 2.5, True])
def test_bad_tile(tile):
    with pytest.raises(ValueError, match=f"tile must be a positive integer, got {tile!r}"):
        match_trans_tf.tile_width(2, tile)


def test_tile_width_covers_k():
    assert match_trans_tf.tile_width(3, 2) == 3
    assert match_trans_tf.tile_width(2) == match_trans_tf.DEFAULT_TILE
