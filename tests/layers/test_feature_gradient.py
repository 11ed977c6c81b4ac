"""`feature_gradient` in the layers: the same memory, a gradient to the input features
through MatchTrans' coefficients only when aligning, configs old and new."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.layers import STMM, BidirectionalSTMM, ConvGRU, ConvGRUCell, MatchTrans, STMMCell
from tests.layers import numpy_reference as ref
from tests.layers.test_affinity_power import C, F, relu_clip


def clip_gradient(layer, clip, upstream):
    clip = tf.constant(clip)
    with tf.GradientTape() as tape:
        tape.watch(clip)
        out = layer(clip)
        loss = tf.reduce_sum(out * upstream)
    return out.numpy(), tape.gradient(loss, clip).numpy()


def twin_layers(direction, align, rng, clip):
    """The same bidirectional memory built without and with feature_gradient, from
    seeded initial weights (the bounds below are about one draw, not any)."""
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    layers = [BidirectionalSTMM(direction(F, k=1, align=align, affinity_power=4.0,
                                          implementation="tf", feature_gradient=on),
                                dtype="float64") for on in (False, True)]
    for layer in layers:
        layer.build(clip.shape)
    layers[1].set_weights(layers[0].get_weights())
    return layers


@pytest.mark.parametrize("direction", [STMM, ConvGRU])
def test_gradient_to_features_changes_only_through_the_alignment(direction, rng):
    clip = relu_clip(rng, (2, 4, 4, 5, C)) + 0.05
    upstream = rng.normal(size=clip.shape[:4] + (2 * F,))
    plain, learnt = twin_layers(direction, True, rng, clip)
    out_plain, grad_plain = clip_gradient(plain, clip, upstream)
    out_learnt, grad_learnt = clip_gradient(learnt, clip, upstream)
    np.testing.assert_array_equal(out_learnt, out_plain)
    assert learnt.feature_gradient is True and learnt.backward_layer.cell.feature_gradient
    # Through the coefficients the features get more gradient, of the same order.
    difference = np.abs(grad_learnt - grad_plain).max()
    assert 1e-6 * np.abs(grad_plain).max() < difference < 10 * np.abs(grad_plain).max()
    # Without alignment there are no coefficients: the option changes nothing.
    plain, learnt = twin_layers(direction, False, rng, clip)
    np.testing.assert_array_equal(clip_gradient(learnt, clip, upstream)[1],
                                  clip_gradient(plain, clip, upstream)[1])


def test_memory_matches_reference(rng):
    layer = STMM(F, k=1, align=True, affinity_power=4.0, feature_gradient=True,
                 dtype="float64")
    clip = relu_clip(rng)
    layer.build(clip.shape)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    np.testing.assert_allclose(layer(clip).numpy(),
                               ref.stmm_sequence(weights, clip, k=1, align=True,
                                                 affinity_power=4.0),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [STMM, ConvGRU])
def test_config_round_trip_and_old_configs(make, rng):
    layer = make(F, k=1, align=True, feature_gradient=True)
    config = layer.get_config()
    assert config["feature_gradient"] is True
    assert make.from_config(config).cell.feature_gradient is True
    del config["feature_gradient"]  # a config saved before the option: off
    assert make.from_config(config).cell.feature_gradient is False
    layer = MatchTrans(feature_gradient=True)
    assert MatchTrans.from_config(layer.get_config()).feature_gradient is True


@pytest.mark.parametrize("make", [
    lambda **a: MatchTrans(**a), lambda **a: STMMCell(F, **a), lambda **a: ConvGRUCell(F, **a),
    lambda **a: STMM(F, **a), lambda **a: BidirectionalSTMM.from_arguments(F, **a)])
def test_bad_values_fail_at_construction(make):
    with pytest.raises(ValueError, match="feature_gradient must be True or False"):
        make(feature_gradient=1)
    with pytest.raises(ValueError, match="feature_gradient=True needs implementation='tf'"):
        make(feature_gradient=True, implementation="custom_op")
