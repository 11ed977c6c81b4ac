"""`affinity_power` in the layers: the MatchTrans layer, the cells, STMM, ConvGRU and
BidirectionalSTMM against the NumPy reference, their configs old and new."""

import keras
import numpy as np
import pytest

from stmn_tf.layers import STMM, BidirectionalSTMM, ConvGRU, ConvGRUCell, MatchTrans, STMMCell
from tests.layers import numpy_reference as ref

C, F = 3, 2


def relu_clip(rng, shape=(1, 3, 4, 5, C)):
    return np.maximum(rng.normal(size=shape), 0.0)


@pytest.mark.parametrize("implementation", ["custom_op", "tf"])
def test_match_trans_layer_matches_reference(implementation, rng):
    f, fp = relu_clip(rng, (2, 5, 6, 4)), relu_clip(rng, (2, 5, 6, 4))
    m = rng.normal(size=(2, 5, 6, 3))
    layer = MatchTrans(k=1, implementation=implementation, affinity_power=3.0, dtype="float64")
    np.testing.assert_allclose(layer([f, fp, m]).numpy(), ref.match_trans(f, fp, m, 1, 3.0),
                               atol=1e-10)
    config = layer.get_config()
    assert config["affinity_power"] == 3.0
    clone = MatchTrans.from_config(config)
    np.testing.assert_array_equal(clone([f, fp, m]).numpy(), layer([f, fp, m]).numpy())
    del config["affinity_power"]  # a config saved before the option: the authors' formula
    old = MatchTrans.from_config(config)
    assert old.affinity_power == 1.0
    np.testing.assert_allclose(old([f, fp, m]).numpy(), ref.match_trans(f, fp, m, 1),
                               atol=1e-10)


@pytest.mark.parametrize("cell", ["stmm", "convgru"])
def test_bidirectional_stmm_matches_reference(cell, rng):
    direction = {"stmm": STMM, "convgru": ConvGRU}[cell]
    layer = BidirectionalSTMM(direction(F, k=1, align=True, affinity_power=4.0,
                                        implementation="tf"), dtype="float64")
    clip = relu_clip(rng)
    layer.build(clip.shape)
    forward, backward = ref.random_weights(rng, C, F), ref.random_weights(rng, C, F)
    ref.set_cell_weights(layer.forward_layer.cell, forward)
    ref.set_cell_weights(layer.backward_layer.cell, backward)
    kwargs = dict(k=1, align=True, gru=cell == "convgru", affinity_power=4.0)
    expected = np.concatenate(
        [ref.stmm_sequence(forward, clip, **kwargs),
         ref.stmm_sequence(backward, clip, reverse=True, **kwargs)], axis=-1)
    np.testing.assert_allclose(layer(clip).numpy(), expected, rtol=1e-9, atol=1e-9)
    assert layer.forward_layer.cell.affinity_power == 4.0
    assert layer.backward_layer.affinity_power == 4.0


def _round_trip(layer, clip):
    clone = type(layer).from_config(layer.get_config())
    layer.build(clip.shape)
    clone.build(clip.shape)
    clone.set_weights(layer.get_weights())
    return clone


def _bidirectional(filters, **kwargs):
    return BidirectionalSTMM(STMM(filters, **kwargs))


@pytest.mark.parametrize("make", [STMM, ConvGRU, _bidirectional])
def test_config_round_trip_and_old_configs(make, rng):
    clip = relu_clip(rng).astype("float32")
    layer = make(F, k=1, align=True, affinity_power=2.5, implementation="tf")
    config = layer.get_config()
    assert config.get("layer", {"config": config})["config"]["affinity_power"] == 2.5
    clone = _round_trip(layer, clip)
    np.testing.assert_array_equal(layer(clip), clone(clip))
    if make is _bidirectional:
        # BidirectionalSTMM's keyword-form config, as saved before both the option and
        # the direction layers existed.
        config = {"name": "memory", "trainable": True, "filters": F, "cell": "stmm", "k": 1,
                  "align": True, "implementation": "tf"}
    else:
        del config["affinity_power"]  # saved before the option existed
    old = type(layer).from_config(config)
    old.build(clip.shape)
    old.set_weights(layer.get_weights())
    authors = make(F, k=1, align=True, implementation="tf")
    authors.build(clip.shape)
    authors.set_weights(layer.get_weights())
    np.testing.assert_array_equal(old(clip), authors(clip))  # the default: 1.0
    assert np.abs(np.asarray(old(clip)) - np.asarray(layer(clip))).max() > 1e-4


@pytest.mark.parametrize("cell_cls", [STMMCell, ConvGRUCell])
def test_cells_keep_the_power_in_their_config(cell_cls):
    cell = cell_cls(F, affinity_power=3.0)
    assert cell_cls.from_config(cell.get_config()).affinity_power == 3.0


@pytest.mark.parametrize("make", [
    lambda p: MatchTrans(affinity_power=p), lambda p: STMMCell(F, affinity_power=p),
    lambda p: STMM(F, affinity_power=p), lambda p: ConvGRU(F, affinity_power=p),
    lambda p: BidirectionalSTMM(F, affinity_power=p)])
@pytest.mark.parametrize("power", [0.0, -1.0, float("inf"), float("nan"), "2"])
def test_bad_power_fails_at_construction(make, power):
    with pytest.raises(ValueError, match="affinity_power must be a finite number > 0"):
        make(power)


def test_saved_model_file_round_trip(rng, tmp_path):
    clip = relu_clip(rng).astype("float32")
    inputs = keras.Input((None, None, None, C))
    model = keras.Model(inputs, _bidirectional(F, k=1, affinity_power=4.0,
                                               implementation="tf")(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(clip), model(clip))
