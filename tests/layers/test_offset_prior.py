"""`offset_prior` in the layers: a learned log-weight per MatchTrans offset, against
the NumPy reference, zeros at first, trained, saved and refused where it cannot run."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.layers import STMM, BidirectionalSTMM, ConvGRU, ConvGRUCell, STMMCell
from tests.layers import numpy_reference as ref
from tests.layers.test_affinity_power import C, F, relu_clip


def test_memory_matches_reference_with_a_trained_prior(rng):
    layer = STMM(F, k=1, align=True, affinity_power=4.0, offset_prior=True, dtype="float64")
    clip = relu_clip(rng, (2, 4, 4, 5, C))
    layer.build(clip.shape)
    weights = ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.cell, weights)
    prior = rng.normal(size=9) * 2.0
    layer.cell.set_offset_log_prior(prior)
    np.testing.assert_allclose(
        layer(clip).numpy(),
        ref.stmm_sequence(weights, clip, k=1, align=True, affinity_power=4.0,
                          offset_prior=prior),
        rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("direction", [STMM, ConvGRU])
def test_zeros_at_first_and_only_when_aligning(direction, rng):
    clip = relu_clip(rng, (1, 3, 4, 5, C))
    plain = direction(F, k=2, align=True, implementation="tf")
    learnt = direction(F, k=2, align=True, implementation="tf", offset_prior=True)
    for layer in (plain, learnt):
        layer.build(clip.shape)
    learnt.set_weights([np.zeros(25, np.float32)] + plain.get_weights())
    assert learnt.cell.offset_log_prior().shape == (25,)
    assert [w.path.split("/")[-1] for w in learnt.trainable_weights][0] == "offset_prior"
    np.testing.assert_array_equal(learnt(clip).numpy(), plain(clip).numpy())
    unaligned = direction(F, k=2, align=False, offset_prior=True)
    unaligned.build(clip.shape)
    assert unaligned.cell.offset_log_prior() is None
    assert len(unaligned.weights) == len(plain.weights)


def test_the_loss_trains_it(rng):
    layer = BidirectionalSTMM.from_arguments(F, k=1, offset_prior=True, affinity_power=4.0)
    clip = tf.constant(relu_clip(rng, (2, 4, 4, 5, C)), tf.float32)
    target = rng.normal(size=(2, 4, 4, 5, 2 * F)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(clip) - target))
    priors = [layer.forward_layer.cell.offset_prior_weight,
              layer.backward_layer.cell.offset_prior_weight]
    for gradient in tape.gradient(loss, priors):
        assert gradient is not None and np.abs(gradient.numpy()).max() > 0


def test_saved_and_loaded_with_its_values(tmp_path, rng):
    clip = relu_clip(rng, (1, 3, 4, 5, C)).astype(np.float32)
    inputs = keras.Input((None, None, None, C))
    model = keras.Model(inputs, BidirectionalSTMM.from_arguments(F, k=1, offset_prior=True)(inputs))
    cells = [layer.cell for layer in (model.layers[1].forward_layer, model.layers[1].backward_layer)]
    for cell in cells:
        cell.set_offset_log_prior(rng.normal(size=9))
    path = str(tmp_path / "memory.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(clip).numpy(), model(clip).numpy(), rtol=1e-6, atol=1e-6)
    assert loaded.layers[1].forward_layer.cell.offset_prior is True


@pytest.mark.parametrize("make", [
    lambda **a: STMMCell(F, **a), lambda **a: ConvGRUCell(F, **a),
    lambda **a: STMM(F, **a), lambda **a: BidirectionalSTMM.from_arguments(F, **a)])
def test_bad_values_fail_at_construction(make):
    with pytest.raises(ValueError, match="offset_prior must be True or False"):
        make(offset_prior=1)
    with pytest.raises(ValueError, match="offset_prior=True needs implementation='tf'"):
        make(offset_prior=True, implementation="custom_op")
