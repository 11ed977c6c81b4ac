"""Config -> model: one plain `build_*` function per part, each from its own sub-config
(`stmn_tf.models.config`), and the detectors composed of them. No registries."""

import math

import keras

from stmn_tf.layers.bidirectional_stmm import BidirectionalSTMM
from stmn_tf.layers.conv_gru import ConvGRU
from stmn_tf.layers.stmm import STMM
from stmn_tf.models.anchor_labeler import AnchorLabeler
from stmn_tf.models.backbone import load_keras_applications_weights
from stmn_tf.models.backbone import resnet_backbone
from stmn_tf.models.decoder import DetectionDecoder
from stmn_tf.models.detector import FEATURE_STRIDE
from stmn_tf.models.features import DetectorFeatures
from stmn_tf.models.proposal_generator import ProposalGenerator
from stmn_tf.models.rfcn import RFCN
from stmn_tf.models.rfcn_head import RFCNHead
from stmn_tf.models.roi_sampler import RoISampler
from stmn_tf.models.rpn import RPNHead
from stmn_tf.models.stmn import DIRECTIONS
from stmn_tf.models.stmn import STMN
from stmn_tf.variants import get_variant

TINY_BACKBONE = dict(blocks=(1, 1, 1, 1), filters=(8, 16, 32, 64), stem_filters=16)


def build_backbone(config, name="backbone"):
    """`BackboneConfig` -> the ResNet (a functional `keras.Model`, see backbone.py),
    with `config.weights` (a local keras.applications file) loaded when set.

    A `ModelConfig` is accepted too (its `backbone`)."""
    config = getattr(config, "backbone", config)
    if config.weights and config.norm != "frozen_bn":
        # Checked before anything is built.
        raise ValueError(
            f"backbone.weights {config.weights!r} are keras.applications batch-norm "
            f"weights; they need backbone.norm 'frozen_bn', not {config.norm!r}"
        )
    shape = TINY_BACKBONE if config.tiny else {}
    backbone = resnet_backbone(
        depth=config.depth,
        blocks=shape.get("blocks"),
        filters=shape.get("filters"),
        stem_filters=shape.get("stem_filters", 64),
        frozen_stages=config.frozen_stages,
        norm=config.norm,
        name=name,
    )
    if config.weights:
        load_keras_applications_weights(backbone, config.weights, config.depth)
    return backbone


def build_features(config):
    """`FeaturesConfig` -> `DetectorFeatures` (conv5 -> `F_t`)."""
    return DetectorFeatures(config.reduce_channels, config.channels, config.dilation,
                            name="features")


def build_proposal_generator(rpn_config, anchor_config):
    """`RPNConfig`, `AnchorConfig` -> `ProposalGenerator`."""
    return ProposalGenerator(
        anchor_scales=tuple(anchor_config.scales),
        anchor_ratios=tuple(anchor_config.ratios),
        stride=FEATURE_STRIDE,
        pre_nms_top_n_train=rpn_config.pre_nms_top_n_train,
        post_nms_top_n_train=rpn_config.post_nms_top_n_train,
        pre_nms_top_n_test=rpn_config.pre_nms_top_n_test,
        post_nms_top_n_test=rpn_config.post_nms_top_n_test,
        nms_iou=rpn_config.nms_iou,
        min_size=rpn_config.min_size,
    )


def build_rpn_head(rpn_config, anchor_config):
    """`RPNConfig`, `AnchorConfig` -> `RPNHead` (one logit and 4 deltas per anchor)."""
    return RPNHead(len(anchor_config.scales) * len(anchor_config.ratios), rpn_config.channels,
                   name="rpn_head")


def build_anchor_labeler(rpn_config):
    """`RPNConfig` -> `AnchorLabeler` (the RPN's training targets)."""
    return AnchorLabeler(rpn_config.batch_size, rpn_config.positive_fraction,
                         rpn_config.positive_iou, rpn_config.negative_iou)


def build_roi_sampler(config):
    """`RoISamplingConfig` -> `RoISampler`."""
    return RoISampler(config.num_rois, config.foreground_fraction, config.foreground_iou,
                      config.background_iou_high, config.background_iou_low, config.ohem_rois)


def build_rfcn_head(head_config, num_classes):
    """`HeadConfig`, C -> `RFCNHead`."""
    return RFCNHead(num_classes, head_config.rfcn_channels, head_config.ps_roi_bins,
                    FEATURE_STRIDE, name="rfcn_head")


def build_decoder(config):
    """`PostProcessingConfig` -> `DetectionDecoder`."""
    return DetectionDecoder(config.score_threshold, config.nms_iou, config.max_detections)


