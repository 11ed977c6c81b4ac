"""Training targets: RPN anchor labels and R-FCN RoI sampling (Faster R-CNN / R-FCN).

Everything is batched over images (`N` = B*T frames) with static output sizes, so it
runs under `tf.function`, XLA and `tf.distribute` without Python-side work. Ground
truth is padded: `gt_labels == 0` marks padding. Boxes are normalised yxyx.
"""

import tensorflow as tf

from stmn_tf.ops import box_ops


def _ranks(scores):
    """`[N, P]` -> rank of each entry in descending order (0 = largest)."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def sample_balanced(positive, negative, num_samples, max_positive, seed=None):
    """Random balanced sampling of positives and negatives, per row.

    Takes up to `max_positive` positives at random, then fills up to `num_samples`
    with random negatives (py-faster-rcnn's rule).

    Args:
      positive, negative: `[N, P]` bool, disjoint.
      num_samples: int, samples per row.
      max_positive: int or `[N]`, at most this many positives per row.
      seed: optional int op seed for `tf.random.uniform`, or an int `[2]` tensor: a
        stateless seed (`tf.random.stateless_uniform`), which draws the same sample
        for the same seed in any process (what exact resume needs).

    Returns:
      `(take_positive, take_negative)`: `[N, P]` bool.
    """
    if seed is None or isinstance(seed, int):
        noise = tf.random.uniform(tf.shape(positive), seed=seed)
    else:
        noise = tf.random.stateless_uniform(tf.shape(positive), seed=seed)
    pos_rank = _ranks(tf.where(positive, noise, -1.0))
    take_pos = positive & (pos_rank < max_positive)
    num_pos = tf.reduce_sum(tf.cast(take_pos, tf.int32), axis=-1, keepdims=True)
    neg_rank = _ranks(tf.where(negative, noise, -1.0))
    take_neg = negative & (neg_rank < num_samples - num_pos)
    return take_pos, take_neg


def _match(boxes, gt_boxes, gt_valid):
    """IoU of boxes with valid ground truth: `(max_iou [N, P], argmax [N, P], iou [N, P, G])`."""
    iou = box_ops.pairwise_iou_yxyx(boxes, gt_boxes)  # [N, P, G]
    iou = tf.where(gt_valid[:, None, :], iou, 0.0)
    iou = tf.concat([iou, tf.zeros_like(iou[..., :1])], axis=-1)  # G = 0 must still work
    return tf.reduce_max(iou, axis=-1), tf.argmax(iou, axis=-1, output_type=tf.int32), iou[..., :-1]


def _gather_gt(gt, index):
    """`gt [N, G, ...]`, `index [N, P]` (may equal G: the empty column) -> `[N, P, ...]`."""
    padded = tf.concat([gt, tf.zeros_like(gt[:, :1])], axis=1)
    return tf.gather(padded, index, batch_dims=1)


def rpn_targets(
    anchors,
    gt_boxes,
    gt_labels,
    batch_size=256,
    positive_fraction=0.5,
    positive_iou=0.7,
    negative_iou=0.3,
    seed=None,
):
    """Anchor labels and box targets for the RPN (Faster R-CNN Sec. 3.1.2).

    An anchor is positive if its IoU with some ground truth is at least
    `positive_iou` or it is (one of) the best anchors of some ground truth; negative
    if its best IoU is below `negative_iou`. `batch_size` anchors are sampled per
    image, at most `positive_fraction` of them positive.

    Args:
      anchors: `[A, 4]` normalised yxyx.
      gt_boxes: `[N, G, 4]` normalised yxyx.
      gt_labels: `[N, G]` int, 0 = padding.
      seed: optional, `sample_balanced`'s.

    Returns:
      dict with `labels` `[N, A]` int32 (1 positive, 0 negative, -1 not sampled) and
      `box_targets` `[N, A, 4]` (encoded with `RPN_BOX_WEIGHTS`).
    """
    n = tf.shape(gt_boxes)[0]
    anchors_b = tf.broadcast_to(anchors[None], [n, tf.shape(anchors)[0], 4])
    gt_valid = gt_labels > 0
    max_iou, argmax, iou = _match(anchors_b, gt_boxes, gt_valid)
    best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)  # [N, 1, G]
    is_best = tf.reduce_any(
        (iou >= best_per_gt) & (best_per_gt > 0.0) & gt_valid[:, None, :], axis=-1
    )
    positive = (max_iou >= positive_iou) | is_best
    negative = (max_iou < negative_iou) & ~positive
    take_pos, take_neg = sample_balanced(
        positive, negative, batch_size, int(batch_size * positive_fraction), seed=seed
    )
    labels = tf.where(take_pos, 1, tf.where(take_neg, 0, -1))
    matched = _gather_gt(gt_boxes, argmax)
    targets = box_ops.encode_boxes_yxyx(matched, anchors_b, box_ops.RPN_BOX_WEIGHTS)
    return {"labels": labels, "box_targets": targets}


def sample_rois(
    proposals,
    proposals_valid,
    gt_boxes,
    gt_labels,
    num_rois=300,
    foreground_fraction=0.25,
    foreground_iou=0.5,
    background_iou_high=0.5,
    background_iou_low=0.0,
    append_groundtruth=True,
    seed=None,
):
    """Samples the RoIs of the second stage and their targets (R-FCN / Fast R-CNN).

    Foreground: best IoU >= `foreground_iou`; background: best IoU in
    [`background_iou_low`, `background_iou_high`). Up to
    `num_rois * foreground_fraction` foreground, the rest background; rows with too
    few candidates are padded with invalid RoIs. As in py-faster-rcnn the ground
    truth boxes join the candidates.

    Args:
      proposals: `[N, P, 4]` normalised yxyx.
      proposals_valid: `[N, P]` bool.
      gt_boxes: `[N, G, 4]`; gt_labels: `[N, G]` int, 1..C, 0 = padding.
      seed: optional, `sample_balanced`'s.

    Returns:
      dict: `rois` `[N, R, 4]`, `labels` `[N, R]` int32 (0 background), `valid`
      `[N, R]` float32, `foreground` `[N, R]` float32, `box_targets` `[N, R, 4]`
      (encoded with `HEAD_BOX_WEIGHTS`), R = num_rois.
    """
    gt_labels = tf.cast(gt_labels, tf.int32)
    gt_valid = gt_labels > 0
    proposals = tf.cast(proposals, tf.float32)
    if append_groundtruth:
        proposals = tf.concat([proposals, tf.cast(gt_boxes, tf.float32)], axis=1)
        proposals_valid = tf.concat([proposals_valid, gt_valid], axis=1)
    max_iou, argmax, _ = _match(proposals, gt_boxes, gt_valid)
    foreground = proposals_valid & (max_iou >= foreground_iou)
    background = (
        proposals_valid
        & (max_iou < background_iou_high)
        & (max_iou >= background_iou_low)
        & ~foreground
    )
    take_fg, take_bg = sample_balanced(
        foreground, background, num_rois, int(round(num_rois * foreground_fraction)), seed=seed
    )
    # Padding so that top_k always finds num_rois entries.
    pad = tf.maximum(num_rois - tf.shape(proposals)[1], 0)
    priority = tf.where(take_fg, 2.0, tf.where(take_bg, 1.0, -1.0))
    priority = tf.pad(priority, [[0, 0], [0, pad]], constant_values=-1.0)
    _, index = tf.math.top_k(priority, k=num_rois, sorted=True)  # [N, R]
    valid = tf.gather(priority, index, batch_dims=1) > 0.0
    fg = tf.gather(tf.pad(take_fg, [[0, 0], [0, pad]]), index, batch_dims=1)
    index = tf.minimum(index, tf.shape(proposals)[1] - 1)
    rois = tf.gather(proposals, index, batch_dims=1)
    matched_index = tf.gather(argmax, index, batch_dims=1)
    labels = tf.where(fg, _gather_gt(gt_labels, matched_index), 0)
    matched = _gather_gt(tf.cast(gt_boxes, tf.float32), matched_index)
    targets = box_ops.encode_boxes_yxyx(matched, rois, box_ops.HEAD_BOX_WEIGHTS)
    valid_f = tf.cast(valid, tf.float32)
    rois = rois * valid_f[..., None]
    return {
        "rois": rois,
        "labels": labels,
        "valid": valid_f,
        "foreground": tf.cast(fg, tf.float32),
        "box_targets": targets * tf.cast(fg, tf.float32)[..., None],
    }
