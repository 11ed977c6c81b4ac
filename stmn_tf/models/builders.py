"""Config -> model: plain functions and plain dicts, no registries."""

import math

from stmn_tf.models.backbone import resnet_backbone
from stmn_tf.models.rfcn import RFCN
from stmn_tf.models.stmn import STMN
from stmn_tf.variants import get_variant

TINY_BACKBONE = dict(blocks=(1, 1, 1, 1), filters=(8, 16, 32, 64), stem_filters=16)


def _backbone_kwargs(config):
    backbone = config.backbone
    kwargs = dict(
        backbone_depth=backbone.depth,
        frozen_stages=backbone.frozen_stages,
        backbone_weights=backbone.weights,
        backbone_norm=backbone.norm,
    )
    if backbone.tiny:
        kwargs.update(
            backbone_blocks=TINY_BACKBONE["blocks"],
            backbone_filters=TINY_BACKBONE["filters"],
            backbone_stem_filters=TINY_BACKBONE["stem_filters"],
        )
    return kwargs


def build_backbone(config):
    """`ModelConfig` -> the ResNet backbone (a functional `keras.Model`, see backbone.py)."""
    kwargs = _backbone_kwargs(config)
    return resnet_backbone(
        depth=kwargs["backbone_depth"],
        blocks=kwargs.get("backbone_blocks"),
        filters=kwargs.get("backbone_filters"),
        stem_filters=kwargs.get("backbone_stem_filters", 64),
        frozen_stages=kwargs["frozen_stages"],
        norm=kwargs["backbone_norm"],
    )


def detector_kwargs(config):
    """The arguments that `RFCN` and `STMN` share, from a `ModelConfig`."""
    rpn, rois, post = config.rpn, config.roi_sampling, config.post_processing
    return dict(
        num_classes=config.num_classes,
        **_backbone_kwargs(config),
        feature_reduce_channels=config.features.reduce_channels,
        feature_channels=config.features.channels,
        feature_dilation=config.features.dilation,
        rfcn_channels=config.head.rfcn_channels,
        ps_roi_bins=config.head.ps_roi_bins,
        rpn_channels=rpn.channels,
        anchor_scales=tuple(config.anchors.scales),
        anchor_ratios=tuple(config.anchors.ratios),
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn.post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn.post_nms_top_n_test,
        rpn_nms_iou=rpn.nms_iou,
        rpn_min_size=rpn.min_size,
        rpn_batch_size=rpn.batch_size,
        rpn_positive_fraction=rpn.positive_fraction,
        rpn_positive_iou=rpn.positive_iou,
        rpn_negative_iou=rpn.negative_iou,
        num_rois=rois.num_rois,
        foreground_fraction=rois.foreground_fraction,
        foreground_iou=rois.foreground_iou,
        background_iou_high=rois.background_iou_high,
        background_iou_low=rois.background_iou_low,
        ohem_rois=rois.ohem_rois,
        score_threshold=post.score_threshold,
        nms_iou=post.nms_iou,
        max_detections=post.max_detections,
    )


def build_rfcn(config):
    return RFCN(head_channels=config.head.channels, **detector_kwargs(config))


def build_stmn(config):
    """`ModelConfig` -> `STMN`, its cell and alignment from `memory.variant`
    (`stmn_tf.variants.VARIANTS`, Table 2) unless `memory.cell` / `memory.align` say otherwise."""
    memory = config.memory
    variant = get_variant(memory.variant)
    power = memory.affinity_power
    if (isinstance(power, bool) or not isinstance(power, (int, float))
            or not math.isfinite(power) or power <= 0):
        raise ValueError(f"memory.affinity_power must be a finite number > 0, got {power!r}")
    return STMN(
        memory_filters=memory.filters,
        memory_cell=memory.cell if memory.cell is not None else variant.cell,
        memory_k=memory.k,
        memory_align=memory.align if memory.align is not None else variant.align,
        memory_direction=memory.direction,
        memory_input_scale=memory.input_scale,
        memory_std_multiplier=memory.std_multiplier,
        match_trans_implementation=memory.implementation,
        memory_affinity_power=memory.affinity_power,
        **detector_kwargs(config),
    )


MODEL_BUILDERS = {"rfcn": build_rfcn, "stmn": build_stmn}


def build_model(config):
    """`ModelConfig` -> `RFCN` or `STMN` (by `config.type` and `config.memory.variant`)."""
    if config.type not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model type {config.type!r}; one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[config.type](config)
