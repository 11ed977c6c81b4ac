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
# stem 2368 + 64, conv2 1872, conv3 6688, conv4 25152, conv5 97408 (counted by hand).
TINY_PINNED = 133_552


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