def build_head_conv(head_config):
    """`HeadConfig` -> the static R-FCN's 3x3 conv + ReLU after `F_t`."""
    return keras.layers.Conv2D(head_config.channels, 3, padding="same", activation="relu",
                               name="head_conv")


def build_memory(config):
    """`MemoryConfig` -> STMN's memory layer.

    The cell and the alignment come from `variant` (`stmn_tf.variants.VARIANTS`, Table 2)
    unless `cell` / `align` say otherwise; `affinity_power` sharpens MatchTrans (1.0,
    the authors' formula, by default), `centre_features` centres the features its
    cosine reads and `feature_gradient` differentiates the loss through its
    coefficients to the features, `offset_prior` learns a weight per window offset
    (all False, the authors', by default). `bidirectional`: a `BidirectionalSTMM` of
    `filters` channels per direction; `forward`: one `STMM` (or `ConvGRU`) of
    `2 * filters` channels, so that the layers after it keep their shapes.
    """
    if config.direction not in DIRECTIONS:
        raise ValueError(f"memory.direction must be one of {DIRECTIONS}, got {config.direction!r}")
    power = config.affinity_power
    if (isinstance(power, bool) or not isinstance(power, (int, float))
            or not math.isfinite(power) or power <= 0):
        raise ValueError(f"memory.affinity_power must be a finite number > 0, got {power!r}")
    if not isinstance(config.centre_features, bool):
        raise ValueError(f"memory.centre_features must be true or false, got "
                         f"{config.centre_features!r}")
    if not isinstance(config.feature_gradient, bool):
        raise ValueError(f"memory.feature_gradient must be true or false, got "
                         f"{config.feature_gradient!r}")
    if not isinstance(config.offset_prior, bool):
        raise ValueError(f"memory.offset_prior must be true or false, got "
                         f"{config.offset_prior!r}")
    if config.offset_prior and config.implementation == "custom_op":
        raise ValueError("memory.offset_prior needs memory.implementation 'tf' or 'auto': "
                         "the compiled MatchTrans op has no offset prior")
    if config.feature_gradient and config.implementation == "custom_op":
        raise ValueError("memory.feature_gradient needs memory.implementation 'tf' or "
                         "'auto': the compiled MatchTrans op passes no gradient to the features")
    variant = get_variant(config.variant)
    cell = config.cell if config.cell is not None else variant.cell
    common = dict(
        k=config.k,
        align=config.align if config.align is not None else variant.align,
        input_scale=config.input_scale,
        implementation=config.implementation,
        affinity_power=power,
        centre_features=config.centre_features,
        feature_gradient=config.feature_gradient,
        offset_prior=config.offset_prior,
    )
    if cell == "stmm":
        common["std_multiplier"] = config.std_multiplier
    if cell not in ("stmm", "convgru"):
        raise ValueError(f"memory.cell must be 'stmm' or 'convgru', got {cell!r}")
    layer = STMM if cell == "stmm" else ConvGRU
    if config.direction == "bidirectional":
        # The forward direction; BidirectionalSTMM adds its backward copy.
        return BidirectionalSTMM(layer(config.filters, **common), name="memory")
    return layer(2 * config.filters, name="memory", **common)


def detector_parts(config):
    """`ModelConfig` -> the parts `RFCN` and `STMN` share, as keyword arguments."""
    return dict(
        backbone=build_backbone(config.backbone),
        features=build_features(config.features),
        rpn_head=build_rpn_head(config.rpn, config.anchors),
        proposal_generator=build_proposal_generator(config.rpn, config.anchors),
        anchor_labeler=build_anchor_labeler(config.rpn),
        roi_sampler=build_roi_sampler(config.roi_sampling),
        rfcn_head=build_rfcn_head(config.head, config.num_classes),
        decoder=build_decoder(config.post_processing),
    )


def build_rfcn(config):
    """`ModelConfig` -> the static `RFCN`."""
    return RFCN(head_conv=build_head_conv(config.head), **detector_parts(config))


def build_stmn(config):
    """`ModelConfig` -> `STMN` with the memory of `build_memory(config.memory)`."""
    return STMN(memory=build_memory(config.memory), **detector_parts(config))


MODEL_BUILDERS = {"rfcn": build_rfcn, "stmn": build_stmn}


def build_model(config):
    """`ModelConfig` -> `RFCN` or `STMN` (by `config.type` and `config.memory.variant`)."""
    if config.type not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model type {config.type!r}; one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[config.type](config)
