"""Typed model configuration (official/vision's dataclass `Config`, without registries).

`ModelConfig()` is the paper's R-FCN / STMN on ResNet-101 for the 30 VID classes;
`tiny_model_config()` the tiny ResNet of the CPU tests and the demo. YAML experiments
override only the fields that differ. `stmn_tf.models.builders.build_model` turns a
config into a model; the model classes take plain arguments.
"""

import dataclasses
from typing import List, Optional

from official.modeling import hyperparams


@dataclasses.dataclass
class BackboneConfig(hyperparams.Config):
    """ResNet backbone. `tiny`: 1 block per stage, widths (8, 16, 32, 64), stem 16.
    `norm`: frozen_bn (R-FCN with pretrained weights) | group_norm (from scratch)."""

    depth: int = 101
    tiny: bool = False
    frozen_stages: int = 2
    norm: str = "frozen_bn"
    weights: Optional[str] = None  # a local keras.applications ResNet .weights.h5


@dataclasses.dataclass
class FeaturesConfig(hyperparams.Config):
    """The features F_t: 3x3 conv (dilation 6) to `reduce_channels`, 1x1 conv to `channels`."""

    reduce_channels: int = 512
    channels: int = 1024
    dilation: int = 6


@dataclasses.dataclass
class AnchorConfig(hyperparams.Config):
    scales: List[float] = dataclasses.field(default_factory=lambda: [64.0, 128.0, 256.0, 512.0])
    ratios: List[float] = dataclasses.field(default_factory=lambda: [0.5, 1.0, 2.0])


@dataclasses.dataclass
class RPNConfig(hyperparams.Config):
    channels: int = 512
    pre_nms_top_n_train: int = 6000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 6000
    post_nms_top_n_test: int = 300
    nms_iou: float = 0.7
    min_size: float = 0.0
    batch_size: int = 256
    positive_fraction: float = 0.5
    positive_iou: float = 0.7
    negative_iou: float = 0.3


@dataclasses.dataclass
class RoISamplingConfig(hyperparams.Config):
    """R-FCN's second-stage sampling: 300 RoIs per frame, 25% foreground."""

    num_rois: int = 300
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou_high: float = 0.5
    background_iou_low: float = 0.0
    ohem_rois: int = 0  # > 0: online hard example mining over the sampled RoIs


@dataclasses.dataclass
class HeadConfig(hyperparams.Config):
    """`channels`: the static 3x3 conv (1024); `rfcn_channels`: the 1x1 conv (512)."""

    channels: int = 1024
    rfcn_channels: int = 512
    ps_roi_bins: int = 7


@dataclasses.dataclass
class MemoryConfig(hyperparams.Config):
    """STMN's memory. `variant` picks the cell, the alignment and the weight transfer
    (`stmn_tf.variants.VARIANTS`); `cell` and
    `align` override the variant's when set."""

    variant: str = "stmn"  # stmn | stmn_no_matchtrans | convgru_pretrain | convgru_freshfc
    filters: int = 512
    k: int = 2
    align: Optional[bool] = None
    cell: Optional[str] = None  # stmm | convgru
    direction: str = "bidirectional"  # bidirectional | forward
    input_scale: float = 1.0
    std_multiplier: float = 3.0
    implementation: str = "auto"  # MatchTrans: auto | custom_op | tf
    # MatchTrans' coefficients max(0, cos)^p / sum: 1.0 is the authors' formula; > 1
    # sharpens them where non-negative features make every cosine positive.
    affinity_power: float = 1.0
    # MatchTrans' cosine on each frame's features minus their mean over the frame's
    # positions: False is the authors' formula.
    centre_features: bool = False
    # The loss's gradient also reaches the features through MatchTrans' coefficients
    # (the pure-TF MatchTrans; implementation "auto" then runs it): False is the
    # authors' memory-only gradient.
    feature_gradient: bool = False
    # MatchTrans learns a log-weight per window offset that multiplies its affinities
    # (the pure-TF MatchTrans; "auto" then runs it): False is the authors' formula.
    offset_prior: bool = False


@dataclasses.dataclass
class PostProcessingConfig(hyperparams.Config):
    score_threshold: float = 0.001
    nms_iou: float = 0.3
    max_detections: int = 100


@dataclasses.dataclass
class ModelConfig(hyperparams.Config):
    type: str = "rfcn"  # rfcn | stmn
    num_classes: int = 30
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    anchors: AnchorConfig = dataclasses.field(default_factory=AnchorConfig)
    rpn: RPNConfig = dataclasses.field(default_factory=RPNConfig)
    roi_sampling: RoISamplingConfig = dataclasses.field(default_factory=RoISamplingConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)
    post_processing: PostProcessingConfig = dataclasses.field(
        default_factory=PostProcessingConfig
    )


def tiny_model_config(model_type="rfcn", num_classes=30):
    """The tiny detector of the CPU tests and the demo (same shapes, few channels)."""
    config = ModelConfig(type=model_type, num_classes=num_classes)
    config.override(
        {
            # Trained from scratch: group norm, since frozen batch norm would
            # leave the backbone without any normalisation.
            "backbone": {"tiny": True, "frozen_stages": 0, "norm": "group_norm"},
            "features": {"reduce_channels": 32, "channels": 64},
            "anchors": {"scales": [16.0, 32.0, 64.0]},
            "rpn": {
                "channels": 32,
                "pre_nms_top_n_train": 300,
                "post_nms_top_n_train": 100,
                "pre_nms_top_n_test": 300,
                "post_nms_top_n_test": 50,
                "batch_size": 64,
            },
            "roi_sampling": {"num_rois": 64},
            "head": {"channels": 64, "rfcn_channels": 32},
            "memory": {"filters": 32},
            "post_processing": {"max_detections": 20},
        }
    )
    return config
