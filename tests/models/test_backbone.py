"""ResNet backbones: pinned parameter counts, stride 16, frozen BN, keras.applications weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.models import build_backbone
from stmn_tf.models import tiny_model_config
from stmn_tf.models.backbone import load_keras_applications_weights
from stmn_tf.models.backbone import resnet_backbone

# keras.applications.ResNet50/101(include_top=False) have the same counts: the
# dilated conv5 has the same weights.
PINNED = {50: 23_587_712, 101: 42_658_176}
# With batch norm: stem 2368 + 64, conv2 1872, conv3 6688, conv4 25152, conv5 97408
# (counted by hand) = 133_552; the tiny backbone has group norm instead, 2 weights per
# channel instead of 4 (1216 normalised channels): 133_552 - 2 * 1216.
TINY_PINNED = 131_120


@pytest.mark.parametrize("depth", [50, 101])
def test_pinned_parameter_counts(depth):
    backbone = resnet_backbone(depth)
    assert backbone.count_params() == PINNED[depth]
    assert len(backbone.outputs) == 2


def test_tiny_backbone_shape_and_stride():
    backbone = build_backbone(tiny_model_config())
    assert backbone.count_params() == TINY_PINNED
    conv4, conv5 = backbone(np.zeros((2, 64, 96, 3), "float32"))
    assert tuple(conv4.shape) == (2, 4, 6, 128)
    assert tuple(conv5.shape) == (2, 4, 6, 256)  # dilated conv5: still stride 16
    conv5_layer = backbone.get_layer("conv5_block1_2_conv")
    assert conv5_layer.dilation_rate == (2, 2) and conv5_layer.strides == (1, 1)
    # Odd sizes round up.
    _, conv5 = backbone(np.zeros((1, 70, 50, 3), "float32"))
    assert tuple(conv5.shape)[1:3] == (5, 4)


def test_batch_norm_frozen_and_stages_frozen(rng):
    backbone = resnet_backbone(blocks=(1, 1, 1, 1), filters=(4, 4, 4, 4), stem_filters=4)
    bns = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and not any(w.trainable for l in bns for w in l.weights)
    frozen = [w.path for w in backbone.non_trainable_weights if "conv" in w.path and "kernel" in w.path]
    assert any("conv1_conv" in p for p in frozen) and any("conv2_block1_1_conv" in p for p in frozen)
    assert not any("conv3" in p for p in frozen)
    bn = backbone.get_layer("conv3_block1_1_bn")
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.5, "float32"))
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    # Training mode must still use the moving statistics and leave them alone.
    np.testing.assert_allclose(
        backbone(images, training=True)[1].numpy(), backbone(images, training=False)[1].numpy()
    )
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5)


def _group_norm_reference(x, groups, gamma, beta, epsilon):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + epsilon)).reshape(n, h, w, c) * gamma + beta


def test_group_norm_backbone(rng):
    backbone = resnet_backbone(blocks=(1, 1, 1, 1), filters=(8, 16, 32, 64), stem_filters=16,
                               frozen_stages=0, norm="group_norm")
    assert not [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    gns = {l.name: l for l in backbone.layers if isinstance(l, keras.layers.GroupNormalization)}
    # gcd(channels, 32) groups: 8 channels -> 8 groups, 16 -> 16, 128 -> 32.
    assert gns["conv2_block1_1_gn"].groups == 8
    assert gns["conv3_block1_1_gn"].groups == 16
    assert gns["conv4_block1_3_gn"].groups == 32
    assert all(w.trainable for l in gns.values() for w in l.weights)
    # Same in training and inference (no batch statistics), and per image: an image's
    # output does not depend on the rest of the batch.
    images = rng.uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    train_out = backbone(images, training=True)[1].numpy()
    np.testing.assert_allclose(train_out, backbone(images, training=False)[1].numpy(), atol=1e-5)
    np.testing.assert_allclose(train_out[:1], backbone(images[:1])[1].numpy(), atol=1e-4)
    # One layer against the NumPy reference.
    layer = gns["conv3_block1_1_gn"]
    layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
    layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape))
    x = rng.normal(2.0, 3.0, (2, 5, 6, 16)).astype("float32")
    expected = _group_norm_reference(x.astype("float64"), 16, layer.gamma.numpy(),
                                     layer.beta.numpy(), layer.epsilon)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_bad_norm_and_pretrained_weights_with_group_norm_raise():
    with pytest.raises(ValueError, match="norm"):
        resnet_backbone(blocks=(1, 1, 1, 1), filters=(4, 4, 4, 4), stem_filters=4, norm="bn")
    config = tiny_model_config()
    config.override({"backbone": {"weights": "/nonexistent.weights.h5", "norm": "group_norm"}})
    with pytest.raises(ValueError, match="frozen_bn"):
        build_backbone(config.backbone)


def test_loads_keras_applications_weights(tmp_path, rng):
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
    backbone = resnet_backbone(50)
    copied = load_keras_applications_weights(backbone, path, 50)
    assert len(copied) == len([l for l in backbone.layers if l.weights])
    images = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    # conv4 has the same stride in both: outputs agree on caffe-preprocessed images.
    preprocessed = keras.applications.resnet.preprocess_input(images.copy())
    expected = keras.Model(reference.input, reference.get_layer("conv4_block6_out").output)(
        preprocessed
    )
    np.testing.assert_allclose(backbone(images)[0].numpy(), expected.numpy(), rtol=1e-3, atol=1e-3)


def test_missing_weights_file_raises(tmp_path):
    backbone = resnet_backbone(blocks=(1, 1, 1, 1), filters=(4, 4, 4, 4), stem_filters=4)
    with pytest.raises((ValueError, FileNotFoundError, OSError)):
        load_keras_applications_weights(backbone, str(tmp_path / "none.weights.h5"), 50)
