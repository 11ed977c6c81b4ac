"""The RPN and R-FCN losses, in float32, normalised per frame as py-faster-rcnn / py-R-FCN do."""

import tensorflow as tf


def smooth_l1(diff, sigma=1.0):
    """Fast R-CNN's smooth L1 of `diff`, elementwise: 0.5 (sigma x)^2 below 1/sigma^2."""
    sigma2 = sigma * sigma
    absolute = tf.abs(diff)
    return tf.where(absolute < 1.0 / sigma2, 0.5 * sigma2 * diff * diff, absolute - 0.5 / sigma2)


def rpn_losses(logits, deltas, labels, box_targets, sigma=3.0):
    """RPN losses.

    Classification: sigmoid cross entropy averaged over the sampled anchors of each
    frame; boxes: smooth L1 (sigma 3, py-faster-rcnn's RPN) summed over the positive
    anchors and divided by the number of sampled anchors of the frame (py-faster-rcnn's
    outside weights `1 / RPN_BATCHSIZE`). Both averaged over frames.

    Args:
      logits: `[N, A]`; deltas: `[N, A, 4]`.
      labels: `[N, A]` int, 1 positive, 0 negative, -1 ignored.
      box_targets: `[N, A, 4]`.

    Returns:
      `(classification_loss, box_loss)` float32 scalars.
    """
    logits = tf.cast(logits, tf.float32)
    deltas = tf.cast(deltas, tf.float32)
    sampled = tf.cast(labels >= 0, tf.float32)
    positive = tf.cast(labels > 0, tf.float32)
    count = tf.maximum(tf.reduce_sum(sampled, axis=1), 1.0)  # [N]
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
    cls = tf.reduce_sum(ce * sampled, axis=1) / count
    box = tf.reduce_sum(smooth_l1(deltas - box_targets, sigma), axis=-1)
    box = tf.reduce_sum(box * positive, axis=1) / count
    return tf.reduce_mean(cls), tf.reduce_mean(box)


def rfcn_losses(
    class_logits, box_deltas, labels, valid, foreground, box_targets, sigma=1.0, ohem_rois=0
):
    """R-FCN head losses.

    Softmax cross entropy averaged over the frame's valid RoIs; smooth L1 (sigma 1)
    over the foreground RoIs divided by the same count; averaged over frames. With
    `ohem_rois > 0`, online hard example mining (R-FCN Sec. 2): only the
    `ohem_rois` RoIs of largest loss per frame count (selection without gradient).

    Args:
      class_logits: `[N, R, C+1]`; box_deltas: `[N, R, 4]`.
      labels: `[N, R]` int, 0 background.
      valid, foreground: `[N, R]` float 0/1.
      box_targets: `[N, R, 4]`.

    Returns:
      `(classification_loss, box_loss)` float32 scalars.
    """
    class_logits = tf.cast(class_logits, tf.float32)
    box_deltas = tf.cast(box_deltas, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=class_logits)
    box = tf.reduce_sum(smooth_l1(box_deltas - box_targets, sigma), axis=-1) * foreground
    weight = valid
    if ohem_rois:
        per_roi = tf.stop_gradient(tf.where(valid > 0, ce + box, -1.0))
        k = tf.minimum(ohem_rois, tf.shape(per_roi)[1])
        threshold = tf.math.top_k(per_roi, k=k).values[:, -1:]
        weight = valid * tf.cast(per_roi >= threshold, tf.float32)
    count = tf.maximum(tf.reduce_sum(weight, axis=1), 1.0)
    cls = tf.reduce_sum(ce * weight, axis=1) / count
    box = tf.reduce_sum(box * weight, axis=1) / count
    return tf.reduce_mean(cls), tf.reduce_mean(box)
