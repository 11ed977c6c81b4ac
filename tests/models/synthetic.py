"""A tiny synthetic clip, the tiny detectors and a small VOC AP, for the model tests."""

import numpy as np

from stmn_tf.models.builders import build_rfcn
from stmn_tf.models.builders import build_stmn
from stmn_tf.models.config import tiny_model_config



def tiny_config(model_type="rfcn", num_classes=2, **overrides):
    """`tiny_model_config` (a tiny ResNet of the real shape: 4 stages, stride 16, few
    channels, small proposal budgets, so that a detector trains in seconds on a CPU)
    with nested overrides, e.g. `memory={"cell": "convgru"}`."""
    config = tiny_model_config(model_type, num_classes=num_classes)
    config.override(overrides)
    return config


def tiny_rfcn(num_classes=2, **overrides):
    """The tiny static R-FCN (see `tiny_config`)."""
    return build_rfcn(tiny_config("rfcn", num_classes, **overrides))


def tiny_stmn(num_classes=2, **overrides):
    """The tiny STMN (see `tiny_config`), 32 memory channels per direction."""
    return build_stmn(tiny_config("stmn", num_classes, **overrides))


COLOURS = {1: (230, 40, 40), 2: (40, 80, 230)}


def make_clip(frames=3, height=96, width=96, seed=0, speed=1.0):
    """Two coloured rectangles (class 1 red, class 2 blue) moving over noise.

    `speed` scales the motion: (3, 4) and (3, -4) pixels per frame at 1.

    Returns:
      dict of a batch of one clip: `images` `[1, T, H, W, 3]` float32 in [0, 255],
      `boxes` `[1, T, 3, 4]` normalised yxyx (the third row is padding), `labels`
      `[1, T, 3]` int32.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(60, 160, (frames, height, width, 3)).astype("float32")
    boxes = np.zeros((frames, 3, 4), "float32")
    labels = np.zeros((frames, 3), "int32")
    starts = {1: (10, 8, 36, 34), 2: (50, 46, 36, 30)}  # y, x, h, w in pixels
    for t in range(frames):
        for row, (label, (y, x, h, w)) in enumerate(starts.items()):
            y = y + int(round(3 * speed * t))
            x = x + int(round(4 * speed * t)) * (1 if label == 1 else -1)
            images[t, y : y + h, x : x + w] = COLOURS[label]
            boxes[t, row] = (y / height, x / width, (y + h) / height, (x + w) / width)
            labels[t, row] = label
    return {"images": images[None], "boxes": boxes[None], "labels": labels[None]}


def _iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mean_average_precision(detections, clip, iou_threshold=0.5):
    """VOC all-point AP averaged over the clip's classes.

    Args:
      detections: the `predict_step` dict of a batch of one clip (numpy).
      clip: the `make_clip` dict.
    """
    gt_boxes, gt_labels = clip["boxes"][0], clip["labels"][0]
    aps = []
    for cls in sorted(set(gt_labels[gt_labels > 0].tolist())):
        scored = []  # (score, frame, box)
        num_gt = int((gt_labels == cls).sum())
        for t in range(gt_boxes.shape[0]):
            n = int(detections["num_detections"][0, t])
            for i in range(n):
                if int(detections["detection_classes"][0, t, i]) == cls:
                    scored.append(
                        (float(detections["detection_scores"][0, t, i]), t,
                         detections["detection_boxes"][0, t, i])
                    )
        scored.sort(key=lambda s: -s[0])
        used = set()
        tp = []
        for _, t, box in scored:
            best, best_j = 0.0, None
            for j in np.flatnonzero(gt_labels[t] == cls):
                iou = _iou(box, gt_boxes[t, j])
                if iou > best and (t, j) not in used:
                    best, best_j = iou, j
            hit = best >= iou_threshold
            if hit:
                used.add((t, best_j))
            tp.append(1.0 if hit else 0.0)
        tp = np.array(tp)
        if not len(tp):
            aps.append(0.0)
            continue
        cum_tp = np.cumsum(tp)
        recall = cum_tp / num_gt
        precision = cum_tp / np.arange(1, len(tp) + 1)
        # All-point interpolation (PASCAL VOC 2010+).
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return float(np.mean(aps))
