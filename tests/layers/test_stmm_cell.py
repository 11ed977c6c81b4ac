"""STMMCell and ConvGRUCell against the NumPy reference of Eqs. 1-4 (the authors' version)."""

import importlib

import keras
import numpy as np
import pytest

from stmn_tf.layers import STMM, ConvGRU, ConvGRUCell, STMMCell
from stmn_tf.ops import custom_op_available
from tests.layers import numpy_reference as ref

IMPLEMENTATIONS = ["tf"] + (["custom_op"] if custom_op_available() else [])
B, H, W, C, F = 2, 4, 5, 3, 2


def _cell(cls, dtype="float64", **kwargs):
    cell = cls(F, dtype=dtype, **kwargs)
    cell.build((None, H, W, C))
    return cell


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("align", [True, False])
def test_one_step_matches_reference(align, implementation, rng):
    cell = _cell(STMMCell, k=1, align=align, input_scale=2.0, std_multiplier=2.0,
                 implementation=implementation)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(cell, weights)
    features = rng.normal(size=(B, H, W, C))
    prev_features = rng.normal(size=(B, H, W, C))
    memory = np.abs(rng.normal(size=(B, H, W, F)))
    got, (state_memory, state_features) = cell(features, [memory, prev_features])
    expected, z, r = ref.stmm_step(weights, features, prev_features, memory, k=1,
                                   align=align, scale=2.0, std_multiplier=2.0)
    # The case must exercise the gates: neither all closed nor all saturated.
    assert 0.0 < z.mean() < 1.0 and 0.0 < r.mean() < 1.0
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(state_memory.numpy(), got.numpy())
    np.testing.assert_array_equal(state_features.numpy(), features)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("align", [True, False])
def test_three_steps_match_reference(align, implementation, rng):
    layer = STMM(F, k=2, align=align, implementation=implementation, dtype="float64")
    clip = rng.normal(size=(B, 3, H, W, C))
    layer.build(clip.shape)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    got = layer(clip).numpy()
    expected = ref.stmm_sequence(weights, clip, k=2, align=align)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # Alignment must matter on this case, or the test could not tell it apart.
    other = ref.stmm_sequence(weights, clip, k=2, align=not align)
    assert np.abs(other - expected).max() > 1e-3


def test_float32_matches_reference(rng):
    layer = STMM(F, k=1)
    clip = rng.normal(size=(B, 3, H, W, C)).astype("float32")
    layer.build(clip.shape)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    expected = ref.stmm_sequence(weights, clip.astype(np.float64), k=1, align=True)
    np.testing.assert_allclose(layer(clip).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("align", [True, False])
def test_conv_gru_matches_reference(align, rng):
    layer = ConvGRU(F, k=1, align=align, input_scale=0.5, dtype="float64",
                    implementation="tf")
    clip = rng.normal(size=(B, 3, H, W, C))
    layer.build(clip.shape)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    got = layer(clip).numpy()
    expected = ref.stmm_sequence(weights, clip, k=1, align=align, scale=0.5, gru=True)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.abs(got).max() < 1.0  # tanh candidate, convex combination


def test_gates_stay_in_unit_interval(rng, monkeypatch):
    module = importlib.import_module("stmn_tf.layers.stmm_cell")
    gates = []

    def recording_bn_star(x, std_multiplier=3.0):
        y = module.__dict__["_original_bn_star"](x, std_multiplier)
        gates.append(y.numpy())
        return y

    monkeypatch.setitem(module.__dict__, "_original_bn_star", module.bn_star)
    monkeypatch.setattr(module, "bn_star", recording_bn_star)
    layer = STMM(4, input_scale=20.0, implementation="tf")  # large activations
    clip = rng.normal(size=(2, 3, 6, 6, 5)).astype("float32") * 10.0
    layer(clip)
    assert len(gates) == 6  # z and r at each of the 3 frames
    values = np.concatenate([g.ravel() for g in gates])
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values.max() == 1.0 and np.mean(values == 0.0) > 0.1  # both ends reached


def test_six_conv_attributes():
    cell = _cell(STMMCell, dtype="float32")
    for name in ("conv_w", "conv_z_w", "conv_r_w"):
        conv = getattr(cell, name)
        assert isinstance(conv, keras.layers.Conv2D) and conv.use_bias
        assert conv.kernel.shape == (3, 3, C, F)
    for name in ("conv_u", "conv_z_u", "conv_r_u"):
        conv = getattr(cell, name)
        assert isinstance(conv, keras.layers.Conv2D) and not conv.use_bias
        assert conv.kernel.shape == (3, 3, F, F)
    assert len(cell.trainable_weights) == 9
    assert cell.state_size == -1


@pytest.mark.parametrize("cls", [STMMCell, ConvGRUCell])
def test_cell_in_plain_keras_rnn_equals_layer(cls, rng):
    clip = rng.normal(size=(B, 3, H, W, C)).astype("float32")
    layer = (STMM if cls is STMMCell else ConvGRU)(F, align=True, implementation="tf")
    layer.build(clip.shape)
    rnn = keras.layers.RNN(cls(F, align=True, implementation="tf"), return_sequences=True)
    rnn.build(clip.shape)
    rnn.set_weights(layer.get_weights())
    np.testing.assert_allclose(rnn(clip).numpy(), layer(clip).numpy(), atol=1e-6)


def test_cell_in_plain_rnn_needs_static_size():
    cell = STMMCell(F)
    cell.build((None, None, None, C))
    rnn = keras.layers.RNN(cell, return_sequences=True)
    with pytest.raises(ValueError, match="static height and width"):
        rnn(np.zeros((1, 3, H, W, C), "float32"))


@pytest.mark.parametrize("cls", [STMMCell, ConvGRUCell])
def test_config_round_trip(cls, rng):
    kwargs = dict(kernel_size=1, k=1, align=False, input_scale=3.0, implementation="tf",
                  kernel_initializer="he_normal")
    if cls is STMMCell:
        kwargs["std_multiplier"] = 2.0
    cell = cls(F, **kwargs)
    config = cell.get_config()
    for key, value in kwargs.items():
        if key != "kernel_initializer":
            assert config[key] == value
    clone = cls.from_config(config)
    cell.build((None, H, W, C))
    clone.build((None, H, W, C))
    clone.set_weights(cell.get_weights())
    x = rng.normal(size=(B, H, W, C)).astype("float32")
    state = [np.abs(rng.normal(size=(B, H, W, F))).astype("float32"), x]
    np.testing.assert_array_equal(cell(x, state)[0].numpy(), clone(x, state)[0].numpy())
    assert clone.conv_w.kernel.shape == (1, 1, C, F)


def test_bad_arguments():
    with pytest.raises(ValueError, match="filters must be a positive integer"):
        STMMCell(0)
    with pytest.raises(ValueError, match=r"rank 4 \[B, H, W, C\]"):
        STMMCell(2).build((None, 4, 4))
    with pytest.raises(ValueError, match="channel dimension"):
        STMMCell(2).build((None, 4, 4, None))
    with pytest.raises(ValueError, match="implementation must be one of"):
        STMMCell(2, implementation="cuda")
    cell = STMMCell(2, implementation="tf")
    zeros = np.zeros((1, 3, 3, 2), "float32")
    memory, _ = cell(zeros, [zeros, zeros])  # built on first call, like any Keras cell
    assert memory.shape == (1, 3, 3, 2)
