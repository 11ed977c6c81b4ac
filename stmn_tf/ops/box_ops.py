"""Box maths in the library's one convention: normalised `ymin, xmin, ymax, xmax`.

Encoding and decoding are `official.vision.ops.box_ops` (the Faster R-CNN
parametrisation `dy, dx, dh, dw`, optionally scaled by `weights`); this module adds
the pairwise IoU with a validity mask, clipping and the conversions used at the edges.
A ratio of lengths does not change when both axes are scaled, so encoding normalised
boxes gives the same targets as encoding pixel boxes.
"""

import numpy as np
import tensorflow as tf
from official.vision.ops import box_ops as official_box_ops

# The second-stage box targets are divided by (0.1, 0.1, 0.2, 0.2) as in
# py-faster-rcnn / py-R-FCN (BBOX_NORMALIZE_STDS); the RPN's are not scaled.
HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def encode_boxes_yxyx(boxes, anchors, weights=None):
    """Encodes `boxes` relative to `anchors`.

    Args:
      boxes: `[..., 4]` ymin, xmin, ymax, xmax.
      anchors: `[..., 4]`, broadcastable to `boxes`, same format.
      weights: optional 4 floats multiplying `dy, dx, dh, dw`.

    Returns:
      `[..., 4]` dy, dx, dh, dw.
    """
    anchors = tf.convert_to_tensor(anchors)
    boxes = tf.cast(boxes, anchors.dtype)
    return official_box_ops.encode_boxes(boxes, anchors, weights=weights)


def decode_boxes_yxyx(deltas, anchors, weights=None):
    """Inverse of `encode_boxes_yxyx` (`dh`, `dw` clipped at log(1000/16))."""
    anchors = tf.convert_to_tensor(anchors)
    deltas = tf.cast(deltas, anchors.dtype)
    return official_box_ops.decode_boxes(deltas, anchors, weights=weights)


def clip_boxes_normalized(boxes):
    """Clips normalised `[..., 4]` boxes to the image, `[0, 1]`."""
    return tf.clip_by_value(boxes, 0.0, 1.0)


def box_area(boxes):
    """`[..., 4]` ymin, xmin, ymax, xmax -> `[...]` area (0 for degenerate boxes)."""
    height = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    width = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return height * width


def pairwise_iou_yxyx(boxes_a, boxes_b):
    """IoU of every pair.

    Args:
      boxes_a: `[..., N, 4]` ymin, xmin, ymax, xmax.
      boxes_b: `[..., M, 4]`, same leading dimensions.

    Returns:
      `[..., N, M]` IoU in [0, 1]; 0 where either box is empty.
    """
    a = boxes_a[..., :, None, :]
    b = boxes_b[..., None, :, :]
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def boxes_yxyx_to_xyxy(boxes):
    """`[..., 4]` ymin, xmin, ymax, xmax -> xmin, ymin, xmax, ymax."""
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


def normalized_yxyx_to_pixel_xyxy(boxes, height, width):
    """NumPy, at the edges: normalised `[N, 4]` yxyx -> float64 pixel xmin, ymin,
    xmax, ymax in an image of `height` x `width` (continuous coordinates, as the
    evaluation's ground truth)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 1] * width, boxes[:, 0] * height, boxes[:, 3] * width,
                     boxes[:, 2] * height], -1)


def canvas_yxyx_to_frame_xyxy(boxes, padded_size, image_size, original_size):
    """NumPy: model boxes on the padded canvas -> pixel xyxy in the original frame.

    The detectors normalise boxes by their input tensor (the padded canvas); the frame
    sits at its top left resized to `image_size` (`stmn_tf.data.pipeline.resize_and_pad`),
    which keeps the aspect ratio of `original_size`.

    Args:
        boxes: `[N, 4]` normalised ymin, xmin, ymax, xmax on the canvas.
        padded_size, image_size, original_size: (height, width) each.

    Returns:
        `[N, 4]` float64 xmin, ymin, xmax, ymax pixels, clipped to the frame (the
        padding is not part of it).
    """
    height, width = original_size
    xyxy = normalized_yxyx_to_pixel_xyxy(
        boxes, padded_size[0] * height / image_size[0], padded_size[1] * width / image_size[1])
    return np.clip(xyxy, 0.0, [width, height, width, height])
