"""ResNet backbones with frozen batch norm and a dilated conv5 (stride 16), as in R-FCN.

Layer names are those of `keras.applications.ResNet50/101` (`conv1_conv`,
`conv2_block1_1_conv`, ..., `conv5_block3_3_bn`), so that a `.weights.h5` saved from
those models loads by name (`load_keras_applications_weights`). The differences are
R-FCN's: conv5's first block has stride 1 instead of 2 and its 3x3 convolutions are
dilated by 2 (so conv5 stays at stride 16 with the receptive field it was trained
with), and batch norm is frozen (inference mode, not trained), since detection
batches are too small for batch statistics.

A backbone trained from scratch (the tiny one of the demo and tests) has nothing to
freeze: `norm="group_norm"` replaces every batch norm with group normalisation
(Wu & He 2018), which needs no batch statistics and is what "Rethinking ImageNet
Pre-training" (He et al. 2019) trains detectors from scratch with.

Inputs are RGB images in [0, 255]; like `keras.applications.resnet.preprocess_input`
(caffe mode), the backbone flips them to BGR and subtracts the ImageNet mean, which is
what the keras.applications weights expect.
"""

import math

import keras

# keras.applications.resnet's caffe preprocessing, BGR order.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
FILTERS = (64, 128, 256, 512)
BN_EPSILON = 1.001e-5  # keras.applications' value
NORMS = ("frozen_bn", "group_norm")
GROUP_NORM_GROUPS = 32


def _norm_layer(norm, channels, name):
    """`frozen_bn`: keras.applications' batch norm in inference mode, never trained.
    `group_norm`: trained group norm with gcd(channels, 32) groups."""
    if norm == "frozen_bn":
        return keras.layers.BatchNormalization(
            axis=-1, epsilon=BN_EPSILON, name=f"{name}_bn", trainable=False
        )
    if norm == "group_norm":
        return keras.layers.GroupNormalization(
            groups=math.gcd(channels, GROUP_NORM_GROUPS), epsilon=BN_EPSILON, name=f"{name}_gn"
        )
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


@keras.saving.register_keras_serializable(package="stmn_tf")
class CaffePreprocess(keras.layers.Layer):
    """RGB [0, 255] -> BGR minus the ImageNet mean (keras.applications caffe mode).

    Call arguments:
      images: `[N, H, W, 3]` RGB in [0, 255].

    Returns:
      `[N, H, W, 3]` float, BGR, mean subtracted.
    """

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_MEAN_BGR, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def _bottleneck(x, filters, stride, dilation, shortcut_conv, name, trainable, norm):
    """A keras.applications ResNet v1 bottleneck block (stride on the first 1x1)."""

    def bn(suffix):
        channels = 4 * filters if suffix in ("0", "3") else filters
        return _norm_layer(norm, channels, f"{name}_{suffix}")

    def conv(out, kernel, suffix, strides=1, dilation_rate=1):
        return keras.layers.Conv2D(
            out,
            kernel,
            strides=strides,
            dilation_rate=dilation_rate,
            padding="same" if kernel > 1 else "valid",
            name=f"{name}_{suffix}_conv",
            trainable=trainable,
        )

    if shortcut_conv:
        shortcut = conv(4 * filters, 1, "0", strides=stride)(x)
        shortcut = bn("0")(shortcut)
    else:
        shortcut = x
    y = conv(filters, 1, "1", strides=stride)(x)
    y = keras.layers.Activation("relu", name=f"{name}_1_relu")(bn("1")(y))
    y = conv(filters, 3, "2", dilation_rate=dilation)(y)
    y = keras.layers.Activation("relu", name=f"{name}_2_relu")(bn("2")(y))
    y = conv(4 * filters, 1, "3")(y)
    y = bn("3")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def resnet_backbone(
    depth=101,
    blocks=None,
    filters=None,
    stem_filters=64,
    frozen_stages=2,
    dilate_conv5=True,
    norm="frozen_bn",
    name=None,
):
    """Builds a ResNet v1 feature extractor with outputs at stride 16.

    Args:
      depth: int. 50, 101 or 152; sets `blocks` when it is None. Defaults to 101.
      blocks: optional 4 ints, blocks per stage (conv2..conv5), e.g. `(1, 1, 1, 1)`
        for a tiny ResNet of the same shape.
      filters: optional 4 ints, bottleneck widths (outputs are 4x). Defaults to
        `(64, 128, 256, 512)`.
      stem_filters: int. conv1's filters. Defaults to 64.
      frozen_stages: int. conv1 .. conv`frozen_stages` are not trained (R-FCN
        freezes conv1 and conv2). 0 trains all. Defaults to 2.
      dilate_conv5: bool. R-FCN's stride-16 conv5 (stride 1, dilation 2). Defaults
        to True.
      norm: `"frozen_bn"` (R-FCN, for pretrained weights) or `"group_norm"` (for
        training from scratch). Defaults to `"frozen_bn"`.
      name: str.

    Returns:
      A functional `keras.Model` mapping `[N, H, W, 3]` RGB in [0, 255] to
      `[conv4 [N, H/16, W/16, 4*filters[2]], conv5 [N, H/16, W/16, 4*filters[3]]]`
      (sizes rounded up).
    """
    blocks = tuple(blocks or BLOCKS[depth])
    filters = tuple(filters or FILTERS)
    images = keras.Input((None, None, 3), name="images")
    x = CaffePreprocess(name="preprocess")(images)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(
        stem_filters, 7, strides=2, name="conv1_conv", trainable=frozen_stages < 1
    )(x)
    x = _norm_layer(norm, stem_filters, "conv1")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = []
    for stage, (num_blocks, width) in enumerate(zip(blocks, filters)):
        stage_name = f"conv{stage + 2}"
        stride = 1 if stage == 0 else 2
        dilation = 1
        if stage == 3 and dilate_conv5:
            stride, dilation = 1, 2
        for b in range(num_blocks):
            x = _bottleneck(
                x,
                width,
                stride if b == 0 else 1,
                dilation,
                shortcut_conv=b == 0,
                name=f"{stage_name}_block{b + 1}",
                trainable=frozen_stages < stage + 2,
                norm=norm,
            )
        if stage >= 2:
            outputs.append(x)
    return keras.Model(images, outputs, name=name or f"resnet{depth}")


def load_keras_applications_weights(backbone, path, depth):
    """Loads a local `keras.applications.ResNet{depth}` weights file by layer name.

    Builds the keras.applications model without weights (nothing is downloaded),
    loads `path` into it (`.weights.h5` of Keras 3, or the legacy `.h5`), and copies
    every layer whose name and weight shapes match into `backbone`.

    Args:
      backbone: the model from `resnet_backbone(depth)`.
      path: str, the weights file.
      depth: 50, 101 or 152.

    Returns:
      list of the names of the layers copied.

    Raises:
      ValueError: if a backbone layer with weights has no counterpart.
    """
    constructors = {
        50: keras.applications.ResNet50,
        101: keras.applications.ResNet101,
        152: keras.applications.ResNet152,
    }
    reference = constructors[depth](weights=None, include_top=False, input_shape=(None, None, 3))
    reference.load_weights(path)
    copied = []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        try:
            source = reference.get_layer(layer.name)
        except ValueError as e:
            raise ValueError(f"No layer {layer.name!r} in {path} (ResNet{depth}).") from e
        values = source.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            raise ValueError(
                f"Layer {layer.name!r}: shapes {[v.shape for v in values]} in {path} vs "
                f"{[tuple(w.shape) for w in layer.weights]} in the backbone."
            )
        layer.set_weights(values)
        copied.append(layer.name)
    return copied
