"""MatchTrans: the compiled op and the pure-TF twin against a NumPy reference."""

import importlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops
from tests.ops.match_trans_reference import numpy_match_trans

# The module, not the function of the same name that stmn_tf.ops exports.
match_trans_module = importlib.import_module("stmn_tf.ops.match_trans_op")

IMPLEMENTATIONS = ["custom_op", "tf"]


def random_inputs(rng, b, h, w, c, d, dtype=np.float32):
    f = rng.normal(size=(b, h, w, c)).astype(dtype)
    fp = rng.normal(size=(b, h, w, c)).astype(dtype)
    m = rng.normal(size=(b, h, w, d)).astype(dtype)
    return f, fp, m


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "k, shape",
    [
        (0, (1, 3, 4, 5, 2)),
        (1, (2, 4, 5, 6, 3)),
        (2, (2, 5, 7, 8, 4)),
        (3, (1, 6, 5, 3, 5)),
        (2, (1, 2, 3, 4, 3)),  # map smaller than the 5x5 window
        (3, (1, 1, 1, 4, 2)),  # a single position
    ],
)
def test_matches_reference(implementation, k, shape, rng):
    f, fp, m = random_inputs(rng, *shape)
    # Correlate the two frames a little so that many affinities are positive.
    fp = (0.7 * np.roll(f, 1, axis=2) + 0.3 * fp).astype(np.float32)
    got = ops.match_trans(f, fp, m, k=k, implementation=implementation)
    np.testing.assert_allclose(got, numpy_match_trans(f, fp, m, k)[0], rtol=1e-5, atol=1e-5)
    coef = ops.match_trans_coefficients(f, fp, k=k, implementation=implementation)
    np.testing.assert_allclose(coef, numpy_match_trans(f, fp, m, k)[1], rtol=1e-5, atol=1e-6)


