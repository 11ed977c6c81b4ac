"""Seq-NMS (Han et al., "Seq-NMS for Video Object Detection", 2016), NumPy only.

Per class, over one video: boxes of adjacent frames are linked when their IoU exceeds
`link_iou_threshold` (0.5); the sequence with the highest sum of scores is found by
dynamic programming; its boxes are rescored (the sequence's average or maximum score);
in each of its frames the boxes that overlap its box by IoU >= `nms_threshold` are
suppressed (removed) together with it; repeat until no box is left. Boxes without a link
end up as one-frame sequences, which is per-frame NMS in score order.

Box format: `xmin, ymin, xmax, ymax`, in pixels like `stmn_tf.evaluation.vid_eval`
(any consistent scale works: IoU here is the continuous one, without the devkit's +1).

Speed: the DP is kept between iterations; removing a sequence that spans frames
[t0, t1] only changes the DP from t0 on, and only as long as the values keep changing.
"""

import numpy as np


def iou_matrix_xyxy(boxes_a, boxes_b):
    """Pairwise IoU `[N, M]` of `[N, 4]` and `[M, 4]` xmin, ymin, xmax, ymax boxes."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms_xyxy(boxes, scores, iou_threshold):
    """Greedy NMS. Returns the kept indices `[K]`, by decreasing score (ties: index)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(scores)), -scores))
    if len(order) == 0:
        return order
    iou = iou_matrix_xyxy(np.asarray(boxes)[order], np.asarray(boxes)[order])
    alive = np.ones(len(order), bool)
    keep = []
    for i in range(len(order)):
        if alive[i]:
            keep.append(i)
            alive &= iou[i] < iou_threshold
    return order[np.asarray(keep, np.int64)]


def split_by_class(frames):
    """Per-frame dicts -> {class: (list per frame of input indices of that class)}."""
    by_class = {}
    for t, frame in enumerate(frames):
        labels = np.asarray(frame["labels"], np.int64).reshape(-1)
        for c in np.unique(labels):
            by_class.setdefault(int(c), [np.zeros(0, np.int64)] * len(frames))
            by_class[int(c)][t] = np.flatnonzero(labels == c)
    return by_class


