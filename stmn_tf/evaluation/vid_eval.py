"""The ImageNet VID devkit metric, with FGFA's motion breakdown.

Protocol (ILSVRC devkit `eval_vid_detection.m`, and FGFA's Python port):

- Boxes are pixel `xmin, ymin, xmax, ymax` with inclusive corners: a box's width is
  `xmax - xmin + 1`, and intersections get the same `+ 1`.
- A ground truth of width w and height h is found by a detection of its class whose IoU
  reaches `min(0.5, w*h / ((w+10) * (h+10)))`: small objects get a looser threshold.
- In each frame, detections are taken by decreasing score; each is matched to the
  not-yet-matched ground truth of its class with the highest IoU among those that reach
  their threshold (ties: the first ground truth in the frame's order). Unmatched
  detections are false positives.
- Per class, all detections of the whole set are sorted by score (ties keep frame order,
  then the in-frame order) and PASCAL's all-point AP is taken from the PR curve.
  Classes with no ground truth get AP NaN and are left out of the mean.

Motion breakdown (Zhu et al., "Flow-Guided Feature Aggregation", ICCV 2017, and their
`lib/dataset/imagenet_vid_eval_motion.py`). A ground truth's motion IoU is the mean IoU
of the same instance (video, track id) with itself over the frames t-10 .. t+10, t
excluded, in which the instance exists. FGFA released these values for ImageNet VID val
(`imagenet_vid_groundtruth_motion_iou.mat`) but not the code that made them; the
definition rests on:

- the FGFA authors' answer in their issue tracker (issue #4): "mean(iou(t, k) for k in
  (t-10, t+10))", averaged "over the length of object instance when it is less than
  10", not the IoU at t-10 and t+10 only, nor frame-to-frame IoUs;
- the released file itself: 176,126 frames (VID val), 273,505 ground-truth values, all
  in [5e-12, 1], none NaN; its smallest values are exactly 1e-10 / k for k in
  {4, 5, 6, 7, 8, 10, 11, 12, 20}: means over k <= 20 frames of IoUs that are all 0
  (with a 1e-10 floor on the sum, which moves no value across a bin bound: 0 and
  1e-10 / k are both "fast"; we keep the plain mean). 2,178 values are exactly 1.0,
  static instances. Its bins hold 37.9% slow, 35.9% medium, 26.2% fast ground truths.

Slow is [0.9, 1], medium [0.7, 0.9], fast [0, 0.7], bounds inclusive as in FGFA's code
(a value of exactly 0.9 is in both slow and medium). The earlier definition of this
project, the mean of the IoUs at t-10 and t+10 only, is `motion_mode="endpoints"`.

A ground truth whose instance exists in no other frame of its window (a one-frame
track, or a track seen again only more than 10 frames away) has no motion to measure:
its motion IoU is NaN and it is in no split (it still counts in the overall mAP), like
a ground truth without a track id. FGFA's file has a finite value for every ground
truth of VID val, so it cannot tell what FGFA would have given such an instance.

A split is scored like this, exactly as FGFA's `vid_eval_motion` does it:

- Matching is done once, over all ground truths, as above.
- A detection matched to a ground truth inside the split is a true positive; one matched
  to a ground truth outside the split is neither TP nor FP.
- An unmatched detection is compared, class-agnostically, with the ground truths of its
  frame: a FP (weight 1) if its best IoU with an in-split ground truth is higher than
  with an out-of-split one; weight 0 if lower; on a tie (in practice: it overlaps no
  ground truth at all) its FP weight is the fraction of the frame's ground truths that
  are *outside* the split (FGFA's code; this looks inverted, but we keep it so that our
  numbers are comparable with published ones).
- In a frame without ground truth, the tie weight is the fraction of FGFA's motion
  entries inside the split, where FGFA's loader turns each empty frame's empty cell of
  the `.mat` into one entry 0: `(in-split ground truths + E * [0 in split]) / (ground
  truths + E)` with E the number of frames without ground truth. So the empty frames
  count as "fast" entries (0 is in [0, 0.7]) and in every split's denominator.
- Only in-split ground truths count as positives; classes without any are left out.

Frames are identified by optional `"video_id"` and `"frame_index"` keys of the ground
truth dicts; without them the frames are taken as consecutive frames of one video
(`video_id` 0, `frame_index` = position in the list). The window is in frame indices of
the same video: an evaluation set that keeps only some frames must carry their real
frame indices, and only its frames count in the mean (FGFA's file uses every frame).
"""