def test_hand_computed_shift():
    """A 1x3 map whose content moved one cell right: the memory follows it."""
    e0, e1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    prev = np.stack([e0, e1, e0])[None, None]  # [1, 1, 3, 2]
    cur = np.stack([e1, e0, e1])[None, None]  # shifted by one cell
    memory = np.array([10.0, 20.0, 30.0]).reshape(1, 1, 3, 1)
    # Position 0 (e1) matches prev cell 1 only: memory 20. Position 1 (e0) matches
    # cells 0 and 2 equally: (10 + 30) / 2. Position 2 (e1) matches cell 1: 20.
    expected = np.array([20.0, 20.0, 20.0]).reshape(1, 1, 3, 1)
    for implementation in IMPLEMENTATIONS:
        got = ops.match_trans(cur, prev, memory, k=1, implementation=implementation)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        coef = ops.match_trans_coefficients(cur, prev, k=1, implementation=implementation)
        # Offsets in a 3x3 window, row-major: (0, -1) is 3, (0, 0) is 4, (0, 1) is 5.
        np.testing.assert_allclose(coef[0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0, 0], atol=1e-7)
        np.testing.assert_allclose(coef[0, 0, 1], [0, 0, 0, 0.5, 0, 0.5, 0, 0, 0], atol=1e-7)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_and_opposite_features_fall_back_to_identity(implementation, rng):
    f, fp, m = random_inputs(rng, 1, 4, 4, 3, 2)
    f[0, 1, 1] = 0.0  # zero vector: no positive affinity
    fp = -np.broadcast_to(f[:, :1, :1], fp.shape).copy()  # all neighbours opposite to f[0,0,0]
    got = ops.match_trans(f, fp, m, k=1, implementation=implementation).numpy()
    np.testing.assert_allclose(got[0, 1, 1], m[0, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(got[0, 0, 0], m[0, 0, 0], rtol=1e-6)
    coef = ops.match_trans_coefficients(f, fp, k=1, implementation=implementation).numpy()
    np.testing.assert_array_equal(coef[0, 1, 1], np.eye(9)[4])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_coefficients_are_normalised_and_zero_outside(implementation, rng):
    f, fp, _ = random_inputs(rng, 2, 5, 6, 4, 1)
    coef = ops.match_trans_coefficients(f, fp, k=2, implementation=implementation).numpy()
    np.testing.assert_allclose(coef.sum(-1), 1.0, rtol=1e-5)
    assert (coef >= 0).all()
    # Top-left corner: offsets with dy < 0 or dx < 0 are out of bounds.
    corner = coef[:, 0, 0].reshape(2, 5, 5)
    assert (corner[:, :2, :] == 0).all() and (corner[:, :, :2] == 0).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_memory_gradient_is_exact(implementation, rng):
    f, fp, m = random_inputs(rng, 2, 3, 4, 3, 2, dtype=np.float64)
    fp = 0.6 * np.roll(f, 1, axis=1) + 0.4 * fp

    @tf.function  # compute_gradient calls it once per input element and direction
    def fn(memory):
        return ops.match_trans(f, fp, memory, k=2, implementation=implementation)

    theoretical, numerical = tf.test.compute_gradient(fn, [tf.constant(m)])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_no_gradient_to_features(implementation, rng):
    f, fp, m = (tf.Variable(x) for x in random_inputs(rng, 1, 3, 4, 3, 2))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(ops.match_trans(f, fp, m, k=1, implementation=implementation) ** 2)
    gf, gfp, gm = tape.gradient(y, [f, fp, m])
    assert gf is None and gfp is None
    assert gm is not None and np.abs(gm.numpy()).sum() > 0


def test_implementations_agree_on_gradient(rng):
    f, fp, m = random_inputs(rng, 2, 6, 7, 8, 5)
    weights = rng.normal(size=m.shape).astype(np.float32)
    grads = []
    for implementation in IMPLEMENTATIONS:
        mv = tf.Variable(m)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(ops.match_trans(f, fp, mv, implementation=implementation) * weights)
        grads.append(tape.gradient(y, mv).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_float16_within_tolerance(implementation, rng):
    f, fp, m = random_inputs(rng, 1, 5, 6, 16, 4)
    fp = 0.5 * f + 0.5 * fp
    got = ops.match_trans(f.astype(np.float16), fp.astype(np.float16), m.astype(np.float16),
                          implementation=implementation)
    assert got.dtype == tf.float16
    np.testing.assert_allclose(got.numpy().astype(np.float32),
                               numpy_match_trans(f, fp, m, 2)[0], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch(implementation):
    f = np.zeros((0, 4, 5, 3), np.float32)
    m = np.zeros((0, 4, 5, 2), np.float32)
    got = ops.match_trans(f, f, m, implementation=implementation)
    assert got.shape == (0, 4, 5, 2)
    coef = ops.match_trans_coefficients(f, f, k=1, implementation=implementation)
    assert coef.shape == (0, 4, 5, 9)


BAD_INPUTS = [
    # (features shape, prev_features shape, prev_memory shape, k, message)
    ((4, 5, 3), (1, 4, 5, 3), (1, 4, 5, 2), 2, r"features must be rank 4.*\[4,5,3\]"),
    ((1, 4, 5, 3), (1, 4, 5, 3, 1), (1, 4, 5, 2), 2, r"prev_features must be rank 4"),
    ((1, 4, 5, 3), (1, 4, 5, 3), (4, 5, 2), 2, r"prev_memory must be rank 4"),
    ((1, 4, 5, 3), (2, 4, 5, 3), (1, 4, 5, 2), 2, r"agree in batch, height and width"),
    ((1, 4, 5, 3), (1, 4, 5, 3), (1, 4, 6, 2), 2, r"agree in batch, height and width"),
    ((1, 4, 5, 3), (1, 4, 5, 4), (1, 4, 5, 2), 2, r"same depth.*\[1,4,5,3\].*\[1,4,5,4\]"),
    ((1, 4, 5, 3), (1, 4, 5, 3), (1, 4, 5, 2), -1, r"k must be .*>= 0, got -1"),
]


@pytest.mark.parametrize("f_shape, fp_shape, m_shape, k, message", BAD_INPUTS)
def test_bad_input_python_api(f_shape, fp_shape, m_shape, k, message):
    args = [np.ones(s, np.float32) for s in (f_shape, fp_shape, m_shape)]
    for implementation in IMPLEMENTATIONS:
        with pytest.raises(ValueError, match=message):
            ops.match_trans(*args, k=k, implementation=implementation)


@pytest.mark.parametrize("f_shape, fp_shape, m_shape, k, message", BAD_INPUTS)
def test_bad_input_kernel(f_shape, fp_shape, m_shape, k, message):
    """The kernel itself refuses bad input with a message (eager: no shape function)."""
    library = ops.load_library()
    args = [tf.ones(s, tf.float32) for s in (f_shape, fp_shape, m_shape)]
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        library.stmn_match_trans(*args, k=k)


def test_bad_input_shape_function():
    """Inside tf.function the shape function refuses bad static shapes."""
    library = ops.load_library()

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 5, 3]), tf.TensorSpec([1, 4, 5, 4]),
                                  tf.TensorSpec([1, 4, 5, 2])])
    def bad(f, fp, m):
        return library.stmn_match_trans(f, fp, m, k=2)

    with pytest.raises(ValueError, match=r"same depth"):
        bad.get_concrete_function()


