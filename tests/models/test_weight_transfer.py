"""Weight transfer from the static detector's conv into BidirectionalSTMM (Sec. 3.2)."""

import keras
import numpy as np
import pytest

from stmn_tf.layers import STMM, BidirectionalSTMM
from stmn_tf.models.weight_transfer import transfer_conv_to_memory
from tests.layers.numpy_reference import bn_star

C, F = 3, 2


def _pretrained_conv(rng, filters=2 * F, kernel_size=3, **kwargs):
    conv = keras.layers.Conv2D(filters, kernel_size, padding="same", **kwargs)
    conv.build((None, None, None, C))
    conv.kernel.assign(rng.normal(size=conv.kernel.shape))
    if conv.use_bias:
        conv.bias.assign(rng.normal(size=conv.bias.shape))
    return conv


@pytest.mark.parametrize("cell", ["stmm", "convgru"])
def test_halves_go_to_the_right_convolutions(cell, rng):
    conv = _pretrained_conv(rng)
    memory = BidirectionalSTMM.from_arguments(F, cell=cell)  # built by the transfer
    kernel, bias = conv.kernel.numpy(), conv.bias.numpy()
    report = transfer_conv_to_memory(conv, memory)
    for direction, start in ((memory.forward_layer, 0), (memory.backward_layer, F)):
        cell_layer = direction.cell
        for name in ("conv_w", "conv_z_w", "conv_r_w"):
            target = getattr(cell_layer, name)
            np.testing.assert_array_equal(target.kernel.numpy(), kernel[..., start:start + F])
            np.testing.assert_array_equal(target.bias.numpy(), bias[start:start + F])
        for name in ("conv_u", "conv_z_u", "conv_r_u"):
            # Fresh: not any slice of the pretrained kernel (shapes differ anyway).
            assert getattr(cell_layer, name).kernel.shape == (3, 3, F, F)
    assert len(report["copied"]) == 12  # 3 convs x (kernel, bias) x 2 directions
    assert len(report["fresh"]) == 6
    assert report["copied"][0]["source"].endswith("kernel[..., 0:2]")
    assert "forward" in report["copied"][0]["target"]
    assert report["copied"][-1]["source"].endswith("bias[2:4]")
    assert "backward" in report["copied"][-1]["target"]


def test_u_convolutions_keep_their_initialisation(rng):
    conv = _pretrained_conv(rng)
    memory = BidirectionalSTMM(STMM(F))
    memory.build((None, None, None, None, C))
    before = [memory.forward_layer.cell.conv_u.kernel.numpy(),
              memory.backward_layer.cell.conv_r_u.kernel.numpy()]
    transfer_conv_to_memory(conv, memory)
    np.testing.assert_array_equal(memory.forward_layer.cell.conv_u.kernel.numpy(), before[0])
    np.testing.assert_array_equal(memory.backward_layer.cell.conv_r_u.kernel.numpy(), before[1])


def test_transferred_memory_starts_from_the_static_features(rng):
    # With U = 0 and zero initial memory, W = W_z = W_r = the static conv S (ReLU'd):
    # the first step gives M_1 = BN*(S(F)) * S(F), the static feature map scaled by
    # its own gate (the paper's "initialise the memory with the static features").
    conv = _pretrained_conv(rng, activation="relu")
    memory = BidirectionalSTMM(STMM(F, recurrent_initializer="zeros"))
    transfer_conv_to_memory(conv, memory)
    clip = rng.normal(size=(1, 3, 4, 4, C)).astype("float32")
    output = memory(clip).numpy()
    first, last = conv(clip[:, 0]).numpy(), conv(clip[:, -1]).numpy()
    forward_static, backward_static = first[..., :F], last[..., F:]
    np.testing.assert_allclose(
        output[:, 0, ..., :F], bn_star(forward_static)[0] * forward_static, atol=1e-5
    )
    np.testing.assert_allclose(
        output[:, -1, ..., F:], bn_star(backward_static)[0] * backward_static, atol=1e-5
    )


def test_fresh_variant_copies_nothing(rng):
    conv = _pretrained_conv(rng)
    memory = BidirectionalSTMM(STMM(F))
    memory.build((None, None, None, None, C))
    before = [w.numpy() for w in memory.weights]
    report = transfer_conv_to_memory(conv, memory, fresh=True)
    assert report["copied"] == [] and len(report["fresh"]) == 18
    for old, new in zip(before, memory.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_shape_and_type_errors(rng):
    with pytest.raises(ValueError, match=r"memory needs \[3, 3, 3, 4\]"):
        transfer_conv_to_memory(_pretrained_conv(rng, filters=6), BidirectionalSTMM(STMM(F)))
    with pytest.raises(ValueError, match=r"memory needs \[1, 1, 3, 4\]"):
        transfer_conv_to_memory(_pretrained_conv(rng), BidirectionalSTMM(STMM(F, kernel_size=1)))
    with pytest.raises(ValueError, match="has no bias"):
        transfer_conv_to_memory(_pretrained_conv(rng, use_bias=False), BidirectionalSTMM(STMM(F)))
    with pytest.raises(ValueError, match="stride 1 and no dilation"):
        transfer_conv_to_memory(_pretrained_conv(rng, dilation_rate=2), BidirectionalSTMM(STMM(F)))
    with pytest.raises(ValueError, match="is not built"):
        transfer_conv_to_memory(keras.layers.Conv2D(4, 3), BidirectionalSTMM(STMM(F)))
    with pytest.raises(TypeError, match="must be a BidirectionalSTMM"):
        transfer_conv_to_memory(_pretrained_conv(rng), STMM(F))
