"""The RPN's proposals: anchors on the feature grid, then decoding, ranking and NMS."""

import keras

from stmn_tf.models.rpn import generate_proposals
from stmn_tf.ops.anchors import generate_anchors


@keras.saving.register_keras_serializable(package="stmn_tf")
class ProposalGenerator:
    """Turns the RPN head's outputs into RoIs (Faster R-CNN's proposal layer).

    Holds the anchors' shapes and the proposal budgets; no weights. The training
    budget (`*_train`) applies when called with `training=True`, the test budget
    otherwise (R-FCN's 300 RoIs per frame at test time).

    Args:
      anchor_scales: anchor sizes in pixels (square root of the area).
      anchor_ratios: height / width of the anchors.
      stride: int. The feature map's stride in pixels. Defaults to 16.
      pre_nms_top_n_train, post_nms_top_n_train: best boxes kept before NMS, and
        RoIs kept after it, in training (6000, 2000).
      pre_nms_top_n_test, post_nms_top_n_test: the same at test time (6000, 300).
      nms_iou: float. The proposals' NMS IoU threshold (0.7).
      min_size: float. Boxes with a normalised side at or below this are dropped.

    Example:
    >>> generator = ProposalGenerator((16, 32), (1.0,), post_nms_top_n_test=5)
    >>> anchors = generator.anchors(4, 4, (64, 64))  # [4 * 4 * 2, 4]
    >>> rois, valid = generator(np.zeros((1, 32)), np.zeros((1, 32, 4)), anchors)
    >>> tuple(rois.shape), tuple(valid.shape)
    ((1, 5, 4), (1, 5))
    """

    def __init__(
        self,
        anchor_scales=(64.0, 128.0, 256.0, 512.0),
        anchor_ratios=(0.5, 1.0, 2.0),
        stride=16,
        pre_nms_top_n_train=6000,
        post_nms_top_n_train=2000,
        pre_nms_top_n_test=6000,
        post_nms_top_n_test=300,
        nms_iou=0.7,
        min_size=0.0,
    ):
        if not anchor_scales or not anchor_ratios:
            raise ValueError(
                f"anchor_scales {anchor_scales!r} and anchor_ratios {anchor_ratios!r} "
                "must both be non-empty"
            )
        self.anchor_scales = tuple(float(s) for s in anchor_scales)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.stride = int(stride)
        self.pre_nms_top_n_train = int(pre_nms_top_n_train)
        self.post_nms_top_n_train = int(post_nms_top_n_train)
        self.pre_nms_top_n_test = int(pre_nms_top_n_test)
        self.post_nms_top_n_test = int(post_nms_top_n_test)
        self.nms_iou = float(nms_iou)
        self.min_size = float(min_size)

    @property
    def num_anchors(self):
        """Anchors per feature-map position (scales x ratios)."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def anchors(self, feature_height, feature_width, image_size):
        """`[h * w * A, 4]` normalised yxyx anchors, ordered (y, x, anchor) like the
        RPN head's outputs; `image_size` is the input's (height, width) in pixels."""
        return generate_anchors(
            feature_height, feature_width, image_size[0], image_size[1], self.stride,
            self.anchor_scales, self.anchor_ratios,
        )

    def __call__(self, logits, deltas, anchors, training=False):
        """`(rois [N, R, 4] normalised yxyx, valid [N, R] bool)` from the RPN head's
        `logits [N, A]` and `deltas [N, A, 4]`; R is the post-NMS budget of the mode.
        No gradient flows through them."""
        rois, _, valid = generate_proposals(
            logits,
            deltas,
            anchors,
            self.pre_nms_top_n_train if training else self.pre_nms_top_n_test,
            self.post_nms_top_n_train if training else self.post_nms_top_n_test,
            self.nms_iou,
            self.min_size,
        )
        return rois, valid

    def get_config(self):
        return {
            "anchor_scales": list(self.anchor_scales),
            "anchor_ratios": list(self.anchor_ratios),
            "stride": self.stride,
            "pre_nms_top_n_train": self.pre_nms_top_n_train,
            "post_nms_top_n_train": self.post_nms_top_n_train,
            "pre_nms_top_n_test": self.pre_nms_top_n_test,
            "post_nms_top_n_test": self.post_nms_top_n_test,
            "nms_iou": self.nms_iou,
            "min_size": self.min_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