def assemble_frames(frames, kept, scores, track_ids):
    """Builds the output dicts from per-frame lists of kept input indices."""
    out = []
    for t, frame in enumerate(frames):
        idx = np.concatenate(kept[t]).astype(np.int64) if kept[t] else np.zeros(0, np.int64)
        new_scores = np.concatenate(scores[t]) if scores[t] else np.zeros(0)
        tracks = np.concatenate(track_ids[t]).astype(np.int64) if track_ids[t] else np.zeros(0, np.int64)
        order = np.lexsort((idx, -new_scores))
        idx, new_scores, tracks = idx[order], new_scores[order], tracks[order]
        boxes = np.asarray(frame["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(frame["labels"], np.int64).reshape(-1)
        out.append({"boxes": boxes[idx], "scores": new_scores, "labels": labels[idx],
                    "track_ids": tracks, "indices": idx})
    return out


class _SeqNMSClass:
    """Seq-NMS state for one class of one video."""

    def __init__(self, boxes, scores, link_iou_threshold):
        self.boxes = boxes  # list over frames of [n_t, 4]
        self.scores = scores  # list over frames of [n_t]
        self.num_frames = len(boxes)
        self.alive = [np.ones(len(s), bool) for s in scores]
        # links[t]: (src in frame t, dst in frame t+1) with IoU above the threshold.
        self.links = []
        for t in range(self.num_frames - 1):
            if len(scores[t]) and len(scores[t + 1]):
                src, dst = np.nonzero(iou_matrix_xyxy(boxes[t], boxes[t + 1]) > link_iou_threshold)
            else:
                src = dst = np.zeros(0, np.int64)
            self.links.append((src, dst))
        self.best = [None] * self.num_frames  # DP: best sum of a sequence ending at a box
        self.pred = [None] * self.num_frames  # its previous box, -1 if it starts here
        self.frame_max = np.full(self.num_frames, -np.inf)
        self._update_from(0, -1)

    def _step(self, t):
        score = np.where(self.alive[t], self.scores[t], -np.inf)
        pred = np.full(len(score), -1, np.int64)
        if t > 0 and len(score):
            src, dst = self.links[t - 1]
            prev = self.best[t - 1]
            if len(src):
                vals = prev[src]
                live = np.isfinite(vals) & self.alive[t][dst]
                src, dst, vals = src[live], dst[live], vals[live]
                incoming = np.full(len(score), -np.inf)
                np.maximum.at(incoming, dst, vals)
                # A sequence only grows backwards through a positive prefix (Han et al.).
                is_best = vals == incoming[dst]
                pred[dst[is_best]] = src[is_best]
                grow = incoming > 0
                pred[~grow] = -1
                score = score + np.where(grow, incoming, 0.0)
        return score, pred

    def _update_from(self, t0, t1):
        for t in range(t0, self.num_frames):
            best, pred = self._step(t)
            unchanged = (t > t1 and self.best[t] is not None and np.array_equal(best, self.best[t])
                         and np.array_equal(pred, self.pred[t]))
            self.best[t], self.pred[t] = best, pred
            self.frame_max[t] = best.max() if len(best) else -np.inf
            if unchanged:
                # Alive boxes changed only in [t0, t1]: identical DP here means identical after.
                break

    def pop_sequence(self, nms_threshold):
        """Best sequence as (first frame, [box index per frame]), its boxes suppressed."""
        t = int(np.argmax(self.frame_max))
        if not np.isfinite(self.frame_max[t]):
            return None
        j = int(np.argmax(self.best[t]))
        path = [j]
        while self.pred[t - len(path) + 1][path[-1]] >= 0:
            path.append(int(self.pred[t - len(path) + 1][path[-1]]))
        path.reverse()
        t0 = t - len(path) + 1
        for k, j in enumerate(path):
            frame = t0 + k
            overlap = iou_matrix_xyxy(self.boxes[frame][j:j + 1], self.boxes[frame])[0]
            self.alive[frame] &= overlap < nms_threshold
            self.alive[frame][j] = False
        self._update_from(t0, t)
        return t0, path


def seq_nms_xyxy(frames, link_iou_threshold=0.5, nms_threshold=0.3, rescore="avg"):
    """Seq-NMS over one video's per-frame detections, per class.

    Args:
        frames: list (one per frame, in time order) of dicts: `"boxes"` `[N, 4]`
            xmin, ymin, xmax, ymax pixels; `"scores"` `[N]`; `"labels"` `[N]`.
        link_iou_threshold: boxes of adjacent frames are linked when IoU > this.
            Defaults to 0.5.
        nms_threshold: boxes of a sequence's frames with IoU >= this with its box are
            suppressed. Defaults to 0.3 (as FGFA's Seq-NMS).
        rescore: `"avg"` or `"max"`: the score every box of a sequence gets.
            Defaults to `"avg"`.

    Returns:
        List (one per frame) of dicts: `"boxes"` `[K, 4]`, `"scores"` `[K]` (rescored),
        `"labels"` `[K]`, `"track_ids"` `[K]` (one id per sequence, unique in the video;
        one-frame sequences get ids too), `"indices"` `[K]` (the kept boxes' indices in
        the input frame); sorted by decreasing score. Suppressed boxes are dropped.
    """
    if rescore not in ("avg", "max"):
        raise ValueError(f"rescore must be 'avg' or 'max', got {rescore!r}")
    kept = [[] for _ in frames]
    new_scores = [[] for _ in frames]
    tracks = [[] for _ in frames]
    next_track = 0
    for _, members in sorted(split_by_class(frames).items()):
        boxes = [np.asarray(f["boxes"], np.float64).reshape(-1, 4)[m] for f, m in zip(frames, members)]
        scores = [np.asarray(f["scores"], np.float64).reshape(-1)[m] for f, m in zip(frames, members)]
        state = _SeqNMSClass(boxes, scores, link_iou_threshold)
        while True:
            found = state.pop_sequence(nms_threshold)
            if found is None:
                break
            t0, path = found
            seq_scores = np.asarray([scores[t0 + k][j] for k, j in enumerate(path)])
            value = seq_scores.mean() if rescore == "avg" else seq_scores.max()
            for k, j in enumerate(path):
                kept[t0 + k].append(members[t0 + k][j:j + 1])
                new_scores[t0 + k].append(np.asarray([value]))
                tracks[t0 + k].append(np.asarray([next_track]))
            next_track += 1
    return assemble_frames(frames, kept, new_scores, tracks)
