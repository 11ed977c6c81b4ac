"""`centre_features` in the layers: the MatchTrans layer, the cells, STMM, ConvGRU and
BidirectionalSTMM against the NumPy reference, their configs old and new."""

import numpy as np
import pytest

from stmn_tf.layers import STMM, BidirectionalSTMM, ConvGRU, ConvGRUCell, MatchTrans, STMMCell
from tests.layers import numpy_reference as ref
from tests.layers.test_affinity_power import C, F, relu_clip


@pytest.mark.parametrize("implementation", ["custom_op", "tf"])
def test_match_trans_layer_matches_reference(implementation, rng):
    f, fp = relu_clip(rng, (2, 5, 6, 4)), relu_clip(rng, (2, 5, 6, 4))
    m = rng.normal(size=(2, 5, 6, 3))
    layer = MatchTrans(k=1, implementation=implementation, affinity_power=2.0,
                       centre_features=True, dtype="float64")
    want = ref.match_trans(f, fp, m, 1, 2.0, centre_features=True)
    np.testing.assert_allclose(layer([f, fp, m]).numpy(), want, atol=1e-10)
    assert np.abs(want - ref.match_trans(f, fp, m, 1, 2.0)).max() > 1e-3
    config = layer.get_config()
    assert config["centre_features"] is True
    np.testing.assert_array_equal(MatchTrans.from_config(config)([f, fp, m]).numpy(),
                                  layer([f, fp, m]).numpy())
    del config["centre_features"]  # a config saved before the option: off
    assert MatchTrans.from_config(config).centre_features is False


@pytest.mark.parametrize("cell", ["stmm", "convgru"])
def test_bidirectional_stmm_matches_reference(cell, rng):
    direction = {"stmm": STMM, "convgru": ConvGRU}[cell]
    layer = BidirectionalSTMM(direction(F, k=1, align=True, affinity_power=4.0,
                                        centre_features=True, implementation="tf"),
                              dtype="float64")
    clip = relu_clip(rng)
    layer.build(clip.shape)
    forward, backward = ref.random_weights(rng, C, F), ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.forward_layer.cell, forward)
    ref.set_cell_weights(layer.backward_layer.cell, backward)
    kwargs = dict(k=1, align=True, gru=cell == "convgru", affinity_power=4.0,
                  centre_features=True)
    expected = np.concatenate(
        [ref.stmm_sequence(forward, clip, **kwargs),
         ref.stmm_sequence(backward, clip, reverse=True, **kwargs)], axis=-1)
    np.testing.assert_allclose(layer(clip).numpy(), expected, rtol=1e-9, atol=1e-9)
    assert layer.backward_layer.cell.centre_features is True
    assert layer.centre_features is True


@pytest.mark.parametrize("make", [STMM, ConvGRU])
def test_config_round_trip_and_old_configs(make, rng):
    clip = relu_clip(rng).astype("float32")
    layer = make(F, k=1, align=True, centre_features=True, implementation="tf")
    config = layer.get_config()
    assert config["centre_features"] is True
    clone = make.from_config(config)
    layer.build(clip.shape)
    clone.build(clip.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(clip), clone(clip))
    del config["centre_features"]
    assert make.from_config(config).cell.centre_features is False


@pytest.mark.parametrize("make", [
    lambda v: MatchTrans(centre_features=v), lambda v: STMMCell(F, centre_features=v),
    lambda v: ConvGRUCell(F, centre_features=v), lambda v: STMM(F, centre_features=v),
    lambda v: BidirectionalSTMM(F, centre_features=v)])
@pytest.mark.parametrize("value", [1, "true", None])
def test_bad_value_fails_at_construction(make, value):
    with pytest.raises(ValueError, match="centre_features must be True or False"):
        make(value)
