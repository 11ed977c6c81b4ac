"""Region proposal network (Faster R-CNN) on the features `F_t`.

The authors used precomputed DeepMask proposals; stmn-tf has its own RPN, placed on
the features `F_t` (stride 16, shared by R-FCN and STMN, so a transferred STMN
proposes the same boxes as its R-FCN) rather than on conv4 as in the R-FCN paper.
Objectness is one sigmoid logit per anchor (equivalent to R-FCN's two-way softmax).
"""

import keras
import tensorflow as tf

from stmn_tf.ops import box_ops


@keras.saving.register_keras_serializable(package="stmn_tf")
class RPNHead(keras.layers.Layer):
    """3x3 conv + ReLU, then 1x1 objectness logits and 1x1 box deltas per anchor.

    Args:
      num_anchors: int. Anchors per position (scales x ratios).
      channels: int. Channels of the 3x3 conv. Defaults to 512.

    Call arguments:
      inputs: `[N, h, w, C]`.

    Returns:
      `(logits [N, h*w*A], deltas [N, h*w*A, 4])`, ordered (y, x, anchor) like
      `stmn_tf.ops.anchors.generate_anchors`; deltas are dy, dx, dh, dw.

    Example:
    >>> head = RPNHead(num_anchors=3, channels=8)
    >>> logits, deltas = head(np.zeros((2, 4, 5, 16), "float32"))
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((2, 60), (2, 60, 4))
    """

    def __init__(self, num_anchors, channels=512, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        init = keras.initializers.RandomNormal(stddev=0.01)  # py-faster-rcnn's init
        self.conv = keras.layers.Conv2D(
            channels, 3, padding="same", activation="relu", kernel_initializer=init,
            dtype=self.dtype_policy, name="conv",
        )
        self.objectness = keras.layers.Conv2D(
            num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="objectness"
        )
        self.box_deltas = keras.layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy, name="box_deltas"
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.channels,)
        self.objectness.build(hidden)
        self.box_deltas.build(hidden)
        self.built = True

    def call(self, inputs):
        x = self.conv(inputs)
        n = keras.ops.shape(inputs)[0]
        logits = keras.ops.reshape(self.objectness(x), (n, -1))
        deltas = keras.ops.reshape(self.box_deltas(x), (n, -1, 4))
        return logits, deltas

    def compute_output_shape(self, input_shape):
        n, h, w = input_shape[:3]
        total = None if h is None or w is None else h * w * self.num_anchors
        return (n, total), (n, total, 4)

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors, channels=self.channels)
        return config


def generate_proposals(
    logits,
    deltas,
    anchors,
    pre_nms_top_n=6000,
    post_nms_top_n=300,
    nms_iou=0.7,
    min_size=0.0,
):
    """Decodes, clips, ranks and suppresses the RPN's boxes, per image.

    Args:
      logits: `[N, A]` objectness logits.
      deltas: `[N, A, 4]` dy, dx, dh, dw.
      anchors: `[A, 4]` normalised yxyx.
      pre_nms_top_n: int. Best boxes kept before NMS.
      post_nms_top_n: int. Boxes kept after NMS (output size).
      nms_iou: float. NMS IoU threshold.
      min_size: float. Boxes with a normalised side below this are dropped.

    Returns:
      `(boxes [N, post_nms_top_n, 4], scores [N, post_nms_top_n], valid [N,
      post_nms_top_n] bool)`: normalised yxyx, best first, zero padded. No
      gradient flows through them.
    """
    logits = tf.stop_gradient(tf.cast(logits, tf.float32))
    deltas = tf.stop_gradient(tf.cast(deltas, tf.float32))
    boxes = box_ops.clip_boxes_normalized(
        box_ops.decode_boxes_yxyx(deltas, anchors[None], box_ops.RPN_BOX_WEIGHTS)
    )
    scores = tf.sigmoid(logits)
    small = tf.logical_or(
        boxes[..., 2] - boxes[..., 0] <= min_size, boxes[..., 3] - boxes[..., 1] <= min_size
    )
    scores = tf.where(small, -1.0, scores)
    k = tf.minimum(pre_nms_top_n, tf.shape(scores)[1])
    top_scores, top_index = tf.math.top_k(scores, k=k)
    top_boxes = tf.gather(boxes, top_index, batch_dims=1)

    def nms_one(args):
        b, s = args
        # The unbatched padded NMS runs the fast NonMaxSuppressionV4 kernel.
        index, count = tf.image.non_max_suppression_padded(
            b, s, post_nms_top_n, iou_threshold=nms_iou, score_threshold=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(post_nms_top_n) < count
        return (
            tf.where(valid[:, None], tf.gather(b, index), 0.0),
            tf.where(valid, tf.gather(s, index), 0.0),
            valid,
        )

    return tf.map_fn(
        nms_one,
        (top_boxes, top_scores),
        fn_output_signature=(
            tf.TensorSpec([post_nms_top_n, 4], tf.float32),
            tf.TensorSpec([post_nms_top_n], tf.float32),
            tf.TensorSpec([post_nms_top_n], tf.bool),
        ),
    )