def test_gradient_op_checks_coefficients():
    library = ops.load_library()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coefficients must be \[B, H, W, 25\]"):
        library.stmn_match_trans_grad(tf.ones([1, 2, 2, 9]), tf.ones([1, 2, 2, 3]), k=2)


def test_static_shapes_inside_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, 6, 7, 8]), tf.TensorSpec([None, 6, 7, 8]),
                                  tf.TensorSpec([None, 6, 7, 3])])
    def run(f, fp, m):
        aligned = ops.match_trans(f, fp, m, k=2, implementation="custom_op")
        coef = ops.match_trans_coefficients(f, fp, k=2, implementation="custom_op")
        assert aligned.shape.as_list() == [None, 6, 7, 3]
        assert coef.shape.as_list() == [None, 6, 7, 25]
        return aligned

    concrete = run.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, 6, 7, 3]


def test_tf_twin_compiles_with_xla(rng):
    f, fp, m = random_inputs(rng, 1, 5, 6, 4, 3)
    fn = tf.function(lambda a, b, c: ops.match_trans(a, b, c, implementation="tf"),
                     jit_compile=True)
    np.testing.assert_allclose(fn(f, fp, m), numpy_match_trans(f, fp, m, 2)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_tf_twin_in_graph_keeps_dtype(dtype, rng):
    f, fp, m = (x.astype(dtype) for x in random_inputs(rng, 1, 4, 5, 6, 3))
    fn = tf.function(lambda a, b, c: ops.match_trans(a, b, c, implementation="tf"))
    got = fn(f, fp, m)
    assert got.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(got.numpy().astype(np.float64),
                               numpy_match_trans(f, fp, m, 2)[0], rtol=2e-2, atol=2e-2)


def test_invalid_implementation_and_k():
    x = np.ones((1, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="implementation must be one of"):
        ops.match_trans(x, x, x, implementation="cuda")
    with pytest.raises(ValueError, match="k must be an integer"):
        ops.match_trans(x, x, x, k=1.5)


def test_missing_library_message(monkeypatch):
    monkeypatch.setattr(match_trans_module, "_LIBRARY_PATH", "/nonexistent/_match_trans_ops.so")
    monkeypatch.setattr(match_trans_module, "_library", None)
    monkeypatch.setattr(match_trans_module, "_load_error", None)
    monkeypatch.setattr(match_trans_module, "_warned", False)
    with pytest.raises(match_trans_module.OpLibraryError, match="make install"):
        ops.load_library()
    x = np.ones((1, 2, 2, 1), np.float32)
    with pytest.warns(RuntimeWarning, match="pure-TF implementation"):
        got = ops.match_trans(x, x, x, implementation="auto")
    np.testing.assert_allclose(got, x)


class _AlignLayer(keras.layers.Layer):
    """A user's layer: aligns a learned memory map to the input with the op."""

    def build(self, input_shape):
        self.memory = self.add_weight(shape=(1, input_shape[1], input_shape[2], 2),
                                      initializer="zeros")

    def call(self, x):
        memory = keras.ops.tile(self.memory, [keras.ops.shape(x)[0], 1, 1, 1])
        return ops.match_trans(x, keras.ops.roll(x, 1, axis=2), memory, k=1,
                               implementation="custom_op")


def test_op_inside_keras_model_fit(rng):
    x = rng.normal(size=(16, 4, 5, 3)).astype(np.float32)
    y = rng.normal(size=(16, 4, 5, 2)).astype(np.float32)
    inputs = keras.Input((4, 5, 3))
    model = keras.Model(inputs, _AlignLayer()(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_library_exists_and_reports_build():
    """make install built the library; the stamp says whether CUDA kernels are in it."""
    path = match_trans_module._LIBRARY_PATH
    assert os.path.exists(path)
    assert os.path.exists(path + ".cpu") or os.path.exists(path + ".cuda")


@pytest.mark.slow
def test_independent_process_without_tf_function_cache(tmp_path):
    """The op loads and runs in a fresh process (no state from this test session)."""
    code = (
        "import numpy as np; from stmn_tf import ops;"
        "x = np.random.default_rng(0).normal(size=(1, 3, 3, 4)).astype('float32');"
        "a = ops.match_trans(x, x, x, implementation='custom_op');"
        "b = ops.match_trans(x, x, x, implementation='tf');"
        "print(float(np.abs(a - b).max()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5


def test_public_names_are_the_functions_after_importing_everything():
    """The public op names stay functions after importing layers or models (no module shadows them)."""
    import stmn_tf.layers  # noqa: F401  (imports the op modules)
    import stmn_tf.ops

    assert callable(stmn_tf.ops.match_trans) and callable(stmn_tf.ops.bn_star)
    assert callable(stmn_tf.ops.match_trans_coefficients)
