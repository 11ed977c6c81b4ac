"""RPN anchors (Faster R-CNN, Ren et al. 2015), as normalised yxyx boxes."""

import math

import tensorflow as tf


def anchor_shapes(scales, ratios):
    """Heights and widths in pixels of the anchors of one position.

    An anchor of scale `s` and ratio `r = height / width` has area `s^2`:
    `height = s * sqrt(r)`, `width = s / sqrt(r)`. Order: ratio-major, scale-minor,
    the order of the RPN's output channels.

    Returns:
      Two lists of `len(scales) * len(ratios)` floats: heights, widths.
    """
    heights, widths = [], []
    for ratio in ratios:
        for scale in scales:
            heights.append(scale * math.sqrt(ratio))
            widths.append(scale / math.sqrt(ratio))
    return heights, widths


def generate_anchors(feature_height, feature_width, image_height, image_width, stride, scales, ratios):
    """Anchors of a `feature_height` x `feature_width` map of stride `stride`.

    Anchor centres sit at `(i + 0.5) * stride` pixels; boxes may cross the image
    border (py-faster-rcnn drops those from training, we keep them, as later
    implementations do, so that small test images have anchors at all).

    Args:
      feature_height, feature_width: ints or scalar tensors, the map size.
      image_height, image_width: the image size in pixels (for normalising).
      stride: the map's stride in pixels.
      scales: anchor sizes in pixels (sqrt of the area).
      ratios: height / width ratios.

    Returns:
      `[feature_height * feature_width * A, 4]` float32 normalised ymin, xmin, ymax,
      xmax, ordered (y, x, anchor), A = len(scales) * len(ratios).
    """
    heights, widths = anchor_shapes(scales, ratios)
    heights = tf.constant(heights, tf.float32)  # [A]
    widths = tf.constant(widths, tf.float32)
    stride = tf.cast(stride, tf.float32)
    cy = (tf.cast(tf.range(feature_height), tf.float32) + 0.5) * stride  # [h]
    cx = (tf.cast(tf.range(feature_width), tf.float32) + 0.5) * stride  # [w]
    cy = cy[:, None, None]  # [h, 1, 1]
    cx = cx[None, :, None]  # [1, w, 1]
    ih = tf.cast(image_height, tf.float32)
    iw = tf.cast(image_width, tf.float32)
    shape = [tf.shape(cy)[0], tf.shape(cx)[1], tf.shape(heights)[0]]
    ymin = tf.broadcast_to((cy - 0.5 * heights) / ih, shape)
    xmin = tf.broadcast_to((cx - 0.5 * widths) / iw, shape)
    ymax = tf.broadcast_to((cy + 0.5 * heights) / ih, shape)
    xmax = tf.broadcast_to((cx + 0.5 * widths) / iw, shape)
    return tf.reshape(tf.stack([ymin, xmin, ymax, xmax], axis=-1), [-1, 4])