import numpy as np

DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_PIXEL_TOLERANCE = 10.0
MOTION_OFFSET = 10
MOTION_MODES = ("window", "endpoints")
# FGFA's motion_ranges; both bounds are inclusive in their code.
MOTION_RANGES = {"slow": (0.9, 1.0), "medium": (0.7, 0.9), "fast": (0.0, 0.7)}


def box_area_xyxy_pixels(boxes):
    """Areas of inclusive-pixel boxes.

    Args:
        boxes: float array `[..., 4]`, `xmin, ymin, xmax, ymax` in pixels.

    Returns:
        `[...]` areas `(xmax - xmin + 1) * (ymax - ymin + 1)`.
    """
    boxes = np.asarray(boxes, np.float64)
    return (boxes[..., 2] - boxes[..., 0] + 1.0) * (boxes[..., 3] - boxes[..., 1] + 1.0)


def paired_iou_xyxy_pixels(boxes_a, boxes_b):
    """IoU of boxes_a[i] with boxes_b[i], with the devkit's +1 pixel convention.

    Args:
        boxes_a, boxes_b: `[N, 4]` pixel `xmin, ymin, xmax, ymax`.

    Returns:
        `[N]` IoU; 0 where the boxes do not intersect.
    """
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0
    inter = iw * ih
    union = box_area_xyxy_pixels(a) + box_area_xyxy_pixels(b) - inter
    valid = (iw > 0) & (ih > 0)
    # The devkit only divides when both overlaps are positive.
    return np.where(valid, inter / np.where(valid, union, 1.0), 0.0)


def iou_matrix_xyxy_pixels(boxes_a, boxes_b):
    """Pairwise `[N, M]` IoU of pixel boxes with the devkit's +1 convention."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    ia = np.repeat(np.arange(len(a)), len(b))
    ib = np.tile(np.arange(len(b)), len(a))
    return paired_iou_xyxy_pixels(a[ia], b[ib]).reshape(len(a), len(b))


def match_threshold_xyxy_pixels(boxes, iou_threshold=DEFAULT_IOU_THRESHOLD,
                                pixel_tolerance=DEFAULT_PIXEL_TOLERANCE):
    """The devkit's per-ground-truth IoU threshold `min(t, w*h / ((w+p) * (h+p)))`.

    Args:
        boxes: `[N, 4]` pixel ground-truth boxes.

    Returns:
        `[N]` thresholds.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    relaxed = (w * h) / ((w + pixel_tolerance) * (h + pixel_tolerance))
    return np.minimum(relaxed, iou_threshold)


