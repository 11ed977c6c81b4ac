"""The STMM and ConvGRU recurrent layers: shapes, direction, state, graphs, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.layers import STMM, ConvGRU
from stmn_tf.ops import custom_op_available
from tests.layers import numpy_reference as ref
from tests.layers.numpy_reference import build_in_mixed_float16

C, F = 3, 2


def _built(cls=STMM, shape=(None, None, None, None, C), **kwargs):
    kwargs.setdefault("k", 1)  # a 3x3 window keeps the eager loops quick
    layer = cls(F, **kwargs)
    layer.build(shape)
    return layer


def _graph_ops(concrete_function):
    """Op types of a concrete function's graph and of the loop bodies inside it."""
    graph = concrete_function.graph
    top = [op.type for op in graph.get_operations()]
    inner = []
    for function in graph.as_graph_def().library.function:
        inner += [node.op for node in function.node_def]
    return top, inner


def test_functional_output_shapes():
    clips = keras.Input((None, None, None, C))
    assert STMM(F)(clips).shape == (None, None, None, None, F)
    assert STMM(F, return_sequences=False)(clips).shape == (None, None, None, F)
    output, memory, features = STMM(F, return_state=True)(clips)
    assert output.shape == (None, None, None, None, F)
    assert memory.shape == (None, None, None, F)
    assert features.shape == (None, None, None, C)
    assert ConvGRU(F)(keras.Input((4, 5, 6, C))).shape == (None, 4, 5, 6, F)


def test_go_backwards_matches_reference(rng):
    layer = _built(dtype="float64", go_backwards=True, implementation="tf")
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    clip = rng.normal(size=(2, 4, 3, 4, C))
    expected = ref.stmm_sequence(weights, clip, k=1, align=True, reverse=True)
    # keras.layers.RNN's convention: the sequence comes back in processing order.
    np.testing.assert_allclose(layer(clip).numpy(), expected[:, ::-1], atol=1e-9)
    last = _built(dtype="float64", go_backwards=True, return_sequences=False,
                  implementation="tf")
    last.set_weights(layer.get_weights())
    np.testing.assert_allclose(last(clip).numpy(), expected[:, 0], atol=1e-9)


def test_streaming_with_returned_state_equals_one_pass(rng):
    layer = _built(return_state=True, implementation="tf")
    clip = rng.normal(size=(1, 5, 4, 4, C)).astype("float32")
    whole, memory, last = layer(clip)
    first, state_memory, state_features = layer(clip[:, :2])
    second, _, _ = layer(clip[:, 2:], initial_state=[state_memory, state_features])
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, atol=1e-6)
    np.testing.assert_array_equal(last.numpy(), clip[:, -1])
    # Restarting from the memory alone (F_{t-1} = F_t) is a different computation.
    restarted, _, _ = layer(clip[:, 2:], initial_state=state_memory)
    assert np.abs(restarted - second).max() > 1e-4


def test_variable_sizes_in_one_graph_with_a_loop(rng):
    layer = _built(implementation="tf")
    function = tf.function(
        layer, input_signature=[tf.TensorSpec((None, None, None, None, C), tf.float32)]
    )
    for shape in [(1, 2, 3, 4, C), (2, 5, 6, 3, C), (1, 1, 2, 2, C)]:
        clip = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(function(clip), layer(clip), atol=1e-6)
    concrete = function.get_concrete_function()
    assert len(function._list_all_concrete_functions()) == 1
    top, inner = _graph_ops(concrete)
    # One symbolic loop (not unrolled), and W, W_z, W_r of all frames in ONE conv
    # before it: the loop body holds only the three U convs.
    assert {"While", "StatelessWhile"} & set(top)
    assert top.count("Conv2D") == 1
    assert inner.count("Conv2D") == 3


def test_xla_with_pure_tf_twin(rng):
    layer = _built(k=2, implementation="tf")
    compiled = tf.function(layer, jit_compile=True)
    clip = rng.normal(size=(2, 3, 5, 4, C)).astype("float32")
    np.testing.assert_allclose(compiled(clip), layer(clip), atol=1e-5)


@pytest.mark.skipif(not custom_op_available(), reason="MatchTrans op not built")
def test_custom_op_and_twin_agree(rng):
    twin = _built(implementation="tf")
    op = _built(implementation="custom_op")
    op.set_weights(twin.get_weights())
    clip = rng.normal(size=(2, 4, 5, 6, C)).astype("float32")
    np.testing.assert_allclose(op(clip), twin(clip), atol=1e-5)


def test_mixed_float16(rng):
    clip = rng.normal(size=(2, 3, 5, 5, C)).astype("float32")
    reference = _built()
    layer = build_in_mixed_float16(_built)
    layer.set_weights(reference.get_weights())
    assert layer.cell.conv_u.kernel.dtype == "float32"
    output = layer(clip)
    assert output.dtype == "float16"
    np.testing.assert_allclose(
        np.asarray(output, np.float32), reference(clip), atol=2e-2, rtol=2e-2
    )


def test_empty_batch():
    output = _built(implementation="tf")(np.zeros((0, 3, 4, 4, C), "float32"))
    assert output.shape == (0, 3, 4, 4, F)


@pytest.mark.parametrize("cls", [STMM, ConvGRU])
def test_config_round_trip(cls, rng):
    layer = cls(F, kernel_size=1, k=1, align=False, input_scale=2.0, go_backwards=True,
                return_sequences=False, implementation="tf", name="memory")
    config = layer.get_config()
    assert "cell" not in config and config["go_backwards"] and not config["return_sequences"]
    assert config["implementation"] == "tf" and config["input_scale"] == 2.0
    clone = cls.from_config(config)
    assert isinstance(clone.cell, type(layer.cell)) and clone.name == "memory"
    assert clone.cell.kernel_size == 1 and clone.cell.align is False
    clip = rng.normal(size=(1, 3, 4, 4, C)).astype("float32")
    layer.build(clip.shape)
    clone.build(clip.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(clip), clone(clip))


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"rank 5 \[B, T, H, W, C\]"):
        STMM(F).build((None, 4, 4, C))
