"""A model with a learned MatchTrans offset prior exports portable, with the prior's
values, and is refused with a clear error for the compiled op."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.configs import load_config
from stmn_tf.models.builders import build_model
from stmn_tf.serving.export import ExportError
from stmn_tf.serving.export import tracing
from tests.serving.conftest import CONFIG


def test_portable_trace_computes_the_prior_and_the_op_is_refused():
    config = load_config(CONFIG, "model.memory.offset_prior=true")
    model = build_model(config.model)
    clip = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 64, 3)), tf.float32)
    plain = model.memory({"images": clip}).numpy()  # builds the weights, zero prior
    cells = model.memory_cells()
    assert all(cell.offset_log_prior() is not None for cell in cells)
    rng = np.random.default_rng(1)
    for cell in cells:
        cell.set_offset_log_prior(rng.normal(size=25) * 3.0)
    eager = model.memory({"images": clip}).numpy()
    assert np.abs(eager - plain).max() > 1e-4  # the prior changes the memory

    with pytest.raises(ExportError, match="offset prior.*without --custom-op"):
        with tracing(model, match_trans="custom_op"):
            pass
    assert [c.implementation for c in cells] == ["auto", "auto"]
    with tracing(model, match_trans="tf"):
        traced = tf.function(lambda images: model.memory({"images": images}))
        np.testing.assert_allclose(traced(clip).numpy(), eager, rtol=1e-5, atol=1e-5)