def average_precision(tp, fp, num_positives):
    """PASCAL VOC all-point AP of detections already sorted by decreasing score.

    Args:
        tp, fp: `[D]` true / false positive weights in score order.
        num_positives: number of ground truths (> 0).

    Returns:
        The area under the interpolated (monotone) PR curve.
    """
    tp = np.cumsum(np.asarray(tp, np.float64))
    fp = np.cumsum(np.asarray(fp, np.float64))
    recall = tp / float(num_positives)
    # eps: a split's first detections can have zero TP and zero FP weight.
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _flatten(frames, num_classes, what, with_scores):
    """Per-frame dicts -> flat arrays with a frame index per box."""
    counts, boxes, labels, scores = [], [], [], []
    for i, frame in enumerate(frames):
        frame_labels = np.asarray(frame["labels"], np.int64).reshape(-1)
        frame_boxes = np.asarray(frame["boxes"], np.float64)
        if frame_boxes.size == 0:
            frame_boxes = frame_boxes.reshape(0, 4)
        if frame_boxes.ndim != 2 or frame_boxes.shape[1] != 4:
            raise ValueError(f"{what}[{i}]['boxes'] must have shape [N, 4], got {frame_boxes.shape}")
        if len(frame_boxes) != len(frame_labels):
            raise ValueError(f"{what}[{i}]: {len(frame_boxes)} boxes but {len(frame_labels)} labels")
        if frame_labels.size and (frame_labels.min() < 1 or frame_labels.max() > num_classes):
            raise ValueError(f"{what}[{i}]['labels'] must be in 1..{num_classes}, got "
                             f"{frame_labels.min()}..{frame_labels.max()}")
        if with_scores:
            frame_scores = np.asarray(frame["scores"], np.float64).reshape(-1)
            if len(frame_scores) != len(frame_labels):
                raise ValueError(f"{what}[{i}]: {len(frame_scores)} scores but {len(frame_labels)} labels")
            scores.append(frame_scores)
        counts.append(len(frame_labels))
        boxes.append(frame_boxes)
        labels.append(frame_labels)
    counts = np.asarray(counts, np.int64)
    flat = {
        "frame": np.repeat(np.arange(len(frames)), counts),
        "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        "labels": np.concatenate(labels) if labels else np.zeros((0,), np.int64),
        "counts": counts,
    }
    if with_scores:
        flat["scores"] = np.concatenate(scores) if scores else np.zeros((0,))
    return flat


def _pairs_by_key(det_keys, gt_keys):
    """All (detection, ground truth) index pairs that share a key. Returns (det, gt)."""
    gt_order = np.argsort(gt_keys, kind="stable")
    sorted_keys = gt_keys[gt_order]
    lo = np.searchsorted(sorted_keys, det_keys, side="left")
    hi = np.searchsorted(sorted_keys, det_keys, side="right")
    counts = hi - lo
    det_idx = np.repeat(np.arange(len(det_keys)), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    gt_idx = gt_order[starts + np.arange(len(det_idx))]
    return det_idx, gt_idx


def _match(dets, gts, num_classes, iou_threshold, pixel_tolerance):
    """Greedy devkit matching. `dets` must be in processing order (frame, -score).

    Returns `[D]` index of the matched ground truth, -1 if none.

    Matching is sequential only within one (frame, class): detection r of such a group
    can only take what detections 0..r-1 of the same group left. So round r processes
    the r-th candidate detection of every group at once.
    """
    num_dets = len(dets["labels"])
    matched = np.full(num_dets, -1, np.int64)
    if num_dets == 0 or len(gts["labels"]) == 0:
        return matched
    stride = num_classes + 1
    det_keys = dets["frame"] * stride + dets["labels"]
    gt_keys = gts["frame"] * stride + gts["labels"]
    det_idx, gt_idx = _pairs_by_key(det_keys, gt_keys)
    iou = paired_iou_xyxy_pixels(dets["boxes"][det_idx], gts["boxes"][gt_idx])
    thresholds = match_threshold_xyxy_pixels(gts["boxes"], iou_threshold, pixel_tolerance)
    ok = iou >= thresholds[gt_idx]
    det_idx, gt_idx, iou = det_idx[ok], gt_idx[ok], iou[ok]
    if len(det_idx) == 0:
        return matched

    # Rank of each candidate detection inside its (frame, class) group, in processing order.
    candidates = np.unique(det_idx)
    order = np.lexsort((candidates, det_keys[candidates]))
    sorted_keys = det_keys[candidates][order]
    group_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    group_sizes = np.diff(np.r_[group_start, len(order)])
    ranks = np.empty(len(candidates), np.int64)
    ranks[order] = np.arange(len(order)) - np.repeat(group_start, group_sizes)
    rank_of = np.zeros(num_dets, np.int64)
    rank_of[candidates] = ranks

    # Pairs by (rank, detection, -IoU, ground truth): a detection's first live pair wins.
    pair_rank = rank_of[det_idx]
    order = np.lexsort((gt_idx, -iou, det_idx, pair_rank))
    det_idx, gt_idx, pair_rank = det_idx[order], gt_idx[order], pair_rank[order]
    bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))
    taken = np.zeros(len(gts["labels"]), bool)
    for r in range(pair_rank[-1] + 1):
        d = det_idx[bounds[r]:bounds[r + 1]]
        g = gt_idx[bounds[r]:bounds[r + 1]]
        live = ~taken[g]
        d, g = d[live], g[live]
        if len(d) == 0:
            continue
        _, first = np.unique(d, return_index=True)
        matched[d[first]] = g[first]
        taken[g[first]] = True
    return matched


