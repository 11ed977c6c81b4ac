"""A model trained with `memory.feature_gradient` traces with the compiled op."""

import os

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.configs import load_config
from stmn_tf.models.builders import build_model
from stmn_tf.ops.match_trans_op import _LIBRARY_PATH
from stmn_tf.serving.export import tracing
from tests.serving.conftest import CONFIG


def traced_op_types(model, clip):
    function = tf.function(lambda images: model.memory({"images": images}))
    graph = function.get_concrete_function(tf.TensorSpec(clip.shape, tf.float32)).graph
    types = {op.type for op in graph.get_operations()}
    for function_def in graph.as_graph_def().library.function:
        types.update(node.op for node in function_def.node_def)
    return types


def test_a_feature_gradient_model_traces_with_the_op_and_keeps_its_option():
    if not os.path.exists(_LIBRARY_PATH):
        pytest.skip("the MatchTrans op library is not built (make install)")
    # The compiled op has no offset prior (the tiny config's default).
    config = load_config(CONFIG, "model.memory.feature_gradient=true,model.memory.offset_prior=false")
    model = build_model(config.model)
    clip = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 64, 3)).astype(np.float32)
    model.memory({"images": tf.constant(clip)})  # builds the weights
    assert all(cell.feature_gradient for cell in model.memory_cells())
    # The compiled op refuses the option outside an inference trace.
    model.set_match_trans_implementation("custom_op")
    with pytest.raises(ValueError, match="feature_gradient"):
        model.memory({"images": tf.constant(clip)})
    model.set_match_trans_implementation("auto")

    with tracing(model, match_trans="custom_op"):
        assert not any(cell.feature_gradient for cell in model.memory_cells())
        types = traced_op_types(model, clip)
    assert "Stmn>MatchTrans" in types
    # Restored for training.
    assert [c.feature_gradient for c in model.memory_cells()] == [True, True]
    assert [c.implementation for c in model.memory_cells()] == ["auto", "auto"]