def _frame_identities(groundtruths):
    """`[F]` integer video codes and frame indices (defaults: one video, list order)."""
    video_ids = [frame.get("video_id", 0) for frame in groundtruths]
    frame_index = np.asarray(
        [frame.get("frame_index", i) for i, frame in enumerate(groundtruths)], np.int64)
    _, video_codes = np.unique(np.asarray([str(v) for v in video_ids]), return_inverse=True)
    return video_codes.reshape(-1).astype(np.int64), frame_index


def motion_ious(groundtruths, offset=MOTION_OFFSET, mode="window"):
    """FGFA motion IoU of every ground truth (see the module docstring).

    Args:
        groundtruths: per-frame dicts with `"boxes"` `[N, 4]` pixel xyxy and
            `"track_ids"` `[N]`; optional `"video_id"`, `"frame_index"` (see module doc).
        offset: the window's half-length in frames. Defaults to 10.
        mode: `"window"`: mean IoU with the same track over the frames t - offset ..
            t + offset (t excluded) where it exists, FGFA's released definition;
            `"endpoints"`: over frames t - offset and t + offset only (this project's
            earlier definition). Defaults to `"window"`.

    Returns:
        List (one per frame) of `[N]` float arrays; NaN where the frame has no track ids
        or the track exists in none of the frames that the mode looks at.
    """
    if mode not in MOTION_MODES:
        raise ValueError(f"mode must be one of {MOTION_MODES}, got {mode!r}")
    if not groundtruths:
        return []
    video_codes, frame_index = _frame_identities(groundtruths)
    counts = [len(np.asarray(f["boxes"]).reshape(-1, 4)) for f in groundtruths]
    frame = np.repeat(np.arange(len(groundtruths)), counts)
    boxes = np.concatenate([np.asarray(f["boxes"], np.float64).reshape(-1, 4) for f in groundtruths])
    has_track = np.concatenate([np.full(c, "track_ids" in f) for f, c in zip(groundtruths, counts)])
    tracks = np.concatenate(
        [np.asarray(f["track_ids"], np.int64).reshape(-1) if "track_ids" in f else np.zeros(c, np.int64)
         for f, c in zip(groundtruths, counts)])
    result = np.full(len(boxes), np.nan)
    if has_track.any():
        # One integer per (video, track): tracks are only unique inside a video.
        pairs = np.stack([video_codes[frame], tracks], axis=1)
        _, track_code = np.unique(pairs, axis=0, return_inverse=True)
        track_code = track_code.reshape(-1)
        # key = (track, frame index) as one integer; frame t + d of the same track is
        # key + d, and the margins keep t +- offset inside the track's own range.
        span = int(frame_index.max() - frame_index.min()) + 2 * offset + 1
        base = frame_index[frame] - frame_index.min() + offset
        keys = np.where(has_track, track_code * span + base, -1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        total = np.zeros(len(boxes))
        found = np.zeros(len(boxes))
        shifts = ([d for d in range(-offset, offset + 1) if d != 0] if mode == "window"
                  else [-offset, offset])
        for shift in shifts:
            query = np.where(has_track, keys + shift, -2)
            pos = np.minimum(np.searchsorted(sorted_keys, query), len(keys) - 1)
            hit = has_track & (sorted_keys[pos] == query)
            iou = paired_iou_xyxy_pixels(boxes, boxes[order[pos]])
            total += np.where(hit, iou, 0.0)
            found += hit
        result = np.where(found > 0, total / np.maximum(found, 1), np.nan)
    return list(np.split(result, np.cumsum(counts)[:-1]))


def _class_aps(labels, scores, tp, fp, positives, num_classes):
    """Per-class AP; `labels`, `scores`, `tp`, `fp` are per detection in processing order."""
    # Stable sort by score keeps the processing order (frame, in-frame rank) on ties.
    order = np.lexsort((np.arange(len(scores)), -scores, labels))
    labels, tp, fp = labels[order], tp[order], fp[order]
    bounds = np.searchsorted(labels, np.arange(1, num_classes + 2))
    aps = {}
    for c in range(1, num_classes + 1):
        if positives[c] <= 0:
            aps[c] = float("nan")
            continue
        lo, hi = bounds[c - 1], bounds[c]
        aps[c] = average_precision(tp[lo:hi], fp[lo:hi], positives[c]) if hi > lo else 0.0
    return aps


def _mean(aps):
    values = [v for v in aps.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def evaluate(groundtruths, detections, num_classes, *, iou_threshold=DEFAULT_IOU_THRESHOLD,
             pixel_tolerance=DEFAULT_PIXEL_TOLERANCE, motion=None, motion_offset=MOTION_OFFSET,
             motion_mode="window", coco=True, coco_max_detections=100):
    """ImageNet VID mAP (devkit protocol), FGFA motion split and COCO AP.

    Args:
        groundtruths: list (one per frame) of dicts: `"boxes"` `[N, 4]` float, pixel
            `xmin, ymin, xmax, ymax` (inclusive); `"labels"` `[N]` int in 1..C; optional
            `"track_ids"` `[N]` int, `"video_id"` (any hashable) and `"frame_index"` int
            (see the module docstring for the defaults).
        detections: list (same frames, same order) of dicts: `"boxes"` `[D, 4]` pixel
            xyxy, `"scores"` `[D]`, `"labels"` `[D]` in 1..C.
        num_classes: C.
        iou_threshold: the IoU a detection needs for large objects. Defaults to 0.5.
        pixel_tolerance: p in `min(0.5, w*h / ((w+p)*(h+p)))`. Defaults to 10.
        motion: compute the motion split; None: when any frame has `"track_ids"`.
        motion_offset: the half-length of the motion IoU's window. Defaults to 10.
        motion_mode: `"window"` (FGFA's) or `"endpoints"`, see `motion_ious`.
            Defaults to `"window"`.
        coco: also compute COCO AP through pycocotools. Defaults to True.
        coco_max_detections: COCO's per-image detection limit. Defaults to 100.

    Returns:
        dict: `"mAP"` float; `"AP"` {class: float, NaN for classes without ground truth};
        `"num_groundtruths"` {class: int}; `"num_detections"` int; with motion:
        `"mAP_slow"`, `"mAP_medium"`, `"mAP_fast"` and `"AP_slow"`, `"AP_medium"`,
        `"AP_fast"` {class: float}; with coco: `"coco_AP"`, `"coco_AP50"`, `"coco_AP75"`,
        `"coco_AP_small"`, `"coco_AP_medium"`, `"coco_AP_large"` (see `coco_eval`).
    """
    if len(groundtruths) != len(detections):
        raise ValueError(f"groundtruths has {len(groundtruths)} frames but detections has "
                         f"{len(detections)}")
    gts = _flatten(groundtruths, num_classes, "groundtruths", with_scores=False)
    dets = _flatten(detections, num_classes, "detections", with_scores=True)

    # Processing order: by frame, then by decreasing score inside the frame (stable).
    order = np.lexsort((np.arange(len(dets["scores"])), -dets["scores"], dets["frame"]))
    dets = {k: (v[order] if k != "counts" else v) for k, v in dets.items()}
    matched = _match(dets, gts, num_classes, iou_threshold, pixel_tolerance)

    positives = np.bincount(gts["labels"], minlength=num_classes + 1)
    tp = (matched >= 0).astype(np.float64)
    aps = _class_aps(dets["labels"], dets["scores"], tp, 1.0 - tp, positives, num_classes)
    result = {
        "mAP": _mean(aps),
        "AP": aps,
        "num_groundtruths": {c: int(positives[c]) for c in range(1, num_classes + 1)},
        "num_detections": int(len(dets["scores"])),
    }

    if motion is None:
        motion = any("track_ids" in frame for frame in groundtruths)
    if motion:
        result.update(_motion_split(groundtruths, gts, dets, matched, num_classes, motion_offset,
                                    motion_mode))

    if coco:
        from stmn_tf.evaluation import coco_eval  # pycocotools is imported only when asked for

        result.update(coco_eval.evaluate_coco(groundtruths, detections, num_classes,
                                              max_detections=coco_max_detections))
    return result


def _motion_split(groundtruths, gts, dets, matched, num_classes, offset, mode):
    """FGFA's per-split TP / FP weights (see the module docstring) and APs."""
    motion = np.concatenate(motion_ious(groundtruths, offset, mode)) if len(gts["labels"]) else np.zeros(0)
    num_gts = len(gts["labels"])
    gts_per_frame = gts["counts"]
    # FGFA's loader reads each empty frame's cell of the .mat as one entry 0.
    num_empty_frames = int(np.sum(gts_per_frame == 0))
    is_matched = matched >= 0

    # Best class-agnostic IoU of each unmatched detection with the ground truths of its
    # frame, split into in-split and out-of-split ground truths below.
    unmatched = np.flatnonzero(~is_matched)
    if num_gts and len(unmatched):
        u_idx, g_idx = _pairs_by_key(dets["frame"][unmatched], gts["frame"])
        pair_det = unmatched[u_idx]
        pair_iou = paired_iou_xyxy_pixels(dets["boxes"][pair_det], gts["boxes"][g_idx])
    else:
        pair_det = g_idx = np.zeros(0, np.int64)
        pair_iou = np.zeros(0)

    result = {}
    for name, (lo, hi) in MOTION_RANGES.items():
        inside = (motion >= lo) & (motion <= hi)  # NaN: in no split
        tp = np.zeros(len(matched))
        tp[is_matched] = inside[matched[is_matched]]
        fp = np.zeros(len(matched))

        best_in = np.full(len(matched), -1.0)
        best_out = np.full(len(matched), -1.0)
        pin = inside[g_idx]
        np.maximum.at(best_in, pair_det[pin], pair_iou[pin])
        np.maximum.at(best_out, pair_det[~pin], pair_iou[~pin])
        outside_per_frame = np.bincount(gts["frame"][~inside], minlength=len(gts_per_frame))
        frame_gts = gts_per_frame[dets["frame"]]
        entries = num_gts + num_empty_frames
        empty_weight = ((inside.sum() + num_empty_frames * float(lo <= 0.0 <= hi)) / entries
                        if entries else 0.0)
        tie_weight = np.where(frame_gts > 0,
                              outside_per_frame[dets["frame"]] / np.maximum(frame_gts, 1),
                              empty_weight)
        fp_unmatched = np.where(best_in > best_out, 1.0,
                                np.where(best_out > best_in, 0.0, tie_weight))
        fp[~is_matched] = fp_unmatched[~is_matched]

        positives = np.bincount(gts["labels"][inside], minlength=num_classes + 1)
        aps = _class_aps(dets["labels"], dets["scores"], tp, fp, positives, num_classes)
        result[f"AP_{name}"] = aps
        result[f"mAP_{name}"] = _mean(aps)
    return result
